"""The Causal GPT-RL bundle format without torch: config, spaces, weights, normaliser, writing and Hub download.

The bottom layer of gptrl (numpy + safetensors); see docs/format.md for the format and docs/architecture.md for
where it sits.
"""

from gptrl.bundle.bundle import Bundle, load_bundle
from gptrl.bundle.codecs.box import ContinuousSpec
from gptrl.bundle.factory import make_config
from gptrl.bundle.normalizer import StateNormalizer
from gptrl.bundle.parse import parse_config, read_config
from gptrl.bundle.schema import BundleConfig, ModelConfig
from gptrl.errors import BundleError

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
