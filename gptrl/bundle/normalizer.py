"""The state normaliser: embedded buffers (v2) or the v1 ``state_normalizer.safetensors`` sidecar, and the rule that
picks one from config.json AND the weights (``docs/format.md``, "State normalisation")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gptrl.bundle.files import CONFIG_FILE, SIDECAR_FILE, WEIGHTS_FILE
from gptrl.bundle.schema import SIDECAR_STD_EPS, BundleConfig
from gptrl.bundle.weights import check_tensors, read_safetensors
from gptrl.errors import BundleError

NormalizerSource = Literal["embedded", "sidecar", "none"]


@dataclass(frozen=True)
class StateNormalizer:
    """s_norm = (s - mean) / std; ``enabled=False`` passes states through unchanged."""

    mean: np.ndarray
    std: np.ndarray
    enabled: bool = True

    @classmethod
    def identity(cls, size: int) -> StateNormalizer:
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


def embedded_required(config: BundleConfig, folder: Path) -> bool:
    """Whether model.safetensors must carry the normaliser buffers (config says embedded and no sidecar serves)."""
    return config.normalization_embedded is True and not _use_sidecar(config, folder)


def _use_sidecar(config: BundleConfig, folder: Path) -> bool:
    says = config.normalization_sidecar
    return says is True or (says is None and (folder / SIDECAR_FILE).is_file())


def choose_normalizer(config: BundleConfig, tensors: dict[str, np.ndarray],
                      folder: Path) -> tuple[StateNormalizer, NormalizerSource]:
    """The normaliser a bundle runs with, decided from config.json and the weights together.

    Refused: config.json saying ``embedded: false`` while the weights switch their buffers on; a sidecar the
    config names but the folder lacks; a sidecar that disagrees with enabled embedded buffers; and a v1 bundle
    whose config is silent and which has neither a sidecar nor enabled buffers (running it unnormalised would
    give wrong actions). Normalisation is off only where config or weights say so explicitly.
    """
    config_path, weights_path, sidecar_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE, folder / SIDECAR_FILE
    has_buffers = "state_normalization_enabled" in tensors
    weights_on = has_buffers and bool(tensors["state_normalization_enabled"][0] >= 0.5)
    if config.normalization_embedded is False and weights_on:
        raise BundleError(
            f"{config_path}: 'state_normalization.embedded' = false, but {weights_path} switches its embedded "
            "normaliser on (tensor 'state_normalization_enabled' = 1); fix whichever is wrong")
    if config.normalization_sidecar is True and not sidecar_path.is_file():
        raise BundleError(f"{sidecar_path}: missing, but {config_path} says "
                          "'state_normalization.legacy_sidecar' = true")
    if _use_sidecar(config, folder):
        sidecar = from_sidecar(sidecar_path, config.state_dim)
        if weights_on:
            embedded = from_embedded(tensors, weights_path)
            if not (np.allclose(sidecar.mean, embedded.mean, rtol=1e-5, atol=1e-6)
                    and np.allclose(sidecar.std, embedded.std, rtol=1e-5, atol=1e-6)):
                raise BundleError(f"{sidecar_path}: the sidecar normaliser disagrees with the buffers embedded in "
                                  f"{WEIGHTS_FILE}")
        return sidecar, "sidecar"
    if has_buffers and (weights_on or config.normalization_embedded is True):
        normalizer = from_embedded(tensors, weights_path)
        return normalizer, "embedded" if normalizer.enabled else "none"
    if config.normalization_embedded is False:
        return StateNormalizer.identity(config.state_dim), "none"
    raise BundleError(
        f"{folder}: no state normaliser found: {CONFIG_FILE} has no 'state_normalization' entry, {SIDECAR_FILE} is "
        f"missing and {WEIGHTS_FILE} carries no enabled normaliser buffers; restore the sidecar, or say "
        "\"state_normalization\": {\"embedded\": false, \"legacy_sidecar\": false} if the policy takes raw states")
