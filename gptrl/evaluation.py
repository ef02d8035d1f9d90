"""Rolling out a runner in gymnasium envs and summarising the returns (no torch needed).

``evaluate`` follows the protocol of the reference's published table: one episode per seed
(episode i resets with seeds[i]), at most ``max_steps`` steps each, and a normalised score
100 * (R - random) / (expert - random) against the references below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

# (random, expert) episode returns per env, derived from the reference's table.
REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "Hopper-v5": (17.6, 3857.7),
    "HalfCheetah-v5": (-257.1, 16241.0),
    "Walker2d-v5": (-0.6, 6847.1),
    "Ant-v5": (-70.1, 6673.6),
    "Humanoid-v5": (108.6, 8603.3),
}


class Runner(Protocol):
    num_envs: int

    def reset(self, obs: Any) -> None: ...
    def act(self, obs: Any) -> np.ndarray: ...


def normalized_score(env_id: str | None, episode_return: float) -> float | None:
    """100 * (R - random) / (expert - random), or None for an env without references."""
    if env_id not in REFERENCE_RETURNS:
        return None
    random, expert = REFERENCE_RETURNS[env_id]
    return 100.0 * (episode_return - random) / (expert - random)


def summarize(returns: list[float], lengths: list[int]) -> dict[str, Any]:
    """The episode statistics (population std, as numpy's default)."""
    r, n = np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    return {
        "num_episodes": len(returns),
        "returns": [float(x) for x in returns],
        "lengths": [int(x) for x in lengths],
        "return_mean": float(r.mean()),
        "return_std": float(r.std()),
        "length_mean": float(n.mean()),
        "length_std": float(n.std()),
    }


def play_episode(env, runner: Runner, *, seed: int | None, max_steps: int | None, first: bool = True) -> tuple[float, int]:
    """One episode in a single gymnasium env; returns (return, length)."""
    obs, _ = env.reset(seed=seed) if (seed is not None or first) else env.reset()
    runner.reset(obs)
    total, steps = 0.0, 0
    while max_steps is None or steps < max_steps:
        obs, reward, terminated, truncated, _ = env.step(runner.act(obs))
        total += float(reward)
        steps += 1
        if terminated or truncated:
            break
    return total, steps


def _check_single(runner: Runner) -> None:
    if getattr(runner, "num_envs", 1) != 1:
        raise ValueError(f"this loop drives one env; the runner holds num_envs={runner.num_envs} rows")


def run_episodes(env, runner: Runner, *, num_episodes: int, seed: int | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Run ``num_episodes`` episodes back to back; only the first env.reset is seeded."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    _check_single(runner)
    returns, lengths = [], []
    for i in range(num_episodes):
        r, n = play_episode(env, runner, seed=seed if i == 0 else None, max_steps=max_steps, first=i == 0)
        returns.append(r)
        lengths.append(n)
    return summarize(returns, lengths)


def evaluate(
    env_or_id,
    runner: Runner,
    *,
    seeds: Iterable[int] = range(50),
    max_steps: int = 1000,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One episode per seed; the statistics of ``run_episodes`` plus ``normalized_score``."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    _check_single(runner)
    own_env = isinstance(env_or_id, str)
    if own_env:
        import gymnasium as gym

        env = gym.make(env_or_id, **(env_kwargs or {}))
    else:
        env = env_or_id
    env_id = env_or_id if own_env else getattr(getattr(env, "spec", None), "id", None)
    iterator: Iterable[int] = seeds
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(seeds, desc=f"eval {env_id or ''}".strip(), unit="ep")
    try:
        returns, lengths = [], []
        for seed in iterator:
            r, n = play_episode(env, runner, seed=seed, max_steps=max_steps)
            returns.append(r)
            lengths.append(n)
    finally:
        if own_env:
            env.close()
    stats = summarize(returns, lengths)
    stats["normalized_score"] = normalized_score(env_id, stats["return_mean"])
    return stats
