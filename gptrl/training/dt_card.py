"""Measure a published Decision Transformer bundle and write its model card (README.md).

Every number comes from ``gptrl eval BUNDLE --episodes 50 --seed 0 [--target-return R] --json`` (the torch-free
ONNX runtime), run as a subprocess: once at the bundle's default target (``eval.json``) and once per target of the
return-conditioning sweep (``conditioning.json``, ``conditioning.png``). The data table is computed from the local
Minari datasets the run trained on, the training section from the run's ``history.json``.

    python -m gptrl.training.dt_card Hopper-v5      # make dt-card ENV=Hopper-v5
"""

from __future__ import annotations

import argparse
import re
from itertools import pairwise
from pathlib import Path

import numpy as np

from gptrl.bundle.dt import load_dt_bundle
from gptrl.fileio import read_json, write_json, write_text
from gptrl.provenance import differences, summary
from gptrl.training.model_card import measure, provenance_line, replace_results_row, results_row, with_provenance

# Within this fraction of the expert data's mean return at the top target: the goal the card reports against.
GOAL_FRACTION = 0.10


def dt_bundle_dir(env_id: str) -> Path:
    return Path("bundles") / f"dt-{env_id.lower()}"


def sweep_targets(returns: np.ndarray, count: int = 6) -> list[float]:
    """``count`` targets evenly spanning the data's episode returns, rounded to 50."""
    lo, hi = float(returns.min()), float(returns.max())
    return [float(50 * round(t / 50)) for t in np.linspace(lo, hi, count)]


def data_stats(dataset_ids: list[str]) -> dict[str, dict]:
    """Episodes, steps and the return spread of each local Minari dataset."""
    from gptrl.training.datasets import load_episodes

    stats = {}
    for dataset_id in dataset_ids:
        episodes = load_episodes([dataset_id])
        r = np.array([e.rewards.sum() for e in episodes])
        stats[dataset_id] = {"episodes": len(r), "steps": sum(len(e.actions) for e in episodes),
                             "returns": r.tolist(), "return_mean": float(r.mean()),
                             "return_std": float(r.std()), "return_min": float(r.min()),
                             "return_max": float(r.max())}
    return stats


def conditioning_verdict(rows: list[dict], expert_mean: float) -> list[str]:
    """What the sweep shows against the two goals: the return rises with the target across the data's range, and
    at the top target it comes within GOAL_FRACTION of the expert data's mean."""
    falls = [f"{a['target']:.0f} -> {b['target']:.0f}" for a, b in pairwise(rows)
             if b["return_mean"] <= a["return_mean"]]
    rising = not falls
    top = rows[-1]
    close = top["return_mean"] >= (1 - GOAL_FRACTION) * expert_mean
    return [
        f"- Achieved return rises with the target across the data's range: **{'yes' if rising else 'no'}**"
        + ("" if rising else f" (it does not rise from {', '.join(falls)})") + ".",
        f"- At the top target ({top['target']:.0f}) the mean is {top['return_mean']:.1f}, "
        f"{'within' if close else '**not within**'} {GOAL_FRACTION:.0%} of the expert data's mean "
        f"({expert_mean:.1f}; the goal is >= {(1 - GOAL_FRACTION) * expert_mean:.1f}).",
    ]


def conditioning_provenance(rows: list[dict], result: dict) -> str:
    """Whether the sweep ran on the setup of the default-target measurement (a mix would make rows incomparable)."""
    others = [r for r in rows if differences(r.get("provenance"), result.get("provenance") or {})]
    if not others:
        return "Every row was measured on the setup named under Results."
    return "; ".join(f"target {r['target']:.0f} measured on: {summary(r.get('provenance'))}" for r in others) + "."


_ROW = r"\| {target:.0f} \|[^\n]*\n"
_VERDICT_LINES = re.compile(r"- Achieved return rises with the target[^\n]*\n- At the top target[^\n]*\n")
_EXPERT_MEAN = re.compile(r"of the expert data's mean \(([0-9.]+);")
_SWEEP_SAME = re.compile(r"^(Every row was measured on the setup named under Results\."
                         r"|target [0-9]+ measured on: .*)\n", re.M)


