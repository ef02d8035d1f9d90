"""Continuous feature blocks (``{type: "continuous", size, dtype, low, high, squash}``): the spec that the float
observation encoder and both Box action codecs read, and the Box container that describes them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import ActionCodec
from gptrl.bundle.codecs.ops import Array, Ops
from gptrl.bundle.schema import LIMITS
from gptrl.bundle.spaces import box_bounds, flat_size, json_bound, parse_bound

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

@dataclass(frozen=True)
class ContinuousSpec:
    """One continuous feature block of the state or action vector."""

    size: int
    dtype: str = "float32"
    low: tuple[float, ...] = ()  # -inf where unbounded
    high: tuple[float, ...] = ()  # +inf where unbounded
    squash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "continuous",
            "size": self.size,
            "dtype": self.dtype,
            "low": [None if math.isinf(v) else v for v in self.low],
            "high": [None if math.isinf(v) else v for v in self.high],
            "squash": self.squash,
        }


def is_continuous(spec: dict[str, Any]) -> bool:
    return spec.get("type", "continuous") == "continuous"


def parse_block(r: JsonReader) -> ContinuousSpec:
    """One continuous spec entry; errors name the file and the entry's key."""
    kind = r.get("type", "str", "continuous")
    if kind != "continuous":
        raise r.error(f"key {r.key('type')} = {kind!r}: every entry of this list must be of one type")
    size = r.positive("size", limit=LIMITS["size"])
    bounds = {}
    for key in ("low", "high"):
        values = r.get(key, "list", [None] * size)
        if len(values) != size:
            raise r.error(f"key {r.key(key)} has {len(values)} entries, expected size {size}")
        try:
            bounds[key] = tuple(parse_bound(v, key) for v in values)
        except ValueError as exc:
            raise r.error(f"key {r.key(key)}: {exc}") from None
    if any(lo > hi for lo, hi in zip(bounds["low"], bounds["high"])):
        raise r.error(f"key {r.key('low')} exceeds {r.key('high')}")
    dtype = r.get("dtype", "str", "float32")
    try:
        np.dtype(dtype)
    except TypeError:
        raise r.error(f"key {r.key('dtype')} = {dtype!r} is not a numpy dtype") from None
    return ContinuousSpec(size, dtype, bounds["low"], bounds["high"], r.get("squash", "str", None))


def bounds_of(blocks: tuple[ContinuousSpec, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float32 (low, high) of the blocks concatenated."""
    return (np.array([v for s in blocks for v in s.low], np.float32),
            np.array([v for s in blocks for v in s.high], np.float32))


def box_dict(blocks: tuple[ContinuousSpec, ...]) -> dict[str, Any]:
    """The Box container matching ``blocks``."""
    low = [v for s in blocks for v in s.low]
    high = [v for s in blocks for v in s.high]
    return {"type": "Box", "shape": [len(low)], "dtype": blocks[0].dtype,
            "low": [json_bound(v) for v in low], "high": [json_bound(v) for v in high]}


def size_problem(container: dict[str, Any], key: str, total: int) -> str | None:
    """Why ``container`` (config key ``key``) does not describe ``total`` features (None: it does, or it cannot say)."""
    size = flat_size(container)
    if size is not None and size != total:
        return f"key '{key}' describes {size} features but the specs total {total}"
    return None


def bounds_problem(container: dict[str, Any], key: str, blocks: tuple[ContinuousSpec, ...]) -> str | None:
    """An action Box must carry the specs' bounds."""
    if container["type"] != "Box":
        return None
    for side in ("low", "high"):
        box = box_bounds(container, side).ravel()
        spec = np.array([v for s in blocks for v in getattr(s, side)])
        if not np.allclose(box, spec, rtol=1e-6, atol=1e-6):
            return f"key '{key}.{side}' disagrees with 'action_specs' {side} bounds"
    return None


def box_noise(ops: Ops, uniform: Array, size: int) -> Array:
    """Standard normal draws [..., size] from 2 x size uniforms in [0, 1) (Box-Muller: exact, and portable ops)."""
    radius = ops.sqrt(ops.mul(ops.const(-2.0), ops.log(ops.sub(ops.const(1.0), ops.slice(uniform, 0, size)))))
    return ops.mul(radius, ops.cos(ops.mul(ops.const(2 * math.pi), ops.slice(uniform, size, 2 * size))))


@dataclass(frozen=True)
class BoxActionCodec(ActionCodec):
    """What both Box action codecs share: continuous blocks told apart by their ``squash``, built from bounds or a
    gymnasium Box, and written back as the same specs and container."""

    blocks: tuple[ContinuousSpec, ...]
    squash: ClassVar[str]

    # Both draw a Gaussian latent from heads (mean, log-std): the mean greedily, mean + std z sampled; each codec's
    # action_of maps it to the action (tanh squashing or clipping).
    def greedy_latent(self, ops: Ops, params: Array) -> Array:
        return ops.slice(params, 0, self.size)

    def sample_latent(self, ops: Ops, params: Array, uniform: Array) -> Array:
        a = self.size
        noise = ops.mul(ops.exp(ops.slice(params, a, 2 * a)), box_noise(ops, uniform, a))
        return ops.add(ops.slice(params, 0, a), noise)

    @classmethod
    def matches(cls, spec: dict[str, Any]) -> bool:
        return is_continuous(spec) and spec.get("squash") == cls.squash

    @classmethod
    def from_bounds(cls, low: Any, high: Any) -> BoxActionCodec:
        high_array = np.atleast_1d(np.asarray(high, np.float64))
        low_array = np.broadcast_to(np.asarray(low, np.float64), high_array.shape)
        return cls((ContinuousSpec(len(high_array), "float32", tuple(map(float, low_array)),
                                   tuple(map(float, high_array)), cls.squash),))

    @classmethod
    def from_space(cls, space: Any) -> BoxActionCodec | None:
        if type(space).__name__ != "Box" or len(space.shape) != 1:
            return None
        return cls.from_bounds(space.low, space.high)

    def specs(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.blocks]

    def container(self) -> dict[str, Any]:
        return {**box_dict(self.blocks), "dtype": "float32"}

    def check_container(self, container: dict[str, Any], key: str) -> str | None:
        return size_problem(container, key, self.size) or bounds_problem(container, key, self.blocks)

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(b.size for b in self.blocks),)

    @property
    def width(self) -> int:  # the action is fed back with one value per dimension
        return self.size

    @property
    def heads(self) -> dict[int, int]:  # a mean and a log-std per dimension
        return {0: self.size, 1: self.size}

    @property
    def noise_width(self) -> int:  # Box-Muller: two uniforms per normal draw
        return 2 * self.size
