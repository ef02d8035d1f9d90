"""Closed loops that check sampled actions: two policies (or a policy and another ONNX runtime) given the same
observations and the same uniforms must draw the same actions. Shared by the Discrete (tests/test_discrete_tokens.py)
and Gaussian (tests/test_gaussian_actions.py) policies' tests.

A *world* hands out observations for B rows and restarts the rows whose episode ended: ``reset() -> obs [B, ...]``
and ``step(actions) -> (obs, done [B])``; a row that is done already holds its new episode's first observation.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from gptrl.rollout import CachedPolicy, RolloutState, StepOutputs
from gptrl.synthetic import ClosedLoopEnv


class GymRows:
    """B gymnasium envs (seeds 0..B-1), each restarted when its episode ends (``make_kwargs``: e.g. a shorter
    ``max_episode_steps``)."""

    def __init__(self, env_id: str, num_envs: int = 2, **make_kwargs):
        from gptrl.envs import register

        register()  # gptrl's own envs (ASCII Breakout) by id
        self.envs = [gym.make(env_id, **make_kwargs) for _ in range(num_envs)]

    def reset(self) -> np.ndarray:
        return np.array([env.reset(seed=s)[0] for s, env in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = [env.step(a.item() if a.ndim == 0 else a) for env, a in zip(self.envs, actions)]
        obs = np.array([r[0] for r in results])
        done = np.array([r[2] or r[3] for r in results])
        for row in np.flatnonzero(done):
            obs[row] = self.envs[row].reset()[0]
        return obs, done


class SyntheticRows:
    """gptrl's synthetic closed-loop env (no simulator) for any float observation and action size; row r restarts
    every ``period + r`` steps, so the rows' episodes end at different times."""

    def __init__(self, state_dim: int, action_dim: int, num_envs: int = 2, period: int = 7):
        self.env = ClosedLoopEnv(state_dim, action_dim, num_envs, seed=0)
        self.periods, self.t = period + np.arange(num_envs), 0

    def reset(self) -> np.ndarray:
        return self.env.reset()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.t += 1
        obs = self.env.step(np.asarray(actions, np.float32).reshape(len(self.periods), -1))
        done = self.t % self.periods == 0
        obs[done] = self.env.reset()[done]
        return obs, done


class StepDriver(CachedPolicy):
    """gptrl's rollout bookkeeping around a portable step graph run by any runtime (``run(feeds) -> outputs``):
    the driver keeps the key/value ring and writes each step's new keys into it."""

    def __init__(self, run, config, num_envs: int):
        m, kv = config.model, config.context_length
        self.config, self.run = config, run
        self.state = RolloutState(num_envs, config.observation, config.action, kv, "discard", positions="per_row")
        self.keys = [np.zeros((num_envs, m.num_heads, m.head_dim, kv), np.float32) for _ in range(m.num_layers)]
        self.values = [np.zeros((num_envs, m.num_heads, kv, m.head_dim), np.float32) for _ in range(m.num_layers)]

    def _forward(self, step) -> StepOutputs:
        feeds = {"state": step.states, "action": step.actions, "is_bos": step.is_bos.astype(np.float32),
                 "position": self.state.position_ids(), "past_valid": self.state.valid.copy(),
                 "uniform": step.uniform, "sample": step.sample}
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = k.copy(), v.copy()
        out = self.run(feeds)
        slot = self.state.slot
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            k[:, :, :, slot], v[:, :, slot, :] = out[f"new_key.{i}"], out[f"new_value.{i}"]
        return StepOutputs(*(np.asarray(out[n]) for n in ("action_out", "value", "termination_prob", "dist",
                                                           "log_prob")))


def relative(want, got) -> float:
    """The largest difference relative to 1 + the size of what was expected."""
    return float((np.abs(np.asarray(got, np.float64) - want) / (1.0 + np.abs(want))).max())


def differing(want: np.ndarray, got: np.ndarray) -> int:
    """How many actions differ: exactly for integer (Discrete) actions, beyond float rounding (1e-5 relative) for
    float ones."""
    want, got = np.asarray(want), np.asarray(got)
    assert want.shape == got.shape and want.dtype == got.dtype, (want.shape, got.shape, want.dtype, got.dtype)
    if want.dtype.kind == "i":
        return int((want != got).sum())
    return int((np.abs(got.astype(np.float64) - want) > 1e-5 * (1 + np.abs(want))).sum())


