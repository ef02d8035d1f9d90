"""What every runner shares on top of its ``act_with_info``: ``act``, Stable-Baselines3's ``predict``, and the seeded
generator a stochastic head samples from.

A sample is drawn from uniforms in [0, 1) (``ActionCodec.sample``), never from a runtime's own random ops, so the
torch runner and every ONNX runtime draw the same action from the same generator state: ``seed(s)`` then the same
calls give the same samples on each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gptrl.contract import StepInfo


class PolicyBase:
    num_envs: int
    return_conditioned = False  # a Decision Transformer takes a target at reset and each step's reward
    _rng: np.random.Generator | None = None

    @property
    def stochastic(self) -> bool:
        """Whether ``act(..., deterministic=False)`` samples (the head describes a distribution)."""
        return False

    @property
    def deterministic_reason(self) -> str:
        """Why a policy that is not ``stochastic`` refuses to sample."""
        return "its head describes no distribution to sample from"

    def act_with_info(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> tuple[np.ndarray, StepInfo]:
        raise NotImplementedError

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        raise NotImplementedError

    def _never_started(self) -> np.ndarray:
        """[num_envs] bool: rows that have no episode yet."""
        raise NotImplementedError

    def seed(self, seed: Any = None) -> None:
        """Seed the generator samples are drawn from (numpy's ``default_rng(seed)``)."""
        self._rng = np.random.default_rng(seed)

    def uniforms(self, width: int, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        """Uniforms [num_envs, width] in [0, 1) and the rows that sample; nothing is drawn for a greedy step."""
        if deterministic:
            return np.zeros((self.num_envs, width), np.float32), np.zeros(self.num_envs, bool)
        if not self.stochastic:
            raise ValueError(f"{type(self).__name__} only produces deterministic actions "
                             f"({self.deterministic_reason}); pass deterministic=True")
        if self._rng is None:
            self._rng = np.random.default_rng()
        return self._rng.random((self.num_envs, width), dtype=np.float32), np.ones(self.num_envs, bool)

    def act(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> np.ndarray:
        """The action for the current step: [*action] for one env, [B, *action] for a batch; a sample from the head's
        distribution with ``deterministic=False``."""
        return self.act_with_info(obs, reward, deterministic=deterministic)[0]

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        """Stable-Baselines3's convention: ``(action, state)``; ``episode_start`` flags new episodes.

        A row flagged in ``episode_start`` (or never started) takes this observation as its
        first state, so SB3's ``evaluate_policy`` can drive the policy through a VecEnv.
        The recurrent ``state`` lives inside the policy and is passed back unchanged.
        """
        if episode_start is None:
            starts = np.zeros(self.num_envs, dtype=bool)
        else:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
        if starts.shape != (self.num_envs,):
            raise ValueError(f"episode_start has shape {np.shape(episode_start)}, expected ({self.num_envs},)")
        starts = starts | self._never_started()
        if starts.any():
            self.reset_rows(starts)
        return self.act(observation, deterministic=deterministic), state
