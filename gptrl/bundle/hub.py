"""Fetching one bundle from the Hugging Face Hub: only that bundle's files, never the whole repo."""

from __future__ import annotations

import json
from pathlib import Path

from gptrl.bundle.config import CONFIG_FILE
from gptrl.bundle.errors import BundleError
from gptrl.bundle.normalizer import SIDECAR_FILE
from gptrl.bundle.weights import WEIGHTS_FILE


def download_bundle(
    repo_id: str,
    *,
    subfolder: str = "",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    files: tuple[str, ...] = (WEIGHTS_FILE,),
) -> Path:
    """Download config.json, ``files`` and (when the config needs it) the v1 sidecar.

    Returns the local bundle folder inside the huggingface_hub cache. ``local_files_only``
    (or ``HF_HUB_OFFLINE=1``) resolves from the cache without touching the network.
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("loading from the Hub needs huggingface_hub: pip install 'gptrl[hub]'") from exc

    subfolder = subfolder.strip("/")
    where = f"{repo_id}/{subfolder}" if subfolder else repo_id

    def fetch(filename: str) -> Path:
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    subfolder=subfolder or None,
                    revision=revision,
                    cache_dir=str(cache_dir) if cache_dir is not None else None,
                    token=token,
                    local_files_only=local_files_only,
                )
            )
        except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError) as exc:
            raise BundleError(f"hub:{where}/{filename}: could not be fetched ({type(exc).__name__}: {exc})") from exc

    config_path = fetch(CONFIG_FILE)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{config_path}: not valid JSON ({exc})") from None
    wanted = list(files)
    norm = config.get("state_normalization") if isinstance(config, dict) else None
    if isinstance(norm, dict) and norm.get("legacy_sidecar"):
        wanted.append(SIDECAR_FILE)
    for filename in wanted:
        path = fetch(filename)
        if path.parent != config_path.parent:  # pragma: no cover - a hub cache invariant
            raise BundleError(f"hub:{where}: {filename} resolved outside the bundle folder ({path})")
    return config_path.parent
