"""Behaviour cloning of the causal transformer policy from Minari datasets.

The model is the bundle architecture unchanged (``gptrl.exporter.PolicyModel``), trained on windows
that show it exactly what its rollout cache will show (``gptrl.training.windows``). The action head learns the
expert's action; the spread (the log-std head, where the action type has one) and value heads learn, on detached
features, the spread of the behaviour's actions and the discounted return, so they never pull on the policy's
features.

The action head's loss is the action codec's (``ActionCodec.imitation_loss``: for the tanh Box the MSE of the squashed
action, for a Discrete action the cross-entropy), so the same loop clones any action and observation type.

Every ``eval_every`` steps the model is written as a bundle, exported to ONNX (verified against torch) and
evaluated on the ONNX runtime on held-out seeds (``eval_seed`` onwards, never the 0..49 that the model card
reports). The schedule, resumption and the choice of the best candidate are the shared loop's
(``gptrl.training.loop``).

    python -m gptrl.training.train Hopper-v5 --out runs/train/Hopper-v5 --publish
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from gptrl.bundle import make_config
from gptrl.bundle.codecs import action_for_space, observation_for_space
from gptrl.bundle.weights import VALUE_HEAD
from gptrl.exporter.causal.model import PolicyModel
from gptrl.exporter.init import init_weights
from gptrl.training import loop
from gptrl.training.datasets import Episode, load_episodes, use_datasets_path
from gptrl.training.loop import publish
from gptrl.training.recipes import get_recipe
from gptrl.training.windows import WindowBatch, WindowSampler

__all__ = ["TrainConfig", "as_tensors", "bc_losses", "build_model", "falls", "load_student", "publish", "train"]


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
    """A freshly initialised policy for ``env_id`` (its action codec and observation encoder from the env's spaces)
    whose embedded normaliser, where the observations have one, fits the dataset's states."""
    import gymnasium as gym

    env = gym.make(env_id)
    observation, action = observation_for_space(env.observation_space), action_for_space(env.action_space)
    env.close()
    config = make_config(observation=observation, action=action, env_id=env_id, **model_kwargs)
    model = init_weights(PolicyModel(config), seed=seed)
    if observation.normalized:
        states = np.concatenate([e.observations for e in episodes]).astype(np.float64)
        with torch.no_grad():
            model.state_normalization_enabled.fill_(1.0)
            model.state_normalization_mean.copy_(torch.as_tensor(states.mean(axis=0), dtype=torch.float32))
            model.state_normalization_std.copy_(torch.as_tensor(np.maximum(states.std(axis=0), 1e-3),
                                                                dtype=torch.float32))
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
    """The codec's imitation loss of the expert's action, and on detached features the codec's spread loss of the
    behaviour's actions (zero where the type has no separate spread) and the value MSE."""
    codec, ops = model.codec, model.ops
    h = model.features(batch["states"], batch["actions"], batch["is_bos"],
                       positions=batch["positions"], attn_mask=batch["attn_mask"])
    first = model.output_head[0](h)  # the greedy part: moves the features
    fixed = h.detach()  # the auxiliary heads read the features without moving them
    others = {k: model.output_head[k](fixed) for k in codec.heads if k != 0}
    mask = batch["loss_mask"].float()
    count = mask.sum().clamp_min(1.0)
    mean = lambda per_token: (per_token * mask).sum() / count
    action = mean(codec.imitation_loss(ops, codec.params(ops, {0: first, **others}), batch["targets"]))
    spread = codec.spread_loss(ops, codec.params(ops, {0: first.detach(), **others}), batch["behaviour"])
    value = ((model.output_head[VALUE_HEAD](fixed).squeeze(-1) - batch["returns"]) / value_scale) ** 2
    return {"action": action, "log_std": mean(spread) if spread is not None else action.new_zeros(()),
            "value": mean(value)}


def falls(result, max_steps: int = 1000) -> int:
    """Episodes that ended before ``max_steps``: for the MuJoCo locomotion envs, a fall (termination)."""
    return int(sum(n < max_steps for n in result["lengths"]))


def train(env_id: str, out: Path, episodes: list[Episode], model_kwargs: dict, cfg: TrainConfig,
          progress: bool = True, notes: dict | None = None, init: Path | None = None) -> dict:
    """Train (or resume) and return the run summary; the best candidate bundle ends in ``out/best``.

    ``init``: a bundle folder to continue training from (DAgger's rounds) instead of a fresh initialisation.
    """
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

    def loss() -> tuple[torch.Tensor, float]:
        losses = bc_losses(model, as_tensors(sampler.sample(cfg.batch_size), cfg.device), value_scale)
        return losses["action"] + cfg.aux_weight * (losses["log_std"] + losses["value"]), losses["action"].item()

    def measure(folder: Path) -> dict:
        from gptrl.evaluation import evaluate
        from gptrl.exporter import export_onnx
        from gptrl.runtime import load_policy

        export_onnx(folder)
        result = evaluate(env_id, load_policy(folder, num_envs=cfg.eval_episodes),
                          seeds=range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes), num_envs=cfg.eval_episodes)
        return {"return_mean": round(result["return_mean"], 2), "return_std": round(result["return_std"], 2),
                "length_mean": result["length_mean"], "falls": falls(result)}

    def write_candidate(folder: Path) -> None:
        from gptrl.exporter import export_bundle

        export_bundle(model, folder, overwrite=True)

    learner = loop.Learner(model, opt, loss, write_candidate, measure, sampler.rng,
                           identity={"model_kwargs": model_kwargs})
    history = {"model": model_kwargs, "dataset_steps": sampler.num_steps, "dataset_episodes": len(episodes),
               **(notes or {})}
    return loop.run(learner, cfg, out, desc=f"train {env_id}", progress=progress, notes=history)


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
