"""The torch-free Decision Transformer policies: the exact windowed graph driven through onnxruntime with the same
window bookkeeping as the torch runner (``gptrl.dt_window``), and the stateful graph, which keeps the window
itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from gptrl.bundle.dt import DTConfig, DTSidecar, dt_state_spec
from gptrl.contract import StepInfo
from gptrl.dt_window import DTWindow, WindowPolicy, check_dt_serving, check_rewards, check_target
from gptrl.rollout import PolicyBase, check_batch, check_mask, check_outputs
from gptrl.runtime.session import bind_array


class DTPolicy(WindowPolicy):
    """``reset(obs, target_return=None)``, ``act(obs, reward=None)``, ``act_with_info``, ``reset_rows``, batches."""

    def __init__(self, session: ort.InferenceSession, config: DTConfig, sidecar: DTSidecar, *, num_envs: int = 1):
        self.session, self.config, self.sidecar, self.env_id = session, config, sidecar, sidecar.env_id
        self.window = DTWindow(num_envs, config.state_dim, config.act_dim, sidecar.context_length,
                               heads=config.n_head, scale=sidecar.scale,
                               state_mean=np.asarray(sidecar.state_mean, np.float32),
                               state_std=np.asarray(sidecar.state_std, np.float32), max_ep_len=config.max_ep_len,
                               default_target=sidecar.target_return)
        self.num_envs = self.window.num_envs

    def _forward(self) -> np.ndarray:
        w = self.window
        return self.session.run(["action"], {"states": w.states, "actions": w.actions,
                                             "returns_to_go": w.returns_to_go, "timesteps": w.timesteps,
                                             "attention_mask": w.mask})[0]


class StatefulDTPolicy(PolicyBase):
    """A stateful Decision Transformer graph (``obs, reset, reward, target_return, state_in.* -> action,
    state_out.*``) behind the same contract as :class:`DTPolicy`. The graph keeps the window itself; the state lives
    in two preallocated buffer sets that two IOBindings alternate between, as in ``StatefulPolicy``."""

    return_conditioned = True
    positions = "per_row"

    def __init__(self, session: ort.InferenceSession, config: DTConfig, sidecar: DTSidecar, *, num_envs: int = 1):
        self.session, self.config, self.sidecar, self.env_id = session, config, sidecar, sidecar.env_id
        B = self.num_envs = check_dt_serving(num_envs, config.n_head, sidecar.context_length)  # before allocating
        self._inputs = {"obs": np.zeros((B, config.state_dim), np.float32), "reset": np.zeros(B, bool),
                        "reward": np.zeros(B, np.float32), "target_return": np.zeros(B, np.float32)}
        self._action = np.zeros((B, config.act_dim), np.float32)
        specs = dt_state_spec(config, sidecar.context_length)
        self._states = [{s.name: np.zeros([B, *s.shape[1:]], np.float32) for s in specs} for _ in range(2)]
        self._bindings = [self._bind(self._states[k], self._states[1 - k]) for k in (0, 1)]
        self._current = 0
        self._begun = np.zeros(B, bool)  # rows with an episode
        self._pending = np.zeros(B, bool)  # rows whose next step is step 0
        self._reset_obs = np.zeros((B, config.state_dim), np.float32)
        self._use_reset_obs = np.zeros(B, bool)  # reset() gave s0; reset_rows() takes it from the next act
        self._target = np.zeros(B, np.float32)
        self.steps = np.zeros(B, np.int64)

    def _bind(self, state_in: dict[str, np.ndarray], state_out: dict[str, np.ndarray]) -> ort.IOBinding:
        io = self.session.io_binding()
        for name, array in self._inputs.items():
            bind_array(io.bind_input, name, array)
        bind_array(io.bind_output, "action", self._action)
        for name, array in state_in.items():
            bind_array(io.bind_input, f"state_in.{name}", array)
        for name, array in state_out.items():
            bind_array(io.bind_output, f"state_out.{name}", array)
        return io

    def _never_started(self) -> np.ndarray:
        return ~self._begun

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start every row's episode from ``obs``; ``target_return`` in env units (None: the bundle's default)."""
        obs32, _ = check_batch(obs, self.num_envs, self.config.state_dim, "observation")
        self._target[:] = check_target(target_return, self.num_envs, self.sidecar.target_return)
        self._reset_obs[:] = obs32
        self._use_reset_obs[:] = self._pending[:] = self._begun[:] = True

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        """Restart the flagged rows; the observation each receives in its next act is its s0."""
        mask = check_mask(done_mask, self.num_envs)
        if mask.any():
            self._target[mask] = check_target(target_return, self.num_envs, self.sidecar.target_return)[mask]
            self._pending |= mask
            self._use_reset_obs &= ~mask
            self._begun |= mask

    def act_with_info(self, obs: Any, reward: Any = None) -> tuple[np.ndarray, StepInfo]:
        """The action for this step (``reward``: what the env returned with ``obs``; not read on a row's first
        step); info["value"] is the return still to go (env units) the action aims for, read from the new state."""
        idle = np.flatnonzero(~self._begun)
        if idle.size:
            raise RuntimeError(f"act() called before reset(): rows {idle.tolist()} have no episode")
        obs32, single = check_batch(obs, self.num_envs, self.config.state_dim, "observation")
        running = ~self._pending
        if running.any():
            self._inputs["reward"][:] = np.where(running, check_rewards(reward, self.num_envs, running), 0.0)
        np.copyto(self._inputs["obs"], np.where(self._use_reset_obs[:, None], self._reset_obs, obs32))
        self._inputs["reset"][:] = self._pending
        self._inputs["target_return"][:] = self._target
        self.session.run_with_iobinding(self._bindings[self._current])
        to_go = (self._states[1 - self._current]["returns_to_go"][:, -1, 0] * self.sidecar.scale).astype(np.float32)
        check_outputs(self._action, to_go, None, self.steps)  # on error the state is not advanced
        self._current = 1 - self._current
        self.steps[self._pending] = 0
        self.steps += 1
        self._pending[:] = self._use_reset_obs[:] = False
        pick = (lambda a: a[0].copy()) if single else (lambda a: a.copy())
        return pick(self._action), {"value": pick(to_go), "termination_prob": None}

    def act(self, obs: Any, reward: Any = None) -> np.ndarray:
        return self.act_with_info(obs, reward)[0]
