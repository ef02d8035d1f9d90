"""The state normaliser: embedded buffers (v2) or the v1 ``state_normalizer.safetensors`` sidecar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptrl.bundle.errors import BundleError
from gptrl.bundle.weights import check_tensors, read_safetensors

SIDECAR_FILE = "state_normalizer.safetensors"
SIDECAR_STD_EPS = 1e-8


@dataclass(frozen=True)
class StateNormalizer:
    """s_norm = (s - mean) / std; ``enabled=False`` passes states through unchanged."""

    mean: np.ndarray
    std: np.ndarray
    enabled: bool = True

    @classmethod
    def identity(cls, size: int) -> "StateNormalizer":
        return cls(np.zeros(size, np.float32), np.ones(size, np.float32), enabled=False)

    def __call__(self, states: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return states
        return (states - self.mean) / self.std

    def tensors(self) -> dict[str, np.ndarray]:
        """The embedded-buffer form written into model.safetensors."""
        return {
            "state_normalization_enabled": np.array([1.0 if self.enabled else 0.0], np.float32),
            "state_normalization_mean": self.mean.astype(np.float32),
            "state_normalization_std": self.std.astype(np.float32),
        }


def from_embedded(tensors: dict[str, np.ndarray], source: Path | str) -> StateNormalizer:
    enabled = bool(tensors["state_normalization_enabled"][0] >= 0.5)
    std = tensors["state_normalization_std"]
    if enabled and not np.all(std > 0):
        raise BundleError(f"{source}: tensor 'state_normalization_std' must be positive")
    return StateNormalizer(tensors["state_normalization_mean"], std, enabled)


def from_sidecar(path: Path, state_dim: int) -> StateNormalizer:
    """Read a v1 sidecar: ``mean`` and ``var``, std = sqrt(var) + 1e-8."""
    tensors = read_safetensors(path)
    check_tensors(tensors, {"mean": (state_dim,), "var": (state_dim,)}, {"count": None}, path)
    var = tensors["var"]
    if np.any(var < 0):
        raise BundleError(f"{path}: tensor 'var' holds negative values")
    std = (np.sqrt(var.astype(np.float32)) + np.float32(SIDECAR_STD_EPS)).astype(np.float32)
    return StateNormalizer(tensors["mean"].astype(np.float32), std, True)
