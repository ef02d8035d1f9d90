"""The torch-free Decision Transformer policy: the exact windowed graph driven through onnxruntime, with the same
window bookkeeping as the torch runner (``gptrl.dt_window``)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gptrl.bundle.dt import DTConfig, DTSidecar
from gptrl.dt_window import DTWindow, WindowPolicy


class DTPolicy(WindowPolicy):
    """``reset(obs, target_return=None)``, ``act(obs, reward=None)``, ``act_with_info``, ``reset_rows``, batches."""

    def __init__(self, session: ort.InferenceSession, config: DTConfig, sidecar: DTSidecar, *, num_envs: int = 1):
        self.session, self.config, self.sidecar, self.env_id = session, config, sidecar, sidecar.env_id
        self.window = DTWindow(num_envs, config.state_dim, config.act_dim, sidecar.context_length,
                               scale=sidecar.scale, state_mean=np.asarray(sidecar.state_mean, np.float32),
                               state_std=np.asarray(sidecar.state_std, np.float32), max_ep_len=config.max_ep_len,
                               default_target=sidecar.target_return)
        self.num_envs = self.window.num_envs

    def _forward(self) -> np.ndarray:
        w = self.window
        return self.session.run(["action"], {"states": w.states, "actions": w.actions,
                                             "returns_to_go": w.returns_to_go, "timesteps": w.timesteps,
                                             "attention_mask": w.mask})[0]
