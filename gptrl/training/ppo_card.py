"""The model card (README.md) of a bundle that ``gptrl.training.ppo`` trained, written from what the run recorded.

Measured exactly as every other card: ``gptrl eval BUNDLE --episodes 50 --seed 0 --json`` (the torch-free ONNX
runtime, greedy actions, one episode per seed 0..49; ``--max-steps`` the env's own limit where it is above 1000),
kept as ``eval.json`` so ``make verify-cards`` re-runs it. Beside it: ``returns.png`` (per seed), ``training.png``
(held-out return against env steps, from the run's history), ``episode.gif`` (seed 0), the run's history copied as
``ppo_history.json``, the training cost and the PPO ``Args`` the run used (its checkpoint's config), and the
comparison with the same-budget Stable-Baselines3 baselines (``docs/results/ppo-baselines.json``, written by
``python -m gptrl.training.baselines --collect``) and the RL Zoo's published number. A baseline that was not run is
said to be missing, never filled in.

    python -m gptrl.training.ppo_card bundles/cartpole-v1 --run runs/ppo/CartPole-v1
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from gptrl.bundle import load_bundle
from gptrl.errors import BundleError
from gptrl.fileio import read_json, sha256_file, write_json, write_text
from gptrl.training.model_card import measure, provenance_line

__all__ = ["GOALS", "ZOO_PUBLISHED", "load_run", "main", "render", "write_card"]

BASELINES_JSON = Path("docs/results/ppo-baselines.json")
# The RL Baselines3 Zoo's published PPO (MLP) results: (mean, std, its budget, the Zoo's env id).
ZOO_PUBLISHED = {"CartPole-v1": (500.0, 0.0, 100_000, "CartPole-v1"),
                 "Acrobot-v1": (-73.5, 18.2, 1_000_000, "Acrobot-v1"),
                 "LunarLander-v3": (242.1, 31.8, 1_000_000, "LunarLander-v2"),
                 "BipedalWalker-v3": (287.9, 2.4, 5_000_000, "BipedalWalker-v3")}
# Issue 22's goals for gptrl's PPO: (mean return at least, within this many env steps).
GOALS = {"CartPole-v1": (500.0, 100_000), "Acrobot-v1": (-73.5, 1_000_000), "LunarLander-v3": (250.0, 1_000_000),
         "BipedalWalker-v3": (290.0, 5_000_000), "CartPoleNoVel-v1": (500.0, 100_000),
         "LunarLanderNoVel-v3": (200.0, None)}
# Issue 23's: 80% of ASCII Breakout's ceiling of 960, and above the scripted heuristic (the anchors' row).
BREAKOUT_GOAL = ("gptrl/AsciiBreakout-v0", 768.0)
ABLATION_RUN = "runs/ppo/gptrl/AsciiBreakout-v0-context1"  # the context-1 ablation's run (breakout_anchors' default)
ALGO_NAMES = {"ppo": "SB3 PPO (MLP, no memory)", "recurrent-ppo": "sb3-contrib RecurrentPPO (LSTM)"}
GIF_STEPS, GIF_EVERY = 600, 3  # the GIF: the first steps of seed 0, every third frame (a few hundred KB)


def load_run(run_dir: Path) -> dict[str, Any]:
    """The run's record: its history.json, or its checkpoint.pt (``config`` = the PPO Args, ``env_id``, and the
    state: step, best, history, update, updates)."""
    run_dir = Path(run_dir)
    if (run_dir / "history.json").is_file():
        run = read_json(run_dir / "history.json")
    elif (run_dir / "checkpoint.pt").is_file():
        import torch

        saved = torch.load(run_dir / "checkpoint.pt", weights_only=False, map_location="cpu")
        run = {"config": saved["config"], "env_id": saved.get("env_id"), "algorithm": "ppo", **saved["state"]}
    else:
        raise BundleError(f"{run_dir}: no history.json or checkpoint.pt (a gptrl.training.ppo run folder)")
    if run.get("algorithm", "ppo") != "ppo" or not run.get("history"):
        raise BundleError(f"{run_dir}: not a gptrl.training.ppo run with evaluations (algorithm "
                          f"{run.get('algorithm')!r}, {len(run.get('history') or [])} evaluations)")
    return run


def env_limit(env_id: str) -> int | None:
    import gymnasium as gym

    from gptrl.envs import register

    register()
    return gym.spec(env_id).max_episode_steps


def _k(n: float) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k"


def _baselines(env_id: str, baselines_json: Path | None) -> tuple[dict[str, list[dict]], Path | None]:
    path = baselines_json if baselines_json is not None else BASELINES_JSON
    if not Path(path).is_file():
        return {}, None
    return read_json(path).get(env_id, {}), Path(path)


def _expected_algos(env_id: str, found: dict) -> list[str]:
    """The baselines the card shows: SB3 PPO on the envs with a budget in ``baselines.BUDGETS`` (issue 22's), and
    RecurrentPPO on the masked ones; any other that was run."""
    from gptrl.training.baselines import BUDGETS

    expected = (["ppo"] + (["recurrent-ppo"] if "NoVel" in env_id else [])) if env_id in BUDGETS else []
    return [a for a in ("ppo", "recurrent-ppo") if a in expected or a in found]


def comparison(env_id: str, result: dict, run: dict, baselines: dict[str, list[dict]],
               source: Path | None) -> list[str]:
    """The table of gptrl's PPO beside the same-budget baselines and the Zoo's published number."""
    budget = run["config"]["total_timesteps"]
    seeds = f"{result['seeds'][0]}..{result['seeds'][1]}"
    lines = [f"| policy | env steps | return on seeds {seeds} (mean +- std) | runs |", "|---|---|---|---|",
             f"| gptrl PPO, this bundle | {run['step']:,} (budget {budget:,}) | "
             f"{result['return_mean']:.2f} +- {result['return_std']:.2f} | seed {run['config']['seed']} |"]
    notes = []
    for algo in _expected_algos(env_id, baselines):
        runs = baselines.get(algo, [])
        name = f"{ALGO_NAMES[algo]}, RL Zoo hyperparameters"
        if not runs:
            lines.append(f"| {name} | - | not run yet | - |")
            notes.append(f"`make baseline ENV={env_id} ALGO={algo} SEED=0`")
            continue
        for r in runs:
            other = "" if r["budget"] == budget else f" (**budget {r['budget']:,}**, not this run's)"
            lines.append(f"| {name} | {r['env_steps']:,}{other} | {r['return_mean']:.2f} +- {r['return_std']:.2f}"
                         + ("" if r["num_episodes"] == result["num_episodes"] else
                            f" (**{r['num_episodes']} episodes**)") + f" | seed {r['seed']} |")
    if env_id in ZOO_PUBLISHED:
        mean, std, steps, zoo_id = ZOO_PUBLISHED[env_id]
        lines.append(f"| RL Zoo PPO (MLP), published{'' if zoo_id == env_id else f' ({zoo_id})'} | {_k(steps)} | "
                     f"{mean:.1f} +- {std:.1f} (the Zoo's own evaluation, not these seeds) | - |")
    text = ["", *lines, ""]
    if source is not None:
        text.append(f"The SB3 rows are `{source.as_posix()}` (`python -m gptrl.training.baselines --collect`): each "
                    "run trained on this machine with the RL Zoo's tuned hyperparameters (`gptrl.training."
                    "baselines.ZOO`) and evaluated with this card's protocol (deterministic actions, the same seeds).")
    else:
        text.append("No same-budget SB3 baseline has been collected yet (`docs/results/ppo-baselines.json` is "
                    "missing), so the only comparison is the RL Zoo's published number.")
    if notes:
        text.append("Missing baselines are not estimated; to add them: " + ", ".join(notes)
                    + ", then `python -m gptrl.training.baselines --collect` and this card again.")
    return text


def anchors_table(env_id: str, result: dict, run: dict, anchors: dict | None) -> list[str]:
    """ASCII Breakout's card: the bundle beside the anchors of ``gptrl.training.breakout_anchors`` (random, the
    heuristic, the planner, the context-1 ablation and the seed design's cost), all on the card's seeds."""
    from gptrl.training.breakout_anchors import bricks_cleared

    if anchors is None or anchors.get("env_id") != env_id:
        return ["", "The anchors were not measured yet: `make breakout-anchors` (docs/results/breakout-anchors.json), "
                "then this card again.", ""]
    import gymnasium as gym

    from gptrl.envs import register

    register()
    layout = gym.make(env_id).unwrapped.layout
    seeds = f"{result['seeds'][0]}..{result['seeds'][1]}"
    cleared = [bricks_cleared(r, layout.bricks) for r in result["returns"]]
    lines = ["", f"| policy | memory | env steps | return on seeds {seeds} (mean +- std) | bricks cleared (of "
             f"{layout.bricks}) | boards cleared |", "|---|---|---|---|---|---|",
             f"| gptrl PPO, this bundle | KV cache of {run['config']['context_length']} steps | {run['step']:,} | "
             f"{result['return_mean']:.2f} +- {result['return_std']:.2f} | {sum(cleared) / len(cleared):.1f} | "
             f"{sum(c == layout.bricks for c in cleared)} of {len(cleared)} |"]
    names = {"random": ("uniformly random actions", "-", "-"),
             "heuristic": ("scripted heuristic: the paddle follows the ball", "none (one frame)", "-"),
             "planner": ("scripted planner, the kickstarting teacher (reads the game's state)", "the game's state",
                         "-"),
             "context-1": ("ablation: gptrl PPO, same preset, `--context-length 1`", "none (one frame)", None)}
    notes = []
    for row in anchors["anchors"]:
        policy = row["policy"]
        if policy == "seed design":
            lines.append("| the seed's design: nanoGPT over the frame's 1944 characters | none (one frame) | not "
                         "trained (below) | - | - | - |")
            notes.append(f"The seed's design was timed, not trained: one PPO update at its settings (1 env, rollout "
                         f"1024, 10 epochs, minibatch 64) costs {row['update_s']:,.0f} s on this machine's core "
                         f"({row['forward_s'] * 1e3:,.0f} ms a frame's forward, {row['minibatch_s']:,.1f} s a "
                         f"minibatch's forward, backward and step), so this bundle's budget of {row['budget']:,} "
                         f"steps would take {row['days_for_budget']:,.0f} days; `gptrl.training.seed_design`.")
            continue
        label, memory, steps = names[policy]
        if policy == "context-1":
            steps = f"{row['env_steps']:,}"
            notes.append(f"The ablation is `{row['command']}` on its run's best held-out candidate ({row['run']}, "
                         f"at {row['best_step']:,} of {row['env_steps']:,} steps).")
        lines.append(f"| {label} | {memory} | {steps} | {row['return_mean']:.2f} +- {row['return_std']:.2f} | "
                     f"{row['bricks_mean']:.1f} | {row['cleared_boards']} of {len(row['returns'])} |")
    return ["", *lines, "", "Anchors from `docs/results/breakout-anchors.json` (`make breakout-anchors`), measured "
            "with the card's protocol. " + " ".join(notes), ""]


def goal_line(env_id: str, result: dict, run: dict, anchors: dict | None = None) -> str:
    if env_id == BREAKOUT_GOAL[0]:
        heuristic = next((r["return_mean"] for r in (anchors or {}).get("anchors", []) if r["policy"] == "heuristic"),
                         None)
        met = result["return_mean"] >= BREAKOUT_GOAL[1] and heuristic is not None and result["return_mean"] > heuristic
        return (f"Goal (issue 23): a mean of at least {BREAKOUT_GOAL[1]:g} (80% of the ceiling) and above the "
                f"heuristic ({'not measured' if heuristic is None else f'{heuristic:.2f}'}): "
                + ("met." if met else f"**not met** ({result['return_mean']:.2f})."))
    if env_id not in GOALS:
        return ""
    target, within = GOALS[env_id]
    met = result["return_mean"] >= target and (within is None or run["step"] <= within)
    budget = f" within {within:,} env steps" if within else ""
    return (f"Goal (issue 22): a mean of at least {target:g}{budget}: "
            + ("met." if met else f"**not met** ({result['return_mean']:.2f} after {run['step']:,} env steps)."))


def _action_text(bundle) -> str:
    kind = type(bundle.config.action).__name__
    return {"Discrete": f"a Discrete({getattr(bundle.config.action, 'n', '?')}) action (`discrete` action_specs, "
                        "docs/format.md; greedy = the most likely action)",
            "GaussianBox": "a Gaussian Box action clipped to the bounds (greedy = the mean)",
            "TanhBox": "a tanh-squashed Box action (greedy = tanh of the mean)"}.get(kind, f"a {kind} action")


def _machine(result: dict) -> str:
    cpu = (result.get("provenance") or {}).get("cpu") or {}
    return f"{cpu.get('model', 'an unrecorded CPU')} ({cpu.get('logical_cpus', '?')} CPUs)"


def _flags(env_id: str, cfg: dict) -> list[str]:
    """The run's PPO Args that differ from the env's preset (``ppo.PRESETS`` over the defaults), as flags."""
    from gptrl.training.ppo import PRESETS, Args

    preset = PRESETS.get(env_id, {})
    return [f"--{f.name.replace('_', '-')} {cfg[f.name]}" for f in fields(Args)
            if f.name in cfg and cfg[f.name] != preset.get(f.name, f.default)]


def _command(env_id: str, cfg: dict) -> str:
    """The training command, and the make line that runs it."""
    flags = _flags(env_id, cfg)
    make = f"make ppo ENV={env_id}" + (f" ARGS=\"{' '.join(flags)}\"" if flags else "")
    return " ".join(["python -m gptrl.training.ppo", env_id, *flags, "--publish"]), make


def render(bundle_dir: Path, result: dict, run: dict, baselines: dict, source: Path | None, media: list[str],
           same_weights: bool, anchors: dict | None = None) -> str:
    bundle = load_bundle(bundle_dir)
    c, m = bundle.config, bundle.config.model
    env_id, cfg, best = c.env_id, run["config"], run["best"]
    name = bundle_dir.name
    per_update = cfg["num_envs"] * cfg["num_steps"]
    updates = run.get("updates") or []
    logp = max((u.get("logp_error", 0.0) for u in updates), default=None)
    value = max((u["value_error"] for u in updates if "value_error" in u), default=None)  # none: a separate critic
    seconds = run["history"][-1]["seconds"]
    limit = result.get("max_steps_limit")
    lines = [
        f"# {name}: a causal transformer policy for {env_id}, trained by gptrl's PPO",
        "",
        f"A {m.network_name} policy in the Causal GPT-RL bundle format (format {c.format_version}) with "
        f"{_action_text(bundle)}, trained from scratch by `gptrl.training.ppo` acting one token per step through "
        "its KV cache. `policy.onnx` is its exported one-step graph for the torch-free `gptrl.runtime`.",
        "",
        "## Results",
        "",
        f"Measured with `{result['command']}` (`--json` wrote eval.json; ONNX runtime, CPU, "
        f"{result['num_episodes']} episodes, seeds {result['seeds'][0]}..{result['seeds'][1]}, greedy actions"
        + (f"; {env_id} ends at {limit} steps" if limit else "") + "):",
        "",
        "| return (mean +- std) | episode length (mean +- std) | min / max return |",
        "|---|---|---|",
        f"| {result['return_mean']:.2f} +- {result['return_std']:.2f} | {result['length_mean']:.1f} +- "
        f"{result['length_std']:.1f} | {min(result['returns']):.1f} / {max(result['returns']):.1f} |",
        "",
        provenance_line(result),
        goal_line(env_id, result, run, anchors) or None,
        "Per-episode returns are in `eval.json`.",
        "",
        *(["### Beside the anchors", *anchors_table(env_id, result, run, anchors)] if env_id == BREAKOUT_GOAL[0]
          else ["### Beside the baselines", *comparison(env_id, result, run, baselines, source)]),
        "",
        *media,
        "## Architecture",
        "",
        f"- {m.network_name}, {m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads"
        + (f", SwiGLU width {m.intermediate_size}, RoPE theta {m.rope_theta:g}" if m.network == "llama"
           else f", MLP width {m.intermediate_size}") + f"; {bundle.parameter_count:,} parameters.",
        f"- One token per step (state, previous action, BOS flag); context_length = kv cache {c.context_length}, "
        f"bos_cache_mode {c.bos_cache_mode or 'discard'}. As the format prescribes, the action for step t is read "
        "from the token of step t-1.",
        f"- No state normaliser (PPO learns from the raw observations). The value head predicts the discounted "
        f"return of rewards scaled by {cfg['reward_scale']:g} (`reward_scale`); the termination head was not "
        "trained.",
        "",
        "## Training",
        "",
        "- `{}` (`{}`): ".format(*_command(env_id, cfg)) + f"{cfg['num_envs']} envs x {cfg['num_steps']} steps "
        f"per update, {run.get('update', len(updates))} updates = {run['step']:,} env steps (budget "
        f"{cfg['total_timesteps']:,}); {cfg['update_epochs']} epochs of {cfg['num_minibatches']} minibatches of "
        f"training windows ({cfg['chunk']} new slots after {cfg['num_layers'] * cfg['context_length']} slots of "
        f"context, the cache's positions and masks); gamma {cfg['gamma']}, GAE lambda {cfg['gae_lambda']}, clip "
        f"{cfg['clip_coef']}{' (value loss clipped too)' if cfg['clip_vloss'] else ''}, vf {cfg['vf_coef']}, "
        f"entropy {cfg['ent_coef']:g}, Adam lr {cfg['lr']:g}{' annealed to 0 (cosine)' if cfg['anneal_lr'] else ''}"
        f", gradient clip {cfg['max_grad_norm']}"
        + (f", target KL {cfg['target_kl']:g}" if cfg.get("target_kl") else "") + f", seed {cfg['seed']}.",
        (f"- Kickstarted (`--teacher {cfg['teacher']}`, `gptrl.training.ppo.TEACHERS`): the cross-entropy to the "
         f"scripted teacher's action at every state the policy visited was added to PPO's loss, its weight "
         f"{cfg['teacher_coef']:g} at the start falling linearly to 0 at {cfg['teacher_fraction']:.0%} of the run; "
         "the rest of the run was plain PPO. The teacher is not part of the bundle." if cfg.get("teacher") else None),
        (f"- The observation encoder's weights trained at their own rate, {cfg['encoder_lr']:g} at the start "
         "(`--encoder-lr`, annealed alike)." if cfg.get("encoder_lr") else None),
        f"- Cost: {run['step']:,} env steps in {seconds:,.0f} s wall clock ({run['step'] / max(seconds, 1e-9):,.0f} "
        f"env steps/s, held-out evaluations included) on {cfg['threads']} torch thread"
        f"{'s' if cfg['threads'] > 1 else ''}. The run records no machine of its own; this card was measured on "
        f"{_machine(result)} (the Measured-on line)"
        + (", where the baselines were trained too." if baselines else "."),
        (f"- Before every update the recomputed log-probabilities matched the rollout's within {logp:.2g}"
         + (f" and the values within {value:.2g}" if value is not None else " (a separate critic: its values are "
            "recomputed, not compared)")
         + " (`ppo_history.json`, `logp_error` / `value_error`)." if logp is not None else None),
        f"- Every {cfg['eval_every']} updates ({cfg['eval_every'] * per_update:,} env steps) the candidate was "
        f"exported and evaluated on the ONNX runtime over {cfg['eval_episodes']} held-out seeds ({cfg['eval_seed']}.."
        f"{cfg['eval_seed'] + cfg['eval_episodes'] - 1}, never the seeds above); the best, the first to score "
        f"{best['return_mean']:.1f} +- {best['return_std']:.1f}, at {best['step']:,} env steps, "
        + ("is this bundle" if same_weights else "is the run's `best/`; **this bundle's weights are not that "
           "candidate's** (published from another run or retrained since), so the curve above is not its history")
        + " (`ppo_history.json` holds every evaluation and update).",
        "",
        "<details><summary>The run's PPO Args (its checkpoint's config)</summary>",
        "",
        "| arg | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in cfg.items()],
        "",
        "</details>",
        "",
        "## Reproduce",
        "",
        "```",
        f"{_command(env_id, cfg)[1]}          # {_command(env_id, cfg)[0]}, then ppo-card",
        *(["make breakout-ablation     # the context-1 ablation's run, " + ABLATION_RUN,
           "make breakout-anchors      # docs/results/breakout-anchors.json"] if env_id == BREAKOUT_GOAL[0] else
          [*[f"make baseline ENV={env_id} ALGO={algo} SEED=0" for algo in _expected_algos(env_id, baselines)],
           "python -m gptrl.training.baselines --collect   # docs/results/ppo-baselines.json"]),
        f"make ppo-card ENV={env_id}     # this file, eval.json and the media",
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def _media(bundle_dir: Path, env_id: str, result: dict, run: dict, baselines: dict, limit: int | None) -> list[str]:
    """Write episode.gif, returns.png and training.png; returns the card's media lines."""
    from gptrl.record import record_episode
    from gptrl.training.plots import plot_learning_curve, plot_returns

    steps = min(limit or GIF_STEPS, GIF_STEPS)
    rec = record_episode(bundle_dir, bundle_dir / "episode.gif", seed=0, max_steps=steps, every=GIF_EVERY,
                         progress=False)
    lines = {}
    for algo, runs in baselines.items():
        for r in runs:
            lines[f"{ALGO_NAMES.get(algo, algo)} seed {r['seed']}"] = r["return_mean"]
    if env_id in ZOO_PUBLISHED:
        lines["RL Zoo PPO, published"] = ZOO_PUBLISHED[env_id][0]
    seeds = list(range(result["seeds"][0], result["seeds"][1] + 1))
    plot_returns(result["returns"], bundle_dir / "returns.png", seeds=seeds, lines=dict(list(lines.items())[:4]),
                 title=f"{bundle_dir.name}: return per seed ({result['command']})")
    curves = {}
    for algo, runs in baselines.items():
        for r in runs:
            path = Path(r.get("result", ""))
            if path.is_file():
                curves[f"{ALGO_NAMES.get(algo, algo)} seed {r['seed']} (training episodes)"] = read_json(path)["curve"]
    plot_learning_curve(run["history"], bundle_dir / "training.png", title=f"{bundle_dir.name}: PPO",
                        others=curves)
    size = f"{rec.size[0]}x{rec.size[1]}"
    whole = rec.length < steps or rec.length == limit
    return ["![one episode, seed 0](episode.gif)  ",
            f"`gptrl record {bundle_dir.as_posix()} --seed 0 -o episode.gif --max-steps {steps} --every {GIF_EVERY}`: "
            + (f"the whole episode of seed 0 ({rec.length} steps, return {rec.episode_return:.1f})" if whole else
               f"the first {rec.length} steps of seed 0 (return {rec.episode_return:.1f} over them)")
            + f", one frame every {GIF_EVERY} steps, {size} pixels.", "",
            "![returns per seed](returns.png)", "",
            "![learning curve](training.png)", "",
            f"Held-out return (greedy, {run['config']['eval_episodes']} seeds from {run['config']['eval_seed']}) and "
            "the training episodes' return against env steps, from the run's history"
            + ("; dashed: the SB3 baselines' training episodes (mean of their last 20)." if curves else "."), ""]


def write_card(bundle: str | Path, run_dir: str | Path, baselines_json: str | Path | None = None, *,
               num_envs: int = 1, episodes: int = 50, anchors_json: str | Path | None = None) -> dict:
    """Measure ``bundle`` (``episodes`` greedy episodes on seeds 0.., 50 for a card; fewer only in tests) and write
    its README.md, eval.json, ppo_history.json and media from the PPO run ``run_dir``; returns the measurement. The
    run must have trained the bundle's env."""
    bundle_dir, run_dir = Path(bundle), Path(run_dir)
    env_id = load_bundle(bundle_dir).config.env_id
    run = load_run(run_dir)
    if run.get("env_id") != env_id:
        raise ValueError(f"{run_dir}: the run trained {run.get('env_id')}, but {bundle_dir} is a {env_id} policy "
                         "(give the run that made this bundle with --run)")
    limit = env_limit(env_id)
    result = measure(bundle_dir, episodes=episodes, num_envs=num_envs,
                     max_steps=limit if limit and limit > 1000 else None)
    found, source = _baselines(env_id, None if baselines_json is None else Path(baselines_json))
    run_weights = run_dir / "best" / "model.safetensors"
    same = run_weights.is_file() and sha256_file(run_weights) == sha256_file(bundle_dir / "model.safetensors")
    write_json(bundle_dir / "eval.json", result)
    write_json(bundle_dir / "ppo_history.json", run)
    media = _media(bundle_dir, env_id, result, run, found, limit)
    from gptrl.training.breakout_anchors import load

    card = render(bundle_dir, {**result, "max_steps_limit": limit}, run, found, source, media, same,
                  load(None if anchors_json is None else Path(anchors_json)))
    write_text(bundle_dir / "README.md", card)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="the published bundle folder (bundles/<env id lowercased>)")
    p.add_argument("--run", type=Path, help="the PPO run that made it (default runs/ppo/<the bundle's env id>)")
    p.add_argument("--baselines", type=Path, help=f"the SB3 baselines' summary (default {BASELINES_JSON}, "
                   "when present)")
    p.add_argument("--num-envs", type=int, default=1,
                   help="step this many envs together in the evaluation (same returns, faster)")
    a = p.parse_args(argv)
    env_id = load_bundle(a.bundle).config.env_id
    result = write_card(a.bundle, a.run or Path("runs/ppo") / env_id, a.baselines, num_envs=a.num_envs)
    print(f"{env_id}: {result['return_mean']:.2f} +- {result['return_std']:.2f} -> {a.bundle / 'README.md'}")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.ppo_card", main))
