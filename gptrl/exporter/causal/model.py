"""The Causal GPT-RL policy network in plain torch (Llama and GPT2 flavours); the math is docs/format.md's.

One token per timestep, x = [observation features | action feedback | is_bos] (the config's observation encoder and
action codec, ``gptrl.bundle.codecs``: for the Causal GPT-RL format the normalised state and the atanh-encoded
action), projected to d_model, run through a causal backbone identical in math to Hugging Face ``LlamaModel`` /
``GPT2Model`` (fed with inputs_embeds), then small heads: the codec's policy heads, the value and the termination.
Module names mirror the bundle's tensor names, so ``state_dict()`` *is* the bundle's weights.

Two entry points share every layer:
- ``forward`` runs a whole sequence causally (training);
- ``step`` runs one new token per row against a key/value cache (inference and ONNX export).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptrl.bundle.schema import GPT2_NORM_EPS, LLAMA_NORM_EPS, BundleConfig, ModelConfig
from gptrl.bundle.weights import TERMINATION_HEAD, VALUE_HEAD, head_sizes
from gptrl.exporter.gpt2 import GPT2Block
from gptrl.exporter.torch_ops import TorchOps

# Per layer: (keys, values), each [batch, heads, length, head_dim]; keys already carry RoPE.
KVCache = list[tuple[Tensor, Tensor]]


@dataclass
class PolicyOutput:
    params: Tensor  # [..., P] the action distribution's parameters (``ActionCodec.params`` of the policy heads)
    mu: Tensor  # [..., *] the first policy head as it comes (the pre-tanh mean of a tanh Box, a Discrete's logits)
    log_std: Tensor | None  # [..., A] the second policy head as it comes (None for a Discrete action)
    value: Tensor  # [...]
    termination_logit: Tensor | None  # [...] (None without an EOS head)


# ----------------------------------------------------------------------------- Llama


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = LLAMA_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables [..., head_dim] for integer positions (HF's half-split layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.num_heads, self.head_dim, self.theta = cfg.num_heads, cfg.head_dim, cfg.rope_theta
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Heads-first q, k, v for x [B, T, d] at positions [B, T]; RoPE applied to q and k."""
        b, t, _ = x.shape
        shape = (b, t, self.num_heads, self.head_dim)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        cos, sin = rope_cos_sin(positions, self.head_dim, self.theta)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def out(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model)
        self.mlp = LlamaMLP(cfg)

    def attn_in(self, x: Tensor) -> Tensor:
        return self.input_layernorm(x)

    @property
    def attn(self) -> LlamaAttention:
        return self.self_attn

    def mlp_out(self, x: Tensor) -> Tensor:
        return self.mlp(self.post_attention_layernorm(x))


class LlamaBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(1, cfg.d_model)  # part of the format, never read
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.d_model)

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        return x  # positions enter through RoPE inside attention

    @property
    def blocks(self) -> nn.ModuleList:
        return self.layers

    def final_norm(self, x: Tensor) -> Tensor:
        return self.norm(x)


# ----------------------------------------------------------------------------- GPT2


def _gpt2_block(cfg: ModelConfig) -> GPT2Block:
    return GPT2Block(cfg.d_model, cfg.num_heads, 4 * cfg.d_model, "gelu_new", GPT2_NORM_EPS)


class GPT2Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wte = nn.Embedding(1, cfg.d_model)  # part of the format, never read
        self.wpe = nn.Embedding(cfg.max_position_embeddings, cfg.d_model)
        self.h = nn.ModuleList(_gpt2_block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=GPT2_NORM_EPS)

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        return x + self.wpe(positions)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.h

    def final_norm(self, x: Tensor) -> Tensor:
        return self.ln_f(x)


class Backbone(nn.Module):
    """Holds the stack under the name ``net`` so tensor names read ``backbone.net.*``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = LlamaBackbone(cfg) if cfg.network == "llama" else GPT2Backbone(cfg)


# ----------------------------------------------------------------------------- policy


class Projection(nn.Module):
    """``layers.0`` = Linear: the token input projection."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_in, n_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Head(nn.Module):
    """``layers`` = ReLU, Linear."""

    def __init__(self, d_model: int, n_out: int):
        super().__init__()
        self.layers = nn.Sequential(nn.ReLU(), nn.Linear(d_model, n_out))

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)