def refresh(bundle_dir: Path, episodes: int = 50) -> tuple[dict, list[dict]]:
    """Re-measure eval.json and conditioning.json (the same targets) and update their numbers, the verdict and the
    provenance in the card. Needs neither the training run nor the datasets; the plots are left as they are."""
    card = (bundle_dir / "README.md").read_text()
    expert_mean = _EXPERT_MEAN.search(card)
    if expert_mean is None or not _VERDICT_LINES.search(card):
        raise ValueError(f"{bundle_dir / 'README.md'}: no conditioning verdict to refresh; render it with "
                         "`make dt-card`")
    result = {**measure(bundle_dir, episodes), "target_return": load_dt_bundle(bundle_dir).sidecar.target_return}
    rows = []
    for old in read_json(bundle_dir / "conditioning.json"):
        rows.append({"target": old["target"], **measure(bundle_dir, episodes, target_return=old["target"])})
        print(f"target {old['target']:.0f}: {rows[-1]['return_mean']:.1f} +- {rows[-1]['return_std']:.1f}", flush=True)
    card = with_provenance(replace_results_row(card, result), result)
    for r in rows:
        card = re.sub(_ROW.format(target=r["target"]), lambda _, r=r: f"| {r['target']:.0f} " + results_row(r) + "\n",
                      card, count=1)
    verdict = "\n".join(conditioning_verdict(rows, float(expert_mean[1]))) + "\n"
    card = _VERDICT_LINES.sub(lambda _: verdict, card, count=1)
    sweep = conditioning_provenance(rows, result) + "\n"
    card = _SWEEP_SAME.sub(lambda _: sweep, card, count=1) if _SWEEP_SAME.search(card) else card.replace(
        verdict, sweep + "\n" + verdict, 1)
    write_json(bundle_dir / "eval.json", result)
    write_json(bundle_dir / "conditioning.json", rows)
    write_text(bundle_dir / "README.md", card)
    return result, rows


def middle_note(data: dict[str, dict]) -> list[str]:
    """How many of the data's episodes lie in the middle third of its return range: where few do, a target there
    can only be met by mixing the behaviours on either side, seed by seed."""
    returns = np.concatenate([d["returns"] for d in data.values()])
    lo, hi = returns.min(), returns.max()
    a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
    inside = int(((returns >= a) & (returns <= b)).sum())
    return [f"{inside} of the data's {returns.size} episodes have a return in the middle third of its range "
            f"({a:.0f} to {b:.0f}). A target where the data is thin is met, if at all, by a mix across seeds of the "
            "behaviours around it, which is what the spread of a row shows.", ""]


