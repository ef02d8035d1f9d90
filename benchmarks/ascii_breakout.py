"""ASCII Breakout's speed and its anchors.

Speed: env steps per second on one core, random actions, for both grids; the bare env and the env as ``gym.make``
returns it (with gymnasium's checker, order enforcing and time-limit wrappers). The goal of issue 23 is >= 20,000
steps/s.

Anchors (issue 23, item 3): the mean return and bricks cleared over seeds 0..49 (the model cards' protocol, the
registered time limit) of a uniformly random policy (its generator seeded with the episode's seed) and of the
scripted heuristic ``gptrl.envs.breakout.heuristic_action`` (the paddle follows the ball's column), played by
``gptrl.training.breakout_anchors.scripted`` (which also writes the card's anchors, the planner's among them).

Usage: ``python benchmarks/ascii_breakout.py [--steps N] [--episodes 50] [--out results.json]``."""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np

from gptrl.envs import BREAKOUT, register
from gptrl.envs.breakout import AsciiBreakout
from gptrl.training.breakout_anchors import scripted


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
    parser.add_argument("--episodes", type=int, default=50, help="anchor episodes (seeds 0..N-1)")
    parser.add_argument("--out", default=None, help="also write the speeds and anchors as JSON here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    register()
    results: dict = {"speed": [], "anchors": []}
    print(f"{'env':30s} {'wrappers':10s} {'steps/s (best of ' + str(args.repeats) + ')':>24s}")
    for env_id, (layout, _) in BREAKOUT.items():
        for name in ("none", "gym.make"):
            best = max(steps_per_second(AsciiBreakout(layout=layout) if name == "none" else gym.make(env_id),
                                        args.steps, seed) for seed in range(args.repeats))
            print(f"{env_id:30s} {name:10s} {best:24,.0f}")
            results["speed"].append({"env": env_id, "wrappers": name, "steps_per_s": round(best)})
    print(f"\nanchors, seeds 0..{args.episodes - 1}:")
    for env_id, (layout, _) in BREAKOUT.items():
        for policy in ("random", "heuristic"):
            row = {"env": env_id, **scripted(env_id, policy, args.episodes), "ceiling": layout.ceiling}
            del row["returns"]
            results["anchors"].append(row)
            print(f"{env_id:30s} {policy:10s} return {row['return_mean']:7.1f} +- {row['return_std']:6.1f} of "
                  f"{row['ceiling']:.0f}, bricks {row['bricks_mean']:5.1f}, length {row['length_mean']:7.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
