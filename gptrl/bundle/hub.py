"""Fetching one bundle from the Hugging Face Hub: only that bundle's files, never the whole repo.

Which files a bundle needs is decided by the same rule as for a local folder (``gptrl.bundle.files.bundle_files``),
so a bundle downloaded from the Hub loads exactly as its local copy would.
"""

from __future__ import annotations

from pathlib import Path

from gptrl.bundle.files import CONFIG_FILE, bundle_files
from gptrl.errors import BundleError
from gptrl.fileio import read_json


def download_bundle(
    repo_id: str,
    *,
    subfolder: str = "",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download config.json and the files it needs (the weights, and the v1 sidecar where there is one).

    Returns the local bundle folder inside the huggingface_hub cache. ``local_files_only`` (or ``HF_HUB_OFFLINE=1``)
    resolves from the cache without touching the network.
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("loading from the Hub needs huggingface_hub: pip install 'gptrl[hub]'") from exc

    subfolder = subfolder.strip("/")
    where = f"{repo_id}/{subfolder}" if subfolder else repo_id

    def fetch(filename: str, *, optional: bool = False) -> Path | None:
        try:
            return Path(hf_hub_download(
                repo_id, filename, subfolder=subfolder or None, revision=revision,
                cache_dir=str(cache_dir) if cache_dir is not None else None, token=token,
                local_files_only=local_files_only,
            ))
        except EntryNotFoundError:
            if optional:
                return None
            raise BundleError(f"hub:{where}/{filename}: could not be fetched (not in the repository)") from None
        except LocalEntryNotFoundError as exc:
            if optional and local_files_only:
                return None  # offline: an optional file that was never cached is treated as absent
            raise BundleError(f"hub:{where}/{filename}: could not be fetched ({type(exc).__name__}: {exc})") from None
        except RepositoryNotFoundError as exc:
            raise BundleError(f"hub:{where}/{filename}: could not be fetched ({type(exc).__name__}: {exc})") from None

    config_path = fetch(CONFIG_FILE)
    assert config_path is not None
    required, optional = bundle_files(read_json(config_path))
    for filename, is_optional in [(f, False) for f in required] + [(f, True) for f in optional]:
        path = fetch(filename, optional=is_optional)
        if path is not None and path.parent != config_path.parent:  # pragma: no cover - a hub cache invariant
            raise BundleError(f"hub:{where}: {filename} resolved outside the bundle folder ({path})")
    return config_path.parent
