"""The Decision Transformer's exact windowed graph, block by block, from a DT bundle's numpy tensors (no torch).

Inputs are the window ``gptrl.dt_window.DTWindow`` keeps: ``states`` [B, K, S] (normalised), ``actions`` [B, K, A],
``returns_to_go`` [B, K, 1] (model units), ``timesteps`` [B, K] int64 and ``attention_mask`` [B, K] (1 = a real
step); the output ``action`` [B, A] is ``action_preds[:, -1]``, read at the last state token. K is fixed at export,
the batch is dynamic. Standard opset-18 ops only.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from gptrl.bundle.dt import DTBundle, dt_io_spec
from gptrl.graph.builder import GraphBuilder

OPSET, IR_VERSION = 18, 8


def _layer_norm(g: GraphBuilder, x: str, t: dict, prefix: str, eps: float, name: str) -> str:
    with g.scope(name):
        return g.op("LayerNormalization", x, g.weight("weight", t[f"{prefix}.weight"]),
                    g.weight("bias", t[f"{prefix}.bias"]), axis=-1, epsilon=eps)


def _activation(g: GraphBuilder, x: str, name: str) -> str:
    if name == "relu":
        return g.op("Relu", x)
    if name == "tanh":
        return g.op("Tanh", x)
    if name in ("silu", "swish"):
        return g.op("Mul", x, g.op("Sigmoid", x))
    if name == "gelu":  # erf form
        return g.op("Mul", g.op("Mul", x, g.const(0.5)),
                    g.op("Add", g.op("Erf", g.op("Mul", x, g.const(1.0 / math.sqrt(2.0)))), g.const(1.0)))
    cube = g.op("Mul", g.op("Mul", x, x), x)  # gelu_new / gelu_pytorch_tanh: the tanh approximation
    inner = g.op("Mul", g.op("Add", x, g.op("Mul", cube, g.const(0.044715))), g.const(math.sqrt(2.0 / math.pi)))
    return g.op("Mul", g.op("Mul", x, g.const(0.5)), g.op("Add", g.op("Tanh", inner), g.const(1.0)))


def token_embeddings(g: GraphBuilder, t: dict, bundle: DTBundle) -> str:
    """(R_t, s_t, a_t) embeddings plus the timestep embedding, interleaved to [B, 3K, h], then embed_ln + wpe[0]."""
    c, K = bundle.config, bundle.sidecar.context_length
    h = c.hidden_size
    with g.scope("embed"):
        time = g.op("Gather", g.weight("timestep", t["embed_timestep.weight"]), "timesteps", axis=0)  # [B, K, h]
        parts = []
        for source, key in (("returns_to_go", "embed_return"), ("states", "embed_state"), ("actions", "embed_action")):
            e = g.op("Add", g.linear(source, t[f"{key}.weight"].T, t[f"{key}.bias"], key), time)
            parts.append(g.op("Unsqueeze", e, g.const([2], np.int64)))
        stacked = g.op("Reshape", g.op("Concat", *parts, axis=2), g.const([-1, 3 * K, h], np.int64))
    x = _layer_norm(g, stacked, t, "embed_ln", 1e-5, "embed_ln")
    with g.scope("wpe"):  # transformers feeds position ids of 0: wpe[0] on every token
        return g.op("Add", x, g.weight("row0", t["encoder.wpe.weight"][0]))


def attention_bias(g: GraphBuilder, K: int) -> str:
    """[B, 1, 3K, 3K] additive bias: causal, padding keys hidden, every token sees itself (never all -inf)."""
    n = 3 * K
    with g.scope("mask"):
        keys = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", "attention_mask", g.const([2], np.int64)),
                                     g.const([1, 1, 3], np.int64)), g.const([-1, 1, n], np.int64))  # [B, 1, 3K]
        allowed = g.op("Or", g.op("And", g.const(np.tril(np.ones((n, n), bool)), np.bool_),
                                  g.op("Cast", keys, to=onnx.TensorProto.BOOL)),
                       g.const(np.eye(n, dtype=bool), np.bool_))  # [B, 3K, 3K]
        bias = g.op("Where", allowed, g.const(0.0), g.const(-np.inf))
        return g.op("Unsqueeze", bias, g.const([1], np.int64))


def block(g: GraphBuilder, t: dict, bundle: DTBundle, i: int, x: str, bias: str) -> str:
    c, K = bundle.config, bundle.sidecar.context_length
    h, H = c.hidden_size, c.n_head
    hd, n, p = h // H, 3 * K, f"encoder.h.{i}."
    with g.scope(f"layers.{i}"):
        a = _layer_norm(g, x, t, p + "ln_1", c.layer_norm_epsilon, "ln_1")
        with g.scope("attn"):
            qkv = g.linear(a, t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"], "c_attn")
            q, k, v = (g.op("Transpose", g.op("Reshape", z, g.const([-1, n, H, hd], np.int64)), perm=[0, 2, 1, 3])
                       for z in g.op("Split", qkv, g.const([h, h, h], np.int64), axis=-1, outputs=3))
            scores = g.op("Add", g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])),
                                      g.const(1.0 / math.sqrt(hd))), bias)
            y = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # [B, H, 3K, hd]
            y = g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const([-1, n, h], np.int64))
            x = g.op("Add", x, g.linear(y, t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"], "c_proj"))
        m = _layer_norm(g, x, t, p + "ln_2", c.layer_norm_epsilon, "ln_2")
        with g.scope("mlp"):
            fc = _activation(g, g.linear(m, t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"], "c_fc"),
                             c.activation_function)
            return g.op("Add", x, g.linear(fc, t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"], "c_proj"))


def build_dt_window_graph(bundle: DTBundle, tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The exact windowed Decision Transformer step for ``bundle`` with weights ``tensors``."""
    c, K = bundle.config, bundle.sidecar.context_length
    g, t = GraphBuilder(), tensors
    x = token_embeddings(g, t, bundle)
    bias = attention_bias(g, K)
    for i in range(c.n_layer):
        x = block(g, t, bundle, i, x, bias)
    x = _layer_norm(g, x, t, "encoder.ln_f", c.layer_norm_epsilon, "ln_f")
    with g.scope("predict_action"):
        last_state = g.op("Squeeze", g.op("Gather", x, g.const([3 * K - 2], np.int64), axis=1),
                          g.const([1], np.int64))  # [B, h]: the last timestep's state token
        out = g.linear(last_state, t["predict_action.0.weight"].T, t["predict_action.0.bias"], "linear")
        g.op("Tanh" if c.action_tanh else "Identity", out, outputs=["action"])
    inputs, outputs = dt_io_spec(bundle.config, bundle.sidecar.context_length)
    return g.model("gptrl_dt_window", inputs, outputs, OPSET, IR_VERSION)
