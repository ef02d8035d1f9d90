"""The torch-free Decision Transformer policy: the exact windowed graph driven through onnxruntime, with the same
window bookkeeping as the torch runner (``gptrl.dt_window``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from gptrl.bundle.dt import DTConfig, DTSidecar
from gptrl.contract import StepInfo
from gptrl.dt_window import DTWindow
from gptrl.rollout import MAX_NUM_ENVS, PolicyBase, check_outputs


class DTPolicy(PolicyBase):
    """``reset(obs, target_return=None)``, ``act(obs, reward=None)``, ``act_with_info``, ``reset_rows``, batches."""

    return_conditioned = True

    def __init__(self, session: ort.InferenceSession, config: DTConfig, sidecar: DTSidecar, *, num_envs: int = 1):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or not 0 < num_envs <= MAX_NUM_ENVS:
            raise ValueError(f"num_envs must be an integer in 1..{MAX_NUM_ENVS}, got {num_envs!r}")
        self.session, self.config, self.sidecar, self.num_envs = session, config, sidecar, num_envs
        self.window = DTWindow(num_envs, config.state_dim, config.act_dim, sidecar.context_length,
                               scale=sidecar.scale, state_mean=np.asarray(sidecar.state_mean, np.float32),
                               state_std=np.asarray(sidecar.state_std, np.float32), max_ep_len=config.max_ep_len,
                               default_target=sidecar.target_return)
        self.positions = "per_row"

    @property
    def env_id(self) -> str | None:
        return self.sidecar.env_id

    def _never_started(self) -> np.ndarray:
        return ~self.window.started

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start every row's episode from ``obs``; ``target_return`` in env units (None: the bundle's default)."""
        self.window.reset(obs, target_return)

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        self.window.reset_rows(done_mask, target_return)

    def act_with_info(self, obs: Any, reward: Any = None) -> tuple[np.ndarray, StepInfo]:
        """The action for this step; info["value"] is the return still to go (env units) the action aims for."""
        _, single = self.window.begin_step(obs, reward)
        w = self.window
        actions = self.session.run(["action"], {"states": w.states, "actions": w.actions,
                                                "returns_to_go": w.returns_to_go, "timesteps": w.timesteps,
                                                "attention_mask": w.mask})[0]
        to_go = (w.returns_to_go[:, -1, 0] * w.scale).astype(np.float32)
        check_outputs(actions, to_go, None, w.steps)
        w.end_step(actions)
        pick = (lambda a: a[0]) if single else (lambda a: a)
        return pick(actions), {"value": pick(to_go), "termination_prob": None}

    def act(self, obs: Any, reward: Any = None) -> np.ndarray:
        return self.act_with_info(obs, reward)[0]
