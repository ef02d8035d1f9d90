"""Strict checking of a bundle's ``model.safetensors`` against its architecture.

Every tensor the architecture needs must be present with the right shape, float32 dtype
and finite values; tensors the format is known to carry but that do not enter the math
(the unused token-embedding table, the bound buffers) are checked for shape when present;
anything else is reported as unexpected. All problems are gathered into one error.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from gptrl.bundle.codecs import ActionCodec, ObservationEncoder
from gptrl.bundle.files import WEIGHTS_FILE
from gptrl.bundle.schema import BundleConfig, ModelConfig
from gptrl.errors import BundleError

__all__ = ["ENCODER_PREFIX", "WEIGHTS_FILE", "check_tensors", "encoder_tensors", "format_buffers",
           "normalizer_tensors", "optional_tensors", "parameter_count", "read_safetensors", "required_tensors"]

MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own ceiling
_BOUND_BUFFER = re.compile(r"^(input|output)_adapter\.\d+\.(low|high)$")


def required_tensors(model: ModelConfig, observation: ObservationEncoder, action: ActionCodec, *,
                     embedded_normalizer: bool) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the forward pass reads: the token's features are the observation's, the action
    feedback's and the BOS flag; the policy heads are the action codec's, then value (2) and termination (3)."""
    d, layers = model.d_model, range(model.num_layers)
    shapes: dict[str, tuple[int, ...]] = {
        "input_proj.layers.0.weight": (d, observation.width + action.width + 1),
        "input_proj.layers.0.bias": (d,),
    }
    if model.network == "llama":
        inter = model.intermediate_size
        for i in layers:
            p = f"backbone.net.layers.{i}."
            for proj in "qkvo":
                shapes[f"{p}self_attn.{proj}_proj.weight"] = (d, d)
            shapes[f"{p}mlp.gate_proj.weight"] = (inter, d)
            shapes[f"{p}mlp.up_proj.weight"] = (inter, d)
            shapes[f"{p}mlp.down_proj.weight"] = (d, inter)
            shapes[f"{p}input_layernorm.weight"] = (d,)
            shapes[f"{p}post_attention_layernorm.weight"] = (d,)
        shapes["backbone.net.norm.weight"] = (d,)
    else:
        shapes["backbone.net.wpe.weight"] = (model.max_position_embeddings, d)
        for i in layers:
            p = f"backbone.net.h.{i}."
            for name, shape in (
                ("ln_1", (d,)), ("ln_2", (d,)),
                ("attn.c_attn", (d, 3 * d)), ("attn.c_proj", (d, d)),
                ("mlp.c_fc", (d, 4 * d)), ("mlp.c_proj", (4 * d, d)),
            ):
                shapes[f"{p}{name}.weight"] = shape
                shapes[f"{p}{name}.bias"] = (shape[-1],)
        shapes["backbone.net.ln_f.weight"] = (d,)
        shapes["backbone.net.ln_f.bias"] = (d,)
    for k, out in head_sizes(model, action).items():
        shapes[f"output_head.{k}.layers.1.weight"] = (out, d)
        shapes[f"output_head.{k}.layers.1.bias"] = (out,)
    shapes.update({ENCODER_PREFIX + name: shape for name, shape in observation.tensors().items()})
    if embedded_normalizer and observation.normalized:
        shapes.update(normalizer_tensors(observation.size))
    return shapes


ENCODER_PREFIX = "state_encoder."  # an observation encoder's own weights (``ObservationEncoder.tensors``)


def encoder_tensors(tensors: dict[str, np.ndarray], observation: ObservationEncoder) -> dict[str, np.ndarray]:
    """The observation encoder's weights among a bundle's ``tensors``, by the encoder's names."""
    return {name: tensors[ENCODER_PREFIX + name] for name in observation.tensors()}


VALUE_HEAD, TERMINATION_HEAD = 2, 3


