"""Rolling out a runner in gymnasium envs and summarising the returns (no torch needed).

``evaluate`` follows the protocol of the reference's published table: one episode per seed
(episode i resets with seeds[i]), at most ``max_steps`` steps each, and a normalised score
100 * (R - random) / (expert - random) against the references below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from gptrl.contract import Actor, EpisodeStats, EvalResult, conditioning

# (random, expert) episode returns per env, derived from the reference's table.
REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "Hopper-v5": (17.6, 3857.7),
    "HalfCheetah-v5": (-257.1, 16241.0),
    "Walker2d-v5": (-0.6, 6847.1),
    "Ant-v5": (-70.1, 6673.6),
    "Humanoid-v5": (108.6, 8603.3),
}


def normalized_score(env_id: str | None, episode_return: float) -> float | None:
    """100 * (R - random) / (expert - random), or None for an env without references."""
    if env_id not in REFERENCE_RETURNS:
        return None
    random, expert = REFERENCE_RETURNS[env_id]
    return 100.0 * (episode_return - random) / (expert - random)


def summarize(returns: list[float], lengths: list[int]) -> EpisodeStats:
    """The episode statistics (population std, as numpy's default)."""
    return EpisodeStats.from_episodes(returns, lengths)


def _conditioned(runner: Actor) -> bool:
    """Return-conditioned runners (Decision Transformers) take a target at reset and each step's reward."""
    return conditioning(runner, None)


def _sampling(deterministic: bool) -> dict[str, Any]:
    """The keyword ``act`` takes: none for greedy actions (any Actor), ``deterministic=False`` to sample."""
    return {} if deterministic else {"deterministic": False}


def play_episode(env, runner: Actor, *, seed: int | None, max_steps: int | None,
                 target_return: float | None = None, deterministic: bool = True) -> tuple[float, int]:
    """One episode in a single gymnasium env (``seed=None``: the env's own RNG continues); returns (return, length).

    A return-conditioned runner is reset with ``target_return`` (None: its default) and given each reward.
    ``deterministic=False`` samples each action from the policy's distribution (its own seeded generator).
    """
    conditioned = conditioning(runner, target_return)
    obs, _ = env.reset(seed=seed)
    runner.reset(obs, target_return=target_return) if conditioned else runner.reset(obs)
    total, steps, reward = 0.0, 0, None
    while max_steps is None or steps < max_steps:
        kw = _sampling(deterministic)
        action = runner.act(obs, reward=reward, **kw) if conditioned else runner.act(obs, **kw)  # type: ignore[call-arg]
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated:
            break
    return total, steps


def _check_single(runner: Actor) -> None:
    if getattr(runner, "num_envs", 1) != 1:
        raise ValueError(f"this loop drives one env; the runner holds num_envs={runner.num_envs} rows")


def run_episodes(env, runner: Actor, *, num_episodes: int, seed: int | None = None,
                 max_steps: int | None = None) -> EpisodeStats:
    """Run ``num_episodes`` episodes back to back; only the first env.reset is seeded."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    _check_single(runner)
    returns, lengths = [], []
    for i in range(num_episodes):
        r, n = play_episode(env, runner, seed=seed if i == 0 else None, max_steps=max_steps)
        returns.append(r)
        lengths.append(n)
    return summarize(returns, lengths)


def evaluate(
    env_or_id,
    runner: Actor,
    *,
    seeds: Iterable[int] = range(50),
    max_steps: int = 1000,
    num_envs: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    target_return: float | None = None,
    sample_seed: int | None = None,
    executor: Any = None,
) -> EvalResult:
    """One episode per seed; the statistics of ``run_episodes`` plus ``normalized_score``.

    ``num_envs > 1`` steps that many envs together (a gymnasium vector env, one batched
    policy call per step) with a runner built for ``num_envs`` rows, in waves of episodes
    that start together. Rows then use per-row positions and the one-env cache layout, so
    each episode is the one the one-env loop plays for its seed: bit for bit with
    onnxruntime on CPU, within the float rounding of batched matrix products with torch.

    ``target_return`` (env units) conditions a return-conditioned runner (a Decision Transformer; None: the bundle's
    default); the rewards are passed to it step by step. Other runners refuse a target.

    ``sample_seed`` None plays greedy actions; an integer samples every action from the policy's distribution
    (``act(..., deterministic=False)``), its generator seeded with it once before the first episode, so the same
    seed (and ``num_envs``) plays the same episodes again. A policy without a distribution refuses.

    ``executor`` (``gptrl.executor.RayExecutor``, ``LocalExecutor``) plays the seeds elsewhere: ``runner`` must then
    be a policy from ``gptrl.runtime.load_policy`` (its ``source`` rebuilds it in each worker) and ``env_or_id`` an
    env id; each worker holds one policy and one env of ``num_envs`` rows and plays waves of ``num_envs`` seeds, so
    each seed's return is the one this loop gives it. Sampled actions are refused there (one generator runs through
    every episode in order, which workers cannot share).
    """
    conditioning(runner, target_return)  # a target for a policy that takes none is refused
    deterministic = sample_seed is None
    if not deterministic:
        if not getattr(runner, "stochastic", False):
            raise ValueError(f"{type(runner).__name__} cannot sample actions (its head describes no distribution); "
                             "evaluate it without a sample seed")
        runner.seed(sample_seed)  # type: ignore[attr-defined]
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    if getattr(runner, "num_envs", 1) != num_envs:
        raise ValueError(f"the runner holds num_envs={runner.num_envs} rows but evaluate was asked for "
                         f"num_envs={num_envs}")
    if executor is not None:
        return _evaluate_with(executor, env_or_id, runner, seeds, max_steps, num_envs, env_kwargs, progress,
                              target_return, sample_seed)
    own_env = isinstance(env_or_id, str)
    env = make_env(env_or_id, num_envs, env_kwargs) if own_env else env_or_id
    env_id = env_or_id if own_env else _env_id(env)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), desc=f"eval {env_id or ''}".strip(), unit="ep")
    try:
        if num_envs == 1:
            returns, lengths = [], []
            for seed in seeds:
                r, n = play_episode(env, runner, seed=seed, max_steps=max_steps, target_return=target_return,
                                    deterministic=deterministic)
                returns.append(r)
                lengths.append(n)
                if bar is not None:
                    bar.update(1)
        else:
            returns, lengths = _evaluate_vector(env, runner, seeds, max_steps, bar, target_return, deterministic)
    finally:
        if bar is not None:
            bar.close()
        if own_env:
            env.close()
    stats = summarize(returns, lengths)
    return EvalResult(**stats.to_dict(), normalized_score=normalized_score(env_id, stats.return_mean))


def make_env(env_id: str, num_envs: int = 1, env_kwargs: dict[str, Any] | None = None):
    """``gym.make`` (or a sync vector env without autoreset); an unknown id raises ValueError naming it."""
    import gymnasium as gym

    from gptrl.envs import register

    register()
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"unknown gymnasium env {env_id!r} ({exc})") from None
    if num_envs == 1:
        return gym.make(env_id, **(env_kwargs or {}))
    from gymnasium.vector import AutoresetMode

    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}, **(env_kwargs or {}))


def _env_id(env) -> str | None:
    spec = getattr(env, "spec", None)
    if spec is None and hasattr(env, "envs"):
        spec = getattr(env.envs[0], "spec", None)
    return getattr(spec, "id", None)


def _evaluate_vector(envs, runner, seeds: list[int], max_steps: int, bar, target_return: float | None = None,
                     deterministic: bool = True) -> tuple[list[float], list[int]]:
    """Seeds played in waves of ``num_envs`` episodes that start together with a full reset.

    Rows could take a new seed as soon as they free up, but a row restarted mid-ring sees its cache entries in
    another slot order than the one-env loop does, and the different float rounding of its attention sums grows,
    in a chaotic env such as Walker2d, into a different episode. Starting every episode at an empty cache gives
    each row the one-env layout, so each seed's return is the one-env loop's (bit for bit with onnxruntime on
    CPU). A row whose episode ends before the wave's last plays unrecorded filler episodes until the wave ends.
    """
    from gymnasium.vector import AutoresetMode

    if envs.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
        raise ValueError("a vector env passed to evaluate must use autoreset_mode=AutoresetMode.DISABLED "
                         "(rows are reset by evaluate with their own seeds)")
    if not hasattr(runner, "positions"):
        raise ValueError(f"{type(runner).__name__} has no per-row positions; evaluate it with num_envs=1")
    n = envs.num_envs
    conditioned = _conditioned(runner)
    returns, lengths = [0.0] * len(seeds), [0] * len(seeds)
    previous = runner.positions
    runner.positions = "per_row"
    try:
        for first in range(0, len(seeds), n):
            wave = list(range(first, min(first + n, len(seeds))))
            episode = np.full(n, -1)  # index into seeds of each row's episode; -1 = filler
            episode[:len(wave)] = wave
            obs, _ = envs.reset(seed=[seeds[i] for i in wave] + [None] * (n - len(wave)))
            runner.reset(obs, target_return=target_return) if conditioned else runner.reset(obs)
            ret, length = np.zeros(n), np.zeros(n, dtype=np.int64)
            reward = None
            while (episode >= 0).any():
                kw = _sampling(deterministic)
                action = (runner.act(obs, reward=reward, **kw) if conditioned  # type: ignore[call-arg]
                          else runner.act(obs, **kw))
                obs, reward, terminated, truncated, _ = envs.step(action)
                ret += reward
                length += 1
                done = terminated | truncated | (length >= max_steps)
                for row in np.flatnonzero(done & (episode >= 0)):
                    returns[episode[row]], lengths[episode[row]] = float(ret[row]), int(length[row])
                    episode[row] = -1
                    if bar is not None:
                        bar.update(1)
                if done.any() and (episode >= 0).any():  # finished rows go on with filler episodes
                    obs, _ = envs.reset(options={"reset_mask": done})
                    if conditioned:
                        runner.reset_rows(done, target_return=target_return)
                    else:
                        runner.reset_rows(done)
                    ret[done], length[done] = 0.0, 0
    finally:
        runner.positions = previous
    return returns, lengths


class EpisodeJob:
    """The seeds of ``evaluate`` as a job an executor runs in its workers (``gptrl.executor``): ``setup`` builds one
    env and one policy (from the policy's ``source``, so no torch and no bundle folder is needed there), ``run``
    plays one wave of seeds with the loop ``evaluate`` itself uses and returns ``[[return, length], ...]``."""

    def __init__(self, env_id: str, source: Any, *, num_envs: int, max_steps: int,
                 env_kwargs: dict[str, Any] | None = None, target_return: float | None = None):
        self.env_id, self.source, self.num_envs, self.max_steps = env_id, source, num_envs, max_steps
        self.env_kwargs, self.target_return = dict(env_kwargs or {}), target_return

    def describe(self) -> dict[str, Any]:
        return {"job": "evaluate", "env_id": self.env_id, "policy": self.source.describe(), "num_envs": self.num_envs,
                "max_steps": self.max_steps, "env_kwargs": self.env_kwargs, "target_return": self.target_return}

    def setup(self) -> tuple[Any, Any]:
        env = make_env(self.env_id, self.num_envs, self.env_kwargs)
        return env, self.source.load(num_envs=self.num_envs)

    def run(self, state: tuple[Any, Any], wave: list[int]) -> list[list[float]]:
        env, runner = state
        if self.num_envs == 1:
            out = [play_episode(env, runner, seed=seed, max_steps=self.max_steps, target_return=self.target_return)
                   for seed in wave]
        else:
            returns, lengths = _evaluate_vector(env, runner, list(wave), self.max_steps, None, self.target_return)
            out = list(zip(returns, lengths))
        return [[float(r), int(n)] for r, n in out]

    def close(self, state: tuple[Any, Any]) -> None:
        state[0].close()


def _evaluate_with(executor, env_id, runner, seeds: list[int], max_steps: int, num_envs: int, env_kwargs,
                   progress: bool, target_return: float | None, sample_seed: int | None) -> EvalResult:
    if not isinstance(env_id, str):
        raise ValueError(f"evaluate with an executor takes an env id, not {type(env_id).__name__} (each worker makes "
                         "its own env)")
    if sample_seed is not None:
        raise ValueError(f"sample_seed={sample_seed}: sampled evaluation draws every episode from one generator in "
                         "order and cannot be spread over an executor's workers; evaluate it without an executor")
    source = getattr(runner, "source", None)
    if source is None:
        raise ValueError(f"{type(runner).__name__} records no source to rebuild it in a worker; an executor runs "
                         "policies loaded by gptrl.runtime.load_policy")
    make_env(env_id).close()  # an unknown id fails here, before any worker starts
    job = EpisodeJob(env_id, source, num_envs=num_envs, max_steps=max_steps, env_kwargs=env_kwargs,
                     target_return=target_return)
    waves = [seeds[i:i + num_envs] for i in range(0, len(seeds), num_envs)]
    if hasattr(executor, "start"):
        executor.start()  # a cluster to start or join: before the progress bar, which then counts episodes only
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), desc=f"eval {env_id}", unit="ep")
    try:
        done = executor.map(job, waves, on_result=None if bar is None else lambda i, r: bar.update(len(r)))
    finally:
        if bar is not None:
            bar.close()
    returns = [r for wave in done for r, _ in wave]
    lengths = [n for wave in done for _, n in wave]
    stats = summarize(returns, lengths)
    return EvalResult(**stats.to_dict(), normalized_score=normalized_score(env_id, stats.return_mean))
