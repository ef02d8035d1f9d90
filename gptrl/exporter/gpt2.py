"""GPT-2's building blocks in plain torch, shared by every model family with a GPT-2 trunk (the Causal GPT-RL GPT2
flavour, the Decision Transformer). Module names match Hugging Face ``GPT2Model``'s, so state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Hugging Face's names for the MLP activations a GPT-2 config may ask for.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "silu": F.silu,
    "swish": F.silu,
}


class Conv1D(nn.Module):
    """GPT2's linear layer with the weight stored [in, out]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class GPT2Attention(nn.Module):
    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.c_attn = Conv1D(d_model, 3 * d_model)
        self.c_proj = Conv1D(d_model, d_model)

    def qkv(self, x: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Heads-first q, k, v [B, H, T, hd] of x [B, T, d] (positions enter GPT-2 through wpe, not here)."""
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=-1)
        shape = (b, t, self.num_heads, self.head_dim)
        return tuple(z.view(shape).transpose(1, 2) for z in (q, k, v))  # type: ignore[return-value]

    def out(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.c_proj(y.transpose(1, 2).reshape(b, t, -1))


class GPT2MLP(nn.Module):
    def __init__(self, d_model: int, inner: int, activation: str = "gelu_new"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not supported (one of {sorted(ACTIVATIONS)})")
        self.c_fc = Conv1D(d_model, inner)
        self.c_proj = Conv1D(inner, d_model)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); the caller runs the attention itself."""

    def __init__(self, d_model: int, num_heads: int, inner: int, activation: str = "gelu_new", eps: float = 1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = GPT2Attention(d_model, num_heads)
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = GPT2MLP(d_model, inner, activation)

    def attn_in(self, x: Tensor) -> Tensor:
        return self.ln_1(x)

    def mlp_out(self, x: Tensor) -> Tensor:
        return self.mlp(self.ln_2(x))
