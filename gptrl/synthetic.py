"""One synthetic closed-loop environment (numpy only) for checks and benchmarks that need no simulator.

Each next observation depends on the actions just taken, so a policy that drifts from its reference sees different
inputs and the drift shows up, as it would in a real rollout:

    latent' = tanh(0.8 latent + action @ mixing + noise_std * N(0, 1)),  obs = mean + std * latent

``mean`` / ``std`` put observations on the scale a policy's normaliser expects.
"""

from __future__ import annotations

import numpy as np


class ClosedLoopEnv:
    def __init__(self, state_dim: int, action_dim: int, num_envs: int = 1, *, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None, noise_std: float = 0.1, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.mixing = self.rng.normal(size=(action_dim, state_dim)).astype(np.float32)
        self.mean = np.zeros(state_dim, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(state_dim, np.float32) if std is None else np.asarray(std, np.float32)
        self.noise_std, self.shape = noise_std, (num_envs, state_dim)
        self.latent = np.zeros(self.shape, np.float32)

    def _obs(self) -> np.ndarray:
        return (self.mean + self.std * self.latent).astype(np.float32)

    def reset(self) -> np.ndarray:
        """Observations [num_envs, state_dim] of a fresh start."""
        self.latent = self.rng.normal(size=self.shape).astype(np.float32)
        return self._obs()

    def step(self, action: np.ndarray) -> np.ndarray:
        """The next observations after ``action`` [num_envs, action_dim]."""
        drive = 0.8 * self.latent + np.asarray(action, np.float32) @ self.mixing
        self.latent = np.tanh(drive + self.noise_std * self.rng.normal(size=self.shape)).astype(np.float32)
        return self._obs()
