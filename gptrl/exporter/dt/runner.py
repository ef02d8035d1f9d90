"""The reference Decision Transformer runner on torch: the Hugging Face post's ``get_action`` loop as a policy.

Every act re-encodes the last K timesteps (3K tokens) of each row, left-padded, and reads ``action_preds[:, -1]``:
once the window slides, cached keys would have seen older context, so this recompute is the exact deployment.
The window bookkeeping is ``gptrl.rollout.window.DTWindow``, shared with the torch-free runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gptrl.bundle.dt import SAFETENSORS_FILE, DTBundle, load_dt_bundle, required_dt_tensors
from gptrl.exporter.dt.model import DecisionTransformer
from gptrl.rollout.window import DTWindow, WindowPolicy


def dt_tensors(bundle: DTBundle) -> dict[str, np.ndarray]:
    """The checkpoint's tensors (safetensors, or a pickle read with ``weights_only``), checked against the config."""
    from gptrl.bundle.weights import check_tensors, read_safetensors

    if bundle.weights_file.name == SAFETENSORS_FILE:
        tensors = read_safetensors(bundle.weights_file)
    else:
        from gptrl.exporter.legacy import load_tensor_dict

        tensors = load_tensor_dict(bundle.weights_file, cast=False)
    check_tensors(tensors, required_dt_tensors(bundle.config), {}, bundle.weights_file)  # float32, before any cast
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def model_from_dt_bundle(bundle: DTBundle, device: str | torch.device = "cpu") -> DecisionTransformer:
    tensors = dt_tensors(bundle)  # checked before the model is allocated: the file bounds its size
    model = DecisionTransformer(bundle.config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model.to(device).eval()


class DTRunner(WindowPolicy):
    """``reset(obs, target_return=None)``, ``act(obs, reward=None)``, ``act_with_info``, ``reset_rows``; batches."""

    deterministic_reason = "a Decision Transformer's action head is deterministic"

    def __init__(self, model: DecisionTransformer, bundle: DTBundle, *, num_envs: int = 1,
                 device: str | torch.device = "cpu"):
        c, side = bundle.config, bundle.sidecar
        self.model, self.bundle, self.device = model.to(device).eval(), bundle, torch.device(device)
        self.window = DTWindow(num_envs, c.state_dim, c.act_dim, side.context_length, heads=c.n_head, scale=side.scale,
                               state_mean=bundle.state_mean, state_std=bundle.state_std, max_ep_len=c.max_ep_len,
                               default_target=side.target_return)
        self.num_envs, self.env_id = self.window.num_envs, side.env_id

    @torch.inference_mode()
    def _forward(self) -> np.ndarray:
        w, dev = self.window, self.device
        out = self.model(torch.from_numpy(w.states).to(dev), torch.from_numpy(w.actions).to(dev),
                         torch.from_numpy(w.returns_to_go).to(dev), torch.from_numpy(w.timesteps).to(dev),
                         torch.from_numpy(w.mask).to(dev))
        return out.action_preds[:, -1].cpu().numpy()


def load_dt_runner(path: str | Path | DTBundle, *, num_envs: int = 1, device: str = "cpu", **unknown) -> DTRunner:
    if unknown:
        raise ValueError(f"{path}: a Decision Transformer runner takes num_envs and device, not {sorted(unknown)}")
    bundle = path if isinstance(path, DTBundle) else load_dt_bundle(path)
    return DTRunner(model_from_dt_bundle(bundle, device), bundle, num_envs=num_envs, device=device)