def head_sizes(model: ModelConfig, action: ActionCodec) -> dict[int, int]:
    """Format index k of ``output_head.<k>`` -> output size: the codec's policy heads, the value, the termination."""
    return {**action.heads, VALUE_HEAD: 1, **({TERMINATION_HEAD: 1} if model.use_eos else {})}


def normalizer_tensors(state_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        "state_normalization_enabled": (1,),
        "state_normalization_mean": (state_dim,),
        "state_normalization_std": (state_dim,),
    }


def optional_tensors(model: ModelConfig, observation: ObservationEncoder,
                     action: ActionCodec) -> dict[str, tuple[int, ...]]:
    """Tensors the format carries that do not enter the math (shape-checked when present; the bound adapters of
    ``_BOUND_BUFFER`` take any shape)."""
    embed = "backbone.net.embed_tokens.weight" if model.network == "llama" else "backbone.net.wte.weight"
    buffers = {name: array.shape for name, array in action.format_buffers().items() if not _BOUND_BUFFER.match(name)}
    return {embed: (1, model.d_model), **buffers,
            **(normalizer_tensors(observation.size) if observation.normalized else {})}


def format_buffers(config: BundleConfig) -> dict[str, np.ndarray]:
    """The buffers the format writes beside the weights for its action type (``ActionCodec.format_buffers``)."""
    return config.action.format_buffers()


def _check_header(path: Path) -> None:
    """Refuse a header that names a tensor twice (JSON readers keep one of the two silently)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BundleError(f"{path}: not a readable safetensors file (shorter than its 8-byte header length)")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER_BYTES:
            raise BundleError(f"{path}: not a readable safetensors file (header length {size} is implausible)")
        raw = f.read(size)

    def no_duplicates(pairs):
        names = [k for k, _ in pairs]
        repeated = sorted({k for k in names if names.count(k) > 1})
        if repeated:
            raise BundleError(f"{path}: the safetensors header names tensor(s) {repeated} more than once")
        return dict(pairs)

    try:
        json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file (its header is not valid JSON: {exc})") from None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Load a safetensors file as numpy arrays; a missing, truncated or corrupt file raises BundleError."""
    if not path.is_file():
        raise BundleError(f"{path}: missing")
    _check_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file ({exc})") from None


def check_tensors(
    tensors: dict[str, np.ndarray],
    required: dict[str, tuple[int, ...]],
    optional: dict[str, tuple[int, ...] | None],
    source: Path | str,
    *,
    strict: bool = True,
) -> list[str]:
    """Validate ``tensors``; raises BundleError listing every problem. Returns unexpected names (strict=False)."""
    problems: list[str] = []
    for name, shape in required.items():
        if name not in tensors:
            problems.append(f"missing tensor '{name}' (expected shape {list(shape)})")
    unexpected = []
    for name, array in tensors.items():
        if name in required:
            shape = required[name]
        elif name in optional or _BOUND_BUFFER.match(name):
            shape = optional.get(name) or array.shape  # None: any shape
        else:
            unexpected.append(name)
            continue
        if array.dtype != np.float32:
            problems.append(f"tensor '{name}' has dtype {array.dtype}, expected float32")
        elif tuple(array.shape) != tuple(shape):
            problems.append(f"tensor '{name}' has shape {list(array.shape)}, expected {list(shape)}")
        elif name in required and not np.all(np.isfinite(array)):
            problems.append(f"tensor '{name}' holds non-finite values (NaN or inf)")
        elif np.any(np.isnan(array)):
            problems.append(f"tensor '{name}' holds NaN")
    if unexpected and strict:
        problems.append(f"unexpected tensors {sorted(unexpected)} (not part of this architecture)")
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise BundleError(f"{source}: " + "; ".join(shown))
    return sorted(unexpected)


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    """Learned parameters among ``shapes`` (buffers such as the normaliser are not counted)."""
    buffers = set(normalizer_tensors(0))
    return sum(int(np.prod(s)) for name, s in shapes.items() if name not in buffers)