def render(env_id: str, bundle_dir: Path, result: dict, rows: list[dict], data: dict[str, dict],
           history: dict, media: str) -> str:
    from gptrl.training.recipes import get_recipe

    bundle = load_dt_bundle(bundle_dir)
    c, s = bundle.config, bundle.sidecar
    cfg, best = history["config"], history["best"]
    recipe = get_recipe(env_id)
    behaviour = {recipe.dataset_id(level): f"{level.behaviour} teacher, "
                 + ("its own Gaussian policy" if level.noise_std is None
                    else f"mean action + N(0, {level.noise_std:g})") for level in recipe.levels}
    expert_id = next(k for k in data if "expert" in k)
    from safetensors.numpy import load_file

    params = sum(v.size for v in load_file(str(bundle.weights_file)).values())
    lines = [
        f"# {bundle_dir.name}: a Decision Transformer for {env_id}",
        "",
        "A return-conditioned policy: ask for a return, and it acts like the part of its data that earned it. "
        "The folder is a Hugging Face `DecisionTransformerModel` checkpoint as transformers writes it "
        "(`config.json`, `model.safetensors`; `DecisionTransformerModel.from_pretrained` loads it) plus "
        "`gptrl_dt.json` (state mean and std, return scale, default target, env id, K). `policy.onnx` is the exact "
        "windowed graph for the torch-free `gptrl.runtime`.",
        "",
        "```python",
        "from gptrl.runtime import load_policy",
        "",
        f'policy = load_policy("{bundle_dir.as_posix()}")',
        f"policy.reset(obs, target_return={s.target_return:g})   # env units; None: this default",
        "action = policy.act(obs, reward=reward)        # the reward the env returned with obs",
        "```",
        "",
        "## Results",
        "",
        f"At the default target return {s.target_return:g} (the post's Hopper target), measured with "
        f"`{result['command']}` (ONNX runtime, CPU, {result['num_episodes']} episodes, seeds "
        f"{result['seeds'][0]}..{result['seeds'][-1]}, max 1000 steps):",
        "",
        "| return (mean +- std) | normalised score | episode length (mean +- std) | min / max return |",
        "|---|---|---|---|",
        results_row(result),
        "",
        provenance_line(result),
        "Per-episode returns are in `eval.json`.",
        "",
        "## Return conditioning",
        "",
        f"The same {rows[0]['num_episodes']} seeds at {len(rows)} targets evenly spanning the data's episode returns "
        f"({min(d['return_min'] for d in data.values()):.0f} to {max(d['return_max'] for d in data.values()):.0f}),"
        f" each measured with `{rows[0]['command'].rsplit(' --target-return', 1)[0]} --target-return R` "
        "(per-episode results in `conditioning.json`):",
        "",
        "| target return | achieved return (mean +- std) | normalised score | episode length (mean +- std) | "
        "min / max return |",
        "|---:|---|---|---|---|",
        *[f"| {r['target']:.0f} " + results_row(r) for r in rows],
        "",
        conditioning_provenance(rows, result),
        "",
        *conditioning_verdict(rows, data[expert_id]["return_mean"]),
        "",
        *middle_note(data),
        media,
        "## Architecture",
        "",
        f"- The Decision Transformer of Chen et al. (2021) as transformers implements it: K = {s.context_length} "
        f"timesteps of (return-to-go, state, action), 3K = {3 * s.context_length} tokens; {c.n_layer} GPT2 layers, "
        f"hidden {c.hidden_size}, {c.n_head} head{'s' if c.n_head > 1 else ''}, {c.activation_function}, "
        f"max_ep_len {c.max_ep_len}, tanh actions; {params:,} parameters.",
        f"- Returns-to-go are divided by {s.scale:g}; states are normalised with the mean and std of the training "
        "states (in `gptrl_dt.json`). The action for s_t is read at the state token, from the window up to s_t.",
        "- Deployment re-encodes the whole window every step (the exact computation: once the window slides, a "
        "key/value cache would differ from it).",
        "",
        "## Data",
        "",
        "gptrl's own Minari datasets (`make data ENV=" + env_id + "`, not committed), the behaviour teachers' "
        "actions as they were taken (a DT learns the behaviour, whatever its quality; the return-to-go tells "
        "it which):",
        "",
        "| dataset | behaviour | episodes | steps | return (mean +- std) | min / max return |",
        "|---|---|---|---|---|---|",
        *[f"| `{k}` | {behaviour.get(k, '?')} | {v['episodes']} | {v['steps']:,} | "
          f"{v['return_mean']:.1f} +- {v['return_std']:.1f} | {v['return_min']:.1f} / {v['return_max']:.1f} |"
          for k, v in data.items()],
        "",
        "## Training",
        "",
        f"- `python -m gptrl.training.dt_train {env_id}`: MSE between the predicted and the taken action on "
        f"windows of K = {cfg['context']} sampled uniformly over every step of every episode (short ones "
        f"left-padded and masked), batch {cfg['batch_size']}, AdamW lr {cfg['lr']:g} with {cfg['warmup']} warm-up "
        f"steps, weight decay {cfg['weight_decay']:g}, dropout {cfg['dropout']:g}, gradient clip "
        f"{cfg['grad_clip']:g}, seed {cfg['seed']}, {cfg['threads']} CPU thread.",
        f"- The run was set for {cfg['steps']:,} steps and stopped after {history['step']:,} "
        f"({history['history'][-1]['seconds'] / 60:.0f} min on a shared 2-core CPU); every {cfg['eval_every']:,} "
        f"steps the candidate was evaluated by the torch runner on {cfg['eval_episodes']} held-out seeds "
        f"({cfg['eval_seed']}+, never the seeds above) at target {cfg['target_return']:g}. The best, at step "
        f"{best['step']:,} ({best['return_mean']:.1f} +- {best['return_std']:.1f}), is this bundle.",
        "",
        "| step | action MSE | held-out return (mean +- std) |",
        "|---:|---:|---|",
        *[f"| {h['step']:,} | {h['action_mse']:.4f} | {h['return_mean']:.1f} +- {h['return_std']:.1f} |"
          for h in history["history"]],
        "",
        "## Reproduce",
        "",
        "```",
        f"make data ENV={env_id}        # the Minari datasets from the committed teachers",
        f"make dt-train ENV={env_id}    # resumable (runs/dt/{env_id}); publishes the best candidate here",
        f"make dt-card ENV={env_id}     # this file, eval.json, conditioning.json and the plots",
        "```",
        "",
    ]
    return "\n".join(lines)


