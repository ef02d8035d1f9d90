"""Train a Decision Transformer on the project's Minari datasets and publish it as a DT bundle.

The standard recipe (Chen et al. 2021, and the Hugging Face post): K = 20 timesteps, 3 layers, hidden 128, 1 head,
ReLU, dropout 0.1, AdamW with a linear warm-up; the loss is the MSE of the predicted actions against the actions the
behaviour policy took, on windows sampled uniformly over every episode step. Returns-to-go are divided by ``scale``;
states are normalised with the training data's mean and std, which go into the bundle's sidecar.

The bundle is a Hugging Face checkpoint (``config.json`` + ``model.safetensors``, loadable by
``DecisionTransformerModel.from_pretrained``) plus ``gptrl_dt.json``. Every ``eval_every`` steps the candidate is
evaluated by the torch runner on held-out seeds (1000+) at the default target; the best is kept. The schedule,
resumption, candidate selection and publishing are the shared loop's (``gptrl.training.loop``).

    python -m gptrl.training.dt_train Hopper-v5 --publish
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from gptrl.bundle.dt import DTConfig, DTSidecar
from gptrl.exporter.init import init_weights
from gptrl.fileio import atomic_dir
from gptrl.training import loop
from gptrl.training.datasets import Episode, load_episodes, use_datasets_path


@dataclass
class DTTrainConfig:
    """Decision Transformer training settings (the defaults are the standard recipe, shortened for a CPU)."""

    steps: int = 6000  # gradient steps (bundles/dt-hopper-v5: the best of steps 2000, 4000, 6000)
    batch_size: int = 64
    context: int = 20  # K timesteps per window
    hidden: int = 128
    layers: int = 3
    heads: int = 1
    dropout: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup: int = 1000
    grad_clip: float = 0.25
    scale: float = 1000.0  # returns-to-go are divided by this
    max_ep_len: int = 1000
    eval_every: int = 2000  # a 5-episode evaluation costs about as much as 300 training steps on one core
    eval_episodes: int = 5
    eval_seed: int = 1000  # held-out seeds; the model card reports 0..49
    target_return: float = 3600.0  # the default target written into the bundle (env units)
    seed: int = 0
    threads: int = 1
    datasets: list[str] = field(default_factory=list)  # Minari ids; empty: the env's recipe levels
    min_lr_ratio: ClassVar[float] = 1.0  # the recipe's learning rate stays constant after the warm-up


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    return np.cumsum(rewards[::-1])[::-1].astype(np.float32)


class DTWindows:
    """Windows of K steps, sampled uniformly over every (episode, step); short windows are left-padded."""

    def __init__(self, episodes: list[Episode], cfg: DTTrainConfig, mean: np.ndarray, std: np.ndarray):
        self.episodes, self.cfg, self.mean, self.std = episodes, cfg, mean, std
        self.lengths = np.array([len(e.actions) for e in episodes])
        self.index = np.concatenate([np.stack([np.full(n, k), np.arange(n)], 1) for k, n in enumerate(self.lengths)])
        self.rtg = [returns_to_go(e.rewards) for e in episodes]
        self.rng = np.random.default_rng(cfg.seed)

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        cfg, K = self.cfg, self.cfg.context
        S, A = self.episodes[0].observations.shape[1], self.episodes[0].actions.shape[1]
        out = {"states": np.zeros((batch, K, S), np.float32), "actions": np.zeros((batch, K, A), np.float32),
               "returns_to_go": np.zeros((batch, K, 1), np.float32), "timesteps": np.zeros((batch, K), np.int64),
               "mask": np.zeros((batch, K), np.float32)}
        for row, (k, start) in enumerate(self.index[self.rng.integers(len(self.index), size=batch)]):
            e, stop = self.episodes[k], min(start + K, self.lengths[k])
            n = stop - start
            out["states"][row, K - n:] = (e.observations[start:stop] - self.mean) / self.std
            out["actions"][row, K - n:] = e.actions[start:stop]
            out["returns_to_go"][row, K - n:, 0] = self.rtg[k][start:stop] / cfg.scale
            out["timesteps"][row, K - n:] = np.minimum(np.arange(start, stop), cfg.max_ep_len - 1)
            out["mask"][row, K - n:] = 1.0
        return out


def hf_config(c: DTConfig) -> dict:
    """config.json as transformers' DecisionTransformerConfig writes it (the fields its model reads)."""
    return {"architectures": ["DecisionTransformerModel"], "model_type": "decision_transformer",
            "state_dim": c.state_dim, "act_dim": c.act_dim, "hidden_size": c.hidden_size, "max_ep_len": c.max_ep_len,
            "action_tanh": c.action_tanh, "vocab_size": c.vocab_size, "n_positions": c.n_positions,
            "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": c.n_inner,
            "activation_function": c.activation_function, "resid_pdrop": c.resid_pdrop, "embd_pdrop": c.embd_pdrop,
            "attn_pdrop": c.attn_pdrop, "layer_norm_epsilon": c.layer_norm_epsilon, "initializer_range": 0.02,
            "scale_attn_weights": True, "use_cache": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False}


