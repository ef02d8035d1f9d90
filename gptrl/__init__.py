"""gptrl: train, ship and run GPT-style transformer policies for reinforcement learning.

The top-level names are imported lazily so that ``import gptrl.runtime`` never pulls in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    "load_runner": "gptrl.exporter.load",
    "PolicyRunner": "gptrl.exporter.causal.runner",
    "load_runner_from_hub": "gptrl.exporter.causal.runner",
    "export_bundle": "gptrl.exporter.causal.convert",
    "convert_legacy_bundle_to_safetensors": "gptrl.exporter.legacy",
    "export_onnx": "gptrl.exporter.onnx_export",
    "import_decision_transformer": "gptrl.exporter.dt.convert",
    "run_episodes": "gptrl.evaluation",
    "evaluate": "gptrl.evaluation",
    "load_bundle": "gptrl.bundle",
    "BundleError": "gptrl.errors",
    "NonFiniteOutputError": "gptrl.errors",
    "Policy": "gptrl.contract",
    "StepInfo": "gptrl.contract",
    "EvalResult": "gptrl.contract",
    "load_policy": "gptrl.runtime",
}

__all__ = [  # the names of _LAZY and the version (a test keeps them in step)
    "BundleError", "EvalResult", "NonFiniteOutputError", "Policy", "PolicyRunner", "StepInfo", "__version__",
    "convert_legacy_bundle_to_safetensors", "evaluate", "export_bundle", "export_onnx", "import_decision_transformer",
    "load_bundle", "load_policy",
    "load_runner", "load_runner_from_hub", "run_episodes",
]

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle import load_bundle
    from gptrl.contract import EvalResult, Policy, StepInfo
    from gptrl.errors import BundleError, NonFiniteOutputError
    from gptrl.evaluation import evaluate, run_episodes
    from gptrl.exporter.causal.convert import export_bundle
    from gptrl.exporter.causal.runner import PolicyRunner, load_runner_from_hub
    from gptrl.exporter.dt.convert import import_decision_transformer
    from gptrl.exporter.legacy import convert_legacy_bundle_to_safetensors
    from gptrl.exporter.load import load_runner
    from gptrl.exporter.onnx_export import export_onnx
    from gptrl.runtime import load_policy


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gptrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
