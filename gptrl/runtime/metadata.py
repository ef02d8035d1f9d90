"""What an exported policy.onnx says about itself (``metadata_props``), read without torch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gptrl.bundle import BundleConfig, BundleError, parse_config

FORMAT = "gptrl-policy-step/1"
KEY_FORMAT = "gptrl.format"
KEY_VARIANT = "gptrl.variant"
KEY_CONFIG = "gptrl.config"
KEY_WEIGHTS_SHA256 = "gptrl.weights_sha256"
KEY_VERSION = "gptrl.version"
KEY_CACHE_LAYOUT = "gptrl.cache_layout"

CACHE_LAYOUTS = {
    "portable": {
        "past_key.{i}": "[batch, heads, head_dim, slots] (keys stored transposed)",
        "past_value.{i}": "[batch, heads, slots, head_dim]",
        "past_valid": "[batch, slots] bool, slots = kv_cache_max_len",
        "new_key.{i}/new_value.{i}": "[batch, heads, head_dim]: the runtime writes them at the ring slot",
    },
    "attention": {
        "past_key.{i}/past_value.{i}": "[batch, heads, slots, head_dim], slots = kv_cache_max_len + 1",
        "attn_mask": "[batch, slots] bool, including the slot being written",
        "write_index": "[batch] int64 ring slot of the new token",
        "present_key.{i}/present_value.{i}": "the ring after TensorScatter (bind to past's buffer for in-place)",
    },
}


@dataclass(frozen=True)
class PolicyMetadata:
    config: BundleConfig
    variant: str
    weights_sha256: str
    version: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(props: dict[str, str], source: str) -> PolicyMetadata:
    """Validate the metadata map of an exported graph; ``source`` names the file in errors."""
    if props.get(KEY_FORMAT) != FORMAT:
        raise BundleError(
            f"{source}: not a gptrl policy graph (metadata '{KEY_FORMAT}' is {props.get(KEY_FORMAT)!r}, "
            f"expected {FORMAT!r}); export it with `gptrl export`"
        )
    variant = props.get(KEY_VARIANT)
    if variant not in CACHE_LAYOUTS:
        raise BundleError(f"{source}: metadata '{KEY_VARIANT}' = {variant!r} is not one of {sorted(CACHE_LAYOUTS)}")
    try:
        data = json.loads(props.get(KEY_CONFIG, ""))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source}: metadata '{KEY_CONFIG}' is not valid JSON ({exc})") from None
    config = parse_config(data, f"{source} metadata '{KEY_CONFIG}'")
    return PolicyMetadata(config, variant, props.get(KEY_WEIGHTS_SHA256, ""), props.get(KEY_VERSION, ""))
