"""The PPO tables of the README, from what was measured: each PPO bundle's card (eval.json, seeds 0..49), its run's
history (runs/ppo/ENV) and the same-budget SB3 baselines (docs/results/ppo-baselines.json, and their runs' curves in
runs/baselines for the plot).

Writes docs/results/ppo-summary.json (the numbers), docs/results/masked-velocity.png (the learning curves of gptrl
PPO, SB3 PPO and RecurrentPPO on the masked-velocity envs) and prints the two markdown tables.

    python -m gptrl.training.ppo_report
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gptrl.fileio import read_json, write_json
from gptrl.training.ppo_card import BASELINES_JSON, GOALS, ZOO_PUBLISHED

__all__ = ["MASKED_ENVS", "STANDARD_ENVS", "main", "summary", "tables"]

STANDARD_ENVS = ("CartPole-v1", "Acrobot-v1", "LunarLander-v3", "BipedalWalker-v3")
MASKED_ENVS = ("CartPoleNoVel-v1", "LunarLanderNoVel-v3")
ALGOS = {"ppo": "SB3 PPO (MLP)", "recurrent-ppo": "RecurrentPPO (LSTM)"}


def _gptrl(env_id: str, bundles: Path, runs: Path) -> dict[str, Any] | None:
    bundle = bundles / env_id.lower()
    if not (bundle / "eval.json").is_file():
        return None
    card = read_json(bundle / "eval.json")
    row: dict[str, Any] = {"bundle": str(bundle), "return_mean": card["return_mean"], "return_std": card["return_std"]}
    history = runs / env_id / "history.json"
    if history.is_file():
        run = read_json(history)
        row.update(env_steps=run["step"], seconds=run["history"][-1]["seconds"] if run["history"] else None,
                   best_at=(run.get("best") or {}).get("step"), curve=[
                       {"step": r["step"], "train_return": r["train_return"]} for r in run["history"]])
    return row


def _mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def summary(bundles: Path = Path("bundles"), runs: Path = Path("runs/ppo"),
            baselines: Path = BASELINES_JSON, baseline_runs: Path = Path("runs/baselines")) -> dict[str, Any]:
    """env -> {"gptrl": card and run, "ppo"/"recurrent-ppo": [runs], "zoo": published, "goal": goal}."""
    found = read_json(baselines) if Path(baselines).is_file() else {}
    out: dict[str, Any] = {}
    for env_id in STANDARD_ENVS + MASKED_ENVS:
        entry: dict[str, Any] = {"gptrl": _gptrl(env_id, bundles, runs)}
        for algo in ALGOS:
            entry[algo] = found.get(env_id, {}).get(algo, [])
            for run in entry[algo]:  # the curve for the plot, where the run folder is here
                result = baseline_runs / algo / env_id / f"seed{run['seed']}" / "result.json"
                if result.is_file():
                    run["curve"] = [{"step": p["step"], "train_return": p["train_return"]}
                                    for p in read_json(result)["curve"] if p.get("train_return") is not None]
        if env_id in ZOO_PUBLISHED:
            mean, std, steps, zoo_id = ZOO_PUBLISHED[env_id]
            entry["zoo"] = {"return_mean": mean, "return_std": std, "budget": steps, "env": zoo_id}
        if env_id in GOALS:
            entry["goal"] = {"return": GOALS[env_id][0], "within": GOALS[env_id][1]}
        out[env_id] = entry
    return out


def _cell(runs: list[dict]) -> str:
    if not runs:
        return "not run"
    steps = max(r["env_steps"] for r in runs)
    text = " / ".join(f"{r['return_mean']:.2f} +- {r['return_std']:.2f}" for r in runs)
    return f"{text} ({steps / 1e3:,.0f}k, {_mean(runs, 'seconds') / 60:.1f} min)"


def _ours(row: dict | None) -> str:
    if row is None:
        return "no bundle yet"
    text = f"{row['return_mean']:.2f} +- {row['return_std']:.2f}"
    if row.get("env_steps"):
        text += f" ({row['env_steps'] / 1e3:,.0f}k, {row['seconds'] / 60:.1f} min)"
    return text


def tables(data: dict[str, Any]) -> str:
    """The README's two tables: the standard envs against the Zoo and SB3, the masked envs against both memories."""
    lines = ["| env | gptrl PPO (transformer, KV cache) | goal | SB3 PPO (MLP), same budget, this machine | "
             "RL Zoo PPO (MLP), published |", "|---|---|---|---|---|"]
    for env_id in STANDARD_ENVS:
        e = data[env_id]
        goal = f">= {e['goal']['return']:g} within {e['goal']['within'] / 1e6:g}M" if "goal" in e else "-"
        zoo = e.get("zoo")
        zoo_text = f"{zoo['return_mean']} +- {zoo['return_std']} ({zoo['budget'] / 1e6:g}M)" if zoo else "-"
        lines.append(f"| {env_id} | {_ours(e['gptrl'])} | {goal} | {_cell(e['ppo'])} | {zoo_text} |")
    lines += ["", "| env | gptrl PPO (transformer, KV cache 16) | SB3 PPO (MLP, no memory) | RecurrentPPO (LSTM) |",
              "|---|---|---|---|"]
    for env_id in MASKED_ENVS:
        e = data[env_id]
        lines.append(f"| {env_id} | {_ours(e['gptrl'])} | {_cell(e['ppo'])} | {_cell(e['recurrent-ppo'])} |")
    return "\n".join(lines)


def plot_masked(data: dict[str, Any], out: Path) -> Path:
    """Training-episode return against env steps for the three policies on each masked env."""
    from gptrl.training.plots import _figure, _save

    plt = _figure()
    fig, axes = plt.subplots(1, len(MASKED_ENVS), figsize=(11, 3.6))
    for ax, env_id in zip(axes, MASKED_ENVS):
        e = data[env_id]
        curves = [("gptrl PPO (transformer)", (e["gptrl"] or {}).get("curve"), "tab:blue")]
        curves += [(f"{ALGOS[a]} seed {r['seed']}", r.get("curve"), color) for a, color in
                   (("ppo", "tab:green"), ("recurrent-ppo", "tab:red")) for r in e[a]]
        for label, curve, color in curves:
            if curve:
                ax.plot([p["step"] for p in curve], [p["train_return"] for p in curve], color=color, label=label,
                        lw=1.2)
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training episodes' return (last 20)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/results"), help="folder for ppo-summary.json and the plot")
    a = p.parse_args(argv)
    data = summary()
    write_json(a.out / "ppo-summary.json", {env: {k: v for k, v in e.items()} for env, e in data.items()})
    plot_masked(data, a.out / "masked-velocity.png")
    print(tables(data))


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.ppo_report", main))
