"""Float observation vectors (continuous state specs), normalised by the format's state normaliser
(docs/format.md, "State normalisation"): features = (s - mean) / std."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import ObservationEncoder, as_rows, check_finite
from gptrl.bundle.codecs.box import ContinuousSpec, box_dict, is_continuous, parse_block, size_problem
from gptrl.bundle.codecs.ops import Array, Ops

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader


@dataclass(frozen=True)
class FloatVector(ObservationEncoder):
    blocks: tuple[ContinuousSpec, ...]
    kind: ClassVar[str] = "continuous"
    requirement: ClassVar[str] = "type 'continuous'"
    normalized: ClassVar[bool] = True

    @classmethod
    def matches(cls, spec: dict[str, Any]) -> bool:
        return is_continuous(spec)

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> FloatVector:
        return cls(tuple(parse_block(r) for r in readers))

    @classmethod
    def unbounded(cls, size: int, dtype: str = "float64") -> FloatVector:
        return cls((ContinuousSpec(size, dtype, (-np.inf,) * size, (np.inf,) * size, None),))

    @classmethod
    def from_space(cls, space: Any) -> FloatVector | None:
        if type(space).__name__ != "Box" or len(space.shape) != 1 or np.dtype(space.dtype).kind != "f":
            return None
        return cls.unbounded(int(space.shape[0]), str(space.dtype))

    def specs(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.blocks]

    def container(self) -> dict[str, Any]:
        return box_dict(self.blocks)

    def check_container(self, container: dict[str, Any], key: str) -> str | None:
        return size_problem(container, key, self.size)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blocks)

    @property
    def width(self) -> int:
        return self.size

    def features(self, ops: Ops, obs: Array, mean: Array | None = None, std: Array | None = None,
                 params: dict[str, Array] | None = None) -> Array:
        return obs if mean is None else ops.div(ops.sub(obs, mean), std)

    def fold(self, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
             std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x - mean) / std @ W = x @ (W / std) - (mean / std) @ W."""
        size = len(mean)
        scale = 1.0 / std.astype(np.float64)
        bias = bias - (mean.astype(np.float64) * scale) @ weight[:size]
        return np.concatenate([weight[:size] * scale[:, None], weight[size:]]), bias

    def check(self, value: Any, num_envs: int, what: str = "observation") -> tuple[np.ndarray, bool]:
        array, single = as_rows(value, num_envs, (self.size,), what)
        return check_finite(array, what), single

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        return np.asarray(unit, np.float32)
