"""The training-loop skeleton every learner shares (behaviour cloning, the Decision Transformer, next PPO): the
learning-rate schedule, the resume rule, the step loop, candidate selection and publishing.

A learner gives ``run`` its model and optimiser and three functions: the loss of one step, how to write a candidate
bundle, and how to measure one. Every ``eval_every`` steps the candidate is written to ``out/candidate`` and
measured on held-out seeds; the best by mean return is kept as ``out/best``; a checkpoint makes the run resumable.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from gptrl.bundle.files import POLICY_FILE, SOURCE_FILES
from gptrl.fileio import atomic_dir, atomic_path, copy_file, write_json

# Settings a checkpoint may be resumed under changed: a new step budget (the schedule stretches), the evaluation's
# cadence and size, and where it runs. Anything else would continue another run.
RESUMABLE_CHANGES = {"steps", "eval_every", "eval_episodes", "threads", "device"}


def lr_at(step: int, lr: float, warmup: int, steps: int, min_lr_ratio: float = 1.0) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` to ``min_lr_ratio`` x ``lr`` at ``steps``
    (``min_lr_ratio`` 1: constant after the warm-up)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def same_run(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a checkpoint made with settings ``saved`` may continue under ``wanted``."""
    keep = lambda d: {k: v for k, v in d.items() if k not in RESUMABLE_CHANGES}
    return keep(saved) == keep(wanted)


@dataclass
class Learner:
    """What one learner gives the loop."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[], tuple[torch.Tensor, float]]  # one step's loss to minimise, and the number to log
    write_candidate: Callable[[Path], Any]  # the model as a bundle in this folder
    measure: Callable[[Path], dict[str, Any]]  # the record of a written candidate (return_mean, ...)
    rng: Any  # the batch sampler's numpy Generator (saved and restored with the checkpoint)
    identity: dict[str, Any]  # what else a checkpoint must agree on to be resumed (architecture, ...), saved in it
    loss_name: str = "action_mse"


def run(learner: Learner, cfg: Any, out: Path, *, desc: str, progress: bool = True,
        notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or resume) under ``cfg`` (a dataclass with steps, lr, warmup, min_lr_ratio, grad_clip, eval_every);
    returns the run's state (step, best, history). ``notes`` go into history.json beside the config and the state."""
    from tqdm import tqdm

    model, opt = learner.model, learner.optimizer
    state = resume(learner, cfg, out / "checkpoint.pt")
    started = time.time() - (state["history"][-1]["seconds"] if state["history"] else 0.0)  # across resumptions
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=desc, unit="step", disable=not progress)
    running = None
    model.train()
    while state["step"] < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(state["step"], cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
        total, logged = learner.loss()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] += 1
        running = logged if running is None else 0.98 * running + 0.02 * logged
        bar.update(1)
        bar.set_postfix({learner.loss_name: f"{running:.4f}"})
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            record = evaluate_candidate(learner, out, state, running, started)
            bar.write(json.dumps(record))
            save_checkpoint(learner, cfg, state, out, notes)
    bar.close()
    return state


def evaluate_candidate(learner: Learner, out: Path, state: dict[str, Any], running: float,
                       started: float) -> dict[str, Any]:
    """Write and measure the candidate; it becomes ``out/best`` when its mean return is the best so far."""
    learner.model.eval()
    learner.write_candidate(out / "candidate")
    result = learner.measure(out / "candidate")
    learner.model.train()
    record = {"step": state["step"], learner.loss_name: round(running, 5), **result,
              "seconds": round(time.time() - started, 1)}
    state["history"].append(record)
    if state["best"] is None or record["return_mean"] > state["best"]["return_mean"]:
        state["best"] = record
        with atomic_dir(out / "best", overwrite=True) as tmp:
            shutil.copytree(out / "candidate", tmp, dirs_exist_ok=True)
    return record


def resume(learner: Learner, cfg: Any, path: Path) -> dict[str, Any]:
    state: dict[str, Any] = {"step": 0, "best": None, "history": []}
    if not path.exists():
        return state
    saved = torch.load(path, weights_only=False, map_location=next(learner.model.parameters()).device)
    # a setting added since the checkpoint was made reads as its default there (the run was made without it)
    defaults = {f.name: f.default for f in fields(cfg) if f.default is not MISSING}
    made_with = {**{k: v for k, v in defaults.items() if k not in saved["config"]}, **saved["config"]}
    if not same_run(made_with, asdict(cfg)) or any(saved.get(k) != v for k, v in learner.identity.items()):
        raise FileExistsError(f"{path} was made with other settings; remove {path.parent} or pick another --out")
    learner.model.load_state_dict(saved["model"])
    learner.optimizer.load_state_dict(saved["optimizer"])
    learner.rng.bit_generator.state = saved["sampler_rng"] if "sampler_rng" in saved else saved["rng"]  # DT's name
    torch.set_rng_state(saved["torch_rng"].cpu())
    return saved["state"]


def save_checkpoint(learner: Learner, cfg: Any, state: dict[str, Any], out: Path,
                    notes: dict[str, Any] | None) -> None:
    with atomic_path(out / "checkpoint.pt") as tmp:
        torch.save({"model": learner.model.state_dict(), "optimizer": learner.optimizer.state_dict(), "state": state,
                    "sampler_rng": learner.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "config": asdict(cfg), **learner.identity}, tmp)
    write_json(out / "history.json", {"config": asdict(cfg), **(notes or {}), **state})


def publish(best: Path, dest: Path) -> Path:
    """Put the best candidate's policy into the bundle folder ``dest``; returns it.

    The files a policy is made from are replaced (those ``best`` lacks are removed, so no stale weights stay beside
    the new ones) and its policy.onnx is copied, or exported where the candidate has none; the model card's files
    (README.md, eval.json, the media) stay until the card is measured again.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in SOURCE_FILES:
        if (best / name).is_file():
            copy_file(best / name, dest / name)
        elif (dest / name).exists():
            (dest / name).unlink()
    if (best / POLICY_FILE).is_file():
        copy_file(best / POLICY_FILE, dest / POLICY_FILE)
    else:
        from gptrl.exporter import export_onnx

        export_onnx(dest)
    return dest
