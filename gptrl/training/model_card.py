"""Measure a shipped bundle and write its model card (README.md) from what the pipeline recorded.

The evaluation is exactly ``gptrl eval BUNDLE --episodes 50 --seed 0 --json`` (the ONNX runtime), run as a
subprocess; its output is kept next to the card as ``eval.json`` so tests and readers can check the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from gptrl.bundle import load_bundle
from gptrl.fileio import read_json, sha256_file, write_json, write_text
from gptrl.provenance import summary
from gptrl.training.recipes import get_recipe

# The returns the reference project publishes for its bundles (50 episodes, seeds 0..49, max 1000 steps).
REFERENCE_PROJECT_RETURNS = {"Hopper-v5": 2836.28, "HalfCheetah-v5": 5989.04, "Walker2d-v5": 3883.30,
                             "Ant-v5": 3339.51, "Humanoid-v5": 6089.64}


def measure(bundle_dir: Path, episodes: int = 50, seed: int = 0, target_return: float | None = None,
            num_envs: int = 1, max_steps: int | None = None) -> dict:
    """``gptrl eval BUNDLE --episodes N --seed S [--max-steps M] [--target-return R] [--num-envs E] --json`` in a
    subprocess, with its command. ``--num-envs`` gives the same per-seed returns as the one-env loop
    (``gptrl.evaluate``'s waves), only faster, so the card's command without it reproduces the card. ``max_steps``:
    for envs whose own limit is above gptrl eval's default 1000 (BipedalWalker's 1600)."""
    args = [str(bundle_dir), "--episodes", str(episodes), "--seed", str(seed)]
    if max_steps is not None:
        args += ["--max-steps", str(max_steps)]
    if target_return is not None:
        args += ["--target-return", f"{target_return:g}"]
    if num_envs > 1:
        args += ["--num-envs", str(num_envs)]
    done = subprocess.run([sys.executable, "-m", "gptrl.cli", "eval", *args, "--json"], check=True,
                          capture_output=True, text=True)
    return {"command": "gptrl eval " + " ".join(args), **json.loads(done.stdout)}


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def _teacher_kind(info: dict) -> str:
    if info.get("trainer") == "vector_tqc":
        return (f"TQC ({info['n_critics']} critics of {info['n_quantiles']} atoms, {info['drop_per_net']} dropped per "
                f"critic) from `gptrl.training.vector_tqc`, {info['num_envs']} envs stepping while a GPU updates,")
    return f"Stable-Baselines3 {info['algo'].upper()}"


def _teacher_cost(info: dict) -> str:
    return "minutes on one GPU, days on 2 CPU cores" if info.get("trainer") == "vector_tqc" else "hours on CPU"


def render(env_id: str, bundle_dir: Path, result: dict, teachers: dict, history: dict) -> str:
    bundle = load_bundle(bundle_dir)
    c, m = bundle.config, bundle.config.model
    cfg, best = history["config"], history["best"]
    exp, med = teachers["expert"], teachers["medium"]
    recipe = get_recipe(env_id)
    behaviour = {recipe.dataset_id(level): f"{level.behaviour} teacher, "
                 + ("its own Gaussian policy" if level.noise_std is None
                    else f"mean action + N(0, {level.noise_std:g})")
                 for level in recipe.levels}
    lines = [
        f"# {bundle_dir.name}: a causal transformer policy for {env_id}",
        "",
        f"A {m.network_name} policy in the Causal GPT-RL bundle format (format {c.format_version}), trained by "
        "behaviour cloning from gptrl's own teachers. It runs on any runtime that reads the format; "
        "`policy.onnx` is its exported one-step graph for the torch-free `gptrl.runtime`.",
        "",
        "## Results",
        "",
        f"Measured with `{result['command']}` (ONNX runtime, CPU, {result['num_episodes']} episodes, "
        f"seeds {result['seeds'][0]}..{result['seeds'][1]}, max 1000 steps):",
        "",
        "| return (mean +- std) | normalised score | episode length (mean +- std) | min / max return |",
        "|---|---|---|---|",
        results_row(result),
        "",
        provenance_line(result),
        verdict(env_id, result),
        "Normalised score = 100 (return - random) / (expert - random) with gptrl's references "
        "(`gptrl.evaluation.REFERENCE_RETURNS`). Per-episode returns are in `eval.json`.",
        "",
        "## Architecture",
        "",
        f"- {m.network_name}, {m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads"
        + (f", SwiGLU width {m.intermediate_size}, RoPE theta {m.rope_theta:g}" if m.network == "llama" else "")
        + f"; {bundle.parameter_count:,} parameters.",
        f"- One token per step (state, previous action, BOS flag); context_length = kv cache {c.context_length}, "
        "bos_cache_mode discard. As the format prescribes, the action for step t is read from the token of "
        "step t-1, so the policy predicts each action from the history up to the previous state and action.",
        "- Embedded state normaliser (mean and std of the training states); tanh-squashed deterministic actions.",
        "",
        "## Data",
        "",
        f"- Teachers: {_teacher_kind(exp)} trained by `make teacher ENV={env_id}`. Expert: the "
        f"snapshot after {_fmt(exp['steps'])} steps, {exp['selection_return_mean']:.1f} +- "
        f"{exp['selection_return_std']:.1f} over {exp['selection_episodes']} episodes (seeds "
        f"{exp['selection_seed']}+). Medium: the snapshot after {_fmt(med['steps'])} steps, "
        f"{med['eval_return_mean']:.1f} over {med['eval_episodes']} episodes. Both are committed, actor only, in "
        f"`teachers/`.",
        "- Datasets (Minari format, built by `make data`; not committed): a behaviour teacher acts, and every "
        "state is labelled with the expert's deterministic action (`infos['expert_action']`), which is what the "
        "policy learns.",
        "",
        "| dataset | behaviour | episodes | steps | behaviour return (mean +- std) |",
        "|---|---|---|---|---|",
        *[f"| `{k}` | {behaviour.get(k, '?')} | {v['episodes']} | {_fmt(v['steps'])} | "
          f"{v['return_mean']:.1f} +- {v['return_std']:.1f} |" for k, v in history["datasets"].items()],
        "",
        "## Training",
        "",
        f"- Behaviour cloning (`make train ENV={env_id}`): MSE between the squashed action and the expert's, on "
        f"windows of {cfg['window']} steps whose positions and attention mask are those of the rollout cache "
        "(`gptrl.training.windows`); the loss counts only steps whose whole receptive field is in the window.",
        f"- {_fmt(cfg['steps'])} steps of batch {cfg['batch_size']}, AdamW lr {cfg['lr']:g} (warmup "
        f"{cfg['warmup']}, cosine to {cfg['min_lr_ratio']:g}x), weight decay {cfg['weight_decay']:g}, "
        f"gradient clip {cfg['grad_clip']:g}, seed {cfg['seed']}; {history['history'][-1]['seconds'] / 60:.0f} min "
        f"on {cfg['threads']} CPU thread{'s' if cfg['threads'] > 1 else ''}.",
        "- The log-std and value heads are fitted on detached features (behaviour action spread; discounted "
        f"return, gamma {cfg['gamma']}); the ONNX graph emits only the deterministic action.",
        f"- Every {cfg['eval_every']} steps the candidate was exported and evaluated on the ONNX runtime over "
        f"{cfg['eval_episodes']} held-out seeds ({cfg['eval_seed']}+, never the seeds above); the best, at step "
        f"{_fmt(best['step'])} ({best['return_mean']:.1f} +- {best['return_std']:.1f}), is this bundle.",
        "",
        "## Reproduce",
        "",
        "```",
        f"make teacher ENV={env_id}   # {_teacher_cost(exp)} (resumable); the committed actors make it optional",
        f"make data ENV={env_id}",
        f"make train ENV={env_id}",
        f"make card ENV={env_id}      # this file and eval.json",
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


_RESULTS_ROW = re.compile(r"(\| return \(mean \+- std\) \|[^\n]*\n\|[-|]*\|\n)\|[^\n]*\|\n")
_VERDICT = re.compile(r"The mean is (above|\*\*below\*\*) the reference project's published [0-9.]+\.")
_PROVENANCE = re.compile(r"^Measured on: [^\n]*\n", re.M)


def replace_results_row(card: str, result: dict) -> str:
    """``card`` with the row of its first results table replaced by ``result``'s."""
    return _RESULTS_ROW.sub(lambda m: m.group(1) + results_row(result) + "\n", card, count=1)


