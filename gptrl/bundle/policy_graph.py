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

__all__ = ["CACHE_LAYOUTS", "FORMAT", "FORMATS", "PolicyMetadata", "TensorSpec", "io_spec", "read_metadata", "seal",
           "sha256_file", "verify_seal"]

# /2 adds the action codec's I/O (any action and observation type, sampling from uniforms: see SAMPLING_IO);
# /1 graphs (tanh actions and float observations, greedy only) are still read.
FORMAT = "gptrl-policy-step/2"
FORMAT_V1 = "gptrl-policy-step/1"
FORMATS = (FORMAT_V1, FORMAT)
KEY_FORMAT = "gptrl.format"
KEY_VARIANT = "gptrl.variant"
KEY_CONFIG = "gptrl.config"
KEY_WEIGHTS_SHA256 = "gptrl.weights_sha256"
KEY_VERSION = "gptrl.version"
KEY_CACHE_LAYOUT = "gptrl.cache_layout"
KEY_GRAPH_SHA256 = "gptrl.graph_sha256"
KEY_IO = "gptrl.io"  # stateful graphs: the I/O convention
KEY_KV = "gptrl.kv_cache_max_len"  # stateful graphs: the cache length fixed at export
KEY_BOS_CACHE_MODE = "gptrl.bos_cache_mode"  # stateful graphs: fixed at export
STATEFUL_IO = "stateful-v1"

Variant = Literal["attention", "portable", "stateful"]
VARIANT_OPSETS: dict[str, int] = {"portable": 18, "attention": 24, "stateful": 18}

# The state of a stateful graph, per row (all zeros = a fresh policy): name -> shape after the batch.
# key.{i} is stored transposed [heads, head_dim, kv] like the portable graph's cache; see docs/stateful.md.
STATE_TENSORS = ("prev_obs", "prev_action", "started", "valid", "slot")

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
    "stateful": {
        "state_in.key.{i}": "[batch, heads, head_dim, kv] (keys stored transposed)",
        "state_in.value.{i}": "[batch, heads, kv, head_dim]",
        "state_in.valid": "[batch, kv] 1.0 where the slot holds an entry of the row's episode",
        "state_in.slot": "[batch] next ring slot to write",
        "state_in.prev_obs/prev_action": "[batch, S] / [batch, *action] the previous observation and action taken "
                                         "(their dtypes: the observation's and the action's)",
        "state_in.started": "[batch] 1.0 once the row has begun an episode (0: the next call begins one)",
    },
}


