"""Loading a whole bundle folder: config, weights and normaliser, validated before anything is returned."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptrl.bundle.config import CONFIG_FILE, BundleConfig, read_config
from gptrl.bundle.errors import BundleError
from gptrl.bundle.normalizer import SIDECAR_FILE, StateNormalizer, from_embedded, from_sidecar
from gptrl.bundle.weights import (
    WEIGHTS_FILE,
    check_tensors,
    optional_tensors,
    parameter_count,
    read_safetensors,
    required_tensors,
)


@dataclass(frozen=True)
class Bundle:
    """A validated policy bundle held in memory (numpy arrays, no torch)."""

    path: Path
    config: BundleConfig
    tensors: dict[str, np.ndarray]  # everything in model.safetensors
    normalizer: StateNormalizer

    @property
    def parameter_count(self) -> int:
        shapes = required_tensors(self.config.model, self.config.state_dim, self.config.action_dim, embedded_normalizer=False)
        return parameter_count(shapes)

    def model_tensors(self) -> dict[str, np.ndarray]:
        """The tensors the model's math reads, normaliser excluded."""
        c = self.config
        names = required_tensors(c.model, c.state_dim, c.action_dim, embedded_normalizer=False)
        return {name: self.tensors[name] for name in names}


def load_bundle(path: str | Path, *, strict: bool = True) -> Bundle:
    """Read and validate a bundle folder; raises :class:`BundleError` on any problem.

    ``strict=False`` turns unexpected tensors into a warning instead of an error.
    """
    path = Path(path)
    config = read_config(path)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file() and (path / "model.pt").is_file():
        raise BundleError(
            f"{weights_path}: missing; this is a legacy torch-pickle bundle, convert it first with "
            "gptrl.convert_legacy_bundle_to_safetensors()"
        )
    tensors = read_safetensors(weights_path)
    c = config
    if c.normalization_embedded and "state_normalization_enabled" not in tensors and c.normalization_sidecar:
        embedded = False  # v1 bundles may claim embedded buffers they do not carry; the sidecar rules
    else:
        embedded = c.normalization_embedded
    required = required_tensors(c.model, c.state_dim, c.action_dim, embedded_normalizer=embedded)
    unexpected = check_tensors(tensors, required, optional_tensors(c.model, c.state_dim, c.action_dim), weights_path, strict=strict)
    if unexpected:
        warnings.warn(f"{weights_path}: ignoring unexpected tensors {unexpected}", stacklevel=2)
    if tensors.get("action_normalization_enabled", np.zeros(1))[0] >= 0.5:
        raise BundleError(f"{weights_path}: tensor 'action_normalization_enabled' = 1 is not supported by gptrl")

    if c.normalization_sidecar:
        sidecar = path / SIDECAR_FILE
        if not sidecar.is_file():
            raise BundleError(f"{sidecar}: missing, but {path / CONFIG_FILE} says 'state_normalization.legacy_sidecar' = true")
        normalizer = from_sidecar(sidecar, c.state_dim)
        if embedded:
            _check_agree(normalizer, from_embedded(tensors, weights_path), sidecar)
    elif embedded:
        normalizer = from_embedded(tensors, weights_path)
    else:
        normalizer = StateNormalizer.identity(c.state_dim)
    return Bundle(path=path, config=config, tensors=tensors, normalizer=normalizer)


def _check_agree(sidecar: StateNormalizer, embedded: StateNormalizer, source: Path) -> None:
    if not embedded.enabled:
        return
    if not (np.allclose(sidecar.mean, embedded.mean, rtol=1e-5, atol=1e-6)
            and np.allclose(sidecar.std, embedded.std, rtol=1e-5, atol=1e-6)):
        raise BundleError(f"{source}: the sidecar normaliser disagrees with the buffers embedded in {WEIGHTS_FILE}")
