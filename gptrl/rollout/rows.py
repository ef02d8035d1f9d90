"""The per-row episode state every runner shares (torch or onnxruntime, either family, step or stateful graph):
which rows have an episode, which begin one on their next step and from which observation, and how many steps each
has taken. What a family keeps beside it (a key/value ring, a window, a graph's state tensors) is its own.

``reset(obs)`` begins every row's episode with ``obs`` as s0 (the observation of the next act is not read);
``reset_rows(mask)`` makes the flagged rows begin one at their next step, with that step's observation as s0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gptrl.bundle.codecs import ObservationEncoder
from gptrl.rollout.checks import MAX_NUM_ENVS, check_count, check_mask


@dataclass
class RowStep:
    """One step's rows: the observation each reads (s0 for a beginning row), what the caller passed, who begins."""

    obs: np.ndarray  # [B, S] the observation each row's step reads
    given: np.ndarray  # [B, S] this call's observations
    begins: np.ndarray  # [B] bool: the row begins its episode at this step
    single: bool  # the caller passed one unbatched observation

    def shape_out(self, array: np.ndarray | None) -> np.ndarray | None:
        """[B, ...] -> [...] for an unbatched caller."""
        if array is None:
            return None
        return array[0] if self.single else array


_FIELDS = ("started", "begins", "first_obs", "has_first", "steps")


class Rows:
    def __init__(self, num_envs: Any, encoder: ObservationEncoder):
        self.num_envs = check_count("num_envs", num_envs, MAX_NUM_ENVS)
        self.encoder = encoder
        B = self.num_envs
        self.started = np.zeros(B, bool)  # the row has an episode (acting before one is an error)
        self.begins = np.zeros(B, bool)  # its next step begins an episode
        self.first_obs = np.zeros((B, encoder.size), encoder.dtype)  # s0 given to reset()
        self.has_first = np.zeros(B, bool)  # reset() gave s0 (else the next step's observation is s0)
        self.steps = np.zeros(B, np.int64)  # steps since the row's episode began (for messages)

    def check_obs(self, obs: Any) -> tuple[np.ndarray, bool]:
        return self.encoder.check(obs, self.num_envs)

    def reset(self, obs: Any) -> np.ndarray:
        first, _ = self.check_obs(obs)
        self.first_obs[:] = first
        self.has_first[:] = self.begins[:] = self.started[:] = True
        self.steps[:] = 0
        return first

    def reset_rows(self, done_mask: Any) -> np.ndarray:
        mask = check_mask(done_mask, self.num_envs)
        self.begins |= mask
        self.has_first &= ~mask
        self.started |= mask
        self.steps[mask] = 0
        return mask

    def begin(self, obs: Any) -> RowStep:
        """This step's rows; refuses a row that never began an episode and an observation the encoder refuses."""
        idle = np.flatnonzero(~self.started)
        if idle.size:
            raise RuntimeError(f"act()/observe() called before reset(): rows {idle.tolist()} have no episode; "
                               "call reset(first_observation) first")
        given, single = self.check_obs(obs)
        current = np.where(self.has_first.reshape(-1, *([1] * (given.ndim - 1))), self.first_obs, given)
        return RowStep(current, given, self.begins.copy(), single)

    def end(self) -> None:
        """The step was taken."""
        self.steps += 1
        self.begins[:] = False
        self.has_first[:] = False

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in _FIELDS}

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        for name, value in saved.items():
            getattr(self, name)[...] = value