def provenance_line(result: dict) -> str:
    """The card's one line saying what produced its numbers (versions, provider, CPU and ISA, threads)."""
    return f"Measured on: {summary(result.get('provenance'))}."


def with_provenance(card: str, result: dict) -> str:
    """``card`` with its provenance line replaced, or added right after the first results table."""
    line = provenance_line(result) + "\n"
    if _PROVENANCE.search(card):
        return _PROVENANCE.sub(lambda _: line, card, count=1)
    return _RESULTS_ROW.sub(lambda m: m.group(0) + "\n" + line, card, count=1).replace(line + "\n", line, 1)


def results_row(result: dict) -> str:
    return (f"| {result['return_mean']:.2f} +- {result['return_std']:.2f} | {result['normalized_score']:.1f} | "
            f"{result['length_mean']:.1f} +- {result['length_std']:.1f} | "
            f"{min(result['returns']):.1f} / {max(result['returns']):.1f} |")


def verdict(env_id: str, result: dict) -> str:
    target = REFERENCE_PROJECT_RETURNS.get(env_id)
    if target is None:
        return ""
    side = "above" if result["return_mean"] >= target else "**below**"
    return f"The mean is {side} the reference project's published {target:.2f}."


def refresh(env_id: str, bundle_dir: Path, num_envs: int = 1) -> dict:
    """Re-measure a published bundle (after a re-export) and update the numbers in its card and eval.json only."""
    card = (bundle_dir / "README.md").read_text()
    if not _RESULTS_ROW.search(card):
        raise ValueError(f"{bundle_dir / 'README.md'}: no results table to refresh; render the card with `make card`")
    result = measure(bundle_dir, num_envs=num_envs)
    card = re.sub(r"Measured with `gptrl eval [^`]*`", lambda _: f"Measured with `{result['command']}`", card, count=1)
    card = replace_results_row(card, result)
    card = with_provenance(_VERDICT.sub(verdict(env_id, result), card, count=1), result)
    write_json(bundle_dir / "eval.json", result)
    write_text(bundle_dir / "README.md", card)
    return result


