"""Building a torch PolicyModel from a validated bundle, and back to bundle tensors."""

from __future__ import annotations

import numpy as np
import torch

from gptrl.bundle import Bundle
from gptrl.bundle.weights import format_buffers
from gptrl.exporter.model import PolicyModel


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
