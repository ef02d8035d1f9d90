"""The Decision Transformer's exact windowed graph, block by block, from a DT bundle's numpy tensors (no torch).

Inputs are the window ``gptrl.rollout.window.DTWindow`` keeps: ``states`` [B, K, S] (normalised), ``actions`` [B, K, A],
``returns_to_go`` [B, K, 1] (model units), ``timesteps`` [B, K] int64 and ``attention_mask`` [B, K] (1 = a real
step); the output ``action`` [B, A] is ``action_preds[:, -1]``, read at the last state token. K is fixed at export,
the batch is dynamic. Standard opset-18 ops only.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from gptrl.bundle.dt import DTBundle, dt_io_spec, dt_stateful_io_spec
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


WINDOW = {name: name for name in ("states", "actions", "returns_to_go", "timesteps", "attention_mask")}


def token_embeddings(g: GraphBuilder, t: dict, bundle: DTBundle, w: dict[str, str]) -> str:
    """(R_t, s_t, a_t) embeddings plus the timestep embedding, interleaved to [B, 3K, h], then embed_ln + wpe[0].

    ``w`` names the window tensors (graph inputs, or the stateful graph's updated window)."""
    c, K = bundle.config, bundle.sidecar.context_length
    h = c.hidden_size
    with g.scope("embed"):
        time = g.op("Gather", g.weight("timestep", t["embed_timestep.weight"]), w["timesteps"], axis=0)  # [B, K, h]
        parts = []
        for source, key in ((w["returns_to_go"], "embed_return"), (w["states"], "embed_state"),
                            (w["actions"], "embed_action")):
            e = g.op("Add", g.linear(source, t[f"{key}.weight"].T, t[f"{key}.bias"], key), time)
            parts.append(g.op("Unsqueeze", e, g.const([2], np.int64)))
        stacked = g.op("Reshape", g.op("Concat", *parts, axis=2), g.const([-1, 3 * K, h], np.int64))
    x = _layer_norm(g, stacked, t, "embed_ln", 1e-5, "embed_ln")
    with g.scope("wpe"):  # transformers feeds position ids of 0: wpe[0] on every token
        return g.op("Add", x, g.weight("row0", t["encoder.wpe.weight"][0]))


def attention_bias(g: GraphBuilder, K: int, mask: str = "attention_mask") -> str:
    """[B, 1, 3K, 3K] additive bias: causal, padding keys hidden, every token sees itself (never all -inf)."""
    n = 3 * K
    with g.scope("mask"):
        keys = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", mask, g.const([2], np.int64)),
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


def window_action(g: GraphBuilder, t: dict, bundle: DTBundle, w: dict[str, str], output: str) -> str:
    """The model on window ``w``: ``action_preds[:, -1]`` [B, A] named ``output``."""
    c, K = bundle.config, bundle.sidecar.context_length
    x = token_embeddings(g, t, bundle, w)
    bias = attention_bias(g, K, w["attention_mask"])
    for i in range(c.n_layer):
        x = block(g, t, bundle, i, x, bias)
    x = _layer_norm(g, x, t, "encoder.ln_f", c.layer_norm_epsilon, "ln_f")
    with g.scope("predict_action"):
        last_state = g.op("Squeeze", g.op("Gather", x, g.const([3 * K - 2], np.int64), axis=1),
                          g.const([1], np.int64))  # [B, h]: the last timestep's state token
        out = g.linear(last_state, t["predict_action.0.weight"].T, t["predict_action.0.bias"], "linear")
        return g.op("Tanh" if c.action_tanh else "Identity", out, outputs=[output])


def build_dt_window_graph(bundle: DTBundle, tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The exact windowed Decision Transformer step for ``bundle`` with weights ``tensors``."""
    g = GraphBuilder()
    window_action(g, tensors, bundle, WINDOW, "action")
    inputs, outputs = dt_io_spec(bundle.config, bundle.sidecar.context_length)
    return g.model("gptrl_dt_window", inputs, outputs, OPSET, IR_VERSION)


def build_dt_stateful_graph(bundle: DTBundle, tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``obs, reset, reward, target_return, state_in.* -> action, state_out.*``: the window bookkeeping of
    ``gptrl.rollout.window`` as graph ops, around the same windowed model.

    Per row: ``reset`` (or an all-zeros state) begins an episode with ``obs`` as s0 and the return-to-go
    ``target_return / scale``; otherwise the window slides by one and the new step is (obs, 0,
    R_prev - reward / scale, min(t_prev + 1, max_ep_len - 1)). The action the model gives fills the new step's
    action slot in ``state_out.actions``.
    """
    c, side = bundle.config, bundle.sidecar
    K, A = side.context_length, c.act_dim
    g, t = GraphBuilder(), tensors
    f32, i64, b = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL
    one, axis1 = g.const(1.0), g.const([1], np.int64)
    with g.scope("window"):
        bos = g.op("Max", g.op("Cast", "reset", to=f32), g.op("Sub", one, "state_in.started"))  # [B]
        keep = g.op("Sub", one, bos)
        keep3 = g.op("Unsqueeze", keep, g.const([1, 2], np.int64))  # [B, 1, 1]
        bos_b = g.op("Cast", bos, to=b)

        def slide(name: str, new: str) -> str:
            """Drop the oldest step (all of them for a beginning row) and append ``new`` [B, 1, ...]."""
            old = g.op("Mul", f"state_in.{name}", keep3 if name != "timesteps" and name != "mask" else
                       g.op("Unsqueeze", keep, axis1))
            return g.op("Concat", g.op("Slice", old, axis1, g.const([K], np.int64), axis1), new, axis=1)

        state = g.op("Unsqueeze", g.op("Div", g.op("Sub", "obs", g.weight("state_mean", bundle.state_mean)),
                                       g.weight("state_std", bundle.state_std)), axis1)  # [B, 1, S]
        last_rtg = g.op("Squeeze", g.op("Slice", "state_in.returns_to_go", g.const([K - 1], np.int64),
                                         g.const([K], np.int64), axis1), g.const([1, 2], np.int64))  # [B]
        inv_scale = g.const(1.0 / side.scale)
        rtg = g.op("Where", bos_b, g.op("Mul", "target_return", inv_scale),
                   g.op("Sub", last_rtg, g.op("Mul", "reward", inv_scale)))
        last_t = g.op("Squeeze", g.op("Slice", "state_in.timesteps", g.const([K - 1], np.int64),
                                       g.const([K], np.int64), axis1), axis1)  # [B]
        step_t = g.op("Where", bos_b, g.const(0.0), g.op("Min", g.op("Add", last_t, one),
                                                         g.const(float(c.max_ep_len - 1))))
        batch = g.op("Slice", g.op("Shape", "obs"), g.const([0], np.int64), g.const([1], np.int64))
        zeros_a = g.op("Expand", g.const(np.zeros((1, 1, A), np.float32)),
                       g.op("Concat", batch, g.const([1, A], np.int64), axis=0))
        ones_1 = g.op("Expand", g.const([[1.0]]), g.op("Concat", batch, g.const([1], np.int64), axis=0))
        w = {"states": slide("states", state),
             "actions": slide("actions", zeros_a),
             "returns_to_go": slide("returns_to_go", g.op("Unsqueeze", rtg, g.const([1, 2], np.int64))),
             "timesteps_f": slide("timesteps", g.op("Unsqueeze", step_t, axis1)),
             "attention_mask": slide("mask", ones_1)}
        w["timesteps"] = g.op("Cast", w["timesteps_f"], to=i64)
    action = window_action(g, t, bundle, w, "action")
    with g.scope("state_out"):
        for name, value in (("states", w["states"]), ("returns_to_go", w["returns_to_go"]),
                            ("timesteps", w["timesteps_f"]), ("mask", w["attention_mask"])):
            g.op("Identity", value, outputs=[f"state_out.{name}"])
        g.op("Concat", g.op("Slice", w["actions"], g.const([0], np.int64), g.const([K - 1], np.int64), axis1),
             g.op("Unsqueeze", action, axis1), axis=1, outputs=["state_out.actions"])
        g.op("Max", "state_in.started", bos, outputs=["state_out.started"])
    inputs, outputs = dt_stateful_io_spec(c, K)
    return g.model("gptrl_dt_stateful", inputs, outputs, OPSET, IR_VERSION)