MEDIA_START, MEDIA_END = "<!-- media -->", "<!-- /media -->"


def training_caption(bundle_dir: Path, run_dir: Path, history: dict, result: dict, num_envs: int = 1) -> str:
    """What the training plot shows. When the run's best weights are not the bundle's (the shipped run's history
    was lost and the recipe was run again), say so and measure the re-run's best with the card's protocol, so the
    reader sees how far two runs of one recipe differ. ``result`` is the bundle's own card measurement."""
    best, cfg = history["best"], history["config"]
    line = (f"Behaviour-cloning loss and held-out return ({cfg['eval_episodes']} seeds from {cfg['eval_seed']}) "
            f"over training; the best candidate, at step {best['step']:,}, scored {best['return_mean']:.1f} +- "
            f"{best['return_std']:.1f}")
    run_weights, weights = run_dir / "best" / "model.safetensors", bundle_dir / "model.safetensors"
    if run_weights.exists() and sha256_file(run_weights) == sha256_file(weights):
        return line + " and is this bundle."
    rerun = measure(run_dir / "best", num_envs=num_envs)
    return ("The history of the run these weights come from was not kept; the plot is a later run of the same "
            "recipe (same data, same seed, but the training code has been restructured since, so it is not the "
            f"same run). {line}; with this card's protocol it gets {rerun['return_mean']:.2f} +- "
            f"{rerun['return_std']:.2f} (this bundle: {result['return_mean']:.2f} +- {result['return_std']:.2f}), "
            "which shows how much two runs of one recipe can differ.")


def make_media(env_id: str, bundle_dir: Path, result: dict, teachers: dict, history: dict | None,
               run_dir: Path | None = None, num_envs: int = 1) -> str:
    """Write episode.gif (seed 0), returns.png and, with a training history, training.png into ``bundle_dir``;
    returns the card's media section (between markers, so a refresh can replace it)."""
    from gptrl.record import record_episode
    from gptrl.training.plots import plot_returns, plot_training

    rec = record_episode(bundle_dir, bundle_dir / "episode.gif", seed=0, max_steps=300, every=3, width=240,
                         height=240, progress=False)
    lines = {"teacher (expert)": teachers["expert"]["selection_return_mean"]}
    if env_id in REFERENCE_PROJECT_RETURNS:
        lines["reference project"] = REFERENCE_PROJECT_RETURNS[env_id]
    seeds = list(range(result["seeds"][0], result["seeds"][1] + 1))
    plot_returns(result["returns"], bundle_dir / "returns.png", seeds=seeds, lines=lines,
                 title=f"{bundle_dir.name}: return per seed ({result['command']})")
    parts = [MEDIA_START, "## Media", "",
             "![one episode, seed 0](episode.gif)  ", f"`gptrl record {bundle_dir} --seed 0 -o episode.gif "
             f"--max-steps 300 --every 3 --width 240 --height 240`: the first {rec.length} steps of seed 0 "
             f"(return {rec.episode_return:.1f} over them).", "",
             "![returns per seed](returns.png)", ""]
    if history:
        plot_training(history["history"], bundle_dir / "training.png", title=f"{bundle_dir.name}: behaviour cloning")
        parts += ["![training curves](training.png)", ""]
        if run_dir is not None:
            parts += [training_caption(bundle_dir, run_dir, history, result, num_envs), ""]
    else:
        parts += ["The training history of this bundle was not kept, so it has no training-curve plot; the next "
                  "retraining (`make train`) writes one.", ""]
    return "\n".join([*parts, MEDIA_END, ""])


