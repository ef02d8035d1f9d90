"""Which files make a Causal GPT-RL bundle folder, and which of them a given config.json needs.

One rule, used by the local reader and the Hub download alike (``docs/format.md``, section "Files").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "state_normalizer.safetensors"  # v1: the state normaliser beside the weights
POLICY_FILE = "policy.onnx"  # the exported step graph (gptrl's own addition to the folder)
LEGACY_WEIGHTS = "model.pt"
LEGACY_SIDECAR = "state_normalizer.pt"
DT_SIDECAR_FILE = "gptrl_dt.json"  # a Decision Transformer's gptrl sidecar (gptrl.bundle.dt)
DT_PICKLE_FILE = "pytorch_model.bin"  # a Decision Transformer checkpoint's older weights file
# What a policy is made from, in a folder of either family; POLICY_FILE is made from them, so it is not among them.
SOURCE_FILES = (CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE, LEGACY_WEIGHTS, LEGACY_SIDECAR, DT_SIDECAR_FILE,
                DT_PICKLE_FILE)


def bundle_files(config: Any) -> tuple[list[str], list[str]]:
    """(required, optional) files of the bundle whose decoded config.json is ``config``, besides config.json.

    A v1 bundle may keep its normaliser in the sidecar even when its config says nothing about it, so for v1 the
    sidecar is always wanted when it exists; the loader then decides, from config AND weights, which normaliser
    applies and refuses a bundle that has none it needs.
    """
    data = config if isinstance(config, dict) else {}
    norm = data.get("state_normalization")
    norm = norm if isinstance(norm, dict) else {}
    required, optional = [WEIGHTS_FILE], []
    if norm.get("legacy_sidecar") is True:
        required.append(SIDECAR_FILE)
    elif data.get("bundle_format_version", 1) == 1:
        optional.append(SIDECAR_FILE)
    return required, optional


def source_files(folder: str | Path) -> list[Path]:
    """The files of a bundle folder (either family) a command reads to build the policy: no command may write over
    one (``gptrl.fileio.check_output``). Empty for a path that is not a folder."""
    folder = Path(folder)
    return [folder / name for name in SOURCE_FILES if (folder / name).exists()] if folder.is_dir() else []