def make_media(env_id: str, bundle_dir: Path, result: dict, rows: list[dict], data: dict[str, dict],
               history: dict) -> str:
    """episode.gif (seed 0, default target), returns.png, conditioning.png and training.png; the card's section."""
    from gptrl.record import record_episode
    from gptrl.training.plots import plot_conditioning, plot_returns, plot_training

    rec = record_episode(bundle_dir, bundle_dir / "episode.gif", seed=0, max_steps=300, every=3, width=240,
                         height=240, progress=False)
    levels = {k.split("/")[-1].split("-")[0]: v["return_mean"] for k, v in data.items()}
    plot_returns(result["returns"], bundle_dir / "returns.png", seeds=range(result["seeds"][0], result["seeds"][1] + 1),
                 lines={f"{k} data": v for k, v in levels.items()},
                 title=f"{bundle_dir.name}: return per seed ({result['command']})")
    plot_conditioning([r["target"] for r in rows], [r["return_mean"] for r in rows],
                      [r["return_std"] for r in rows], bundle_dir / "conditioning.png", data_means=levels,
                      title=f"{bundle_dir.name}: achieved against target return ({rows[0]['num_episodes']} seeds each)")
    plot_training(history["history"], bundle_dir / "training.png",
                  title=f"{bundle_dir.name}: Decision Transformer training")
    return "\n".join([
        "## Media", "",
        "![return conditioning](conditioning.png)", "",
        "![one episode, seed 0](episode.gif)  ",
        f"`gptrl record {bundle_dir.as_posix()} --seed 0 -o episode.gif --max-steps 300 --every 3 --width 240 "
        f"--height 240`: the first {rec.length} steps of seed 0 at the default target (return "
        f"{rec.episode_return:.1f} over them).", "",
        "![returns per seed](returns.png)", "",
        "![training curves](training.png)", "",
    ])


def main(argv: list[str] | None = None) -> None:
    from gptrl.training.datasets import use_datasets_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--run", type=Path, help="training run folder (default runs/dt/ENV)")
    p.add_argument("--datasets-path", type=Path, help="Minari datasets folder (default data/minari)")
    p.add_argument("--targets", type=float, nargs="+",
                   help="targets of the conditioning sweep (default: 6 evenly spanning the data's returns)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--refresh", action="store_true",
                   help="only re-measure eval.json and conditioning.json and update the card's numbers (the default "
                        "when the training run's history.json is absent)")
    p.add_argument("--reuse", action="store_true",
                   help="no new evaluation: render the card and plots from the folder's eval.json and "
                        "conditioning.json")
    a = p.parse_args(argv)
    bundle_dir = dt_bundle_dir(a.env_id)
    history_path = (a.run or Path("runs/dt") / a.env_id) / "history.json"
    if a.refresh or not history_path.is_file():
        if not a.refresh:
            print(f"{a.env_id}: no training run at {history_path}, so only the card's numbers and provenance are "
                  "re-measured (--refresh)", flush=True)
        result, _ = refresh(bundle_dir, a.episodes)
        print(f"{a.env_id}: {result['return_mean']:.2f} +- {result['return_std']:.2f} -> {bundle_dir}/README.md")
        return
    history = read_json(history_path)
    use_datasets_path(a.datasets_path)
    data = data_stats(history["config"]["datasets"])
    all_returns = np.array([v for d in data.values() for v in (d["return_min"], d["return_max"])])
    targets = a.targets or sweep_targets(all_returns)
    if a.reuse:
        result, rows = read_json(bundle_dir / "eval.json"), read_json(bundle_dir / "conditioning.json")
    else:
        result = {**measure(bundle_dir, a.episodes),
                  "target_return": load_dt_bundle(bundle_dir).sidecar.target_return}
        write_json(bundle_dir / "eval.json", result)
        rows = []
        for target in sorted(targets):
            rows.append({"target": target, **measure(bundle_dir, a.episodes, target_return=target)})
            print(f"target {target:.0f}: {rows[-1]['return_mean']:.1f} +- {rows[-1]['return_std']:.1f}", flush=True)
        write_json(bundle_dir / "conditioning.json", rows)
    media = make_media(a.env_id, bundle_dir, result, rows, data, history)
    write_text(bundle_dir / "README.md", render(a.env_id, bundle_dir, result, rows, data, history, media))
    print(f"{a.env_id}: {result['return_mean']:.2f} +- {result['return_std']:.2f} -> {bundle_dir}/README.md")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.dt_card", main))
