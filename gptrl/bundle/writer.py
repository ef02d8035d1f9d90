"""Writing a format-2 bundle atomically: everything goes to a temporary sibling folder, is
read back and validated, and only then renamed into place. A crash or a bad tensor never
leaves a half-written bundle behind, and an existing bundle is only replaced on request.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from gptrl.bundle.bundle import load_bundle
from gptrl.bundle.config import CONFIG_FILE, BundleConfig
from gptrl.bundle.errors import BundleError
from gptrl.bundle.weights import WEIGHTS_FILE, check_tensors, optional_tensors, required_tensors


def write_bundle(path: str | Path, config: BundleConfig, tensors: dict[str, np.ndarray], *, overwrite: bool = False) -> Path:
    """Write config.json + model.safetensors (normaliser embedded) to ``path`` and return it."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    c = config
    tensors = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in tensors.items()}
    required = required_tensors(c.model, c.state_dim, c.action_dim, embedded_normalizer=True)
    check_tensors(tensors, required, optional_tensors(c.model, c.state_dim, c.action_dim), f"<tensors for {path}>")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / CONFIG_FILE).write_text(json.dumps(c.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        for file in tmp.iterdir():
            _fsync(file)
        load_bundle(tmp)  # what we wrote must read back cleanly
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed only after."""
    if not dst.exists():
        os.rename(src, dst)
        return
    if not dst.is_dir():
        raise BundleError(f"{dst}: exists and is not a folder")
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
