"""Behaviour cloning of the causal transformer policy from Minari datasets.

The model is the bundle architecture unchanged (``gptrl.exporter.PolicyModel``), trained on windows
that show it exactly what its rollout cache will show (``gptrl.training.windows``). The action head learns the
expert's action (MSE of the squashed action); the log-std and value heads learn, on detached features, the
spread of the behaviour's actions and the discounted return, so they never pull on the policy's features.

Every ``eval_every`` steps the model is written as a bundle, exported to ONNX (verified against torch) and
evaluated on the ONNX runtime on held-out seeds (``eval_seed`` onwards, never the 0..49 that the model card
reports). The best candidate is kept; a checkpoint makes the run resumable.

    python -m gptrl.training.train Hopper-v5 --out runs/train/Hopper-v5 --publish
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from gptrl.bundle import make_config
from gptrl.exporter.causal.model import PolicyModel, init_weights
from gptrl.fileio import atomic_dir, atomic_path, copy_file, write_json
from gptrl.training.datasets import Episode, load_episodes, use_datasets_path
from gptrl.training.recipes import get_recipe
from gptrl.training.windows import WindowBatch, WindowSampler

LOG_STD_FIT_CLIP = 0.999  # behaviour actions are clipped this far inside the bounds before atanh


@dataclass
class TrainConfig:
    steps: int = 6000
    batch_size: int = 128
    window: int = 24
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    aux_weight: float = 0.1
    gamma: float = 0.99
    eval_every: int = 500
    eval_episodes: int = 10
    eval_seed: int = 1000
    seed: int = 0
    threads: int = 1
    device: str = "cpu"  # "cuda" trains on a GPU (candidates are still exported and evaluated on the CPU)


def build_model(env_id: str, episodes: list[Episode], model_kwargs: dict, seed: int) -> PolicyModel:
    """A freshly initialised policy for ``env_id`` whose embedded normaliser fits the dataset's states."""
    import gymnasium as gym

    space = gym.spec(env_id)
    env = gym.make(space)
    low, high = env.action_space.low, env.action_space.high
    state_dim = env.observation_space.shape[0]
    env.close()
    config = make_config(state_dim=state_dim, action_low=low, action_high=high, env_id=env_id, **model_kwargs)
    model = init_weights(PolicyModel(config), seed=seed)
    states = np.concatenate([e.observations for e in episodes]).astype(np.float64)
    with torch.no_grad():
        model.state_normalization_enabled.fill_(1.0)
        model.state_normalization_mean.copy_(torch.as_tensor(states.mean(axis=0), dtype=torch.float32))
        model.state_normalization_std.copy_(torch.as_tensor(np.maximum(states.std(axis=0), 1e-3), dtype=torch.float32))
    return model


def load_student(bundle_dir: Path, env_id: str, model_kwargs: dict) -> PolicyModel:
    """A bundle's policy, in training mode, to continue training from (its embedded normaliser is kept).

    Refuses a bundle for another env or of another architecture than ``model_kwargs`` says, since the run's
    windows and checkpoint are built from ``model_kwargs``.
    """
    from gptrl.bundle import load_bundle
    from gptrl.exporter.causal.convert import model_from_bundle

    bundle = load_bundle(bundle_dir)
    if bundle.config.env_id != env_id:
        raise ValueError(f"{bundle_dir}/config.json: env_id is {bundle.config.env_id!r}, not {env_id!r}")
    arch = bundle.config.model
    wanted = {k: v for k, v in model_kwargs.items() if hasattr(arch, k)}
    have = {k: getattr(arch, k) for k in wanted}
    if have != wanted:
        raise ValueError(f"{bundle_dir}/config.json: architecture {have} is not the recipe's {wanted}")
    return model_from_bundle(bundle).train()


def as_tensors(batch: WindowBatch, device: str = "cpu") -> dict[str, torch.Tensor]:
    return {f.name: torch.from_numpy(np.ascontiguousarray(getattr(batch, f.name))).to(device) for f in fields(batch)}


def bc_losses(model: PolicyModel, batch: dict[str, torch.Tensor], value_scale: float) -> dict[str, torch.Tensor]:
    """Action MSE (in [-1, 1] units), and the auxiliary log-std NLL and value MSE on detached features."""
    h = model.features(batch["states"], batch["actions"], batch["is_bos"],
                       positions=batch["positions"], attn_mask=batch["attn_mask"])
    mu = model.output_head[0](h)
    aux = model.heads(h.detach())  # the auxiliary heads read the features without moving them
    mask = batch["loss_mask"].float()
    count = mask.sum().clamp_min(1.0)
    low, high = model.action_low, model.action_high
    to_unit = lambda a: 2.0 * (a - low) / (high - low) - 1.0
    action = (((torch.tanh(mu) - to_unit(batch["targets"])) ** 2).mean(-1) * mask).sum() / count
    behaviour = torch.atanh(to_unit(batch["behaviour"]).clamp(-LOG_STD_FIT_CLIP, LOG_STD_FIT_CLIP))
    log_std = aux.log_std.clamp(-5.0, 2.0)
    nll = (log_std + 0.5 * ((behaviour - mu.detach()) / log_std.exp()) ** 2).mean(-1)
    value = ((aux.value - batch["returns"]) / value_scale) ** 2
    return {"action": action, "log_std": (nll * mask).sum() / count, "value": (value * mask).sum() / count}


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def falls(result, max_steps: int = 1000) -> int:
    """Episodes that ended before ``max_steps``: for the MuJoCo locomotion envs, a fall (termination)."""
    return int(sum(n < max_steps for n in result["lengths"]))


