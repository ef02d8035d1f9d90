"""Serialised gymnasium spaces as bundles store them (``state_container`` / ``action_container``), and the one rule
for reading a bound.

Validation works without gymnasium; rebuilding the real space imports it lazily so the torch-free runtime does
not need it unless it is asked for a space.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SPACE_TYPES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Tuple", "Dict")
_INFINITIES = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
               "-inf": -math.inf, "-infinity": -math.inf}


def parse_bound(value: Any, side: str) -> float:
    """One bound of a spec or a Box: a number, null (unbounded on that ``side``, "low" or "high"), or one of the
    strings "inf", "+inf", "infinity", "+infinity", "-inf", "-infinity" (any case). NaN is refused.

    Raises ValueError with a short reason; callers add the file and key.
    """
    if value is None:
        return -math.inf if side == "low" else math.inf
    if isinstance(value, str):
        number = _INFINITIES.get(value.strip().lower())
        if number is None:
            raise ValueError(f"bound {value!r} is not a number")
        return number
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"bound {value!r} is not a number")
    number = float(value)
    if math.isnan(number):
        raise ValueError("bound is NaN")
    return number


def _shape(d: dict[str, Any]) -> tuple[int, ...]:
    shape = d.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"'shape' must be a list of non-negative integers, got {shape!r}")
    if int(np.prod(shape, dtype=np.float64)) > 1 << 24:
        raise ValueError(f"'shape' {shape} has more than {1 << 24} entries")
    return tuple(shape)


def box_bounds(d: dict[str, Any], key: str) -> np.ndarray:
    """A Box's ``low`` or ``high`` as float64 of its shape (a scalar bound is broadcast)."""
    shape = _shape(d)
    raw = d.get(key)
    flat = np.ravel(np.array(raw, dtype=object)) if raw is not None else np.array([], dtype=object)
    size = int(np.prod(shape))
    if raw is None or flat.size not in (1, size):
        raise ValueError(f"'{key}' must have {size} entries for shape {list(shape)}")
    values = np.array([parse_bound(v, key) for v in flat], dtype=np.float64)
    return np.broadcast_to(values, (size,)).reshape(shape)


def _flatten(values: list) -> list:
    out, stack = [], [values]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        else:
            out.append(v)
    return out


def validate_space_dict(d: Any) -> None:
    """Raise ValueError if ``d`` is not a serialised space gptrl can read."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind not in SPACE_TYPES:
        raise ValueError(f"'type' must be one of {SPACE_TYPES}, got {kind!r}")
    if kind == "Box":
        low, high = box_bounds(d, "low"), box_bounds(d, "high")
        if np.any(low > high):
            raise ValueError("'low' exceeds 'high'")
        try:
            np.dtype(d.get("dtype", "float32"))
        except TypeError:
            raise ValueError(f"'dtype' {d.get('dtype')!r} is not a numpy dtype") from None
    elif kind == "Discrete":
        if not isinstance(d.get("n"), int) or isinstance(d.get("n"), bool) or d["n"] <= 0:
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


def flat_size(d: dict[str, Any]) -> int | None:
    """Number of float features a (validated) space flattens to, for Box / Tuple / Dict of Boxes; None otherwise."""
    kind = d["type"]
    if kind == "Box":
        return int(np.prod(_shape(d)))
    if kind in ("Tuple", "Dict"):
        subs = d["spaces"] if kind == "Tuple" else list(d["spaces"].values())
        sizes = [flat_size(s) for s in subs]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]
    return None


def describe_space(d: dict[str, Any]) -> str:
    """A one-line description: ``Box(11,) float64 unbounded`` or ``Box(3,) float32 [-1, 1]``."""
    if d.get("type") != "Box":
        return d.get("type", "?")
    low, high = box_bounds(d, "low"), box_bounds(d, "high")
    if np.all(np.isinf(low)) and np.all(np.isinf(high)):
        bounds = "unbounded"
    else:
        bounds = f"[{low.min():g}, {high.max():g}]"
    return f"Box{tuple(_shape(d))} {d.get('dtype', 'float32')} {bounds}"


def space_from_dict(d: dict[str, Any]):
    """Rebuild the gymnasium space a bundle serialised."""
    from gymnasium import spaces

    validate_space_dict(d)
    kind = d["type"]
    if kind == "Box":
        shape = _shape(d)
        dtype = np.dtype(d.get("dtype", "float32"))
        return spaces.Box(box_bounds(d, "low").astype(dtype), box_bounds(d, "high").astype(dtype), shape, dtype)
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"], dtype=np.int64), dtype=d.get("dtype", "int64"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Tuple":
        return spaces.Tuple([space_from_dict(s) for s in d["spaces"]])
    return spaces.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})


def json_bound(v: float) -> float | str:
    """A bound as a Box stores it: infinities as the strings "inf" / "-inf"."""
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else float(v)


def space_to_dict(space) -> dict[str, Any]:
    """Serialise a gymnasium space the way bundles store it (infinite bounds as strings)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [json_bound(v) for v in np.ravel(space.low)],
            "high": [json_bound(v) for v in np.ravel(space.high)],
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
