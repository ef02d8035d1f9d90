"""Turning a legacy torch-pickle bundle (model.pt / state_normalizer.pt) into safetensors.

The pickles are read with ``torch.load(weights_only=True)``: only tensors and plain containers are rebuilt, and a
pickle that names any other object is refused, never run.
"""

from __future__ import annotations

import pickle
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from gptrl.bundle import load_bundle
from gptrl.bundle.files import CONFIG_FILE, LEGACY_SIDECAR, LEGACY_WEIGHTS, SIDECAR_FILE, WEIGHTS_FILE
from gptrl.errors import BundleError
from gptrl.fileio import atomic_path, refuse_existing

_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def _refusal(path: Path, exc: Exception) -> BundleError:
    """One line instead of torch's advice to retry with weights_only=False (which would run the payload)."""
    named = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" (it names {named.group(1)})" if named else ""
    return BundleError(f"{path}: refused: the pickle holds objects other than tensors{what}; gptrl never "
                       "unpickles objects, so the file was not loaded")


def load_tensor_dict(path: Path, *, cast: bool = True) -> dict[str, np.ndarray]:
    """The tensors of a pickled state dict as numpy arrays: float32 (legacy bundles: the reference's pickles hold
    other dtypes for buffers), or with ``cast=False`` in their own dtype, for the caller's dtype check (a dtype
    numpy lacks, such as bfloat16, is refused here)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{path}: not a readable torch file ({first_line})") from None
    for key in _NESTED_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data:
        raise BundleError(f"{path}: expected a non-empty dict of tensors, got {type(data).__name__}")
    out = {}
    for name, value in data.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise BundleError(f"{path}: entry {name!r} is {type(value).__name__}, expected a tensor")
        if cast:
            value = value.detach().to(torch.float32)
        try:
            out[name] = value.detach().contiguous().numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16, float8)
            raise BundleError(f"{path}: tensor '{name}' has dtype {value.dtype}, expected float32") from None
    return out


def convert_legacy_bundle_to_safetensors(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write model.safetensors (and state_normalizer.safetensors) beside the legacy pickles.

    The converted bundle is validated in a scratch folder first; the originals stay untouched. Returns the bundle
    folder.
    """
    path = Path(path)
    legacy = path / LEGACY_WEIGHTS
    if not legacy.is_file():
        raise BundleError(f"{legacy}: missing (nothing to convert)")
    refuse_existing(path / WEIGHTS_FILE, overwrite)
    outputs = {WEIGHTS_FILE: load_tensor_dict(legacy)}
    if (path / LEGACY_SIDECAR).is_file():
        outputs[SIDECAR_FILE] = load_tensor_dict(path / LEGACY_SIDECAR)

    with tempfile.TemporaryDirectory(prefix="gptrl-convert-") as scratch:
        scratch = Path(scratch)
        shutil.copy2(path / CONFIG_FILE, scratch / CONFIG_FILE)
        for name, tensors in outputs.items():
            save_file(tensors, str(scratch / name), metadata={"format": "pt"})
        try:
            load_bundle(scratch)  # refuse to produce a bundle that does not load
        except BundleError as exc:  # name the user's files, not the scratch copy
            raise BundleError(str(exc).replace(str(scratch), str(path))) from None
        # Sidecar first: model.safetensors appearing marks the conversion as done.
        reads = [path / CONFIG_FILE, legacy, path / LEGACY_SIDECAR]
        for name in sorted(outputs, key=lambda n: n == WEIGHTS_FILE):
            with atomic_path(path / name, reads=reads) as tmp:
                shutil.copyfile(scratch / name, tmp)
    return path
