"""Causal GPT-RL bundle I/O without torch: config, spaces, weights, normaliser, writing and hub download."""

from gptrl.bundle.bundle import Bundle, load_bundle
from gptrl.bundle.config import BundleConfig, ContinuousSpec, ModelConfig, make_config, parse_config, read_config
from gptrl.bundle.errors import BundleError
from gptrl.bundle.normalizer import StateNormalizer

__all__ = [
    "Bundle",
    "BundleConfig",
    "BundleError",
    "ContinuousSpec",
    "ModelConfig",
    "StateNormalizer",
    "load_bundle",
    "make_config",
    "parse_config",
    "read_config",
]