class Heads(nn.ModuleDict):
    """``output_head.<k>`` for the format's head indices (a Discrete action has no head 1); ``[k]`` takes an int."""

    def __getitem__(self, key: int | str) -> Head:
        return super().__getitem__(str(key))  # type: ignore[return-value]


class PolicyModel(nn.Module):
    """The whole policy: token encoding, backbone, heads and the action distribution."""

    def __init__(self, config: BundleConfig):
        super().__init__()
        cfg = config.model
        self.config, self.codec, self.encoder = config, config.action, config.observation
        self.input_proj = Projection(self.encoder.width + self.codec.width + 1, cfg.d_model)
        self.backbone = Backbone(cfg)
        self.output_head = Heads({str(k): Head(cfg.d_model, n) for k, n in head_sizes(cfg, self.codec).items()})
        if self.encoder.tensors():  # the observation encoder's own weights (a grid's embedding and patch encoder)
            self.state_encoder = nn.Module()
            for name, shape in self.encoder.tensors().items():
                self.state_encoder.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        if self.encoder.normalized:
            s = config.state_dim
            self.register_buffer("state_normalization_enabled", torch.zeros(1))
            self.register_buffer("state_normalization_mean", torch.zeros(s))
            self.register_buffer("state_normalization_std", torch.ones(s))
        if hasattr(self.codec, "low"):  # a Box's bounds; not saved (the config is their source of truth)
            self.register_buffer("action_low", torch.as_tensor(self.codec.low), persistent=False)
            self.register_buffer("action_high", torch.as_tensor(self.codec.high), persistent=False)

    @property
    def num_layers(self) -> int:
        return self.config.model.num_layers

    @property
    def ops(self) -> TorchOps:
        """The codecs' ops on this model's device."""
        return TorchOps(self.input_proj.layers[0].weight.device)

    # -- token encoding -------------------------------------------------------

    def normalize_states(self, states: Tensor) -> Tensor:
        """Raw observations [..., S] -> the token's state features (the encoder's, with the normaliser if on)."""
        if not self.encoder.normalized:
            params = dict(self.state_encoder.named_parameters()) if hasattr(self, "state_encoder") else None
            return self.encoder.features(self.ops, states, params=params)
        on = self.state_normalization_enabled >= 0.5  # off: mean 0 and std 1 leave the states exactly as they are
        mean = torch.where(on, self.state_normalization_mean, torch.zeros_like(self.state_normalization_mean))
        std = torch.where(on, self.state_normalization_std, torch.ones_like(self.state_normalization_std))
        return self.encoder.features(self.ops, states, mean, std)

    def encode_actions(self, actions: Tensor) -> Tensor:
        """Env-unit actions -> the token's feedback features (``ActionCodec.feedback``)."""
        return self.codec.feedback(self.ops, actions)

    def greedy_actions(self, params: Tensor) -> Tensor:
        """Distribution parameters (or the first policy head alone) -> the deterministic env-unit action."""
        return self.codec.greedy(self.ops, params)

    squash_actions = greedy_actions  # the tanh Box's name for it: pre-tanh mean -> env units

    def embed_tokens(self, states: Tensor, actions: Tensor, is_bos: Tensor) -> Tensor:
        """Raw states [..., S], env-unit actions [..., *action], BOS flags [...] -> token embeddings [..., d].

        BOS tokens carry a zero action slot whatever ``actions`` holds there.
        """
        bos = is_bos.float()[..., None]
        features = self.encode_actions(actions) * (1.0 - bos)
        return self.input_proj(torch.cat([self.normalize_states(states), features, bos], dim=-1))

    def heads(self, h: Tensor) -> PolicyOutput:
        out = {int(k): head(h) for k, head in self.output_head.items()}
        term = out.get(TERMINATION_HEAD)
        return PolicyOutput(
            params=self.codec.params(self.ops, {k: out[k] for k in self.codec.heads}),
            mu=out[0],
            log_std=out.get(1),
            value=out[VALUE_HEAD].squeeze(-1),
            termination_logit=term.squeeze(-1) if term is not None else None,
        )

    # -- sequence forward (training) ------------------------------------------

    def forward(
        self,
        states: Tensor,
        actions: Tensor,
        is_bos: Tensor,
        padding_mask: Tensor | None = None,
        *,
        positions: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> PolicyOutput:
        """The heads of ``features``."""
        h = self.features(states, actions, is_bos, padding_mask, positions=positions, attn_mask=attn_mask)
        return self.heads(h)

    def features(
        self,
        states: Tensor,
        actions: Tensor,
        is_bos: Tensor,
        padding_mask: Tensor | None = None,
        *,
        positions: Tensor | None = None,
        attn_mask: Tensor | None = None,
        kv_out: KVCache | None = None,
    ) -> Tensor:
        """Final hidden states [B, T, d] of a causal pass: states [B, T, S], actions [B, T, A], is_bos [B, T].

        By default token t is at position t and sees tokens 0..t; ``padding_mask`` [B, T]
        (True = real token) hides padding keys. Training windows that must match a rollout's
        cache exactly pass their own ``positions`` [B, T] and ``attn_mask`` [B, T, T]
        (True = query may attend to key) instead. Head outputs at token t predict the
        action that follows it. ``kv_out``, where given, receives each layer's (keys, values) [B, H, T, hd]: what
        these tokens would leave in a rollout's cache (PPO rebuilds its cache from them after the weights change).
        """
        b, t, _ = states.shape
        net = self.backbone.net
        if positions is None:
            positions = torch.arange(t, device=states.device).expand(b, t)
        x = net.embed(self.embed_tokens(states, actions, is_bos), positions)
        if attn_mask is None:
            mask = torch.ones(t, t, dtype=torch.bool, device=states.device).tril()[None, None]
            if padding_mask is not None:
                mask = mask & padding_mask[:, None, None, :].bool()
        else:
            mask = attn_mask[:, None].bool()
        mask = mask | torch.eye(t, dtype=torch.bool, device=states.device)  # no all-masked rows

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            if kv_out is not None:
                kv_out.append((k, v))
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        return self._layers(x, positions, attend)

    def _layers(self, x: Tensor, positions: Tensor, attend: Callable[[int, Tensor, Tensor, Tensor], Tensor]) -> Tensor:
        """The one layer loop: pre-norm attention (``attend(layer, q, k, v)`` -> heads-first output) and MLP."""
        net = self.backbone.net
        for i, block in enumerate(net.blocks):
            q, k, v = block.attn.qkv(block.attn_in(x), positions)
            x = x + block.attn.out(attend(i, q, k, v))
            x = x + block.mlp_out(x)
        return net.final_norm(x)

    # -- single step against a cache (inference, export) -----------------------

    def step(
        self,
        states: Tensor,
        actions: Tensor,
        is_bos: Tensor,
        positions: Tensor,
        past: KVCache,
        past_valid: Tensor,
    ) -> tuple[PolicyOutput, KVCache]:
        """One new token per row against the cache.

        states [B, S], actions [B, A] (the action taken at that state, env units), is_bos [B],
        positions [B] (int64), past: per layer (k, v) [B, H, P, hd], past_valid [B, P] bool
        (False = empty slot; slot order does not matter). Returns the heads for the new token
        and its own per-layer (k, v) [B, H, 1, hd] for the caller to store.
        """
        net = self.backbone.net
        pos = positions[:, None]
        x = net.embed(self.embed_tokens(states, actions, is_bos)[:, None], pos)
        mask = torch.cat([past_valid.bool(), past_valid.new_ones(past_valid.shape[0], 1, dtype=torch.bool)], dim=1)
        mask = mask[:, None, None, :]
        new_kv: KVCache = []

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            new_kv.append((k, v))
            past_k, past_v = past[i]
            keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

        return self.heads(self._layers(x, pos, attend)[:, 0]), new_kv

    def empty_cache(self, batch: int, length: int, device: torch.device | str | None = None) -> KVCache:
        cfg = self.config.model
        shape = (batch, cfg.num_heads, length, cfg.head_dim)
        device = device or self.input_proj.layers[0].weight.device
        return [(torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in range(cfg.num_layers)]
