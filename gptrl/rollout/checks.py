"""The checks every runner makes on what a caller passes and what a model returns, and the serving limits
(docs/format.md, "Limits"), checked before anything is allocated."""

from __future__ import annotations

from typing import Any

import numpy as np

from gptrl.bundle.schema import BOS_CACHE_MODES, BundleConfig
from gptrl.contract import BosCacheMode
from gptrl.errors import NonFiniteOutputError

MAX_KV_CACHE_LEN = 65_536
MAX_NUM_ENVS = 65_536
MAX_CACHE_BYTES = 8 << 30  # keys + values of every layer, float32


def check_count(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value > limit:
        raise ValueError(f"{name}={value} exceeds gptrl's limit of {limit} (docs/format.md, Limits)")
    return int(value)


def check_mask(done_mask: Any, num_envs: int) -> np.ndarray:
    """A [num_envs] bool mask from booleans or 0/1."""
    mask = np.asarray(done_mask)
    if mask.shape != (num_envs,):
        raise ValueError(f"done_mask has shape {mask.shape}, expected ({num_envs},) (one flag per env)")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"done_mask must hold booleans or 0/1, got {mask.tolist()}")
        mask = mask.astype(bool)
    return mask


def check_outputs(actions: np.ndarray, value: np.ndarray, term: np.ndarray | None, steps: np.ndarray) -> None:
    """Raise NonFiniteOutputError naming the rows and steps where a policy produced NaN or inf."""
    bad = ~np.isfinite(np.asarray(actions, np.float64).reshape(len(value), -1)).all(axis=1) | ~np.isfinite(value)
    if term is not None:
        bad |= ~np.isfinite(term)
    if bad.any():
        rows = np.flatnonzero(bad).tolist()
        where = ", ".join(f"row {r} at step {int(steps[r])}" for r in rows[:8])
        raise NonFiniteOutputError(
            f"the policy produced a non-finite output (NaN or inf) in {where}; its inputs or weights are out "
            "of range (the step was not taken)")


def resolve_serving(config: BundleConfig, kv_cache_max_len: int | None, bos_cache_mode: str | None,
                    num_envs: int = 1) -> tuple[int, BosCacheMode]:
    """Apply defaults to the serving settings and refuse those the architecture (or memory) cannot serve."""
    kv = check_count("kv_cache_max_len", config.context_length if kv_cache_max_len is None else kv_cache_max_len,
                     MAX_KV_CACHE_LEN)
    num_envs = check_count("num_envs", num_envs, MAX_NUM_ENVS)
    m = config.model
    cache_bytes = 2 * m.num_layers * num_envs * (kv + 1) * m.d_model * 4
    if cache_bytes > MAX_CACHE_BYTES:
        raise ValueError(
            f"num_envs={num_envs} x kv_cache_max_len={kv} needs a {cache_bytes / 2**30:.1f} GiB key/value cache "
            f"({m.num_layers} layers, d_model {m.d_model}), past gptrl's limit of {MAX_CACHE_BYTES / 2**30:.0f} GiB; "
            "use fewer rows or a shorter cache")
    limit = config.model.max_kv_cache_len()
    if limit is not None and kv > limit:
        raise ValueError(
            f"kv_cache_max_len={kv} cannot be served by this GPT2 policy: once the cache is full every "
            f"token is written at position {kv}, but its learned position table has only "
            f"max_position_embeddings={config.model.max_position_embeddings} rows (positions 0..{limit}); "
            f"use kv_cache_max_len <= {limit}"
        )
    mode = bos_cache_mode or config.bos_cache_mode or "discard"
    if mode not in BOS_CACHE_MODES:
        raise ValueError(f"bos_cache_mode must be one of {BOS_CACHE_MODES}, got {bos_cache_mode!r}")
    return kv, mode  # type: ignore[return-value]
