"""Serialised gymnasium spaces as bundles store them (``state_container`` / ``action_container``).

Validation works without gymnasium; rebuilding the real space imports it lazily so the
torch-free runtime does not need it unless it is asked for a space.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SPACE_TYPES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Tuple", "Dict")


def _float(value: Any) -> float:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("inf", "+inf", "infinity"):
            return math.inf
        if text in ("-inf", "-infinity"):
            return -math.inf
        raise ValueError(f"bound {value!r} is not a number")
    if value is None:
        raise ValueError("bound is null")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"bound {value!r} is not a number")
    return float(value)


def _shape(d: dict[str, Any]) -> tuple[int, ...]:
    shape = d.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"'shape' must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def _bounds(d: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = d.get(key)
    values = np.array([_float(v) for v in np.ravel(np.array(raw, dtype=object))], dtype=np.float64)
    if raw is None or values.size not in (1, int(np.prod(shape))):
        raise ValueError(f"'{key}' must have {int(np.prod(shape))} entries for shape {list(shape)}")
    return np.broadcast_to(values, (int(np.prod(shape)),)).reshape(shape)


def _flatten(values: list) -> list:
    return [x for v in values for x in (_flatten(v) if isinstance(v, list) else [v])]


def validate_space_dict(d: Any) -> None:
    """Raise ValueError if ``d`` is not a serialised space gptrl can read."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind not in SPACE_TYPES:
        raise ValueError(f"'type' must be one of {SPACE_TYPES}, got {kind!r}")
    if kind == "Box":
        shape = _shape(d)
        low, high = _bounds(d, "low", shape), _bounds(d, "high", shape)
        if np.any(low > high):
            raise ValueError("'low' exceeds 'high'")
    elif kind == "Discrete":
        if not isinstance(d.get("n"), int) or d["n"] <= 0:
            raise ValueError(f"'n' must be a positive integer, got {d.get('n')!r}")
        if not isinstance(d.get("start", 0), int):
            raise ValueError(f"'start' must be an integer, got {d.get('start')!r}")
    elif kind == "MultiDiscrete":
        nvec = d.get("nvec")
        if not isinstance(nvec, list) or not all(isinstance(n, int) and n > 0 for n in _flatten(nvec)):
            raise ValueError(f"'nvec' must be a list of positive integers, got {nvec!r}")
    elif kind == "MultiBinary":
        n = d.get("n")
        if not (isinstance(n, int) or (isinstance(n, list) and all(isinstance(x, int) for x in n))):
            raise ValueError(f"'n' must be an integer or a list of integers, got {n!r}")
    elif kind == "Tuple":
        spaces = d.get("spaces")
        if not isinstance(spaces, list):
            raise ValueError("'spaces' must be a list")
        for sub in spaces:
            validate_space_dict(sub)
    else:  # Dict
        spaces = d.get("spaces")
        if not isinstance(spaces, dict):
            raise ValueError("'spaces' must be a JSON object")
        for sub in spaces.values():
            validate_space_dict(sub)


def space_from_dict(d: dict[str, Any]):
    """Rebuild the gymnasium space a bundle serialised."""
    from gymnasium import spaces

    validate_space_dict(d)
    kind = d["type"]
    if kind == "Box":
        shape = _shape(d)
        dtype = np.dtype(d.get("dtype", "float32"))
        return spaces.Box(_bounds(d, "low", shape).astype(dtype), _bounds(d, "high", shape).astype(dtype), shape, dtype)
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"], dtype=np.int64), dtype=d.get("dtype", "int64"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Tuple":
        return spaces.Tuple([space_from_dict(s) for s in d["spaces"]])
    return spaces.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})


def space_to_dict(space) -> dict[str, Any]:
    """Serialise a gymnasium space the way bundles store it (infinite bounds as strings)."""
    from gymnasium import spaces

    def num(v: float) -> float | str:
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else float(v)

    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [num(v) for v in np.ravel(space.low)],
            "high": [num(v) for v in np.ravel(space.high)],
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist(), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if np.isscalar(n) else list(n)}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_dict(s) for s in space.spaces]}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    raise TypeError(f"cannot serialise space {space!r}")
