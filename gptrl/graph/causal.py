"""The Causal GPT-RL single-step graph, block by block, from a bundle's numpy weights.

Like onnxruntime-genai's model builder, the graph is written by hand so its cache layout is explicit and the same
weights can target several op sets (I/O in ``gptrl.bundle.policy_graph.io_spec``, layouts in docs/format.md). Each
variant is a :class:`Variant`: the functions that differ between them, chosen once.

``portable`` (opset 18, any ONNX runtime)
    The new token attends to the P cached slots ``past_valid`` allows plus itself; keys are stored transposed
    ``[B, H, hd, P]``. The graph returns the new key/value and the runtime writes them into the ring slot it owns.
``attention`` (opset 24: RotaryEmbedding, Attention, TensorScatter; the default)
    TensorScatter writes the new key/value at ``write_index`` (in place when the runtime binds present to past's
    buffer), then Attention reads the ring of kv + 1 slots under ``attn_mask``.
``stateful`` (opset 18, standard ops only; docs/stateful.md)
    ``obs, reset, uniform, sample, state_in.* -> action, log_prob, dist, value, termination_prob, state_out.*``: the
    graph does the ring, mask and position bookkeeping itself (per row, as a one-env runner), so any ONNX runtime
    drives it by feeding each ``state_out.X`` back as ``state_in.X``. The cache length is fixed at export.

The observation's features (the normaliser) and the action codec (its feedback, its distribution: greedy action, a
sample from the ``uniform`` input, the log-probability) are inside the graph, written by the codecs themselves
(``gptrl.bundle.codecs`` through ``gptrl.graph.ops``); batch and cache length are dynamic. Each block below is one
function; node names say where they sit (``/layers.0/attn/qkv_proj/MatMul``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from gptrl.bundle import Bundle
from gptrl.bundle.policy_graph import VARIANT_OPSETS, io_spec
from gptrl.bundle.schema import GPT2_NORM_EPS, LLAMA_NORM_EPS
from gptrl.bundle.weights import TERMINATION_HEAD, VALUE_HEAD, encoder_tensors, head_sizes
from gptrl.graph.builder import GraphBuilder
from gptrl.graph.ops import GraphOps

# onnxruntime reads IR versions up to 10 for these opsets; newer onnx packages default higher.
IR_VERSION = {"portable": 8, "attention": 10, "stateful": 8}
INT64_MAX = int(np.iinfo(np.int64).max)  # "to the end" in Slice; runtimes clamp it (tract refuses 2**62 + symbols)


@dataclass
class _Step:
    """What every layer of one step shares."""

    g: GraphBuilder
    bundle: Bundle
    variant: Variant
    mask: str = ""  # [B, 1, 1, slots] bool (an additive 0 / -inf float bias in the stateful graph)
    cos: str = ""  # RoPE tables (Llama)
    sin: str = ""
    # The token's inputs: raw observation [B, S], env-unit action [B, *action], BOS flag [B] float, position [B].
    state: str = "state"
    action: str = "action"
    is_bos: str = "is_bos"
    position: str = "position"
    write: str = ""  # stateful: [B, 1, 1, kv] bool, the ring slot each row writes this step
    write_t: str = ""  # stateful: the same as [B, 1, kv, 1]
    max_position: int = 0  # stateful: the largest position a token can have (kv)

    @property
    def t(self) -> dict[str, np.ndarray]:
        return self.bundle.tensors

    @property
    def ops(self) -> GraphOps:
        return GraphOps(self.g)


# -- blocks -------------------------------------------------------------------------------------------------------


def _token(s: _Step, states: str) -> str:
    """[B, 1, F] token: [observation features | action feedback * (1 - bos) | bos]."""
    g, ops, action = s.g, s.ops, s.bundle.config.action
    bos = g.op("Unsqueeze", s.is_bos, g.const([1], np.int64))
    feedback = g.op("Mul", action.feedback(ops, s.action), g.op("Sub", g.const(1.0), bos))
    return g.op("Unsqueeze", g.op("Concat", states, feedback, bos, axis=1), g.const([1], np.int64))


def _encoder_params(s: _Step) -> dict[str, str] | None:
    """The observation encoder's own weights as initializers (``input.state_encoder.<name>``), None without any."""
    found = encoder_tensors(s.t, s.bundle.config.observation)
    return {name: s.g.weight(f"state_encoder.{name}", array) for name, array in found.items()} if found else None


