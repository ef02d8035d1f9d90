"""A teacher's actor on its own: the SAC/TQC Gaussian (or TD3 deterministic) MLP actor as a small safetensors file,
run with numpy.

The committed teacher weights are actor only (a few hundred KB), so ``make data`` can regenerate the datasets
exactly without Stable-Baselines3, replay buffers or critics. Inference is three small matrix products.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file

from gptrl.fileio import atomic_path

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # Stable-Baselines3's clamp for SAC/TQC actors


@dataclass
class TeacherActor:
    """``tanh`` MLP actor: ReLU hidden layers, a mean head and (SAC/TQC) a log-std head, actions rescaled to the box.

    A TD3 actor is deterministic: ``log_std`` is None and only its mean action (plus external noise) can be used.
    """

    hidden: list[tuple[np.ndarray, np.ndarray]]
    mean: tuple[np.ndarray, np.ndarray]
    log_std: tuple[np.ndarray, np.ndarray] | None
    action_low: np.ndarray
    action_high: np.ndarray
    info: dict
    num_envs: ClassVar[int] = 1  # with ``reset`` below, the runner protocol of gptrl.evaluation
    return_conditioned: ClassVar[bool] = False

    def reset(self, obs: np.ndarray, target_return=None) -> None:
        """An MLP keeps no history: nothing to reset (lets ``gptrl.evaluation.evaluate`` drive the actor)."""

    def _features(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=np.float32)
        for w, b in self.hidden:
            h = np.maximum(h @ w.T + b, 0.0)
        return h

    def _rescale(self, squashed: np.ndarray) -> np.ndarray:
        return (self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)).astype(np.float32)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None, *, reward=None) -> np.ndarray:
        """The deterministic action ``tanh(mean)``, or with ``rng`` a sample of the squashed Gaussian."""
        h = self._features(obs)
        mean = h @ self.mean[0].T + self.mean[1]
        if rng is None:
            return self._rescale(np.tanh(mean))
        if self.log_std is None:
            raise ValueError("a deterministic (TD3) actor has no Gaussian to sample: give the data level a noise_std")
        log_std = np.clip(h @ self.log_std[0].T + self.log_std[1], LOG_STD_MIN, LOG_STD_MAX)
        return self._rescale(np.tanh(mean + np.exp(log_std) * rng.standard_normal(mean.shape).astype(np.float32)))

    def save(self, path: str | Path) -> None:
        tensors = {f"hidden.{i}.{n}": t for i, (w, b) in enumerate(self.hidden)
                   for n, t in (("weight", w), ("bias", b))}
        tensors |= {"mean.weight": self.mean[0], "mean.bias": self.mean[1],
                    "action_low": self.action_low, "action_high": self.action_high}
        if self.log_std is not None:
            tensors |= {"log_std.weight": self.log_std[0], "log_std.bias": self.log_std[1]}
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp),
                      metadata={"gptrl_teacher": json.dumps(self.info)})


def load_teacher_actor(path: str | Path) -> TeacherActor:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no teacher actor there (train one with `make teacher`)")
    with safe_open(str(path), framework="numpy") as f:
        info = json.loads((f.metadata() or {}).get("gptrl_teacher", "{}"))
    t = load_file(str(path))
    n_hidden = len([k for k in t if k.startswith("hidden.") and k.endswith(".weight")])
    return TeacherActor(
        hidden=[(t[f"hidden.{i}.weight"], t[f"hidden.{i}.bias"]) for i in range(n_hidden)],
        mean=(t["mean.weight"], t["mean.bias"]),
        log_std=(t["log_std.weight"], t["log_std.bias"]) if "log_std.weight" in t else None,
        action_low=t["action_low"], action_high=t["action_high"], info=info,
    )


def actor_from_sb3(model, info: dict) -> TeacherActor:
    """Copy the actor out of a Stable-Baselines3 SAC or TQC model (ReLU MLP ``latent_pi``, ``mu``, ``log_std``),
    or a TD3 model (one ReLU MLP ``mu`` ending in Linear, Tanh)."""
    import torch.nn as nn

    actor = model.actor
    as_np = lambda t: t.detach().cpu().numpy().astype(np.float32)
    space = model.action_space
    if not hasattr(actor, "latent_pi"):  # TD3
        layers = list(actor.mu)
        if not (isinstance(layers[-1], nn.Tanh) and all(isinstance(m, (nn.Linear, nn.ReLU)) for m in layers[:-1])):
            raise ValueError("only ReLU MLP actors can be exported as teacher actors")
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        return TeacherActor(
            hidden=[(as_np(m.weight), as_np(m.bias)) for m in linears[:-1]],
            mean=(as_np(linears[-1].weight), as_np(linears[-1].bias)), log_std=None,
            action_low=np.asarray(space.low, np.float32), action_high=np.asarray(space.high, np.float32), info=info,
        )
    linears = [m for m in actor.latent_pi if isinstance(m, nn.Linear)]
    if not all(isinstance(m, (nn.Linear, nn.ReLU)) for m in actor.latent_pi):
        raise ValueError("only ReLU MLP actors can be exported as teacher actors")
    return TeacherActor(
        hidden=[(as_np(m.weight), as_np(m.bias)) for m in linears],
        mean=(as_np(actor.mu.weight), as_np(actor.mu.bias)),
        log_std=(as_np(actor.log_std.weight), as_np(actor.log_std.bias)),
        action_low=np.asarray(space.low, np.float32), action_high=np.asarray(space.high, np.float32), info=info,
    )
