"""The one initialisation of every family's network: GPT-2's (Radford et al. 2019), as both training loops use it."""

from __future__ import annotations

import math

import torch
from torch import nn

from gptrl.bundle.weights import ENCODER_PREFIX

RESIDUAL_PROJECTIONS = ("o_proj.weight", "down_proj.weight", "c_proj.weight")  # write into the residual stream


def init_weights(model: nn.Module, seed: int | None = None) -> nn.Module:
    """Biases 0, norm gains 1, an observation encoder's lookups (``state_encoder.*``) normal(0, 1) and its
    projection normal(0, 1 / sqrt(fan_in)), every other weight normal(0, 0.02), the residual projections scaled by
    1 / sqrt(2 x layers) (``model.num_layers``) so the residual stream's variance does not grow with depth.
    ``seed``: a generator of its own (None: torch's global one)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    depth_scale = 1.0 / math.sqrt(2 * model.num_layers)
    norms = {id(p) for m in model.modules() if _is_norm(m) for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif id(p) in norms:
                p.fill_(1.0)
            elif name.startswith(ENCODER_PREFIX):  # unit-variance lookups, fan-in scaled projection: a frame's
                fan_in = p.shape[0] if name.endswith("proj") else 1  # pooled features start near unit scale
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                std = 0.02 * (depth_scale if name.endswith(RESIDUAL_PROJECTIONS) else 1.0)
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__ == "RMSNorm"