def token_input(s: _Step) -> str:
    """The token's features -> input_proj -> h [B, 1, d]; the normaliser as graph ops."""
    g, encoder, norm = s.g, s.bundle.config.observation, s.bundle.normalizer
    with g.scope("input"):
        mean, std = (g.weight("state_mean", norm.mean), g.weight("state_std", norm.std)) if norm.enabled else (None,
                                                                                                              None)
        token = _token(s, encoder.features(s.ops, s.state, mean, std, params=_encoder_params(s)))
    return g.linear(token, s.t["input_proj.layers.0.weight"].T, s.t["input_proj.layers.0.bias"], "input_proj")


# Folding x / std into the weights and -mean / std into the bias makes float32 subtract two terms of size |mean / std|
# times the weights; above this many (Humanoid's reach 8907) the difference loses too many bits, so the normaliser
# stays as graph ops.
FOLD_LIMIT = 16.0


def token_input_folded(s: _Step) -> str:
    """The same token with the normaliser folded into input_proj's weights and bias (fewer nodes; equal up to float
    rounding), where every |mean / std| is at most ``FOLD_LIMIT``; otherwise :func:`token_input`."""
    g, encoder, norm = s.g, s.bundle.config.observation, s.bundle.normalizer
    ratio = np.abs(np.asarray(norm.mean, np.float64) / np.asarray(norm.std, np.float64)) if norm.enabled else 0.0
    if np.max(ratio) > FOLD_LIMIT:
        return token_input(s)
    w = s.t["input_proj.layers.0.weight"].astype(np.float64).T  # [F, d]
    b = s.t["input_proj.layers.0.bias"].astype(np.float64)
    if norm.enabled:
        w, b = encoder.fold(w, b, norm.mean, norm.std)
    with g.scope("input"):
        token = _token(s, encoder.features(s.ops, s.state, params=_encoder_params(s)))
    return g.linear(token, w.astype(np.float32), b.astype(np.float32), "input_proj")


def ring_mask(s: _Step) -> None:
    """``attention``: the [B, 1, 1, slots] mask every layer uses is the ring's validity as given."""
    with s.g.scope("mask"):
        s.mask = s.g.op("Unsqueeze", "attn_mask", s.g.const([1, 2], np.int64))


def portable_mask(s: _Step) -> None:
    """``portable``: the cached slots ``past_valid`` allows, plus the new token itself."""
    g = s.g
    with g.scope("mask"):
        batch = g.op("Slice", g.op("Shape", "is_bos"), g.const([0], np.int64), g.const([1], np.int64))
        self_valid = g.op("Expand", g.const([[True]], np.bool_), g.op("Concat", batch, g.const([1], np.int64), axis=0))
        s.mask = g.op("Unsqueeze", g.op("Concat", "past_valid", self_valid, axis=1), g.const([1, 2], np.int64))


