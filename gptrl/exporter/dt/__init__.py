"""The Decision Transformer family on torch: the network (Hugging Face DecisionTransformerModel's math and names)."""

from gptrl.exporter.dt.model import DecisionTransformer

__all__ = ["DecisionTransformer"]
