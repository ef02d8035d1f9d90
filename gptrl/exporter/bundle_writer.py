"""``export_bundle``: a torch policy (or runner, or loaded bundle) -> a v2 bundle folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gptrl.bundle import Bundle
from gptrl.bundle.weights import format_buffers
from gptrl.bundle.writer import write_bundle
from gptrl.exporter.loading import bundle_tensors
from gptrl.exporter.model import PolicyModel


def export_bundle(policy, path: str | Path, *, env_id: str | None = None, overwrite: bool = False) -> Path:
    """Write ``policy`` (a PolicyModel, PolicyRunner or Bundle) as a format-2 bundle at ``path``.

    The write is atomic: a temporary folder is filled, read back, validated and renamed.
    """
    from gptrl.exporter.runner import PolicyRunner

    if isinstance(policy, PolicyRunner):
        policy = policy.model
    if isinstance(policy, PolicyModel):
        config, tensors = policy.config, bundle_tensors(policy)
    elif isinstance(policy, Bundle):
        config = policy.config
        tensors = {**format_buffers(config), **policy.tensors, **policy.normalizer.tensors()}
    else:
        raise TypeError(f"export_bundle takes a PolicyModel, PolicyRunner or Bundle, got {type(policy).__name__}")
    if env_id is not None:
        config = replace(config, env_id=env_id)
    return write_bundle(path, config, tensors, overwrite=overwrite)