def write_dt_bundle(model, sidecar: DTSidecar, out: Path) -> Path:
    """A Hugging Face checkpoint + gptrl_dt.json, written atomically."""
    from safetensors.torch import save_file

    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config(model.config), indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "gptrl_dt.json").write_text(sidecar.to_json())
    return out


def train(env_id: str, out: Path, episodes: list[Episode], cfg: DTTrainConfig, progress: bool = True) -> dict:
    """Train (or resume); the best candidate bundle ends in ``out/best``."""
    import gymnasium as gym

    from gptrl.evaluation import evaluate
    from gptrl.exporter.dt.model import DecisionTransformer
    from gptrl.exporter.dt.runner import load_dt_runner

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id)
    S, A = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    states = np.concatenate([e.observations for e in episodes]).astype(np.float64)
    mean, std = states.mean(0).astype(np.float32), np.maximum(states.std(0), 1e-6).astype(np.float32)
    config = DTConfig(state_dim=S, act_dim=A, hidden_size=cfg.hidden, n_layer=cfg.layers, n_head=cfg.heads,
                      max_ep_len=cfg.max_ep_len, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                      resid_pdrop=cfg.dropout)
    sidecar = DTSidecar(mean.tolist(), std.tolist(), cfg.scale, cfg.target_return, env_id, cfg.context)
    model = init_weights(DecisionTransformer(config), cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    windows = DTWindows(episodes, cfg, mean, std)

    def loss() -> tuple[torch.Tensor, float]:
        batch = {k: torch.from_numpy(v) for k, v in windows.sample(cfg.batch_size).items()}
        pred = model(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"],
                     batch["mask"]).action_preds
        mask = batch["mask"][..., None]
        mse = (((pred - batch["actions"]) ** 2) * mask).sum() / (mask.sum() * A)
        return mse, mse.item()

    def measure(folder: Path) -> dict:
        runner = load_dt_runner(folder, num_envs=cfg.eval_episodes)
        result = evaluate(env_id, runner, seeds=range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes),
                          num_envs=cfg.eval_episodes, target_return=cfg.target_return)
        return {"return_mean": round(result.return_mean, 2), "return_std": round(result.return_std, 2)}

    learner = loop.Learner(model, opt, loss, lambda folder: write_dt_bundle(model, sidecar, folder), measure,
                           windows.rng, identity={})
    notes = {"episodes": len(episodes), "dataset_steps": int(windows.lengths.sum())}
    return loop.run(learner, cfg, out, desc=f"dt {env_id}", progress=progress, notes=notes)


def main(argv: list[str] | None = None) -> None:
    from gptrl.training.recipes import get_recipe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--out", type=Path, help="run folder (default runs/dt/ENV)")
    p.add_argument("--datasets-path", type=Path, help="Minari datasets folder (default data/minari)")
    p.add_argument("--publish", action="store_true", help="copy the best candidate to bundles/dt-<env>/ and export it")
    for f in fields(DTTrainConfig):
        if f.name != "datasets":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    p.add_argument("--datasets", nargs="+", help="Minari dataset ids (default: the recipe's levels)")
    a = p.parse_args(argv)
    cfg = DTTrainConfig(**{f.name: getattr(a, f.name) for f in fields(DTTrainConfig) if getattr(a, f.name)
                           is not None})
    use_datasets_path(a.datasets_path)
    ids = cfg.datasets or get_recipe(a.env_id).dataset_ids
    cfg.datasets = list(ids)
    episodes = load_episodes(list(ids))
    out = a.out or Path("runs/dt") / a.env_id
    state = train(a.env_id, out, episodes, cfg)
    print(f"best: {json.dumps(state['best'])}")
    if a.publish:
        print(f"published {publish(out / 'best', Path('bundles') / f'dt-{a.env_id.lower()}')}")


def publish(best: Path, dest: Path) -> Path:
    """``gptrl.training.loop.publish`` (the policy files replaced, the card kept); returns the new policy.onnx."""
    from gptrl.bundle.files import POLICY_FILE

    return loop.publish(best, dest) / POLICY_FILE


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.dt_train", main))