def evaluate_candidate(model: PolicyModel, folder: Path, episodes: int, seed: int) -> dict:
    """Write ``model`` as a bundle in ``folder``, export its ONNX graph and evaluate that on the ONNX runtime."""
    from gptrl.evaluation import evaluate
    from gptrl.exporter import export_bundle, export_onnx
    from gptrl.runtime import load_policy

    export_bundle(model, folder, overwrite=True)
    export_onnx(folder)
    policy = load_policy(folder, num_envs=episodes)
    return evaluate(model.config.env_id, policy, seeds=range(seed, seed + episodes), num_envs=episodes)


RESUMABLE_CHANGES = {"steps", "eval_every", "eval_episodes", "threads", "device"}


def _same_run(saved: dict, wanted: dict) -> bool:
    """A checkpoint continues under a new step budget (the schedule stretches) or evaluation cadence, nothing else."""
    return {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES} == \
        {k: v for k, v in wanted.items() if k not in RESUMABLE_CHANGES}


def _save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train(env_id: str, out: Path, episodes: list[Episode], model_kwargs: dict, cfg: TrainConfig,
          progress: bool = True, notes: dict | None = None, init: Path | None = None) -> dict:
    """Train (or resume) and return the run summary; the best candidate bundle ends in ``out/best``.

    ``init``: a bundle folder to continue training from (DAgger's rounds) instead of a fresh initialisation.
    """
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    kv = int(model_kwargs.get("context_length", 32))
    sampler = WindowSampler(episodes, kv=kv, window=cfg.window, num_layers=int(model_kwargs["num_layers"]),
                            gamma=cfg.gamma, seed=cfg.seed)
    model = (build_model(env_id, episodes, model_kwargs, cfg.seed) if init is None
             else load_student(init, env_id, model_kwargs)).to(cfg.device)
    value_scale = float(max(1.0, sampler.returns.std()))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    state = {"step": 0, "best": None, "history": []}
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=cfg.device)
        if not _same_run(ckpt["config"], asdict(cfg)) or ckpt["model_kwargs"] != model_kwargs:
            raise FileExistsError(f"{ckpt_path} was made with other settings; remove {out} or pick another --out")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sampler.rng.bit_generator.state = ckpt["sampler_rng"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        state = ckpt["state"]
    # Wall time across resumptions: this run's clock starts where the last checkpoint's left off.
    started = time.time() - (state["history"][-1]["seconds"] if state["history"] else 0.0)
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"train {env_id}", unit="step", disable=not progress)
    running = None
    while state["step"] < cfg.steps:
        step = state["step"]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = as_tensors(sampler.sample(cfg.batch_size), cfg.device)
        losses = bc_losses(model, batch, value_scale)
        total = losses["action"] + cfg.aux_weight * (losses["log_std"] + losses["value"])
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] = step + 1
        loss = losses["action"].item()
        running = loss if running is None else 0.98 * running + 0.02 * loss
        bar.update(1)
        bar.set_postfix(action_mse=f"{running:.4f}", best=state["best"] and f"{state['best']['return_mean']:.0f}")
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            model.eval()
            result = evaluate_candidate(model, out / "candidate", cfg.eval_episodes, cfg.eval_seed)
            model.train()
            record = {"step": state["step"], "action_mse": round(running, 5),
                      "return_mean": round(result["return_mean"], 2), "return_std": round(result["return_std"], 2),
                      "length_mean": result["length_mean"], "falls": falls(result),
                      "seconds": round(time.time() - started, 1)}
            state["history"].append(record)
            if state["best"] is None or record["return_mean"] > state["best"]["return_mean"]:
                state["best"] = record
                with atomic_dir(out / "best", overwrite=True) as tmp:
                    shutil.copytree(out / "candidate", tmp, dirs_exist_ok=True)
            bar.write(json.dumps(record))
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                          "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                          "config": asdict(cfg), "model_kwargs": model_kwargs}, ckpt_path)
            write_json(out / "history.json", {"config": asdict(cfg), "model": model_kwargs,
                                              "dataset_steps": sampler.num_steps, "dataset_episodes": len(episodes),
                                              **(notes or {}), **state})
    bar.close()
    return state


def publish(best: Path, dest: Path) -> Path:
    """Copy the best candidate (config, weights, policy.onnx) into ``dest``, keeping dest's README.md."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "policy.onnx"):
        copy_file(best / name, dest / name)
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--out", type=Path, help="run folder (default runs/train/ENV)")
    p.add_argument("--datasets-path", type=Path, help="Minari datasets folder (default data/minari)")
    p.add_argument("--publish", action="store_true", help="copy the best candidate into the recipe's bundles/ folder")
    for f in fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    a = p.parse_args(argv)
    recipe = get_recipe(a.env_id)
    cfg = TrainConfig(**{**recipe.train, **{f.name: getattr(a, f.name) for f in fields(TrainConfig)
                                            if getattr(a, f.name) is not None}})
    use_datasets_path(a.datasets_path)
    datasets = {dataset_id: load_episodes([dataset_id]) for dataset_id in recipe.dataset_ids}
    episodes = [ep for eps in datasets.values() for ep in eps]
    summary = {dataset_id: {"episodes": len(eps), "steps": int(sum(len(e.actions) for e in eps)),
                            "return_mean": float(np.mean([e.rewards.sum() for e in eps])),
                            "return_std": float(np.std([e.rewards.sum() for e in eps]))}
               for dataset_id, eps in datasets.items()}
    out = a.out or Path("runs/train") / a.env_id
    state = train(a.env_id, out, episodes, recipe.model, cfg, notes={"datasets": summary})
    print(f"best: {json.dumps(state['best'])}")
    if a.publish:
        print(f"published {publish(out / 'best', recipe.bundle_dir)}")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.train", main))
