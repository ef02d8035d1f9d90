"""The torch-free policy for a stateful graph: ``obs, reset, state_in.* -> action, ..., state_out.*``.

The graph keeps the episode (ring, mask, positions) itself, so a step here is one copy in, one run and one copy
out. The state lives in two preallocated sets of buffers; two IOBindings point the graph from one set to the
other and the policy alternates between them, so nothing is allocated or copied per step for the state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from gptrl.bundle.policy_graph import PolicyMetadata, state_spec
from gptrl.contract import PositionMode, StepInfo
from gptrl.rollout import MAX_NUM_ENVS, PolicyBase, check_batch, check_mask, check_outputs, resolve_serving
from gptrl.runtime.session import bind_array


class StatefulPolicy(PolicyBase):
    """The same contract as the other runners (reset, act, act_with_info, observe, reset_rows, predict); every row
    behaves as a one-env runner (``positions`` is always "per_row")."""

    def __init__(self, session: ort.InferenceSession, metadata: PolicyMetadata, *, num_envs: int = 1):
        self.session, self.metadata, self.config = session, metadata, metadata.config
        self.variant = metadata.variant
        kv = metadata.kv_cache_max_len
        resolve_serving(self.config, kv, metadata.bos_cache_mode, num_envs)  # limits, before allocating
        self.num_envs = int(num_envs)
        B, c = self.num_envs, self.config
        if B > MAX_NUM_ENVS:  # pragma: no cover - resolve_serving refused it already
            raise ValueError(f"num_envs={B} exceeds {MAX_NUM_ENVS}")
        self._obs = np.zeros((B, c.state_dim), np.float32)
        self._reset = np.zeros(B, bool)
        self._out = {"action": np.zeros((B, c.action_dim), np.float32), "value": np.zeros(B, np.float32)}
        if c.model.use_eos:
            self._out["termination_prob"] = np.zeros(B, np.float32)
        specs = state_spec(c, kv)  # type: ignore[arg-type]
        self._states = [{t.name: np.zeros([B, *t.shape[1:]], np.float32) for t in specs} for _ in range(2)]
        self._bindings = [self._bind(self._states[k], self._states[1 - k]) for k in (0, 1)]
        self._current = 0  # which state set the next step reads
        self._begun = np.zeros(B, bool)  # rows that have been reset at least once (acting before is an error)
        self._pending = np.zeros(B, bool)  # rows whose next step begins an episode
        self._reset_obs = np.zeros((B, c.state_dim), np.float32)  # s0 given to reset(); None-like when unused
        self._use_reset_obs = np.zeros(B, bool)
        self.steps = np.zeros(B, np.int64)

    def _bind(self, state_in: dict[str, np.ndarray], state_out: dict[str, np.ndarray]) -> ort.IOBinding:
        io = self.session.io_binding()
        bind_array(io.bind_input, "obs", self._obs)
        bind_array(io.bind_input, "reset", self._reset)
        for name, array in state_in.items():
            bind_array(io.bind_input, f"state_in.{name}", array)
        for name, array in self._out.items():
            bind_array(io.bind_output, name, array)
        for name, array in state_out.items():
            bind_array(io.bind_output, f"state_out.{name}", array)
        return io

    # -- the contract's attributes ---------------------------------------------------------------------------------

    @property
    def kv_cache_max_len(self) -> int:
        return int(self.metadata.kv_cache_max_len)  # type: ignore[arg-type]

    @property
    def bos_cache_mode(self) -> str:
        return str(self.metadata.bos_cache_mode)

    @property
    def positions(self) -> PositionMode:
        return "per_row"

    @positions.setter
    def positions(self, mode: PositionMode) -> None:
        if mode != "per_row":
            raise ValueError("a stateful graph keeps per-row positions (every row is a one-env runner); export the "
                             "attention or portable graph for the reference's shared positions")

    def _never_started(self) -> np.ndarray:
        return ~self._begun

    # -- episode control -------------------------------------------------------------------------------------------

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start a new episode in every row from its first observation ([S] or [B, S]); ``target_return`` is
        accepted and ignored (a causal policy is not return-conditioned)."""
        self._reset_obs[:], _ = check_batch(obs, self.num_envs, self.config.state_dim, "observation")
        self._use_reset_obs[:] = True
        self._pending[:] = True
        self._begun[:] = True

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        """Restart the flagged rows; their next observation (act/observe) becomes their s0."""
        mask = check_mask(done_mask, self.num_envs)
        self._pending |= mask
        self._use_reset_obs &= ~mask
        self._begun |= mask

    # -- stepping ----------------------------------------------------------------------------------------------------

    def _step(self, obs: Any) -> tuple[bool, dict[str, np.ndarray]]:
        idle = np.flatnonzero(~self._begun)
        if idle.size:
            raise RuntimeError(f"act()/observe() called before reset(): rows {idle.tolist()} have no episode; "
                               "call reset(first_observation) first")
        obs32, single = check_batch(obs, self.num_envs, self.config.state_dim, "observation")
        np.copyto(self._obs, np.where(self._use_reset_obs[:, None], self._reset_obs, obs32))
        self._reset[:] = self._pending
        self.session.run_with_iobinding(self._bindings[self._current])
        out = self._out
        check_outputs(out["action"], out["value"], out.get("termination_prob"), self.steps)  # state not advanced
        self._current = 1 - self._current
        self.steps[self._pending] = 0
        self.steps += 1
        self._pending[:] = False
        self._use_reset_obs[:] = False
        return single, out

    def act_with_info(self, obs: Any, reward: Any = None) -> tuple[np.ndarray, StepInfo]:
        """``act`` plus the value estimate and termination probability of the same token (``reward`` is ignored)."""
        single, out = self._step(obs)
        pick = (lambda a: a[0].copy()) if single else (lambda a: a.copy())
        term = out.get("termination_prob")
        info: StepInfo = {"value": pick(out["value"]), "termination_prob": None if term is None else pick(term)}
        return pick(out["action"]), info

    def observe(self, obs: Any, action: Any) -> np.ndarray:
        """Advance like ``act(obs)`` but record ``action`` as the one taken (it is what the next token carries);
        returns the policy's own action, as ``act`` would."""
        taken, single = check_batch(action, self.num_envs, self.config.action_dim, "action")
        if single != (np.ndim(obs) == 1):
            raise ValueError(f"action has shape {np.shape(action)}, but the observation has shape {np.shape(obs)}")
        single, out = self._step(obs)
        self._states[self._current]["prev_action"][:] = taken
        return out["action"][0].copy() if single else out["action"].copy()
