"""``load_runner``: the torch reference runner of whichever family a folder holds (recognised from config.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptrl.bundle.dt import is_dt_folder


def load_runner(path: Any, **kwargs: Any):
    """A Causal GPT-RL ``PolicyRunner``, or for a Decision Transformer bundle a ``DTRunner`` (which takes
    ``num_envs`` and ``device`` only)."""
    if isinstance(path, (str, Path)) and is_dt_folder(path):
        from gptrl.exporter.dt.runner import load_dt_runner

        unknown = sorted(set(kwargs) - {"num_envs", "device"})
        if unknown:
            raise ValueError(f"{path}: a Decision Transformer runner takes num_envs and device, not {unknown}")
        return load_dt_runner(path, **kwargs)
    from gptrl.exporter.causal.runner import load_runner as load_causal

    return load_causal(path, **kwargs)
