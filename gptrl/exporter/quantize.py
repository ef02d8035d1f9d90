"""Weight quantization of an exported graph with onnxruntime's own tools, checked on returns before it is kept.

The transformer's weight MatMuls (q/k/v, output projection, MLP) become ``MatMulNBits`` (onnxruntime's
``com.microsoft`` op: 4 or 8 bits per weight, blocks of 32, symmetric, ``accuracy_level=4`` so activations are
quantized to int8 for the product: without it the 8-bit kernel is several times slower than fp32). The small
input projection and heads stay fp32. A quantized graph runs on onnxruntime only.

Because a quantized policy cannot match the torch runner to 1e-4, it is checked where it matters: its return
against the fp32 graph's on held-out seeds. One that loses more than ``max_loss`` (2%) is refused unless
``allow_loss``; what was checked is recorded in the graph's metadata (``gptrl.quantization``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import onnx

from gptrl.bundle.policy_graph import KEY_GRAPH_SHA256, SEAL_PLACEHOLDER
from gptrl.graph import serialize

Scheme = Literal["int8", "int4"]
SCHEMES: dict[str, int] = {"int8": 8, "int4": 4}
KEY_QUANTIZATION = "gptrl.quantization"
BLOCK_SIZE = 32
ACCURACY_LEVEL = 4
# Scopes of the MatMuls worth quantizing: the per-layer projections (the bulk of the weights).
_QUANTIZED_SCOPES = ("/attn/qkv_proj/", "/attn/c_attn/", "/attn/o_proj/", "/attn/c_proj/", "/mlp/gate_up_proj/",
                     "/mlp/down_proj/", "/mlp/c_fc/", "/mlp/c_proj/")


class QuantizationRefused(RuntimeError):
    """The quantized policy lost more return than allowed; nothing was written."""


@dataclass(frozen=True)
class QuantizationCheck:
    scheme: str
    bits: int
    block_size: int
    accuracy_level: int
    env_id: str
    seeds: list[int]
    max_steps: int
    fp32_return: float
    quantized_return: float
    loss_fraction: float  # (fp32 - quantized) / |fp32|; negative: the quantized policy did better
    max_loss: float
    accepted_by_flag: bool


def quantize_model(model: onnx.ModelProto, scheme: Scheme) -> onnx.ModelProto:
    """``model`` with its layer weight MatMuls replaced by MatMulNBits (metadata kept, not yet sealed)."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if scheme not in SCHEMES:
        raise ValueError(f"quantize must be one of {sorted(SCHEMES)}, got {scheme!r}")
    props = {p.key: p.value for p in model.metadata_props} | {KEY_GRAPH_SHA256: SEAL_PLACEHOLDER}  # sealed anew
    doc = model.doc_string
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    layer = [name for name in matmuls if any(k in name for k in _QUANTIZED_SCOPES)]
    if not layer:
        raise ValueError("the graph has no layer MatMuls to quantize")
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # it logs every node at INFO
    quantizer = MatMulNBitsQuantizer(model, bits=SCHEMES[scheme], block_size=BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=ACCURACY_LEVEL,
                                     nodes_to_exclude=[name for name in matmuls if name not in layer])
    quantizer.process()
    out = quantizer.model.model
    onnx.helper.set_model_props(out, props)
    out.doc_string = doc + f"; weights quantized to {scheme} (MatMulNBits)"
    return out


def read_check(path: str | Path) -> dict:
    """The quantization check recorded in an exported graph's metadata."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if KEY_QUANTIZATION not in props:
        raise ValueError(f"{path}: holds no quantization record (metadata {KEY_QUANTIZATION!r})")
    return json.loads(props[KEY_QUANTIZATION])


def with_record(model: onnx.ModelProto, check: QuantizationCheck) -> bytes:
    """The sealed bytes of ``model`` with the check recorded in its metadata."""
    props = {p.key: p.value for p in model.metadata_props}
    props[KEY_QUANTIZATION] = json.dumps(asdict(check))
    props[KEY_GRAPH_SHA256] = SEAL_PLACEHOLDER
    onnx.helper.set_model_props(model, props)
    return serialize(model)


def check_returns(fp32: bytes, quantized: bytes, scheme: str, env_id: str, *, episodes: int = 10,
                  seed: int = 1000, max_steps: int = 1000, max_loss: float = 0.02,
                  allow_loss: bool = False) -> QuantizationCheck:
    """Evaluate both graphs (one batched vector env, per-row positions) on the same held-out seeds."""
    from gptrl.evaluation import evaluate
    from gptrl.runtime import load_policy

    means = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("fp32", fp32), ("quantized", quantized)):
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(data)
            policy = load_policy(path, num_envs=episodes, providers="cpu")
            means[name] = evaluate(env_id, policy, seeds=range(seed, seed + episodes), max_steps=max_steps,
                                   num_envs=episodes).return_mean
    loss = (means["fp32"] - means["quantized"]) / max(abs(means["fp32"]), 1e-9)
    check = QuantizationCheck(scheme, SCHEMES[scheme], BLOCK_SIZE, ACCURACY_LEVEL, env_id,
                              list(range(seed, seed + episodes)), max_steps, means["fp32"], means["quantized"],
                              loss, max_loss, allow_loss and loss > max_loss)
    if loss > max_loss and not allow_loss:
        raise QuantizationRefused(
            f"{scheme} weights lose {100 * loss:.1f}% of the return on {env_id} (fp32 {means['fp32']:.1f}, "
            f"{scheme} {means['quantized']:.1f} over seeds {seed}..{seed + episodes - 1}), more than the "
            f"{100 * max_loss:.0f}% allowed; nothing was written (--allow-loss keeps it anyway)")
    return check