def with_media(card: str, media: str) -> str:
    """``card`` with its media section replaced (or added before the Architecture section)."""
    if MEDIA_START in card:
        head, rest = card.split(MEDIA_START, 1)
        return head + media + rest.split(MEDIA_END, 1)[1].lstrip("\n")
    return card.replace("## Architecture", media + "\n## Architecture", 1)


def dagger_card(env_id: str, bundle_dir: Path, summary: dict, num_envs: int = 1) -> dict:
    """Update the card of a bundle that DAgger chose: new numbers and provenance, the DAgger section and round plot;
    when a round's student was published, its media and the behaviour-cloning text re-worded as where DAgger
    started (when no round beat the starting student, the card keeps its training text and media)."""
    from gptrl.training.dagger import best_round, card_section, plot_rounds, with_card_section

    result = refresh(env_id, bundle_dir, num_envs)
    best = best_round(summary["rounds"])
    teachers = read_json(get_recipe(env_id).teacher_dir / "teachers.json")
    plot_rounds(summary, bundle_dir / "rounds.png")
    card = (bundle_dir / "README.md").read_text()
    if best["round"]:  # a DAgger round's student, not the behaviour-cloned one
        card = card.replace("trained by behaviour cloning from gptrl's own teachers",
                            "trained by behaviour cloning and DAgger from gptrl's own teachers", 1)
        card = re.sub(r"\), is this bundle\.", "), was the student that DAgger (below) started from.", card, count=1)
    if "make dagger ENV=" not in card:
        card = card.replace(f"make card ENV={env_id}", f"make dagger ENV={env_id}  # resumable, runs/dagger/{env_id}\n"
                            f"make card ENV={env_id}", 1)
    card = with_card_section(card, card_section(summary))
    if best["round"]:  # the plot of the round's training, which made these weights
        chosen = Path(best["student"]).parent  # round-k/train
        media = make_media(env_id, bundle_dir, result, teachers, read_json(chosen / "history.json"), chosen, num_envs)
        card = with_media(card, media)
    write_text(bundle_dir / "README.md", card)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("env_id")
    p.add_argument("--run", type=Path, help="training run folder (default runs/train/ENV)")
    p.add_argument("--refresh", action="store_true",
                   help="only re-measure and update the card's numbers (after a re-export; needs no training run)")
    p.add_argument("--media", action="store_true",
                   help="only (re)make the card's media: episode.gif, returns.png (training.png with a run history)")
    p.add_argument("--num-envs", type=int, default=1,
                   help="step this many envs together in the 50-episode evaluation (same returns, faster)")
    a = p.parse_args(argv)
    recipe = get_recipe(a.env_id)
    bundle_dir = recipe.bundle_dir
    run_dir = a.run or Path("runs/train") / a.env_id
    if a.media:
        history_path = run_dir / "history.json"
        history = read_json(history_path) if history_path.exists() else None
        result, teachers = read_json(bundle_dir / "eval.json"), read_json(recipe.teacher_dir / "teachers.json")
        card = with_media((bundle_dir / "README.md").read_text(),
                          make_media(a.env_id, bundle_dir, result, teachers, history, run_dir, a.num_envs))
        write_text(bundle_dir / "README.md", card)
        print(f"{a.env_id}: media -> {bundle_dir}")
        return
    if not a.refresh:  # a bundle that `make dagger` published gets the DAgger card
        from gptrl.training.dagger import published_summary

        summary = published_summary(bundle_dir, Path("runs/dagger") / a.env_id)
        if summary is not None:
            result = dagger_card(a.env_id, bundle_dir, summary, a.num_envs)
            print(f"{a.env_id}: {result['return_mean']:.2f} +- {result['return_std']:.2f} (DAgger round "
                  f"{summary['best_round']}) -> {bundle_dir}/README.md")
            return
    if not a.refresh and not (run_dir / "history.json").is_file():
        print(f"{a.env_id}: no training run at {run_dir} (history.json), so only the card's numbers and provenance "
              "are re-measured (--refresh)", flush=True)
        a.refresh = True
    if a.refresh:
        result = refresh(a.env_id, bundle_dir, a.num_envs)
        print(f"{a.env_id}: {result['return_mean']:.2f} +- {result['return_std']:.2f} -> {bundle_dir}/README.md")
        return
    history = read_json(run_dir / "history.json")
    teachers = read_json(recipe.teacher_dir / "teachers.json")
    result = measure(bundle_dir, num_envs=a.num_envs)
    write_json(bundle_dir / "eval.json", result)
    card = render(a.env_id, bundle_dir, result, teachers, history)
    media = make_media(a.env_id, bundle_dir, result, teachers, history, run_dir, a.num_envs)
    write_text(bundle_dir / "README.md", with_media(card, media))
    print(f"{a.env_id}: {result['return_mean']:.2f} +- {result['return_std']:.2f} -> {bundle_dir}/README.md")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.model_card", main))
