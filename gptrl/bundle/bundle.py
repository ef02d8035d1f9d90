"""Loading a whole bundle folder: config, weights and normaliser, validated before anything is returned."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptrl.bundle.files import LEGACY_WEIGHTS, WEIGHTS_FILE
from gptrl.bundle.normalizer import NormalizerSource, StateNormalizer, choose_normalizer, embedded_required
from gptrl.bundle.parse import read_config
from gptrl.bundle.schema import BundleConfig
from gptrl.bundle.weights import check_tensors, optional_tensors, parameter_count, read_safetensors, required_tensors
from gptrl.errors import BundleError


@dataclass(frozen=True)
class Bundle:
    """A validated policy bundle held in memory (numpy arrays, no torch)."""

    path: Path
    config: BundleConfig
    tensors: dict[str, np.ndarray]  # everything in model.safetensors
    normalizer: StateNormalizer
    normalizer_source: NormalizerSource = "embedded"

    @property
    def parameter_count(self) -> int:
        c = self.config
        return parameter_count(required_tensors(c.model, c.observation, c.action, embedded_normalizer=False))

    def model_tensors(self) -> dict[str, np.ndarray]:
        """The tensors the model's math reads, normaliser excluded."""
        c = self.config
        names = required_tensors(c.model, c.observation, c.action, embedded_normalizer=False)
        return {name: self.tensors[name] for name in names}


def load_bundle(path: str | Path, *, strict: bool = True) -> Bundle:
    """Read and validate a bundle folder; raises :class:`BundleError` on any problem.

    ``strict=False`` turns unexpected tensors into a warning instead of an error.
    """
    path = Path(path)
    config = read_config(path)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file() and (path / LEGACY_WEIGHTS).is_file():
        raise BundleError(f"{weights_path}: missing; this is a legacy torch-pickle bundle, convert it first with "
                          "gptrl.convert_legacy_bundle_to_safetensors()")
    tensors = read_safetensors(weights_path)
    c = config
    required = required_tensors(c.model, c.observation, c.action, embedded_normalizer=embedded_required(c, path))
    optional = optional_tensors(c.model, c.observation, c.action)
    unexpected = check_tensors(tensors, required, optional, weights_path, strict=strict)
    if unexpected:
        warnings.warn(f"{weights_path}: ignoring unexpected tensors {unexpected}", stacklevel=2)
    if tensors.get("action_normalization_enabled", np.zeros(1))[0] >= 0.5:
        raise BundleError(f"{weights_path}: tensor 'action_normalization_enabled' = 1 is not supported by gptrl")
    normalizer, source = choose_normalizer(c, tensors, path)
    return Bundle(path=path, config=config, tensors=tensors, normalizer=normalizer, normalizer_source=source)
