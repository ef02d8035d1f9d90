"""ASCII Breakout's speed: env steps per second on one core, random actions, for both grids; the bare env and the
env as ``gym.make`` returns it (with gymnasium's checker, order enforcing and time-limit wrappers). The goal of
issue 23 is >= 20,000 steps/s. Usage: ``python benchmarks/ascii_breakout.py [--steps N]``."""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import numpy as np

from gptrl.envs import BREAKOUT, register
from gptrl.envs.breakout import AsciiBreakout


def steps_per_second(env, steps: int, seed: int = 0) -> float:
    actions = np.random.default_rng(seed).integers(0, 3, steps).tolist()
    env.reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    register()
    print(f"{'env':30s} {'wrappers':10s} {'steps/s (best of ' + str(args.repeats) + ')':>24s}")
    for env_id, (layout, _) in BREAKOUT.items():
        for name in ("none", "gym.make"):
            best = max(steps_per_second(AsciiBreakout(layout=layout) if name == "none" else gym.make(env_id),
                                        args.steps, seed) for seed in range(args.repeats))
            print(f"{env_id:30s} {name:10s} {best:24,.0f}")


if __name__ == "__main__":
    main()
