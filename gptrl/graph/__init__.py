"""Building ONNX graphs from a bundle's numpy weights (numpy + onnx only, never torch).

``gptrl.exporter.onnx_export`` adds what needs torch: verification against the reference runner.
"""

from gptrl.graph.builder import GraphBuilder
from gptrl.graph.causal import build_step_graph, serialize

__all__ = ["GraphBuilder", "build_step_graph", "serialize"]