def _inv_freq(s: _Step) -> str:
    m = s.bundle.config.model
    hd = m.head_dim
    inv_freq = 1.0 / (m.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    position = s.g.op("Unsqueeze", s.g.op("Cast", s.position, to=onnx.TensorProto.FLOAT), s.g.const([1], np.int64))
    return s.g.op("Mul", position, s.g.weight("inv_freq", inv_freq.astype(np.float32)))  # [B, hd/2]


def rope_tables_fused(s: _Step) -> None:
    """cos/sin [B, 1, hd/2] of the new token's position, for RotaryEmbedding."""
    g = s.g
    with g.scope("rope"):
        angles = g.op("Unsqueeze", _inv_freq(s), g.const([1], np.int64))
        s.cos, s.sin = g.op("Cos", angles), g.op("Sin", angles)


def rope_tables_plain(s: _Step) -> None:
    """cos/sin [B, 1, 1, hd] of the new token's position, for the plain rotation."""
    g, hd = s.g, s.bundle.config.model.head_dim
    with g.scope("rope"):
        freqs = _inv_freq(s)
        angles = g.op("Reshape", g.op("Concat", freqs, freqs, axis=1), g.const([-1, 1, 1, hd], np.int64))
        s.cos, s.sin = g.op("Cos", angles), g.op("Sin", angles)


def rope_tables_lookup(s: _Step) -> None:
    """Positions are 0..kv in a stateful graph: cos/sin [B, 1, 1, hd] looked up in tables computed in float64."""
    g, m = s.g, s.bundle.config.model
    hd = m.head_dim
    with g.scope("rope"):
        freqs = np.arange(s.max_position + 1)[:, None] / m.rope_theta ** (np.arange(0, hd, 2) / hd)[None, :]
        angles = np.concatenate([freqs, freqs], axis=1)  # [positions, hd]
        shape = g.const([-1, 1, 1, hd], np.int64)
        s.cos, s.sin = (g.op("Reshape", g.op("Gather", g.const(table(angles)), s.position, axis=0), shape)
                        for table in (np.cos, np.sin))


def positional_embedding(s: _Step, h: str) -> str:
    """GPT2: h + wpe[position]."""
    g = s.g
    with g.scope("wpe"):
        wpe = g.op("Gather", g.weight("weight", s.t["backbone.net.wpe.weight"]), s.position, axis=0)
        return g.op("Add", h, g.op("Unsqueeze", wpe, g.const([1], np.int64)))


def rms_norm(g: GraphBuilder, x: str, weight: np.ndarray, name: str) -> str:
    # Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul: the pattern onnxruntime fuses into SimplifiedLayerNormalization.
    with g.scope(name):
        ms = g.op("ReduceMean", g.op("Pow", x, g.const(2.0)), g.const([-1], np.int64), keepdims=1)
        normed = g.op("Div", x, g.op("Sqrt", g.op("Add", ms, g.const(LLAMA_NORM_EPS))))
        return g.op("Mul", normed, g.weight("weight", weight))


def layer_norm(g: GraphBuilder, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
    with g.scope(name):
        return g.op("LayerNormalization", x, g.weight("weight", weight), g.weight("bias", bias), axis=-1,
                    epsilon=GPT2_NORM_EPS)


def rope_fused(s: _Step, x: str) -> str:
    return s.g.op("RotaryEmbedding", x, s.cos, s.sin)


def _rotate(s: _Step, x: str, rotated: str) -> str:
    return s.g.op("Add", s.g.op("Mul", x, s.cos), s.g.op("Mul", rotated, s.sin))


def rope_plain(s: _Step, x: str) -> str:
    """rotate_half as Slice, Neg and Concat."""
    g, hd = s.g, s.bundle.config.model.head_dim
    return _rotate(s, x, g.op("Concat", g.op("Neg", g.slice_last(x, hd // 2, hd)), g.slice_last(x, 0, hd // 2),
                              axis=-1))


def rope_matmul(s: _Step, x: str) -> str:
    """rotate_half as one MatMul with a signed permutation: 1 node instead of 4."""
    hd = s.bundle.config.model.head_dim
    half = hd // 2
    rotation = np.zeros((hd, hd), np.float32)
    rotation[np.arange(half) + half, np.arange(half)] = -1.0  # out[:half] = -x[half:]
    rotation[np.arange(half), np.arange(half) + half] = 1.0  # out[half:] = x[:half]
    return _rotate(s, x, s.g.op("MatMul", x, s.g.const(rotation)))


def attend_ring(s: _Step, i: int, q: str, k: str, v: str) -> str:
    """``attention`` variant: scatter k/v into the ring at write_index, then Attention over the ring."""
    g = s.g
    present_k = g.op("TensorScatter", f"past_key.{i}", k, "write_index", outputs=[f"present_key.{i}"])
    present_v = g.op("TensorScatter", f"past_value.{i}", v, "write_index", outputs=[f"present_value.{i}"])
    return g.op("Attention", q, present_k, present_v, s.mask)


def attend_portable(s: _Step, i: int, q: str, k: str, v: str) -> str:
    """``portable`` variant: softmax over [cached slots | the new token], with plain MatMuls; k/v go out."""
    g, hd = s.g, s.bundle.config.model.head_dim
    qs = g.op("Mul", q, g.const(1.0 / math.sqrt(hd)))
    scores_past = g.op("MatMul", qs, f"past_key.{i}")  # [B, H, 1, P]
    score_self = g.op("ReduceSum", g.op("Mul", qs, k), g.const([-1], np.int64), keepdims=1)
    scores = g.op("Where", s.mask, g.op("Concat", scores_past, score_self, axis=-1), g.const(-np.inf))
    probs = g.op("Softmax", scores, axis=-1)
    y = g.op("Add", g.op("MatMul", g.slice_last(probs, 0, -1), f"past_value.{i}"),
             g.op("Mul", g.slice_last(probs, -1, INT64_MAX), v))
    token_axis = g.const([2], np.int64)
    g.op("Squeeze", k, token_axis, outputs=[f"new_key.{i}"])
    g.op("Squeeze", v, token_axis, outputs=[f"new_value.{i}"])
    return y


def attend_state(s: _Step, i: int, q: str, k: str, v: str) -> str:
    """``stateful`` variant: softmax over [the ring | the new token] with the step's additive mask (``s.mask`` is a
    0 / -inf bias here, and q arrives pre-scaled by 1/sqrt(hd) through its weights), then k/v go to the row's slot."""
    g, m = s.g, s.bundle.config.model
    H, hd = m.num_heads, m.head_dim
    past_k, past_v = f"state_in.key.{i}", f"state_in.value.{i}"  # [B, H, hd, kv], [B, H, kv, hd]
    k_column = g.op("Reshape", k, g.const([-1, H, hd, 1], np.int64))  # [B, H, 1, hd] -> [B, H, hd, 1]: no copy
    scores = g.op("MatMul", q, g.op("Concat", past_k, k_column, axis=-1))  # [B, H, 1, kv + 1]
    probs = g.op("Softmax", g.op("Add", scores, s.mask), axis=-1)
    y = g.op("MatMul", probs, g.op("Concat", past_v, v, axis=2))  # [B, H, 1, hd]
    with g.scope("write"):  # Where, not arithmetic: the untouched slots stay bit-exact
        g.op("Where", s.write, k_column, past_k, outputs=[f"state_out.key.{i}"])
        g.op("Where", s.write_t, v, past_v, outputs=[f"state_out.value.{i}"])
    return y


def split_heads(s: _Step, qkv: str) -> tuple[str, str, str]:
    """[B, 1, 3d] -> q, k, v [B, H, 1, hd], RoPE on q and k (Llama)."""
    g, m = s.g, s.bundle.config.model
    d, H, hd = m.d_model, m.num_heads, m.head_dim
    q, k, v = g.op("Split", qkv, g.const([d, d, d], np.int64), axis=-1, outputs=3)  # [B, 1, d] each
    heads = g.const([-1, H, 1, hd], np.int64)
    q, k, v = (g.op("Reshape", z, heads) for z in (q, k, v))  # [B, H, 1, hd]: no copy for one token
    if m.network == "llama":
        with g.scope("rope"):
            q, k = s.variant.rope(s, q), s.variant.rope(s, k)
    return q, k, v


def split_heads_stacked(s: _Step, qkv: str) -> tuple[str, str, str]:
    """The same with one Reshape, one Split, and RoPE on q and k together."""
    g, m = s.g, s.bundle.config.model
    H, hd = m.num_heads, m.head_dim
    heads3 = g.op("Reshape", qkv, g.const([-1, 3 * H, 1, hd], np.int64))  # [B, 3H, 1, hd]
    qk, v = g.op("Split", heads3, g.const([2 * H, H], np.int64), axis=1, outputs=2)
    if m.network == "llama":
        with g.scope("rope"):
            qk = s.variant.rope(s, qk)
    q, k = g.op("Split", qk, g.const([H, H], np.int64), axis=1, outputs=2)
    return q, k, v


def attention(s: _Step, i: int, x: str) -> str:
    """Self-attention of layer i on the normed input x [B, 1, d]; returns its output projection [B, 1, d]."""
    g, m, t, v_ = s.g, s.bundle.config.model, s.t, s.variant
    d, hd = m.d_model, m.head_dim
    with g.scope("attn"):
        # A variant may fold the 1/sqrt(hd) score scale into q's weights (RoPE is linear, so it commutes).
        q_scale = np.float32(1.0 / math.sqrt(hd)) if v_.fold_q_scale else np.float32(1.0)
        if m.network == "llama":
            p = f"backbone.net.layers.{i}.self_attn."
            w_qkv = np.concatenate([t[p + "q_proj.weight"] * q_scale, t[p + "k_proj.weight"], t[p + "v_proj.weight"]],
                                   axis=0).T
            qkv = g.linear(x, w_qkv, None, "qkv_proj")
        else:
            p = f"backbone.net.h.{i}.attn."
            w, b = t[p + "c_attn.weight"].copy(), t[p + "c_attn.bias"].copy()
            w[:, :d] *= q_scale
            b[:d] *= q_scale
            qkv = g.linear(x, w, b, "c_attn")
        y = v_.attend(s, i, *v_.split_heads(s, qkv))
        y = g.op("Reshape", y, g.const([-1, 1, d], np.int64))
        if m.network == "llama":
            return g.linear(y, t[p + "o_proj.weight"].T, None, "o_proj")
        return g.linear(y, t[p + "c_proj.weight"], t[p + "c_proj.bias"], "c_proj")


def llama_mlp(s: _Step, i: int, x: str) -> str:
    """SwiGLU with gate and up fused into one MatMul."""
    g, t, inter = s.g, s.t, s.bundle.config.model.intermediate_size
    p = f"backbone.net.layers.{i}.mlp."
    with g.scope("mlp"):
        w_gate_up = np.concatenate([t[p + "gate_proj.weight"], t[p + "up_proj.weight"]], axis=0).T
        gate, up = g.op("Split", g.linear(x, w_gate_up, None, "gate_up_proj"), g.const([inter, inter], np.int64),
                        axis=-1, outputs=2)
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
        return g.linear(act, t[p + "down_proj.weight"].T, None, "down_proj")


def gpt2_mlp(s: _Step, i: int, x: str) -> str:
    """c_fc -> gelu (tanh approximation) -> c_proj."""
    g, t = s.g, s.t
    p = f"backbone.net.h.{i}.mlp."
    with g.scope("mlp"):
        h = g.linear(x, t[p + "c_fc.weight"], t[p + "c_fc.bias"], "c_fc")
        with g.scope("gelu"):
            inner = g.op("Mul", g.op("Add", h, g.op("Mul", g.op("Mul", g.op("Mul", h, h), h), g.const(0.044715))),
                         g.const(math.sqrt(2.0 / math.pi)))
            h = g.op("Mul", g.op("Mul", h, g.const(0.5)), g.op("Add", g.op("Tanh", inner), g.const(1.0)))
        return g.linear(h, t[p + "c_proj.weight"], t[p + "c_proj.bias"], "c_proj")


def decoder_layer(s: _Step, i: int, h: str) -> str:
    """Pre-norm residual block: h + attn(norm(h)), then + mlp(norm(h))."""
    g, t, llama = s.g, s.t, s.bundle.config.model.network == "llama"
    with g.scope(f"layers.{i}"):
        if llama:
            p = f"backbone.net.layers.{i}."
            h = g.op("Add", h, attention(s, i, rms_norm(g, h, t[p + "input_layernorm.weight"], "input_layernorm")))
            x = rms_norm(g, h, t[p + "post_attention_layernorm.weight"], "post_attention_layernorm")
            return g.op("Add", h, llama_mlp(s, i, x))
        p = f"backbone.net.h.{i}."
        h = g.op("Add", h, attention(s, i, layer_norm(g, h, t[p + "ln_1.weight"], t[p + "ln_1.bias"], "ln_1")))
        return g.op("Add", h, gpt2_mlp(s, i, layer_norm(g, h, t[p + "ln_2.weight"], t[p + "ln_2.bias"], "ln_2")))


def final_norm(s: _Step, h: str) -> str:
    g, t = s.g, s.t
    if s.bundle.config.model.network == "llama":
        return rms_norm(g, h, t["backbone.net.norm.weight"], "norm")
    return layer_norm(g, h, t["backbone.net.ln_f.weight"], t["backbone.net.ln_f.bias"], "ln_f")


def heads(s: _Step, h: str) -> str:
    """The policy heads, value and termination share one MatMul; the action codec turns the policy heads into the
    distribution's parameters (``dist``), the action given back (greedy, or a sample from ``uniform`` where
    ``sample`` is set) and its ``log_prob`` (read from the latent the action came from). Returns the action's
    name."""
    g, c, t, ops = s.g, s.bundle.config, s.t, s.ops
    codec, names = c.action, s.variant.outputs
    sizes = head_sizes(c.model, codec)
    with g.scope("heads"):
        w = np.concatenate([t[f"output_head.{k}.layers.1.weight"] for k in sizes], axis=0).T
        b = np.concatenate([t[f"output_head.{k}.layers.1.bias"] for k in sizes], axis=0)
        out = g.op("Squeeze", g.linear(g.op("Relu", h), w, b, "output_heads"), g.const([1], np.int64))  # [B, sum]
        columns, start = {}, 0
        for k, n in sizes.items():
            columns[k], start = ops.slice(out, start, start + n), start + n
        params = codec.params(ops, {k: columns[k] for k in codec.heads})
        g.op("Identity", params, outputs=["dist"])
        with g.scope("sample"):
            drawn = codec.sample_latent(ops, params, "uniform")
            rows = "sample" if not codec.shape else g.op("Unsqueeze", "sample", g.const([-1], np.int64))
            latent = g.op("Where", rows, drawn, codec.greedy_latent(ops, params))
        action = g.op("Identity", codec.action_of(ops, latent), outputs=[names["action"]])
        with g.scope("log_prob"):
            g.op("Identity", codec.latent_log_prob(ops, params, latent), outputs=["log_prob"])
        last = g.const([-1], np.int64)
        g.op("Squeeze", columns[VALUE_HEAD], last, outputs=["value"])
        if TERMINATION_HEAD in columns:
            g.op("Squeeze", g.op("Sigmoid", columns[TERMINATION_HEAD]), last, outputs=["termination_prob"])
        elif names["termination_always"]:  # a step graph always has this output; a stateful one only with the head
            g.op("Mul", "value", g.const(0.0), outputs=["termination_prob"])
    return action


def stateful_bookkeeping(s: _Step, kv: int, bos_cache_mode: str) -> None:
    """What ``gptrl.rollout`` does per row, as graph ops: which token each row feeds, its position, its mask, and
    which ring slot it writes. Sets the token inputs and ``s.mask`` / ``s.write``; writes the small state outputs.

    A row begins an episode when ``reset`` is set or it has never started (the all-zeros state): its token is the
    BOS token (obs, 0, 1), which sees nothing older. Otherwise its token is (prev_obs, prev_action, 0) at position
    = the number of valid entries, attending to them and itself. The token's key/value go to ``slot`` (the oldest
    entry once the ring is full), except a BOS token's under bos_cache_mode "discard".
    """
    g = s.g
    f32, i64, b = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL
    one, zero = g.const(1.0), g.const(0.0)
    axis1 = g.const([1], np.int64)
    with g.scope("rollout"):
        bos = g.op("Max", g.op("Cast", "reset", to=f32), g.op("Sub", one, "state_in.started"))  # [B] 1.0 = begins
        keep = g.op("Sub", one, bos)
        valid = g.op("Mul", "state_in.valid", g.op("Unsqueeze", keep, axis1))  # [B, kv]: a beginning row sees none
        s.is_bos = bos
        s.position = g.op("Cast", g.op("ReduceSum", valid, axis1, keepdims=0), to=i64)
        s.state = g.op("Where", g.op("Cast", g.op("Unsqueeze", bos, axis1), to=b), "obs", "state_in.prev_obs")
        s.action = "state_in.prev_action"  # zeroed for BOS tokens inside token_input
        # [B, 1, 1, kv + 1] additive mask: 0 where the token may attend (its valid slots and itself), -inf elsewhere
        blocked = g.op("Where", g.op("Cast", valid, to=b), zero, g.const(-np.inf))  # [B, kv]
        self_col = g.op("Mul", g.op("Unsqueeze", keep, axis1), zero)  # [B, 1] zeros
        s.mask = g.op("Unsqueeze", g.op("Concat", blocked, self_col, axis=1), g.const([1, 2], np.int64))
        slot = g.op("Mul", "state_in.slot", keep)  # a beginning row writes from slot 0
        kept = keep if bos_cache_mode == "discard" else g.op("Add", keep, bos)  # [B] does this token stay cached
        hit = g.op("Cast", g.op("Equal", g.const(np.arange(kv, dtype=np.float32)), g.op("Unsqueeze", slot, axis1)),
                   to=f32)  # [B, kv] one-hot of the slot
        write = g.op("Mul", hit, g.op("Unsqueeze", kept, axis1))
        s.write = g.op("Cast", g.op("Unsqueeze", write, g.const([1, 2], np.int64)), to=b)  # [B, 1, 1, kv]
        s.write_t = g.op("Cast", g.op("Unsqueeze", write, g.const([1, 3], np.int64)), to=b)  # [B, 1, kv, 1]
        g.op("Max", valid, write, outputs=["state_out.valid"])
        nxt = g.op("Add", slot, kept)
        g.op("Where", g.op("Less", nxt, g.const(float(kv))), nxt, zero, outputs=["state_out.slot"])
        g.op("Max", "state_in.started", bos, outputs=["state_out.started"])
        g.op("Identity", "obs", outputs=["state_out.prev_obs"])


def stateful_prepare(s: _Step, kv: int | None, bos_cache_mode: str) -> None:
    stateful_bookkeeping(s, int(kv), bos_cache_mode)  # type: ignore[arg-type]
    s.max_position = int(kv)  # type: ignore[arg-type]


def stateful_state_out(s: _Step, action: str) -> None:
    s.g.op("Identity", action, outputs=["state_out.prev_action"])


@dataclass(frozen=True)
class Variant:
    """What differs between the step graphs, as functions chosen once (the blocks above call them)."""

    prepare: Callable[[_Step, int | None, str], None]  # before the token: the stateful graph's bookkeeping
    token_input: Callable[[_Step], str]
    mask: Callable[[_Step], None]  # the attention mask (the stateful graph's bookkeeping makes its own)
    rope_tables: Callable[[_Step], None]
    rope: Callable[[_Step, str], str]
    split_heads: Callable[[_Step, str], tuple[str, str, str]]
    attend: Callable[[_Step, int, str, str, str], str]
    finish: Callable[[_Step, str], None]  # after the heads, given the action's name
    fold_q_scale: bool  # 1/sqrt(hd) folded into q's weights (the attend function does not scale)
    outputs: dict  # "action": its output name; "termination_always": a zero termination_prob without the head


def _nothing(*_: object) -> None:
    return None


_STEP_OUTPUTS = {"action": "action_out", "termination_always": True}
VARIANTS: dict[str, Variant] = {
    "attention": Variant(prepare=_nothing, token_input=token_input, mask=ring_mask, rope_tables=rope_tables_fused,
                         rope=rope_fused, split_heads=split_heads, attend=attend_ring, finish=_nothing,
                         fold_q_scale=False, outputs=_STEP_OUTPUTS),
    "portable": Variant(prepare=_nothing, token_input=token_input, mask=portable_mask, rope_tables=rope_tables_plain,
                        rope=rope_plain, split_heads=split_heads, attend=attend_portable, finish=_nothing,
                        fold_q_scale=False, outputs=_STEP_OUTPUTS),
    "stateful": Variant(prepare=stateful_prepare, token_input=token_input_folded, mask=_nothing,
                        rope_tables=rope_tables_lookup, rope=rope_matmul, split_heads=split_heads_stacked,
                        attend=attend_state, finish=stateful_state_out, fold_q_scale=True,
                        outputs={"action": "action", "termination_always": False}),
}


# -- the graph ----------------------------------------------------------------------------------------------------


def build_step_graph(bundle: Bundle, variant: str = "attention", *, kv: int | None = None,
                     bos_cache_mode: str = "discard") -> onnx.ModelProto:
    """The one-step graph for ``bundle``; its inputs and outputs are ``io_spec(variant, bundle.config, kv)``.

    ``kv`` and ``bos_cache_mode`` are fixed into a stateful graph (the other variants take them at run time).
    """
    inputs, outputs = io_spec(variant, bundle.config, kv)  # refuses an unknown variant
    s = _Step(GraphBuilder(), bundle, VARIANTS[variant])
    s.variant.prepare(s, kv, bos_cache_mode)
    h = s.variant.token_input(s)
    s.variant.mask(s)
    if bundle.config.model.network == "llama":
        s.variant.rope_tables(s)
    else:
        h = positional_embedding(s, h)
    for i in range(bundle.config.model.num_layers):
        h = decoder_layer(s, i, h)
    s.variant.finish(s, heads(s, final_norm(s, h)))
    return s.g.model("gptrl_policy_step", inputs, outputs, VARIANT_OPSETS[variant], IR_VERSION[variant])


def serialize(model: onnx.ModelProto) -> bytes:
    """The model's bytes, sealed when its metadata holds the seal placeholder (``policy_graph.seal``)."""
    from gptrl.bundle.policy_graph import SEAL_PLACEHOLDER, seal

    data = model.SerializeToString()
    return seal(data) if SEAL_PLACEHOLDER.encode() in data else data
