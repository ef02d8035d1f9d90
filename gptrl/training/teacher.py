"""Train an online RL teacher (Stable-Baselines3 SAC or TD3, or sb3-contrib TQC) for one MuJoCo env.

Resumable: every ``--checkpoint-every`` steps the model and its replay buffer are saved (each file written
to a temporary name and renamed), the deterministic actor is evaluated on ``--eval-episodes`` episodes, and
an actor-only snapshot goes to ``actors/step_XXXXXXXXX.safetensors`` with its evaluation in the metadata.
Running the same command again continues from the last checkpoint.

    python -m gptrl.training.teacher Hopper-v5 --out runs/teachers/Hopper-v5 --publish
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gptrl.fileio import atomic_path, read_json, write_json
from gptrl.training.snapshots import EVAL_SEED_BASE, evaluate_actor, log_snapshot, save_snapshot
from gptrl.training.teacher_actor import actor_from_sb3

# Stable-Baselines3 defaults (lr 3e-4, batch 256, gamma 0.99, tau 0.005, one gradient step per env step,
# automatic entropy) with the RL Zoo's 10k random warm-up steps. TQC keeps 2 critics instead of 5 so it runs
# about as fast as SAC on one core; ``top_quantiles_to_drop_per_net`` comes from the recipe.
COMMON_KWARGS = dict(learning_starts=10_000, batch_size=256, buffer_size=1_000_000, device="cpu", verbose=0)
# TD3 as in the RL Zoo's MuJoCo runs: SB3's defaults (lr 1e-3, [400, 300] networks, policy delay 2) with
# Gaussian exploration noise of std 0.1 on the [-1, 1] action scale.
ALGO_DEFAULTS = {"sac": {}, "td3": {}, "tqc": {"top_quantiles_to_drop_per_net": 2, "policy_kwargs": {"n_critics": 2}}}
TD3_NOISE_STD = 0.1


def _algo_class(algo: str):
    if algo == "sac":
        from stable_baselines3 import SAC

        return SAC
    if algo == "td3":
        from stable_baselines3 import TD3

        return TD3
    if algo == "tqc":
        from sb3_contrib import TQC

        return TQC
    raise ValueError(f"unknown algo {algo!r} (sac, td3 or tqc)")


def _make_model(algo: str, env, seed: int, algo_kwargs: dict):
    kwargs = {**COMMON_KWARGS, **ALGO_DEFAULTS[algo], **algo_kwargs}
    if algo == "td3":
        from stable_baselines3.common.noise import NormalActionNoise

        n = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), TD3_NOISE_STD * np.ones(n))
    return _algo_class(algo)("MlpPolicy", env, seed=seed, **kwargs)


def train_teacher(env_id: str, out: Path, steps: int, algo: str = "sac", seed: int = 0,
                  checkpoint_every: int = 25_000, eval_episodes: int = 5, algo_kwargs: dict | None = None) -> Path:
    """Train (or continue training) a teacher until ``steps`` env steps; returns the best actor's path."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "actors").mkdir(exist_ok=True)
    model_path, buffer_path = out / "model.zip", out / "replay_buffer.pkl"
    run_info = {"env_id": env_id, "algo": algo, "seed": seed, **({"algo_kwargs": algo_kwargs} if algo_kwargs else {})}
    info_path = out / "run.json"
    if info_path.exists() and read_json(info_path) != run_info:
        raise FileExistsError(f"{out} holds a different run ({info_path.read_text()}); pick another --out")
    write_json(info_path, run_info, indent=None)

    env = gym.make(env_id)
    if model_path.exists():
        model = _algo_class(algo).load(model_path, env=env, device="cpu")
        if buffer_path.exists():
            model.load_replay_buffer(buffer_path)
        print(f"resuming {env_id} {algo} at {model.num_timesteps} steps", flush=True)
    else:
        model = _make_model(algo, env, seed, algo_kwargs or {})
    started = time.time()

    class Checkpoint(BaseCallback):
        def _on_step(self) -> bool:
            n = self.model.num_timesteps
            if n % checkpoint_every:
                return True
            actor = actor_from_sb3(self.model, {**run_info, "steps": n})
            _, mean, std = save_snapshot(actor, env_id, eval_episodes, out / "actors" / f"step_{n:09d}.safetensors")
            with atomic_path(buffer_path) as tmp:
                self.model.save_replay_buffer(tmp)
            with atomic_path(model_path) as tmp:
                self.model.save(tmp)
            log_snapshot(out, env_id, n, time.time() - started, mean, std)
            return True

    remaining = steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=Checkpoint(), reset_num_timesteps=False)
    return best_actor_path(out)


