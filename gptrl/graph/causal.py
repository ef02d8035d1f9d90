"""The Causal GPT-RL single-step graph, block by block, from a bundle's numpy weights.

Like onnxruntime-genai's model builder, the graph is written by hand so its cache layout is explicit and the same
weights can target two op sets (I/O in ``gptrl.bundle.policy_graph.io_spec``, layouts in docs/format.md):

``portable`` (opset 18, any ONNX runtime)
    The new token attends to the P cached slots ``past_valid`` allows plus itself; keys are stored transposed
    ``[B, H, hd, P]``. The graph returns the new key/value and the runtime writes them into the ring slot it owns.
``attention`` (opset 24: RotaryEmbedding, Attention, TensorScatter; the default)
    TensorScatter writes the new key/value at ``write_index`` (in place when the runtime binds present to past's
    buffer), then Attention reads the ring of kv + 1 slots under ``attn_mask``.
``stateful`` (opset 18, standard ops only; docs/stateful.md)
    ``obs, reset, state_in.* -> action, value, termination_prob, state_out.*``: the graph does the ring, mask and
    position bookkeeping itself (per row, as a one-env runner), so any ONNX runtime drives it by feeding each
    ``state_out.X`` back as ``state_in.X``. The cache length is fixed at export.

State normalisation and the action encoding (atanh feedback, tanh squashing) are inside the graph; batch and
cache length are dynamic. Each block below is one function; node names say where they sit
(``/layers.0/attn/qkv_proj/MatMul``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from gptrl.bundle import Bundle
from gptrl.bundle.policy_graph import VARIANT_OPSETS, io_spec
from gptrl.bundle.schema import ACTION_CLIP_EPS, GPT2_NORM_EPS, LLAMA_NORM_EPS
from gptrl.graph.builder import GraphBuilder

# onnxruntime reads IR versions up to 10 for these opsets; newer onnx packages default higher.
IR_VERSION = {"portable": 8, "attention": 10, "stateful": 8}
INT64_MAX = int(np.iinfo(np.int64).max)  # "to the end" in Slice; runtimes clamp it (tract refuses 2**62 + symbols)


@dataclass
class _Step:
    """What every layer of one step shares."""

    g: GraphBuilder
    bundle: Bundle
    variant: str
    mask: str = ""  # [B, 1, 1, slots] bool
    cos: str = ""  # RoPE tables (Llama)
    sin: str = ""
    # The token's inputs: raw state [B, S], env-unit action [B, A], BOS flag [B] float, position [B] int64.
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


# -- blocks -------------------------------------------------------------------------------------------------------


def token_input(s: _Step) -> str:
    """[s_norm | atanh(action) * (1 - bos) | bos] -> input_proj -> h [B, 1, d]."""
    if s.variant == "stateful":
        return token_input_folded(s)
    g, c, norm = s.g, s.bundle.config, s.bundle.normalizer
    with g.scope("input"):
        states = s.state
        if norm.enabled:
            centred = g.op("Sub", s.state, g.weight("state_mean", norm.mean))
            states = g.op("Div", centred, g.weight("state_std", norm.std))
        low, high = c.action_low, c.action_high
        unit = g.op("Sub", g.op("Div", g.op("Mul", g.op("Sub", s.action, g.weight("action_low", low)), g.const(2.0)),
                                g.weight("action_range", high - low)), g.const(1.0))
        clipped = g.op("Clip", unit, g.const(-1.0 + ACTION_CLIP_EPS), g.const(1.0 - ACTION_CLIP_EPS))
        bos = g.op("Unsqueeze", s.is_bos, g.const([1], np.int64))
        feedback = g.op("Mul", g.op("Atanh", clipped), g.op("Sub", g.const(1.0), bos))
        token = g.op("Unsqueeze", g.op("Concat", states, feedback, bos, axis=1), g.const([1], np.int64))  # [B, 1, F]
    return g.linear(token, s.t["input_proj.layers.0.weight"].T, s.t["input_proj.layers.0.bias"], "input_proj")


def token_input_folded(s: _Step) -> str:
    """The same token with its constants folded: the normaliser into input_proj's weights and bias, the action's
    scale to [-1, 1] into one Mul and one Add (fewer nodes; equal up to float rounding)."""
    g, c, norm = s.g, s.bundle.config, s.bundle.normalizer
    w = s.t["input_proj.layers.0.weight"].astype(np.float64).T  # [S + A + 1, d]
    b = s.t["input_proj.layers.0.bias"].astype(np.float64)
    S = c.state_dim
    if norm.enabled:  # (x - mean) / std @ W = x @ (W / std) - (mean / std) @ W
        scale = 1.0 / norm.std.astype(np.float64)
        b = b - (norm.mean.astype(np.float64) * scale) @ w[:S]
        w = np.concatenate([w[:S] * scale[:, None], w[S:]])
    low, high = c.action_low.astype(np.float64), c.action_high.astype(np.float64)
    with g.scope("input"):
        unit = g.op("Add", g.op("Mul", s.action, g.const(2.0 / (high - low))), g.const(-(high + low) / (high - low)))
        clipped = g.op("Clip", unit, g.const(-1.0 + ACTION_CLIP_EPS), g.const(1.0 - ACTION_CLIP_EPS))
        bos = g.op("Unsqueeze", s.is_bos, g.const([1], np.int64))
        feedback = g.op("Mul", g.op("Atanh", clipped), g.op("Sub", g.const(1.0), bos))
        token = g.op("Unsqueeze", g.op("Concat", s.state, feedback, bos, axis=1), g.const([1], np.int64))  # [B, 1, F]
    return g.linear(token, w.astype(np.float32), b.astype(np.float32), "input_proj")


def attention_mask(s: _Step) -> None:
    """The [B, 1, 1, slots] mask every layer uses: the ring's validity, plus the new token itself (portable)."""
    g = s.g
    with g.scope("mask"):
        if s.variant == "attention":
            s.mask = g.op("Unsqueeze", "attn_mask", g.const([1, 2], np.int64))
            return
        batch = g.op("Slice", g.op("Shape", "state"), g.const([0], np.int64), g.const([1], np.int64))
        self_valid = g.op("Expand", g.const([[True]], np.bool_), g.op("Concat", batch, g.const([1], np.int64), axis=0))
        s.mask = g.op("Unsqueeze", g.op("Concat", "past_valid", self_valid, axis=1), g.const([1, 2], np.int64))