def closed_loop(policy, other, world, seed: int, steps: int = 40) -> tuple[float, int]:
    """The world follows ``policy``'s sampled actions (rows restarted when they end); ``other`` sees the same
    observations and draws from a generator seeded alike. Returns the largest difference of the distributions and
    log-probabilities (relative to 1 + their size), and how many actions differ."""
    obs = world.reset()
    for p in (policy, other):
        p.seed(seed)
        p.reset(obs)
    worst, differ = 0.0, 0
    for _ in range(steps):
        action, info = policy.act_with_info(obs, deterministic=False)
        got, got_info = other.act_with_info(obs, deterministic=False)
        differ += differing(action, got)
        worst = max(worst, relative(info["dist"], got_info["dist"]), relative(info["log_prob"], got_info["log_prob"]))
        obs, done = world.step(action)
        for p in (policy, other):
            p.reset_rows(done)
    return worst, differ


def stateful_loop(policy, run, state: dict, world, seed: int, steps: int = 40) -> tuple[float, int]:
    """A stateful graph on another runtime (``run(feeds) -> outputs``), keeping its own state (``state``: zeros to
    begin, then each state_out fed back as state_in) and given the uniforms gptrl's ``policy`` draws from its
    generator seeded with ``seed``; the world follows ``policy``. Returns what :func:`closed_loop` returns."""
    num_envs, codec = policy.num_envs, policy.config.action
    noise = np.random.default_rng(seed)  # the same stream as policy.seed(seed)
    policy.seed(seed)
    obs = world.reset()
    policy.reset(obs)
    reset, differ, worst = np.ones(num_envs, bool), 0, 0.0
    for _ in range(steps):
        action, info = policy.act_with_info(obs, deterministic=False)
        uniform = noise.random((num_envs, codec.noise_width), dtype=np.float32)
        feed_obs = np.asarray(obs, policy.config.observation.dtype).reshape(num_envs, -1)
        out = run({"obs": feed_obs, "reset": reset, "uniform": uniform, "sample": np.ones(num_envs, bool), **state})
        differ += differing(action, np.asarray(out["action"]))
        worst = max(worst, relative(info["log_prob"], out["log_prob"]), relative(info["dist"], out["dist"]))
        state = {k.replace("state_out.", "state_in."): np.asarray(v) for k, v in out.items()
                 if k.startswith("state_out.")}
        obs, reset = world.step(action)
        policy.reset_rows(reset)
    return worst, differ


def seeded_draws(make_policy, obs: np.ndarray, seed: int, steps: int = 12) -> np.ndarray:
    """``steps`` actions of a fresh policy seeded with ``seed``, through Stable-Baselines3's ``predict`` with
    ``deterministic=False`` (the first call starts the episode)."""
    policy = make_policy()
    policy.seed(seed)
    return np.array([policy.predict(obs, deterministic=False)[0] for _ in range(steps)])


def spread_bundle(config, folder, seed: int = 0, spread: float = 0.3):
    """A fresh policy of ``config`` written as a bundle at ``folder``, its weights spread wider than the
    initialisation's (normal noise of std ``spread`` added), so its distribution moves with what it reads."""
    import torch

    from gptrl.exporter import PolicyModel, export_bundle, init_weights

    model = init_weights(PolicyModel(config), seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(spread * torch.randn(p.shape, generator=generator))
    return export_bundle(model, folder)


def steps_on(runtime: str) -> int:
    """Closed-loop steps per check: onnx.reference is a slow interpreter."""
    return 20 if runtime == "onnx.reference" else 40


def assert_step_graph_samples_alike(graphs: dict, config, runtime: str, world) -> None:
    """The portable step graph on ``runtime``, driven as gptrl's runtime drives it, draws what gptrl's runtime
    draws from the same uniforms (two rows, restarting as their episodes end)."""
    from test_cross_runtime import RUNTIMES

    from gptrl.runtime import load_policy

    reference = load_policy(graphs["portable"], num_envs=2, positions="per_row")
    worst, differ = closed_loop(reference, StepDriver(RUNTIMES[runtime](graphs["portable"]), config, 2), world,
                                seed=3, steps=steps_on(runtime))
    assert differ == 0 and worst < 1e-5, (runtime, worst, differ)


def assert_stateful_graph_samples_alike(path, runtime: str, world) -> None:
    """The stateful graph on ``runtime`` keeps its own state (zeros to begin, each state_out fed back as state_in)
    and, given the uniforms gptrl's policy draws from its seeded generator, acts as that policy does."""
    from test_cross_runtime import RUNTIMES, zero_state

    from gptrl.runtime import load_policy

    worst, differ = stateful_loop(load_policy(path, num_envs=2), RUNTIMES[runtime](path), zero_state(path, 2), world,
                                  seed=11, steps=steps_on(runtime))
    assert differ == 0 and worst < 1e-5, (runtime, worst, differ)
