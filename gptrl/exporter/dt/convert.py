"""``import_decision_transformer``: a Hugging Face Decision Transformer checkpoint (a local folder or a Hub repo id)
-> a gptrl DT bundle: the checkpoint's files as they are (``DecisionTransformerModel.from_pretrained(bundle)`` still
loads it) plus ``gptrl_dt.json`` with the state normaliser, return scale, default target, env and K.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gptrl.bundle.dt import (
    CONFIG_FILE,
    PICKLE_FILE,
    SAFETENSORS_FILE,
    SIDECAR_FILE,
    load_dt_bundle,
    parse_dt_config,
    parse_sidecar,
)
from gptrl.errors import BundleError
from gptrl.fileio import atomic_dir, read_json


def fetch_checkpoint(src: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
                     token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """A local folder as it is, or the Hub repo's config.json and weights (safetensors first, else the .bin)
    fetched through huggingface_hub's cache; returns the folder holding them."""
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists() or str(src).count("/") != 1:
        raise BundleError(f"{src}: neither a checkpoint folder nor a Hub repo id (owner/name)")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("importing from the Hub needs huggingface_hub: pip install 'gptrl[hub]'") from exc

    def fetch(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(str(src), filename, revision=revision,
                                        cache_dir=str(cache_dir) if cache_dir is not None else None, token=token,
                                        local_files_only=local_files_only))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None
        except RepositoryNotFoundError as exc:
            raise BundleError(f"hub:{src}: could not be fetched ({type(exc).__name__})") from None

    config = fetch(CONFIG_FILE)
    if config is None:
        raise BundleError(f"hub:{src}/{CONFIG_FILE}: could not be fetched")
    if fetch(SAFETENSORS_FILE) is None and fetch(PICKLE_FILE) is None:
        raise BundleError(f"hub:{src}: holds neither {SAFETENSORS_FILE} nor {PICKLE_FILE}")
    return config.parent


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as the JSON values they would be written as, so the sidecar's own rules judge them
    (a text, object or ragged normaliser is refused there, naming the key), not numpy's conversion."""
    if isinstance(value, np.ndarray):
        return _plain(value.ravel().tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [v.item() if isinstance(v, np.generic) else v for v in value]
    return value


def import_decision_transformer(src: str | Path, out: str | Path, *, state_mean: Any, state_std: Any,
                                scale: float = 1000.0, target_return: float | None = None, env_id: str | None = None,
                                context_length: int = 20, overwrite: bool = False, revision: str | None = None,
                                cache_dir: str | Path | None = None, local_files_only: bool = False) -> Path:
    """Write a DT bundle at ``out`` from the checkpoint at ``src`` (folder or Hub repo id); returns ``out``.

    Everything is checked before anything is written (config, sidecar values, every tensor, by loading the model),
    and the bundle appears atomically.
    """
    from gptrl.exporter.dt.runner import model_from_dt_bundle

    folder = fetch_checkpoint(src, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    config = parse_dt_config(read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    arguments = {"state_mean": state_mean, "state_std": state_std, "scale": scale, "target_return": target_return,
                 "env_id": env_id, "context_length": context_length}
    sidecar = parse_sidecar({k: _plain(v) for k, v in arguments.items()}, "<import_decision_transformer arguments>",
                            config)  # the file's rules, so what is written reads back
    weights = folder / SAFETENSORS_FILE if (folder / SAFETENSORS_FILE).is_file() else folder / PICKLE_FILE
    if not weights.is_file():
        raise BundleError(f"{folder}: holds neither {SAFETENSORS_FILE} nor {PICKLE_FILE}")
    with atomic_dir(out, overwrite=overwrite, reads=[folder / CONFIG_FILE, weights]) as tmp:
        shutil.copyfile(folder / CONFIG_FILE, tmp / CONFIG_FILE)
        shutil.copyfile(weights, tmp / weights.name)
        (tmp / SIDECAR_FILE).write_text(sidecar.to_json(), encoding="utf-8")
        try:
            model_from_dt_bundle(load_dt_bundle(tmp))  # every tensor checked; a pickle read with weights_only
        except BundleError as exc:
            raise BundleError(str(exc).replace(str(tmp / weights.name), str(weights))) from None
    return Path(out)
