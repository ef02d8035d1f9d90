"""Envs gptrl adds to gymnasium's registry: the RL Zoo's masked-velocity tasks, where one observation is not enough
(the policy must infer velocities from its context, GPT2PPO's thesis), and gptrl's ASCII Breakout
(``gptrl/AsciiBreakout-v0``, ``gptrl/AsciiBreakoutSmall-v0``: ``gptrl.envs.breakout``), whose observation is a grid of
character codes.

``register()`` is idempotent and called wherever gptrl makes an env by id (evaluation, record, training), so
``gptrl eval bundles/cartpolenovel-v1`` works like any other bundle; other code calls it before ``gym.make``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from gptrl.envs.breakout import BREAKOUT

__all__ = ["BREAKOUT", "MASKED", "MaskedObservation", "register"]

# id -> (the env it masks, the observation entries kept): the RL Zoo's definitions.
MASKED: dict[str, tuple[str, tuple[int, ...]]] = {
    "CartPoleNoVel-v1": ("CartPole-v1", (0, 2)),  # cart position, pole angle
    "LunarLanderNoVel-v3": ("LunarLander-v3", (0, 1, 4, 6, 7)),  # x, y, angle, the two leg contacts
}


class MaskedObservation(gym.ObservationWrapper):
    """Keeps the observation entries ``keep`` of a Box observation (the rest, velocities, are dropped)."""

    def __init__(self, env: gym.Env, keep: tuple[int, ...]):
        super().__init__(env)
        space = env.observation_space
        self.keep = np.asarray(keep, np.int64)
        self.observation_space = gym.spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def _make_masked(base: str, keep: tuple[int, ...], **kwargs: Any):
    """The base env's class (no wrappers: gymnasium adds the time limit and checks from this id's spec) with only
    the kept entries observed."""
    from gymnasium.envs.registration import load_env_creator

    spec = gym.spec(base)
    env = load_env_creator(spec.entry_point)(**{**spec.kwargs, **kwargs})
    return MaskedObservation(env, keep)


def register() -> None:
    """Add the masked envs to gymnasium's registry (once; a later call does nothing)."""

    for env_id, (base, keep) in MASKED.items():
        if env_id in gym.registry:
            continue
        spec = gym.spec(base)
        gym.register(id=env_id, entry_point=_make_masked, kwargs={"base": base, "keep": keep},
                     max_episode_steps=spec.max_episode_steps, reward_threshold=spec.reward_threshold)
    for env_id, (layout, max_steps) in BREAKOUT.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="gptrl.envs.breakout:make", kwargs={"layout": layout},
                         max_episode_steps=max_steps, reward_threshold=layout.ceiling)
