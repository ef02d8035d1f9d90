"""Building the single-step policy graph in ONNX, op by op, from a bundle's weights.

Like onnxruntime-genai's model builder, the graph is written by hand so its cache layout
is explicit and the same weights can target two op sets:

``portable`` (opset 18, any ONNX runtime)
    inputs   state [B, S], action [B, A], is_bos [B] (float 0/1), position [B] int64,
             past_valid [B, P] bool, past_key.{i} [B, H, hd, P] (keys stored transposed),
             past_value.{i} [B, H, P, hd]
    outputs  action_out [B, A], value [B], termination_prob [B],
             new_key.{i} [B, H, hd], new_value.{i} [B, H, hd]
    The new token attends to the P cached slots the mask allows plus itself; the runtime
    writes the new key/value into the ring slot it owns (``cache[..., slot] = new``).

``attention`` (opset 24: RotaryEmbedding, Attention, TensorScatter; the default)
    inputs   state, action, is_bos, position as above, write_index [B] int64,
             attn_mask [B, R] bool (R = ring slots incl. the one being written),
             past_key.{i} / past_value.{i} [B, H, R, hd]
    outputs  action_out, value, termination_prob, present_key.{i} / present_value.{i} [B, H, R, hd]
    TensorScatter writes the new key/value at write_index (in place when the runtime binds
    present to past's buffer), then Attention reads the ring. The ring has kv+1 slots so the
    new token still sees kv cached entries plus itself.

State normalisation and the action encoding (atanh feedback, tanh squashing) are inside the
graph; batch and cache length are dynamic.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gptrl.bundle import Bundle
from gptrl.exporter.model import ACTION_CLIP_EPS, GPT2_NORM_EPS, LLAMA_NORM_EPS

VARIANTS = {"portable": 18, "attention": 24}
# onnxruntime reads IR versions up to 10 for these opsets; newer onnx packages default higher.
IR_VERSION = {"portable": 8, "attention": 10}


class _Graph:
    """A tiny builder: numbered intermediate names, initializers from numpy."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def weight(self, name: str, array: np.ndarray, dtype=np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def const(self, values, dtype=np.float32) -> str:
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(self._name("const"), array, dtype)
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, **attrs) -> str | list[str]:
        names = outputs if isinstance(outputs, list) else [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if len(names) == 1 else names

    # -- composites -----------------------------------------------------------

    def linear(self, x: str, weight_in_out: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        y = self.op("MatMul", x, self.weight(f"{name}.weight", weight_in_out))
        return self.op("Add", y, self.weight(f"{name}.bias", bias)) if bias is not None else y

    def rms_norm(self, x: str, weight: np.ndarray, name: str) -> str:
        # Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul: the pattern onnxruntime fuses.
        ms = self.op("ReduceMean", self.op("Pow", x, self.const(2.0)), self.const([-1], np.int64), keepdims=1)
        normed = self.op("Div", x, self.op("Sqrt", self.op("Add", ms, self.const(LLAMA_NORM_EPS))))
        return self.op("Mul", normed, self.weight(f"{name}.weight", weight))

    def layer_norm(self, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
        return self.op("LayerNormalization", x, self.weight(f"{name}.weight", weight), self.weight(f"{name}.bias", bias),
                       axis=-1, epsilon=GPT2_NORM_EPS)

    def gelu_tanh(self, x: str) -> str:
        cube = self.op("Mul", self.op("Mul", x, x), x)
        inner = self.op("Mul", self.op("Add", x, self.op("Mul", cube, self.const(0.044715))), self.const(math.sqrt(2.0 / math.pi)))
        return self.op("Mul", self.op("Mul", x, self.const(0.5)), self.op("Add", self.op("Tanh", inner), self.const(1.0)))

    def slice_last(self, x: str, start: int, end: int) -> str:
        return self.op("Slice", x, self.const([start], np.int64), self.const([end], np.int64), self.const([-1], np.int64))


def build_step_graph(bundle: Bundle, variant: str = "attention") -> onnx.ModelProto:
    """The one-step graph for ``bundle`` (see the module docstring for its signature)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    c, m, t = bundle.config, bundle.config.model, bundle.tensors
    S, A, d, H, hd = c.state_dim, c.action_dim, m.d_model, m.num_heads, m.head_dim
    g = _Graph()
    attention_op = variant == "attention"

    # -- token: [s_norm | atanh(action) * (1 - bos) | bos] -> d_model --------------
    states = "state"
    if bundle.normalizer.enabled:
        states = g.op("Div", g.op("Sub", "state", g.weight("state_mean", bundle.normalizer.mean)),
                      g.weight("state_std", bundle.normalizer.std))
    low, high = c.action_low, c.action_high
    unit = g.op("Sub", g.op("Div", g.op("Mul", g.op("Sub", "action", g.weight("action_low", low)), g.const(2.0)),
                            g.weight("action_range", high - low)), g.const(1.0))
    clipped = g.op("Clip", unit, g.const(-1.0 + ACTION_CLIP_EPS), g.const(1.0 - ACTION_CLIP_EPS))
    bos = g.op("Unsqueeze", "is_bos", g.const([1], np.int64))
    feedback = g.op("Mul", g.op("Atanh", clipped), g.op("Sub", g.const(1.0), bos))
    token = g.op("Concat", states, feedback, bos, axis=1)
    token = g.op("Unsqueeze", token, g.const([1], np.int64))  # [B, 1, F]: one token per row
    h = g.linear(token, t["input_proj.layers.0.weight"].T, t["input_proj.layers.0.bias"], "input_proj")

    # -- per-step shared tensors: mask and positions --------------------------------
    if attention_op:
        mask = g.op("Unsqueeze", "attn_mask", g.const([1, 2], np.int64))  # [B, 1, 1, R]
    else:
        batch = g.op("Slice", g.op("Shape", "state"), g.const([0], np.int64), g.const([1], np.int64))
        self_valid = g.op("Expand", g.const([[True]], np.bool_), g.op("Concat", batch, g.const([1], np.int64), axis=0))
        mask = g.op("Unsqueeze", g.op("Concat", "past_valid", self_valid, axis=1), g.const([1, 2], np.int64))  # [B,1,1,P+1]
    if m.network == "llama":
        inv_freq = 1.0 / (m.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
        freqs = g.op("Mul", g.op("Unsqueeze", g.op("Cast", "position", to=TensorProto.FLOAT), g.const([1], np.int64)),
                     g.weight("rope_inv_freq", inv_freq.astype(np.float32)))  # [B, hd/2]
        if attention_op:  # RotaryEmbedding takes half-width tables [B, 1, hd/2]
            angles = g.op("Unsqueeze", freqs, g.const([1], np.int64))
        else:
            angles = g.op("Reshape", g.op("Concat", freqs, freqs, axis=1), g.const([-1, 1, 1, hd], np.int64))
        cos, sin = g.op("Cos", angles), g.op("Sin", angles)
        prefix = "backbone.net.layers"
    else:
        wpe = g.op("Gather", g.weight("wpe", t["backbone.net.wpe.weight"]), "position", axis=0)
        h = g.op("Add", h, g.op("Unsqueeze", wpe, g.const([1], np.int64)))
        prefix = "backbone.net.h"

    def rope(x: str) -> str:
        if attention_op:
            return g.op("RotaryEmbedding", x, cos, sin)
        rotated = g.op("Concat", g.op("Neg", g.slice_last(x, hd // 2, hd)), g.slice_last(x, 0, hd // 2), axis=-1)
        return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rotated, sin))

    heads_shape = g.const([-1, H, 1, hd], np.int64)
    outputs: list[tuple[str, list]] = []
    inputs: list[tuple[str, int, list]] = []
    for i in range(m.num_layers):
        p = f"{prefix}.{i}."
        if m.network == "llama":
            x = g.rms_norm(h, t[p + "input_layernorm.weight"], p + "input_layernorm")
            w_qkv = np.concatenate([t[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], axis=0).T
            qkv = g.linear(x, w_qkv, None, p + "self_attn.qkv_proj")
        else:
            x = g.layer_norm(h, t[p + "ln_1.weight"], t[p + "ln_1.bias"], p + "ln_1")
            qkv = g.linear(x, t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"], p + "attn.c_attn")
        q, k, v = g.op("Split", qkv, g.const([d, d, d], np.int64), axis=-1, outputs=3)  # [B, 1, d] each
        q, k, v = (g.op("Reshape", z, heads_shape) for z in (q, k, v))  # [B, H, 1, hd]: no copy for one token
        if m.network == "llama":
            q, k = rope(q), rope(k)
        if attention_op:
            past_k, past_v = f"past_key.{i}", f"past_value.{i}"
            inputs += [(past_k, TensorProto.FLOAT, ["batch", H, "ring", hd]), (past_v, TensorProto.FLOAT, ["batch", H, "ring", hd])]
            present_k = g.op("TensorScatter", past_k, k, "write_index", outputs=[f"present_key.{i}"])
            present_v = g.op("TensorScatter", past_v, v, "write_index", outputs=[f"present_value.{i}"])
            outputs += [(present_k, ["batch", H, "ring", hd]), (present_v, ["batch", H, "ring", hd])]
            y = g.op("Attention", q, present_k, present_v, mask)  # [B, H, 1, hd]
        else:
            past_k, past_v = f"past_key.{i}", f"past_value.{i}"
            inputs += [(past_k, TensorProto.FLOAT, ["batch", H, hd, "cache"]), (past_v, TensorProto.FLOAT, ["batch", H, "cache", hd])]
            qs = g.op("Mul", q, g.const(1.0 / math.sqrt(hd)))
            scores_past = g.op("MatMul", qs, past_k)  # [B, H, 1, P]
            score_self = g.op("ReduceSum", g.op("Mul", qs, k), g.const([-1], np.int64), keepdims=1)
            scores = g.op("Where", mask, g.op("Concat", scores_past, score_self, axis=-1), g.const(-np.inf))
            probs = g.op("Softmax", scores, axis=-1)
            y = g.op("Add", g.op("MatMul", g.slice_last(probs, 0, -1), past_v),
                     g.op("Mul", g.slice_last(probs, -1, 2**62), v))
            token_axis = g.const([2], np.int64)
            g.op("Squeeze", k, token_axis, outputs=[f"new_key.{i}"])
            g.op("Squeeze", v, token_axis, outputs=[f"new_value.{i}"])
            outputs += [(f"new_key.{i}", ["batch", H, hd]), (f"new_value.{i}", ["batch", H, hd])]
        y = g.op("Reshape", y, g.const([-1, 1, d], np.int64))
        if m.network == "llama":
            h = g.op("Add", h, g.linear(y, t[p + "self_attn.o_proj.weight"].T, None, p + "self_attn.o_proj"))
            x = g.rms_norm(h, t[p + "post_attention_layernorm.weight"], p + "post_attention_layernorm")
            inter = m.intermediate_size
            w_gate_up = np.concatenate([t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"]], axis=0).T
            gate, up = g.op("Split", g.linear(x, w_gate_up, None, p + "mlp.gate_up_proj"), g.const([inter, inter], np.int64), axis=-1, outputs=2)
            act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
            h = g.op("Add", h, g.linear(act, t[p + "mlp.down_proj.weight"].T, None, p + "mlp.down_proj"))
        else:
            h = g.op("Add", h, g.linear(y, t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"], p + "attn.c_proj"))
            x = g.layer_norm(h, t[p + "ln_2.weight"], t[p + "ln_2.bias"], p + "ln_2")
            fc = g.gelu_tanh(g.linear(x, t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"], p + "mlp.c_fc"))
            h = g.op("Add", h, g.linear(fc, t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"], p + "mlp.c_proj"))
    if m.network == "llama":
        h = g.rms_norm(h, t["backbone.net.norm.weight"], "backbone.net.norm")
    else:
        h = g.layer_norm(h, t["backbone.net.ln_f.weight"], t["backbone.net.ln_f.bias"], "backbone.net.ln_f")

    # -- heads: mu, value and termination share one matmul ---------------------------
    used = [0, 2] + ([3] if m.use_eos else [])
    w = np.concatenate([t[f"output_head.{k}.layers.1.weight"] for k in used], axis=0).T
    b = np.concatenate([t[f"output_head.{k}.layers.1.bias"] for k in used], axis=0)
    out = g.op("Squeeze", g.linear(g.op("Relu", h), w, b, "output_heads"), g.const([1], np.int64))  # [B, A + 2]
    mu = g.slice_last(out, 0, A)
    g.op("Add", g.op("Mul", g.op("Tanh", mu), g.weight("action_half_range", (high - low) / 2)),
         g.weight("action_mid", (high + low) / 2), outputs=["action_out"])
    last = g.const([-1], np.int64)
    g.op("Squeeze", g.slice_last(out, A, A + 1), last, outputs=["value"])
    if m.use_eos:
        g.op("Squeeze", g.op("Sigmoid", g.slice_last(out, A + 1, A + 2)), last, outputs=["termination_prob"])
    else:
        g.op("Mul", "value", g.const(0.0), outputs=["termination_prob"])

    graph_inputs = [
        helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", S]),
        helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", A]),
        helper.make_tensor_value_info("is_bos", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("position", TensorProto.INT64, ["batch"]),
    ]
    if attention_op:
        graph_inputs += [
            helper.make_tensor_value_info("write_index", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("attn_mask", TensorProto.BOOL, ["batch", "ring"]),
        ]
    else:
        graph_inputs.append(helper.make_tensor_value_info("past_valid", TensorProto.BOOL, ["batch", "cache"]))
    graph_inputs += [helper.make_tensor_value_info(n, ty, shape) for n, ty, shape in inputs]
    graph_outputs = [
        helper.make_tensor_value_info("action_out", TensorProto.FLOAT, ["batch", A]),
        helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("termination_prob", TensorProto.FLOAT, ["batch"]),
    ] + [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in outputs]
    graph = helper.make_graph(g.nodes, "gptrl_policy_step", graph_inputs, graph_outputs, g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", VARIANTS[variant])], ir_version=IR_VERSION[variant],
        producer_name="gptrl",
    )
    return model
