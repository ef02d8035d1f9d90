"""Which files make a Causal GPT-RL bundle folder, and which of them a given config.json needs.

One rule, used by the local reader and the Hub download alike (``docs/format.md``, section "Files").
"""

from __future__ import annotations

from typing import Any

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "state_normalizer.safetensors"  # v1: the state normaliser beside the weights
POLICY_FILE = "policy.onnx"  # the exported step graph (gptrl's own addition to the folder)
LEGACY_WEIGHTS = "model.pt"
LEGACY_SIDECAR = "state_normalizer.pt"


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
