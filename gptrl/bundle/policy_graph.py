"""What an exported ``policy.onnx`` is, read without torch or onnx: its inputs and outputs per variant, the
metadata it carries about itself, and the seal that lets a runtime check the file is the one gptrl exported.

The graph builder (``gptrl.graph``) declares its I/O from :func:`io_spec` and the runtime checks a loaded session
against the same function, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from gptrl.bundle.parse import parse_config
from gptrl.bundle.schema import BundleConfig
from gptrl.errors import BundleError
from gptrl.fileio import loads_json, sha256_file

__all__ = ["CACHE_LAYOUTS", "FORMAT", "PolicyMetadata", "TensorSpec", "io_spec", "read_metadata", "seal",
           "sha256_file", "verify_seal"]

FORMAT = "gptrl-policy-step/1"
KEY_FORMAT = "gptrl.format"
KEY_VARIANT = "gptrl.variant"
KEY_CONFIG = "gptrl.config"
KEY_WEIGHTS_SHA256 = "gptrl.weights_sha256"
KEY_VERSION = "gptrl.version"
KEY_CACHE_LAYOUT = "gptrl.cache_layout"
KEY_GRAPH_SHA256 = "gptrl.graph_sha256"

Variant = Literal["attention", "portable"]
VARIANT_OPSETS: dict[str, int] = {"portable": 18, "attention": 24}

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
class TensorSpec:
    name: str
    dtype: str  # numpy name: float32, int64, bool
    shape: tuple[int | str, ...]  # a string is a dynamic axis


def io_spec(variant: str, config: BundleConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The (inputs, outputs) of the step graph of ``variant`` for ``config`` (docs/format.md, "Exported graphs")."""
    if variant not in VARIANT_OPSETS:
        raise ValueError(f"variant must be one of {sorted(VARIANT_OPSETS)}, got {variant!r}")
    m = config.model
    S, A, H, hd = config.state_dim, config.action_dim, m.num_heads, m.head_dim
    inputs = [TensorSpec("state", "float32", ("batch", S)), TensorSpec("action", "float32", ("batch", A)),
              TensorSpec("is_bos", "float32", ("batch",)), TensorSpec("position", "int64", ("batch",))]
    outputs = [TensorSpec("action_out", "float32", ("batch", A)), TensorSpec("value", "float32", ("batch",)),
               TensorSpec("termination_prob", "float32", ("batch",))]
    if variant == "attention":
        inputs += [TensorSpec("write_index", "int64", ("batch",)), TensorSpec("attn_mask", "bool", ("batch", "ring"))]
        for i in range(m.num_layers):
            for kind in ("key", "value"):
                inputs.append(TensorSpec(f"past_{kind}.{i}", "float32", ("batch", H, "ring", hd)))
                outputs.append(TensorSpec(f"present_{kind}.{i}", "float32", ("batch", H, "ring", hd)))
    else:
        inputs.append(TensorSpec("past_valid", "bool", ("batch", "cache")))
        for i in range(m.num_layers):
            inputs.append(TensorSpec(f"past_key.{i}", "float32", ("batch", H, hd, "cache")))
            inputs.append(TensorSpec(f"past_value.{i}", "float32", ("batch", H, "cache", hd)))
            outputs += [TensorSpec(f"new_key.{i}", "float32", ("batch", H, hd)),
                        TensorSpec(f"new_value.{i}", "float32", ("batch", H, hd))]
    return inputs, outputs


@dataclass(frozen=True)
class PolicyMetadata:
    config: BundleConfig
    variant: Variant
    weights_sha256: str
    version: str
    graph_sha256: str = ""


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
    data = loads_json(props.get(KEY_CONFIG, ""), f"{source} metadata '{KEY_CONFIG}'")
    config = parse_config(data, f"{source} metadata '{KEY_CONFIG}'")
    return PolicyMetadata(config, variant, props.get(KEY_WEIGHTS_SHA256, ""),  # type: ignore[arg-type]
                          props.get(KEY_VERSION, ""), props.get(KEY_GRAPH_SHA256, ""))


def metadata_props(config: BundleConfig, variant: str, weights_sha256: str, version: str) -> dict[str, str]:
    """The metadata map an export writes (the seal is added by :func:`seal`)."""
    return {
        KEY_FORMAT: FORMAT,
        KEY_VARIANT: variant,
        KEY_CONFIG: json.dumps(config.to_dict()),
        KEY_WEIGHTS_SHA256: weights_sha256,
        KEY_VERSION: version,
        KEY_CACHE_LAYOUT: json.dumps(CACHE_LAYOUTS[variant]),
        KEY_GRAPH_SHA256: SEAL_PLACEHOLDER,
    }


# -- the seal: a sha256 of the whole file, stored inside it -------------------------------------------------------
# The exporter writes a fixed placeholder as the value of 'gptrl.graph_sha256', hashes the serialised file, and puts
# the digest where the placeholder was (same length, so the protobuf stays valid). A reader swaps the digest back
# for the placeholder and hashes again: any changed byte (a NaN in an initializer, an edited node) breaks the seal.
SEAL_PLACEHOLDER = "gptrl-graph-seal-placeholder-" + "-" * 35  # 64 characters, as a sha256 hex digest


def seal(data: bytes) -> bytes:
    """Serialised graph bytes holding :data:`SEAL_PLACEHOLDER` once -> the same bytes holding their digest."""
    placeholder = SEAL_PLACEHOLDER.encode()
    if data.count(placeholder) != 1:
        raise ValueError("the serialised graph must hold the seal placeholder exactly once")
    return data.replace(placeholder, hashlib.sha256(data).hexdigest().encode())


def verify_seal(data: bytes, digest: str) -> bool:
    """True when ``data`` is exactly the file whose seal is ``digest``."""
    raw = digest.encode()
    if len(digest) != 64 or data.count(raw) != 1:
        return False
    return hashlib.sha256(data.replace(raw, SEAL_PLACEHOLDER.encode())).hexdigest() == digest