# What a /2 graph adds for its action codec: the token's action input, the uniforms a sample draws from and which
# rows sample, and the distribution's parameters and the log-probability of the action given back.
SAMPLING_IO = {
    "uniform": "[batch, noise] float32 in [0, 1): what a row's sample is drawn from",
    "sample": "[batch] bool: the row's action is a sample (else the greedy action)",
    "log_prob": "[batch] float32: log-probability of the action given back",
    "dist": "[batch, params] float32: the distribution's parameters (the policy heads, clipped)",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: float32, int64, bool
    shape: tuple[int | str, ...]  # a string is a dynamic axis


def state_spec(config: BundleConfig, kv: int) -> list[TensorSpec]:
    """The state tensors of a stateful graph (without the ``state_in.`` / ``state_out.`` prefix)."""
    m, action = config.model, config.action
    H, hd = m.num_heads, m.head_dim
    specs = [TensorSpec("prev_obs", config.observation.dtype, ("batch", config.state_dim)),
             TensorSpec("prev_action", action.dtype, ("batch", *action.shape)),
             TensorSpec("started", "float32", ("batch",)), TensorSpec("valid", "float32", ("batch", kv)),
             TensorSpec("slot", "float32", ("batch",))]
    for i in range(m.num_layers):
        specs += [TensorSpec(f"key.{i}", "float32", ("batch", H, hd, kv)),
                  TensorSpec(f"value.{i}", "float32", ("batch", H, kv, hd))]
    return specs


def _sampling_io(config: BundleConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    action = config.action
    inputs = [TensorSpec("uniform", "float32", ("batch", action.noise_width)), TensorSpec("sample", "bool", ("batch",))]
    outputs = [TensorSpec("log_prob", "float32", ("batch",)),
               TensorSpec("dist", "float32", ("batch", action.param_width))]
    return inputs, outputs


def io_spec(variant: str, config: BundleConfig, kv: int | None = None, *,
            sampling: bool = True) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The (inputs, outputs) of the step graph of ``variant`` for ``config`` (docs/format.md, "Exported graphs").

    ``kv``: the cache length a stateful graph was exported with (it is fixed there). ``sampling``: the /2 graph's
    I/O (False: a /1 graph's, which has no ``SAMPLING_IO``).
    """
    if variant not in VARIANT_OPSETS:
        raise ValueError(f"variant must be one of {sorted(VARIANT_OPSETS)}, got {variant!r}")
    m, action = config.model, config.action
    S, H, hd = config.state_dim, m.num_heads, m.head_dim
    obs_dtype, act = config.observation.dtype, (action.dtype, ("batch", *action.shape))
    extra_in, extra_out = _sampling_io(config) if sampling else ([], [])
    if variant == "stateful":
        if kv is None:
            raise ValueError("a stateful graph's I/O depends on its cache length: pass kv")
        state = state_spec(config, kv)
        inputs = [TensorSpec("obs", obs_dtype, ("batch", S)), TensorSpec("reset", "bool", ("batch",)), *extra_in]
        inputs += [TensorSpec(f"state_in.{t.name}", t.dtype, t.shape) for t in state]
        outputs = [TensorSpec("action", *act), *extra_out, TensorSpec("value", "float32", ("batch",))]
        if m.use_eos:
            outputs.append(TensorSpec("termination_prob", "float32", ("batch",)))
        outputs += [TensorSpec(f"state_out.{t.name}", t.dtype, t.shape) for t in state]
        return inputs, outputs
    inputs = [TensorSpec("state", obs_dtype, ("batch", S)), TensorSpec("action", *act),
              TensorSpec("is_bos", "float32", ("batch",)), TensorSpec("position", "int64", ("batch",)), *extra_in]
    outputs = [TensorSpec("action_out", *act), *extra_out, TensorSpec("value", "float32", ("batch",)),
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
    kv_cache_max_len: int | None = None  # fixed in a stateful graph
    bos_cache_mode: str | None = None  # fixed in a stateful graph
    sampling: bool = True  # a /2 graph (SAMPLING_IO); False: /1


def check_io_convention(props: dict[str, str], source: str, *, stateful: bool) -> None:
    """A stateful graph (either family) names its I/O convention in ``gptrl.io``; any other graph names none. A
    runtime that drives the state by another convention would feed the wrong tensors, so a mismatch is refused."""
    expected = STATEFUL_IO if stateful else None
    if props.get(KEY_IO) != expected:
        raise BundleError(f"{source}: metadata '{KEY_IO}' = {props.get(KEY_IO)!r}, expected {expected!r}")


def read_metadata(props: dict[str, str], source: str) -> PolicyMetadata:
    """Validate the metadata map of an exported graph; ``source`` names the file in errors."""
    if props.get(KEY_FORMAT) not in FORMATS:
        raise BundleError(
            f"{source}: not a gptrl policy graph (metadata '{KEY_FORMAT}' is {props.get(KEY_FORMAT)!r}, "
            f"expected {FORMAT!r}); export it with `gptrl export`"
        )
    variant = props.get(KEY_VARIANT)
    if variant not in CACHE_LAYOUTS:
        raise BundleError(f"{source}: metadata '{KEY_VARIANT}' = {variant!r} is not one of {sorted(CACHE_LAYOUTS)}")
    data = loads_json(props.get(KEY_CONFIG, ""), f"{source} metadata '{KEY_CONFIG}'")
    config = parse_config(data, f"{source} metadata '{KEY_CONFIG}'")
    sampling = props[KEY_FORMAT] == FORMAT
    if not sampling and (config.action.kind != "tanh" or config.observation.kind != "continuous"):
        raise BundleError(f"{source}: a {FORMAT_V1} graph holds tanh actions and float observations only")
    kv = bos = None
    check_io_convention(props, source, stateful=variant == "stateful")
    if variant == "stateful":
        try:
            kv = int(props.get(KEY_KV, ""))
        except ValueError:
            raise BundleError(f"{source}: metadata '{KEY_KV}' must be an integer, got {props.get(KEY_KV)!r}") from None
        bos = props.get(KEY_BOS_CACHE_MODE)
        if kv < 1 or bos not in ("discard", "retain"):
            raise BundleError(f"{source}: metadata '{KEY_KV}' = {kv} / '{KEY_BOS_CACHE_MODE}' = {bos!r} are invalid")
    return PolicyMetadata(config, variant, props.get(KEY_WEIGHTS_SHA256, ""),  # type: ignore[arg-type]
                          props.get(KEY_VERSION, ""), props.get(KEY_GRAPH_SHA256, ""), kv, bos, sampling)


def metadata_props(config: BundleConfig, variant: str, weights_sha256: str, version: str, *,
                   kv: int | None = None, bos_cache_mode: str | None = None) -> dict[str, str]:
    """The metadata map an export writes (the seal is added by :func:`seal`)."""
    props = {
        KEY_FORMAT: FORMAT,
        KEY_VARIANT: variant,
        KEY_CONFIG: json.dumps(config.to_dict()),
        KEY_WEIGHTS_SHA256: weights_sha256,
        KEY_VERSION: version,
        KEY_CACHE_LAYOUT: json.dumps({**CACHE_LAYOUTS[variant], **SAMPLING_IO}),
        KEY_GRAPH_SHA256: SEAL_PLACEHOLDER,
    }
    if variant == "stateful":
        props |= {KEY_IO: STATEFUL_IO, KEY_KV: str(kv), KEY_BOS_CACHE_MODE: str(bos_cache_mode)}
    return props


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
