"""The torch half of gptrl: model families, their reference runners, bundle writing, legacy conversion and the
self-verifying ONNX export. Everything under this package may import torch; nothing under ``gptrl.runtime`` may.

One sub-package per model family (``causal``: Causal GPT-RL bundles; ``dt``: Decision Transformers);
``load_runner`` picks the family from the folder. docs/architecture.md says where a new family goes.
"""

from gptrl.exporter.causal import PolicyModel, PolicyRunner, export_bundle, init_weights, load_runner_from_hub
from gptrl.exporter.legacy import convert_legacy_bundle_to_safetensors
from gptrl.exporter.load import load_runner
from gptrl.exporter.onnx_export import ExportVerificationError, export_onnx, verify_export

__all__ = ["ExportVerificationError", "PolicyModel", "PolicyRunner", "convert_legacy_bundle_to_safetensors",
           "export_bundle", "export_onnx", "init_weights", "load_runner", "load_runner_from_hub", "verify_export"]
