"""Recorded trajectories of the shipped bundles (tests/data/trajectories/, written by tests/record_trajectories.py)
and their teacher-forced replay: every step's recorded observation (and reward) is fed to a policy and its action
compared with the recorded one, so the comparison never depends on a closed loop that a chaotic env amplifies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIR = Path(__file__).parent / "data" / "trajectories"


@dataclass
class Trajectory:
    name: str
    meta: dict  # env_id, seeds, targets, the recording's provenance
    obs: np.ndarray  # [E, T, S] float32: what the policy saw at each step
    rewards: np.ndarray  # [E, T] float64: the reward the env returned with obs[t] (NaN at t = 0)
    actions: np.ndarray  # [E, T, *action]: the runtime's action at each step (float32; int64 for a Discrete one)
    lengths: np.ndarray  # [E]: steps recorded per episode (fewer than T where it ended)

    @property
    def targets(self) -> list[float | None]:
        return self.meta["targets"]


def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("*.npz"))


def load(name: str) -> Trajectory:
    data = np.load(DIR / f"{name}.npz")
    return Trajectory(name, json.loads(str(data["meta"])), data["obs"], data["rewards"], data["actions"],
                      data["lengths"])


def play(policy, traj: Trajectory, episodes: list[int]) -> np.ndarray:
    """The actions ``policy`` takes on the recorded inputs of ``episodes`` (one env for one episode, else one row
    per episode), [T, *action] or [T, rows, *action] over the shortest of them. Causal policies are teacher-forced through
    ``observe``: the recorded action, not their own, goes into the next token, so a rounding difference near the
    tanh bounds (which the atanh feedback amplifies) cannot build up over the steps. A Decision Transformer's window
    keeps its own actions (it has no ``observe``); they enter it as they are, without atanh."""
    rows = np.asarray(episodes)
    steps = int(traj.lengths[rows].min())
    single = len(episodes) == 1 and getattr(policy, "num_envs", 1) == 1
    pick = (lambda x: x[rows[0]]) if single else (lambda x: x[rows])
    obs, rewards, recorded = pick(traj.obs), pick(traj.rewards), pick(traj.actions)
    conditioned = bool(getattr(policy, "return_conditioned", False))
    if conditioned:
        targets = [traj.targets[i] for i in episodes]
        policy.reset(obs[..., 0, :], target_return=targets[0] if single else np.asarray(targets))
    else:
        policy.reset(obs[..., 0, :])
    out = []
    for t in range(steps):
        step_obs = obs[..., t, :]
        if conditioned:
            out.append(policy.act(step_obs, reward=None if t == 0 else rewards[..., t]))
        else:
            out.append(policy.observe(step_obs, recorded[t] if single else recorded[:, t]))
    return np.stack(out)


def worst_error(policy, traj: Trajectory, episodes: list[int]) -> float:
    """Largest |action - recorded action| over the replay of ``episodes``."""
    got = play(policy, traj, episodes)
    rows = np.asarray(episodes)
    steps = got.shape[0]
    single = len(episodes) == 1 and getattr(policy, "num_envs", 1) == 1
    expected = traj.actions[rows[0], :steps] if single else traj.actions[rows, :steps].swapaxes(0, 1)
    return float(np.abs(got - expected).max())


def synthetic(state_dim: int, action_dim: int, episodes: int, steps: int, seed: int = 0,
              targets: list[float] | None = None) -> Trajectory:
    """Fixed made-up inputs for policies without a recorded trajectory (random-weight test bundles): observations,
    rewards and actions drawn once from ``seed``; the actions are what teacher forcing feeds back."""
    rng = np.random.default_rng(seed)
    rewards = rng.uniform(0.0, 3.0, size=(episodes, steps))
    rewards[:, 0] = np.nan
    return Trajectory("synthetic", {"targets": targets or [None] * episodes},
                      rng.normal(size=(episodes, steps, state_dim)).astype(np.float32), rewards,
                      rng.uniform(-0.9, 0.9, size=(episodes, steps, action_dim)).astype(np.float32),
                      np.full(episodes, steps))


def same_actions(a, b, traj: Trajectory, episodes: list[int]) -> float:
    """Largest |difference| between two policies' actions on the same fixed inputs (each played as given: a
    one-env policy episode by episode, a batched one with the episodes as rows)."""
    def actions(policy) -> np.ndarray:
        if getattr(policy, "num_envs", 1) == 1 and len(episodes) > 1:
            return np.stack([play(policy, traj, [e]) for e in episodes], axis=1)
        return play(policy, traj, episodes)

    return float(np.abs(actions(a) - actions(b)).max())
