"""``load_runner``: the torch reference runner of whichever family a folder holds (``gptrl.families``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptrl.families import FAMILIES, family_of_folder


def load_runner(path: Any, **kwargs: Any):
    """The family's torch reference runner for a bundle folder: a Causal GPT-RL ``PolicyRunner`` (also for a loaded
    ``Bundle``), or a ``DTRunner`` for a Decision Transformer (which takes ``num_envs`` and ``device`` only)."""
    family = family_of_folder(path) if isinstance(path, (str, Path)) else FAMILIES[-1]
    return family.part("runner")(path, **kwargs)
