"""A Discrete(n) action (``{type: "discrete", n}``): a categorical distribution over n choices.

Head ``output_head.0`` gives the n logits. The greedy action is their first arg-max; a sample inverts the
cumulative distribution at one uniform u (the first k with cdf_k > u), so every runtime draws the same action from
the same u. The action fed back is its one-hot vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import ActionCodec, as_rows, check_integers
from gptrl.bundle.codecs.ops import Array, Ops

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

MAX_CHOICES = 65_536


@dataclass(frozen=True)
class Discrete(ActionCodec):
    n: int
    kind: ClassVar[str] = "discrete"
    capability: ClassVar[str | None] = "gptrl.actions.discrete"
    requirement: ClassVar[str] = "type 'discrete' with n"
    dtype: ClassVar[str] = "int64"

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> Discrete:
        r = cls.one_entry(readers, "a discrete action is one entry (MultiDiscrete actions are not supported)")
        r.get("type", "str")
        return cls(r.positive("n", limit=MAX_CHOICES))

    @classmethod
    def from_space(cls, space: Any) -> Discrete | None:
        if type(space).__name__ != "Discrete" or int(space.start) != 0:
            return None
        return cls(int(space.n))

    def specs(self) -> list[dict[str, Any]]:
        return [{"type": "discrete", "n": self.n}]

    def container(self) -> dict[str, Any]:
        return {"type": "Discrete", "n": self.n, "start": 0}

    def check_container(self, container: dict[str, Any], key: str) -> str | None:
        if container["type"] != "Discrete" or container["n"] != self.n or container.get("start", 0) != 0:
            return f"key '{key}' must be Discrete(n={self.n}) starting at 0 like 'action_specs', got {container}"
        return None

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def width(self) -> int:
        return self.n

    @property
    def heads(self) -> dict[int, int]:
        return {0: self.n}

    @property
    def noise_width(self) -> int:
        return 1

    def _cdf_upper(self) -> np.ndarray:
        """[n, n] with ones where row <= column: probs @ it is the cumulative distribution (one MatMul)."""
        return np.triu(np.ones((self.n, self.n), np.float32))

    def feedback(self, ops: Ops, action: Array) -> Array:
        return ops.one_hot(action, self.n)

    def greedy_latent(self, ops: Ops, params: Array) -> Array:
        return ops.argmax(ops.slice(params, 0, self.n))

    def sample_latent(self, ops: Ops, params: Array, uniform: Array) -> Array:
        """The first k with cdf_k > u (the last cdf entry raised to 2, so rounding never leaves none): an ArgMax,
        which every runtime gives as int64 (tract reads a float cast to int64 as a shape)."""
        last = np.zeros(self.n, np.float32)
        last[-1] = 2.0
        cdf = ops.add(ops.matmul(ops.softmax(params), ops.const(self._cdf_upper())), ops.const(last))
        below = ops.to_float(ops.less_equal(cdf, ops.slice(uniform, 0, 1)))
        return ops.argmax(ops.sub(ops.const(1.0), below))

    def latent_log_prob(self, ops: Ops, params: Array, latent: Array) -> Array:
        return ops.sum(ops.mul(ops.one_hot(latent, self.n), ops.log_softmax(params)))

    def entropy(self, ops: Ops, params: Array) -> Array:
        return ops.sub(ops.const(0.0), ops.sum(ops.mul(ops.softmax(params), ops.log_softmax(params))))

    def imitation_loss(self, ops: Ops, params: Array, target: Array) -> Array:
        """Cross-entropy of the expert's choice."""
        return ops.sub(ops.const(0.0), self.log_prob(ops, params, target))

    def check(self, value: Any, num_envs: int, what: str = "action") -> tuple[np.ndarray, bool]:
        array, single = as_rows(value, num_envs, self.shape, what)
        return check_integers(array, self.n, what, "action"), single
