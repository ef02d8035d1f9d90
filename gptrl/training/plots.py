"""The model cards' plots (matplotlib, PNG): training curves, per-seed returns, and return conditioning."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gptrl.fileio import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    """Write the figure as a PNG (atomically) and close it, written or not."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def plot_training(history: Sequence[dict], out: str | Path, *, loss_key: str = "action_mse",
                  title: str = "") -> Path:
    """The training loss and the held-out evaluation return over training steps (one record per evaluation)."""
    plt = _figure()
    steps = [r["step"] for r in history]
    fig, left = plt.subplots(figsize=(6.4, 3.6))
    left.plot(steps, [r[loss_key] for r in history], color="tab:blue", marker="o", ms=3)
    left.set_xlabel("training step")
    left.set_ylabel(loss_key.replace("_", " "), color="tab:blue")
    left.set_yscale("log")
    right = left.twinx()
    means = [r["return_mean"] for r in history]
    stds = [r.get("return_std", 0.0) for r in history]
    right.errorbar(steps, means, yerr=stds, color="tab:orange", marker="s", ms=3, capsize=2)
    right.set_ylabel("held-out return", color="tab:orange")
    left.set_title(title or "training")
    return _save(fig, Path(out))


def plot_returns(returns: Sequence[float], out: str | Path, *, seeds: Sequence[int] | None = None,
                 lines: dict[str, float] | None = None, title: str = "") -> Path:
    """The return of every evaluation episode by seed, with horizontal lines for reference means
    (e.g. {"teacher": 3220.6, "reference project": 2836.3})."""
    plt = _figure()
    seeds = list(seeds) if seeds is not None else list(range(len(returns)))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(seeds, returns, color="tab:blue", alpha=0.8, label="this policy, per seed")
    for (label, value), color in zip((lines or {}).items(), ("tab:green", "tab:red", "tab:purple", "tab:gray")):
        ax.axhline(value, color=color, linestyle="--", label=f"{label} ({value:.0f})")
    ax.set_xlabel("seed")
    ax.set_ylabel("episode return")
    ax.set_title(title or "returns per seed")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(out))


def plot_conditioning(targets: Sequence[float], means: Sequence[float], stds: Sequence[float], out: str | Path, *,
                      data_means: dict[str, float] | None = None, title: str = "") -> Path:
    """Achieved return against the target return (a return-conditioned policy), with the data levels' means."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    ax.errorbar(targets, means, yerr=stds, marker="o", capsize=3, label="achieved (mean +- std)")
    lo, hi = min(min(targets), min(means)), max(max(targets), max(means))
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle=":", label="achieved = target")
    for (label, value), color in zip((data_means or {}).items(), ("tab:green", "tab:red", "tab:purple")):
        ax.axhline(value, color=color, linestyle="--", label=f"{label} data ({value:.0f})")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title(title or "return conditioning")
    ax.legend(fontsize=8)
    return _save(fig, Path(out))


def plot_rounds(rounds: Sequence[int], means: Sequence[float], stds: Sequence[float], falls: Sequence[int],
                out: str | Path, *, episodes: int, title: str = "") -> Path:
    """DAgger's progress: held-out return (mean +- std) and the number of falls, one point per round."""
    plt = _figure()
    fig, left = plt.subplots(figsize=(6.4, 3.6))
    left.errorbar(rounds, means, yerr=stds, color="tab:orange", marker="s", ms=4, capsize=2)
    left.set_xlabel("DAgger round (0: the behaviour-cloned student)")
    left.set_ylabel("held-out return", color="tab:orange")
    left.set_xticks(list(rounds))
    right = left.twinx()
    right.bar(rounds, falls, width=0.3, alpha=0.35, color="tab:red")
    right.set_ylabel(f"falls in {episodes} episodes", color="tab:red")
    right.set_ylim(0, max(1, max(falls)) * 1.2)
    left.set_title(title or "DAgger")
    return _save(fig, Path(out))


def plot_learning_curve(history: Sequence[dict], out: str | Path, *, title: str = "",
                        others: dict[str, Sequence[dict]] | None = None) -> Path:
    """An RL run's held-out return (mean and std over its seeds) and its training episodes' return, by env step;
    ``others``: more runs' training-episode curves (label -> records with step and train_return), dashed."""
    plt = _figure()
    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.errorbar(steps, [r["return_mean"] for r in history], yerr=[r.get("return_std", 0.0) for r in history],
                color="tab:orange", marker="s", ms=3, capsize=2, label="held-out return (greedy, ONNX runtime)")
    ax.plot(steps, [r["train_return"] for r in history], color="tab:blue", marker="o", ms=3,
            label="training episodes (sampled, last 20)")
    for (label, curve), color in zip((others or {}).items(), ("tab:green", "tab:red", "tab:purple", "tab:gray",
                                                              "tab:olive", "tab:cyan")):
        points = [r for r in curve if r.get("train_return") is not None]
        ax.plot([r["step"] for r in points], [r["train_return"] for r in points], color=color, linestyle="--",
                lw=1, label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title or "learning curve")
    ax.legend(fontsize=8)
    return _save(fig, Path(out))
