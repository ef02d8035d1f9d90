"""Teacher snapshots: the quick evaluation written into an actor's metadata, and the run's ``progress.csv``.

Both teacher trainers (``teacher``: Stable-Baselines3; ``vector_tqc``: many envs and a GPU) write snapshots
through these, so ``teacher.publish_teachers`` reads either run folder the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gptrl.training.teacher_actor import TeacherActor

EVAL_SEED_BASE = 10_000  # teacher evaluation seeds stay clear of the 0..49 used for the shipped bundles


def evaluate_actor(actor: TeacherActor, env_id: str, episodes: int, seed: int = EVAL_SEED_BASE) -> list[float]:
    """Returns of the deterministic actor on ``episodes`` seeded episodes (no torch, no SB3)."""
    from gptrl.evaluation import evaluate

    return evaluate(env_id, actor, seeds=range(seed, seed + episodes)).returns


def save_snapshot(actor: TeacherActor, env_id: str, episodes: int, path: str | Path) -> tuple[int, float, float]:
    """Evaluate ``actor`` on ``episodes`` seeds from ``EVAL_SEED_BASE``, record that in its metadata, save it;
    returns (steps, mean, std)."""
    returns = evaluate_actor(actor, env_id, episodes)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    actor.info |= {"eval_return_mean": mean, "eval_return_std": std, "eval_episodes": episodes,
                   "eval_seed": EVAL_SEED_BASE}
    actor.save(path)
    return actor.info["steps"], mean, std


def log_snapshot(out: Path, env_id: str, steps: int, seconds: float, mean: float, std: float) -> None:
    """One ``progress.csv`` row (header on first use) and one log line."""
    path = out / "progress.csv"
    new_file = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new_file:
            w.writerow(["steps", "seconds_this_run", "eval_return_mean", "eval_return_std"])
        w.writerow([steps, round(seconds, 1), round(mean, 2), round(std, 2)])
    print(f"{env_id} step {steps}: eval {mean:.1f} +- {std:.1f} ({seconds:.0f} s)", flush=True)
