"""The torch-free policy for a Causal GPT-RL stateful graph: ``obs, reset, [uniform, sample,] state_in.* -> action,
..., state_out.*``.

The graph keeps the episode (ring, mask, positions) itself, so a step here is one copy in, one run and one copy
out; the state alternates between two buffer sets (``gptrl.runtime.buffers``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from gptrl.bundle.policy_graph import PolicyMetadata, state_spec
from gptrl.contract import PositionMode, StepInfo
from gptrl.rollout import PolicyBase, Rows, check_outputs, resolve_serving
from gptrl.runtime.buffers import StateBuffers
from gptrl.runtime.sampling import GraphSampling


class StatefulPolicy(GraphSampling, PolicyBase):
    """The same contract as the other runners (reset, act, act_with_info, observe, reset_rows, predict); every row
    behaves as a one-env runner (``positions`` is always "per_row")."""

    def __init__(self, session: ort.InferenceSession, metadata: PolicyMetadata, *, num_envs: int = 1):
        self.session, self.metadata, self.config = session, metadata, metadata.config
        self.variant = metadata.variant
        kv = metadata.kv_cache_max_len
        resolve_serving(self.config, kv, metadata.bos_cache_mode, num_envs)  # limits, before allocating
        c, codec = self.config, self.config.action
        self.rows = Rows(num_envs, c.observation)
        B = self.num_envs = self.rows.num_envs
        self._in = {"obs": np.zeros((B, c.state_dim), c.observation.dtype), "reset": np.zeros(B, bool)}
        self._out = {"action": np.zeros((B, *codec.shape), codec.dtype), "value": np.zeros(B, np.float32)}
        if metadata.sampling:
            self._in |= {"uniform": np.zeros((B, codec.noise_width), np.float32), "sample": np.zeros(B, bool)}
            self._out |= {"log_prob": np.zeros(B, np.float32), "dist": np.zeros((B, codec.param_width), np.float32)}
        if c.model.use_eos:
            self._out["termination_prob"] = np.zeros(B, np.float32)
        self.buffers = StateBuffers(session, state_spec(c, kv), B, self._in, self._out)  # type: ignore[arg-type]

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
        return ~self.rows.started

    # -- episode control -------------------------------------------------------------------------------------------

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start a new episode in every row from its first observation ([S] or [B, S]); ``target_return`` is
        accepted and ignored (a causal policy is not return-conditioned)."""
        self.rows.reset(obs)

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        """Restart the flagged rows; their next observation (act/observe) becomes their s0."""
        self.rows.reset_rows(done_mask)

    # -- stepping ----------------------------------------------------------------------------------------------------

    def _step(self, obs: Any, deterministic: bool) -> bool:
        step = self.rows.begin(obs)
        np.copyto(self._in["obs"], step.obs)
        self._in["reset"][:] = step.begins
        uniform, sample = self.uniforms(self.config.action.noise_width, deterministic)
        if self.metadata.sampling:
            self._in["uniform"][:], self._in["sample"][:] = uniform, sample
        self.buffers.run(self.session)
        out = self._out
        check_outputs(out["action"], out["value"], out.get("termination_prob"), self.rows.steps)  # not advanced
        self.buffers.advance()
        self.rows.end()
        return step.single

    def act_with_info(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> tuple[np.ndarray, StepInfo]:
        """``act`` plus the value estimate, termination probability, and (a /2 graph) the distribution's parameters
        and the log-probability of the action given back (``reward`` is ignored)."""
        single = self._step(obs, deterministic)
        pick = (lambda a: None if a is None else a[0].copy()) if single else (lambda a: None if a is None else a.copy())
        out = self._out
        info: StepInfo = {"value": pick(out["value"]), "termination_prob": pick(out.get("termination_prob")),
                          "dist": pick(out.get("dist")), "log_prob": pick(out.get("log_prob"))}
        return pick(out["action"]), info

    def observe(self, obs: Any, action: Any) -> np.ndarray:
        """Advance like ``act(obs)`` but record ``action`` as the one taken (it is what the next token carries);
        returns the policy's own action, as ``act`` would."""
        taken, single = self.config.action.check(action, self.num_envs)
        if single != self.rows.check_obs(obs)[1]:
            raise ValueError(f"action has shape {np.shape(action)}, but the observation has shape {np.shape(obs)}")
        single = self._step(obs, True)
        self.buffers.state_in["prev_action"][:] = taken
        return self._out["action"][0].copy() if single else self._out["action"].copy()