def best_actor_path(out: Path) -> Path:
    """The snapshot with the highest evaluation mean."""
    from gptrl.training.teacher_actor import load_teacher_actor

    snaps = sorted((out / "actors").glob("step_*.safetensors"))
    if not snaps:
        raise FileNotFoundError(f"{out}/actors holds no snapshots yet")
    return max(snaps, key=lambda p: load_teacher_actor(p).info.get("eval_return_mean", -np.inf))


def publish_teachers(out: Path, dest: Path, env_id: str, finalists: int = 4, episodes: int = 20,
                     medium_fraction: float = 0.5) -> dict:
    """Pick the committed actors from a run's snapshots and copy them to ``dest``.

    expert: of the ``finalists`` snapshots with the best quick evaluation, the best mean over ``episodes``
    further episodes (seeds ``EVAL_SEED_BASE + 10_000`` onwards). medium: the snapshot whose quick evaluation is
    closest to ``medium_fraction`` of the expert's return.
    """
    from gptrl.training.teacher_actor import load_teacher_actor

    snaps = {p: load_teacher_actor(p) for p in sorted((out / "actors").glob("step_*.safetensors"))}
    if len(snaps) < 2:
        raise ValueError(f"{out}/actors holds {len(snaps)} snapshot(s); train longer before publishing")
    quick = {p: a.info["eval_return_mean"] for p, a in snaps.items()}
    ranked = sorted(quick, key=quick.get, reverse=True)[:finalists]
    scores = {}
    for p in ranked:
        returns = evaluate_actor(snaps[p], env_id, episodes, seed=EVAL_SEED_BASE + 10_000)
        scores[p] = (float(np.mean(returns)), float(np.std(returns)))
        print(f"{p.name}: {scores[p][0]:.1f} +- {scores[p][1]:.1f} over {episodes} episodes", flush=True)
    expert_path = max(scores, key=lambda p: scores[p][0])
    target = medium_fraction * scores[expert_path][0]
    medium_path = min((p for p in snaps if p != expert_path), key=lambda p: abs(quick[p] - target))
    dest.mkdir(parents=True, exist_ok=True)
    expert, medium = snaps[expert_path], snaps[medium_path]
    expert.info |= {"selection_return_mean": scores[expert_path][0], "selection_return_std": scores[expert_path][1],
                    "selection_episodes": episodes, "selection_seed": EVAL_SEED_BASE + 10_000}
    expert.save(dest / "expert.safetensors")
    medium.save(dest / "medium.safetensors")
    summary = {"expert": expert.info, "medium": medium.info}
    write_json(dest / "teachers.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--out", type=Path, help="run folder (default runs/teachers/ENV)")
    p.add_argument("--steps", type=int, help="total env steps (default: the recipe's teacher_steps, else 1M)")
    p.add_argument("--algo", choices=["sac", "td3", "tqc", "vector_tqc"],
                   help="default: the env's recipe (gptrl/training/recipes.py); vector_tqc: many envs and a GPU "
                        "(gptrl.training.vector_tqc, run folder runs/teachers/ENV-vector)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=25_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--publish", nargs="?", const=True, type=Path, metavar="DIR",
                   help="afterwards, copy the expert and medium actors to DIR (default: the recipe's teachers/ folder)")
    p.add_argument("--publish-only", action="store_true", help="skip training; publish from the snapshots so far")
    a = p.parse_args(argv)
    from gptrl.training.recipes import RECIPES

    recipe = RECIPES.get(a.env_id)
    algo = a.algo or (recipe.teacher_algo if recipe else "sac")
    algo_kwargs = recipe.teacher_kwargs if recipe and algo == recipe.teacher_algo else {}
    steps = a.steps or (recipe.teacher_steps if recipe else 1_000_000)
    out = a.out or Path("runs/teachers") / (a.env_id + ("-vector" if algo == "vector_tqc" else ""))
    if not a.publish_only and algo == "vector_tqc":
        from gptrl.training import vector_tqc

        flags = [f"--{k.replace('_', '-')}={v}" for k, v in algo_kwargs.items()]
        vector_tqc.main([a.env_id, "--out", str(out), "--steps", str(steps), "--seed", str(a.seed),
                         "--eval-episodes", str(a.eval_episodes), *flags])
    elif not a.publish_only:
        best = train_teacher(a.env_id, out, steps, algo, a.seed, a.checkpoint_every, a.eval_episodes, algo_kwargs)
        print(f"best actor: {best}")
    if a.publish:
        if a.publish is True and recipe is None:
            raise ValueError(f"no recipe for {a.env_id}: say where to publish (--publish DIR)")
        dest = recipe.teacher_dir if a.publish is True else a.publish
        print(json.dumps(publish_teachers(out, dest, a.env_id), indent=1))


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.teacher", main))
