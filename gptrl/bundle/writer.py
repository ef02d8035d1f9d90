"""Writing a format-2 bundle atomically: everything goes to a temporary sibling folder, is read back and
validated, and only then renamed into place (``gptrl.fileio.atomic_dir``). A crash or a bad tensor never leaves a
half-written bundle behind, and an existing bundle is only replaced on request.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from gptrl.bundle.bundle import load_bundle
from gptrl.bundle.files import CONFIG_FILE, WEIGHTS_FILE
from gptrl.bundle.schema import BundleConfig
from gptrl.bundle.weights import check_tensors, optional_tensors, required_tensors
from gptrl.fileio import atomic_dir, refuse_existing


def write_bundle(path: str | Path, config: BundleConfig, tensors: dict[str, np.ndarray], *,
                 overwrite: bool = False) -> Path:
    """Write config.json + model.safetensors (normaliser embedded) to ``path`` and return it."""
    path = Path(path)
    refuse_existing(path, overwrite)
    c = config
    tensors = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in tensors.items()}
    required = required_tensors(c.model, c.observation, c.action, embedded_normalizer=True)
    check_tensors(tensors, required, optional_tensors(c.model, c.observation, c.action), f"<tensors for {path}>")
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(c.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        load_bundle(tmp)  # what we wrote must read back cleanly
    return path
