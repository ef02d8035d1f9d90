"""Between bundles and torch: a PolicyModel from a validated bundle, and a model (or runner) back to a bundle."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gptrl.bundle import Bundle
from gptrl.bundle.weights import format_buffers
from gptrl.bundle.writer import write_bundle
from gptrl.exporter.causal.model import PolicyModel


def model_from_bundle(bundle: Bundle, device: str | torch.device = "cpu") -> PolicyModel:
    """A PolicyModel in eval mode holding the bundle's weights and normaliser."""
    model = PolicyModel(bundle.config)
    state = model.state_dict()
    tensors = {**bundle.tensors, **bundle.normalizer.tensors()}
    for name in state:
        if name in tensors:
            state[name] = torch.from_numpy(np.array(tensors[name], dtype=np.float32))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def bundle_tensors(model: PolicyModel) -> dict[str, np.ndarray]:
    """Everything a v2 model.safetensors holds: weights, normaliser and the format's bound buffers."""
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous().numpy() for name, t in model.state_dict().items()}
    return {**format_buffers(model.config), **tensors}


def export_bundle(policy, path: str | Path, *, env_id: str | None = None, overwrite: bool = False) -> Path:
    """Write ``policy`` (a PolicyModel, PolicyRunner or Bundle) as a format-2 bundle at ``path``.

    The write is atomic: a temporary folder is filled, read back, validated and renamed.
    """
    if isinstance(getattr(policy, "model", None), PolicyModel):  # a PolicyRunner
        policy = policy.model
    if isinstance(policy, PolicyModel):
        config, tensors = policy.config, bundle_tensors(policy)
    elif isinstance(policy, Bundle):
        config = policy.config
        tensors = {**format_buffers(config), **policy.tensors, **policy.normalizer.tensors()}
    else:
        raise TypeError(f"export_bundle takes a PolicyModel, PolicyRunner or Bundle, got {type(policy).__name__}")
    if env_id is not None:
        config = replace(config, env_id=env_id)
    return write_bundle(path, config, tensors, overwrite=overwrite)
