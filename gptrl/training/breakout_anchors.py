"""ASCII Breakout's anchors (issue 23, item 3): what the shipped PPO bundle's card is measured against, on the
card's protocol (50 episodes, episode i reset with seed i, the registered time limit; greedy for learned policies).

- ``random``: uniformly random actions, the generator seeded with the episode's seed.
- ``heuristic``: ``gptrl.envs.breakout.heuristic_action``, the paddle follows the ball's column (reads the screen).
- ``planner``: ``gptrl.envs.breakout.planner_action``, the privileged teacher PPO is kickstarted by (reads the
  game's state and plans the landing column), the reference for what a policy can reach.
- ``context-1``: the ablation, gptrl's PPO with the bundle's preset and budget but ``--context-length 1``: the
  cache holds only the current step, so the policy sees one frame, as the seed's design does; its run's best
  held-out candidate, measured by ``gptrl eval`` like the card.
- ``seed design``: the seed system's network (``gptrl.training.seed_design``: a 6-layer nanoGPT over the frame's
  1944 characters, no memory). Its PPO is timed, not run: one update at its own settings, extrapolated to the
  bundle's budget; training it for that budget on this CPU is out of reach (the row says how far).

Bricks cleared follow from a return by the rules (10 a brick, 50 more when the last goes). Everything lands in
``docs/results/breakout-anchors.json`` (atomically), which ``gptrl.training.ppo_card`` reads for the card's table.

    python -m gptrl.training.breakout_anchors   # or: make breakout-anchors
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptrl.envs import register
from gptrl.envs.breakout import BRICK_REWARD, CLEAR_BONUS, heuristic_action, planner_action
from gptrl.fileio import read_json, write_json
from gptrl.training.cliargs import add_arguments, from_namespace

__all__ = ["ANCHORS_JSON", "Args", "bricks_cleared", "main", "scripted"]

ANCHORS_JSON = Path("docs/results/breakout-anchors.json")
SCRIPTED = ("random", "heuristic", "planner")


@dataclass
class Args:
    env_id: str = "gptrl/AsciiBreakout-v0"  # the board
    episodes: int = 50  # seeds 0..episodes-1
    context1: str = "runs/ppo/gptrl/AsciiBreakout-v0-context1"  # the context-1 ablation's run folder ("": skip)
    cost_repeats: int = 1  # timings of the seed design's minibatch (each a minute or two on one core)
    out: str = str(ANCHORS_JSON)  # the JSON written


def bricks_cleared(episode_return: float, bricks: int) -> int:
    """The bricks an episode's return stands for: 10 each, the clear bonus only with all of them."""
    cleared = round(episode_return / BRICK_REWARD)
    return bricks if episode_return >= bricks * BRICK_REWARD + CLEAR_BONUS else min(cleared, bricks)


def _summary(returns: list[float], lengths: list[int], bricks: int) -> dict[str, Any]:
    cleared = [bricks_cleared(r, bricks) for r in returns]
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "bricks_mean": float(np.mean(cleared)), "cleared_boards": int(sum(c == bricks for c in cleared)),
            "length_mean": float(np.mean(lengths)), "returns": [float(r) for r in returns]}


def scripted(env_id: str, policy: str, episodes: int) -> dict[str, Any]:
    """A scripted policy's returns over seeds 0..episodes-1, each episode to the time limit."""
    import gymnasium as gym

    if policy not in SCRIPTED:
        raise ValueError(f"policy {policy!r}: one of {list(SCRIPTED)}")
    register()
    env = gym.make(env_id)
    returns, lengths = [], []
    for seed in range(episodes):
        rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        total, n, done = 0.0, 0, False
        while not done:
            action = (int(rng.integers(3)) if policy == "random" else heuristic_action(obs) if policy == "heuristic"
                      else planner_action(env.unwrapped))
            obs, reward, terminated, truncated, _ = env.step(action)
            total, n, done = total + reward, n + 1, terminated or truncated
        returns.append(total), lengths.append(n)
    return {"policy": policy, **_summary(returns, lengths, env.unwrapped.layout.bricks)}


def learned(run_dir: Path, env_id: str, episodes: int) -> dict[str, Any]:
    """A PPO run's best held-out candidate measured by ``gptrl eval`` (the card's protocol), with its budget."""
    import gymnasium as gym

    from gptrl.training.model_card import measure

    if not (run_dir / "history.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no history.json (train the ablation first: make breakout-ablation)")
    run = read_json(run_dir / "history.json")
    if run.get("env_id") != env_id:
        raise ValueError(f"{run_dir}: the run trained {run.get('env_id')}, not {env_id}")
    register()
    limit = gym.spec(env_id).max_episode_steps
    result = measure(run_dir / "best", episodes=episodes, num_envs=min(episodes, 10), max_steps=limit)
    bricks = gym.make(env_id).unwrapped.layout.bricks
    return {"policy": "context-1", "command": result["command"].replace(f" --num-envs {min(episodes, 10)}", ""),
            "run": run_dir.as_posix(), "context_length": run["config"]["context_length"],
            "env_steps": run["step"], "budget": run["config"]["total_timesteps"],
            "seconds": run["history"][-1]["seconds"], "best_step": run["best"]["step"],
            **_summary(result["returns"], result["lengths"], bricks)}


def seed_cost(env_id: str, budget: int, repeats: int) -> dict[str, Any]:
    """The seed design's PPO cost on this machine, on frames of a heuristic game, extrapolated to ``budget``."""
    import gymnasium as gym

    from gptrl.training.seed_design import SEED_PPO, ppo_cost

    register()
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    frames = []
    while len(frames) < SEED_PPO["minibatch"]:
        frames.append(obs)
        obs, _, terminated, truncated, _ = env.step(heuristic_action(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    cost = ppo_cost(np.array(frames), repeats=repeats)
    return {"policy": "seed design", "settings": SEED_PPO, **asdict(cost), "budget": budget,
            "days_for_budget": cost.seconds_for(budget) / 86_400}


def run(args: Args) -> dict[str, Any]:
    from gptrl.provenance import provenance
    from gptrl.training.ppo import PRESETS

    budget = PRESETS.get(args.env_id, {}).get("total_timesteps", 0)
    rows = [scripted(args.env_id, p, args.episodes) for p in SCRIPTED]
    for row in rows:
        print(f"{row['policy']:10s} {row['return_mean']:7.1f} +- {row['return_std']:6.1f}, bricks "
              f"{row['bricks_mean']:.1f}", flush=True)
    if args.context1:
        rows.append(learned(Path(args.context1), args.env_id, args.episodes))
        print(f"context-1  {rows[-1]['return_mean']:7.1f} +- {rows[-1]['return_std']:6.1f}", flush=True)
    rows.append(seed_cost(args.env_id, budget, args.cost_repeats))
    print(f"seed design: {rows[-1]['update_s']:,.0f} s per update, {rows[-1]['days_for_budget']:,.0f} days for "
          f"{budget:,} steps", flush=True)
    return {"env_id": args.env_id, "episodes": args.episodes, "seeds": [0, args.episodes - 1],
            "provenance": provenance(), "anchors": rows}


def load(path: Path | None = None) -> dict[str, Any] | None:
    """The anchors JSON, or None when it was not made."""
    path = Path(path or ANCHORS_JSON)
    return read_json(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, Args)
    args = from_namespace(Args, p.parse_args(argv))
    result = run(args)
    write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.breakout_anchors", main))