def rope_tables(s: _Step) -> None:
    """cos/sin of the new token's position: [B, 1, hd/2] for RotaryEmbedding, [B, 1, 1, hd] for the portable form."""
    g, m = s.g, s.bundle.config.model
    hd = m.head_dim
    with g.scope("rope"):
        if s.variant == "stateful":  # positions are 0..kv: look the tables up (computed in float64)
            freqs = np.arange(s.max_position + 1)[:, None] / m.rope_theta ** (np.arange(0, hd, 2) / hd)[None, :]
            angles = np.concatenate([freqs, freqs], axis=1)  # [positions, hd]
            shape = g.const([-1, 1, 1, hd], np.int64)
            s.cos, s.sin = (g.op("Reshape", g.op("Gather", g.const(table(angles)), s.position, axis=0), shape)
                            for table in (np.cos, np.sin))
            return
        inv_freq = 1.0 / (m.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
        position = g.op("Unsqueeze", g.op("Cast", s.position, to=onnx.TensorProto.FLOAT), g.const([1], np.int64))
        freqs = g.op("Mul", position, g.weight("inv_freq", inv_freq.astype(np.float32)))  # [B, hd/2]
        if s.variant == "attention":
            angles = g.op("Unsqueeze", freqs, g.const([1], np.int64))
        else:
            angles = g.op("Reshape", g.op("Concat", freqs, freqs, axis=1), g.const([-1, 1, 1, hd], np.int64))
        s.cos, s.sin = g.op("Cos", angles), g.op("Sin", angles)


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


def rope(s: _Step, x: str) -> str:
    g, hd = s.g, s.bundle.config.model.head_dim
    if s.variant == "attention":
        return g.op("RotaryEmbedding", x, s.cos, s.sin)
    if s.variant == "stateful":  # rotate_half as one MatMul with a signed permutation: 1 node instead of 4
        half = hd // 2
        rotation = np.zeros((hd, hd), np.float32)
        rotation[np.arange(half) + half, np.arange(half)] = -1.0  # out[:half] = -x[half:]
        rotation[np.arange(half), np.arange(half) + half] = 1.0  # out[half:] = x[:half]
        rotated = g.op("MatMul", x, g.const(rotation))
    else:
        rotated = g.op("Concat", g.op("Neg", g.slice_last(x, hd // 2, hd)), g.slice_last(x, 0, hd // 2), axis=-1)
    return g.op("Add", g.op("Mul", x, s.cos), g.op("Mul", rotated, s.sin))


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


def attention(s: _Step, i: int, x: str) -> str:
    """Self-attention of layer i on the normed input x [B, 1, d]; returns its output projection [B, 1, d]."""
    g, m, t = s.g, s.bundle.config.model, s.t
    d, H, hd = m.d_model, m.num_heads, m.head_dim
    with g.scope("attn"):
        # The stateful graph folds the 1/sqrt(hd) score scale into q's weights (RoPE is linear, so it commutes).
        q_scale = np.float32(1.0 / math.sqrt(hd)) if s.variant == "stateful" else np.float32(1.0)
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
        if s.variant == "stateful":  # one Reshape, one Split, and RoPE on q and k together
            heads3 = g.op("Reshape", qkv, g.const([-1, 3 * H, 1, hd], np.int64))  # [B, 3H, 1, hd]
            qk, v = g.op("Split", heads3, g.const([2 * H, H], np.int64), axis=1, outputs=2)
            if m.network == "llama":
                with g.scope("rope"):
                    qk = rope(s, qk)
            q, k = g.op("Split", qk, g.const([H, H], np.int64), axis=1, outputs=2)
        else:
            q, k, v = g.op("Split", qkv, g.const([d, d, d], np.int64), axis=-1, outputs=3)  # [B, 1, d] each
            heads = g.const([-1, H, 1, hd], np.int64)
            q, k, v = (g.op("Reshape", z, heads) for z in (q, k, v))  # [B, H, 1, hd]: no copy for one token
            if m.network == "llama":
                with g.scope("rope"):
                    q, k = rope(s, q), rope(s, k)
        y = {"attention": attend_ring, "portable": attend_portable, "stateful": attend_state}[s.variant](s, i, q, k, v)
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
    """mu, value and termination share one MatMul; the action leaves squashed into env units. Returns its name."""
    g, c, t = s.g, s.bundle.config, s.t
    stateful = s.variant == "stateful"
    action_name = "action" if stateful else "action_out"
    A, use_eos = c.action_dim, c.model.use_eos
    with g.scope("heads"):
        used = [0, 2] + ([3] if use_eos else [])
        w = np.concatenate([t[f"output_head.{k}.layers.1.weight"] for k in used], axis=0).T
        b = np.concatenate([t[f"output_head.{k}.layers.1.bias"] for k in used], axis=0)
        out = g.op("Squeeze", g.linear(g.op("Relu", h), w, b, "output_heads"), g.const([1], np.int64))  # [B, A + 2]
        low, high = c.action_low, c.action_high
        mu = g.slice_last(out, 0, A)
        g.op("Add", g.op("Mul", g.op("Tanh", mu), g.weight("action_half_range", (high - low) / 2)),
             g.weight("action_mid", (high + low) / 2), outputs=[action_name])
        last = g.const([-1], np.int64)
        g.op("Squeeze", g.slice_last(out, A, A + 1), last, outputs=["value"])
        if use_eos:
            g.op("Squeeze", g.op("Sigmoid", g.slice_last(out, A + 1, A + 2)), last, outputs=["termination_prob"])
        elif not stateful:  # the step graphs always have this output; a stateful graph has it only with the head
            g.op("Mul", "value", g.const(0.0), outputs=["termination_prob"])
    return action_name


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


# -- the graph ----------------------------------------------------------------------------------------------------


def build_step_graph(bundle: Bundle, variant: str = "attention", *, kv: int | None = None,
                     bos_cache_mode: str = "discard") -> onnx.ModelProto:
    """The one-step graph for ``bundle``; its inputs and outputs are ``io_spec(variant, bundle.config, kv)``.

    ``kv`` and ``bos_cache_mode`` are fixed into a stateful graph (the other variants take them at run time).
    """
    inputs, outputs = io_spec(variant, bundle.config, kv)  # refuses an unknown variant
    s = _Step(GraphBuilder(), bundle, variant)
    if variant == "stateful":
        stateful_bookkeeping(s, int(kv), bos_cache_mode)  # type: ignore[arg-type]
        s.max_position = int(kv)  # type: ignore[arg-type]
    h = token_input(s)
    if variant != "stateful":
        attention_mask(s)
    if bundle.config.model.network == "llama":
        rope_tables(s)
    else:
        h = positional_embedding(s, h)
    for i in range(bundle.config.model.num_layers):
        h = decoder_layer(s, i, h)
    action = heads(s, final_norm(s, h))
    if variant == "stateful":
        s.g.op("Identity", action, outputs=["state_out.prev_action"])
    return s.g.model("gptrl_policy_step", inputs, outputs, VARIANT_OPSETS[variant], IR_VERSION[variant])


def serialize(model: onnx.ModelProto) -> bytes:
    """The model's bytes, sealed when its metadata holds the seal placeholder (``policy_graph.seal``)."""
    from gptrl.bundle.policy_graph import SEAL_PLACEHOLDER, seal

    data = model.SerializeToString()
    return seal(data) if SEAL_PLACEHOLDER.encode() in data else data
