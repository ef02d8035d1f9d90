"""The Causal GPT-RL family on torch: the policy network, the KV-cache reference runner and bundle conversion."""

from gptrl.exporter.causal.convert import bundle_tensors, export_bundle, model_from_bundle
from gptrl.exporter.causal.model import PolicyModel
from gptrl.exporter.causal.runner import PolicyRunner, load_runner, load_runner_from_hub
from gptrl.exporter.init import init_weights

__all__ = ["PolicyModel", "PolicyRunner", "bundle_tensors", "export_bundle", "init_weights", "load_runner",
           "load_runner_from_hub", "model_from_bundle"]
