"""Integer token observations (``{type: "tokens", size, vocab_size}``): ``size`` integers in [0, vocab_size), such
as the characters of a text frame. Each token enters the network as its one-hot vector, so the input projection
holds one d-vector per (position, token value); there is no normaliser. A value outside the vocabulary is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import ObservationEncoder, as_rows, check_integers
from gptrl.bundle.codecs.ops import Array, Ops
from gptrl.bundle.schema import LIMITS

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

MAX_VOCAB = 65_536
MAX_FEATURES = 1 << 22  # size x vocab_size one-hot features into the input projection


@dataclass(frozen=True)
class Tokens(ObservationEncoder):
    count: int  # tokens per observation
    vocab_size: int
    kind: ClassVar[str] = "tokens"
    capability: ClassVar[str | None] = "gptrl.observations.tokens"
    requirement: ClassVar[str] = "type 'tokens' with size and vocab_size"
    dtype: ClassVar[str] = "int64"

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> Tokens:
        r = cls.one_entry(readers, "token observations are one entry")
        r.get("type", "str")
        count, vocab = r.positive("size", limit=LIMITS["size"]), r.positive("vocab_size", limit=MAX_VOCAB)
        if count * vocab > MAX_FEATURES:
            raise r.error(f"size x vocab_size = {count * vocab:,} one-hot features, past gptrl's limit of "
                          f"{MAX_FEATURES:,}")
        return cls(count, vocab)

    @classmethod
    def from_space(cls, space: Any) -> Tokens | None:
        name = type(space).__name__
        if name == "Discrete" and int(space.start) == 0:
            return cls(1, int(space.n))
        nvec = np.ravel(getattr(space, "nvec", []))
        if name == "MultiDiscrete" and len(nvec) and (nvec == nvec[0]).all():
            return cls(len(nvec), int(nvec[0]))
        return None

    def specs(self) -> list[dict[str, Any]]:
        return [{"type": "tokens", "size": self.count, "vocab_size": self.vocab_size}]

    def container(self) -> dict[str, Any]:
        return {"type": "MultiDiscrete", "nvec": [self.vocab_size] * self.count, "dtype": "int64"}

    def check_container(self, container: dict[str, Any], key: str) -> str | None:
        kind = container["type"]
        if kind == "Discrete" and self.count == 1 and container["n"] == self.vocab_size \
                and container.get("start", 0) == 0:
            return None
        if kind == "MultiDiscrete" and np.ravel(container["nvec"]).tolist() == [self.vocab_size] * self.count:
            return None
        return (f"key '{key}' must be MultiDiscrete([{self.vocab_size}] x {self.count}) (or "
                f"Discrete({self.vocab_size}) for one token) like 'state_specs', got {container.get('type')}")

    @property
    def size(self) -> int:
        return self.count

    @property
    def width(self) -> int:
        return self.count * self.vocab_size

    def features(self, ops: Ops, obs: Array, mean: Array | None = None, std: Array | None = None,
                 params: dict[str, Array] | None = None) -> Array:
        return ops.flatten_last2(ops.one_hot(obs, self.vocab_size))

    def check(self, value: Any, num_envs: int, what: str = "observation") -> tuple[np.ndarray, bool]:
        if self.count == 1 and np.ndim(value) == (0 if num_envs == 1 else 1):  # Discrete obs: one int per env
            value = np.reshape(value, (num_envs, 1) if num_envs > 1 else (1,))
        array, single = as_rows(value, num_envs, (self.count,), what)
        return check_integers(array, self.vocab_size, what, "token"), single

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        index = np.floor((np.asarray(unit, np.float64) + 1.0) / 2.0 * self.vocab_size)
        return np.clip(index, 0, self.vocab_size - 1).astype(np.int64)
