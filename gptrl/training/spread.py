"""What a user's own run of a recipe gives: behaviour cloning and DAgger over several training seeds.

One shipped bundle is one training seed, and one seed says little (a re-run of Hopper's recipe reached 2866.97
where the bundle has 3240.40). For each seed this runs the recipe's behaviour cloning (``train --seed S``),
then DAgger from that student, and measures both with the model card's protocol
(``gptrl eval DIR --episodes 50 --seed 0``), so the README can say what ``make train`` and ``make dagger`` deliver.

    python -m gptrl.training.spread Hopper-v5 --seed 0        # one seed (seeds can run in parallel processes)
    python -m gptrl.training.spread Hopper-v5 --report        # the table over every finished seed

Each seed's folder is ``runs/spread/ENV/seed-S`` (``bc/``, ``dagger/``, ``result.json``); both stages resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gptrl.fileio import read_json, write_json
from gptrl.training.dagger import Args as DaggerArgs
from gptrl.training.dagger import best_round
from gptrl.training.dagger import run as run_dagger
from gptrl.training.datasets import load_episodes, use_datasets_path
from gptrl.training.recipes import get_recipe
from gptrl.training.train import TrainConfig, falls, train


def one_seed(env_id: str, seed: int, root: Path, device: str = "cpu", num_envs: int = 10,
             progress: bool = True) -> dict:
    """Behaviour cloning with training seed ``seed``, DAgger from its best candidate, both measured on 0..49."""
    from gptrl.training.model_card import measure

    recipe = get_recipe(env_id)
    folder = root / f"seed-{seed}"
    episodes = load_episodes(list(recipe.dataset_ids))
    cfg = TrainConfig(**{**recipe.train, "seed": seed, "device": device})
    bc = train(env_id, folder / "bc", episodes, recipe.model, cfg, progress=progress)
    summary = run_dagger(recipe, DaggerArgs(device=device), init=(folder / "bc" / "best").resolve(),
                         out=folder / "dagger", progress=progress)
    chosen = best_round(summary["rounds"])
    bc_card = _card(measure(folder / "bc" / "best", num_envs=num_envs))
    result = {"env_id": env_id, "seed": seed, "device": device,
              "bc": {"best_step": bc["best"]["step"], "card": bc_card},
              "dagger": {"best_round": chosen["round"],
                         "card": _card(measure(Path(chosen["student"]), num_envs=num_envs))}}
    write_json(folder / "result.json", result)
    return result


def _card(measured: dict) -> dict:
    keep = ("command", "return_mean", "return_std", "length_mean", "returns", "lengths", "provenance")
    return {k: measured[k] for k in keep if k in measured} | {"falls": falls(measured)}


def report(root: Path) -> dict:
    """Mean and spread over the finished seeds, for behaviour cloning and for DAgger; writes ``spread.json``."""
    results = [read_json(p) for p in sorted(root.glob("seed-*/result.json"))]
    if not results:
        raise FileNotFoundError(f"{root}: no finished seed (seed-*/result.json); run with --seed first")
    out = {"seeds": [r["seed"] for r in results]}
    for stage in ("bc", "dagger"):
        means = np.array([r[stage]["card"]["return_mean"] for r in results])
        out[stage] = {"per_seed": [round(float(m), 2) for m in means], "mean": round(float(means.mean()), 2),
                      "std": round(float(means.std()), 2), "min": round(float(means.min()), 2),
                      "falls": [r[stage]["card"]["falls"] for r in results]}
    write_json(root / "spread.json", out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--seed", type=int, help="the training seed to run (behaviour cloning, then DAgger)")
    p.add_argument("--report", action="store_true", help="summarise every finished seed into spread.json")
    p.add_argument("--device", default="cpu", help="torch device of the training steps (cpu, cuda)")
    p.add_argument("--num-envs", type=int, default=10, help="envs stepped together in the 50-episode measurements")
    p.add_argument("--out", type=Path, help="folder of the seeds (default runs/spread/ENV)")
    p.add_argument("--datasets-path", type=Path, help="Minari datasets folder (default data/minari)")
    a = p.parse_args(argv)
    if (a.seed is None) == (not a.report):
        p.error("give exactly one of --seed S or --report")
    root = a.out or Path("runs/spread") / a.env_id
    if a.report:
        print(json.dumps(report(root), indent=1))
        return
    use_datasets_path(a.datasets_path)
    result = one_seed(a.env_id, a.seed, root, a.device, a.num_envs)
    print(json.dumps({k: {"return_mean": v["card"]["return_mean"], "falls": v["card"]["falls"]}
                      for k, v in result.items() if isinstance(v, dict)}))


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.spread", main))
