"""A Box action drawn from a Gaussian in env units and clipped to the bounds (``squash: "clip"``), as PPO's
continuous policies act.

Heads ``output_head.0`` (mean) and ``.1`` (log-std) are in env units. The latent is the unclipped draw mean + std z
(the mean when greedy) and the action is clip(latent, low, high); the log-probability is the Gaussian density at the
latent, as SB3's clipped Gaussian does. (The density at the clipped action, used before, makes PPO's ratio explode
once a mean leaves the bounds: a draw pinned at a bound then changes its density by orders of magnitude with small
moves of the mean; a BipedalWalker run diverged so.) The action fed back is the clipped action scaled to [-1, 1]
where both bounds are finite, and as it is elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import as_rows, check_finite
from gptrl.bundle.codecs.box import BoxActionCodec, bounds_of, parse_block
from gptrl.bundle.codecs.ops import Array, Ops
from gptrl.bundle.codecs.tanh_box import LOG_STD_RANGE, gaussian_entropy, gaussian_log_density

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

FINITE_LIMIT = 3.0e38  # an infinite bound is clipped here (float32's range), so every backend clips alike


@dataclass(frozen=True)
class GaussianBox(BoxActionCodec):
    squash: ClassVar[str] = "clip"
    kind: ClassVar[str] = "gaussian"
    capability: ClassVar[str | None] = "gptrl.actions.gaussian"
    requirement: ClassVar[str] = "squash 'clip' (a Gaussian clipped to the bounds)"

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> GaussianBox:
        blocks = tuple(parse_block(r) for r in readers)
        for r, spec in zip(readers, blocks):
            if spec.squash != "clip":
                raise r.error(f"key '{r.prefix.rstrip('.')}' needs {cls.requirement} like the first entry "
                              f"(got squash {spec.squash!r})")
        return cls(blocks)

    @property
    def low(self) -> np.ndarray:
        return np.maximum(bounds_of(self.blocks)[0], -FINITE_LIMIT)

    @property
    def high(self) -> np.ndarray:
        return np.minimum(bounds_of(self.blocks)[1], FINITE_LIMIT)

    def _scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Feedback = clip(a) * scale + offset: [-1, 1] where both bounds are finite, env units elsewhere."""
        low, high = bounds_of(self.blocks)
        finite = np.isfinite(low) & np.isfinite(high) & (high > low)
        low, high = np.where(finite, low, -1.0), np.where(finite, high, 1.0)
        return np.where(finite, 2.0 / (high - low), 1.0), np.where(finite, -(high + low) / (high - low), 0.0)

    def _clip(self, ops: Ops, action: Array) -> Array:
        return ops.clip(action, ops.const(self.low), ops.const(self.high))

    def params(self, ops: Ops, heads: dict[int, Array]) -> Array:
        return ops.concat(heads[0], ops.clip(heads[1], ops.const(LOG_STD_RANGE[0]), ops.const(LOG_STD_RANGE[1])))

    def feedback(self, ops: Ops, action: Array) -> Array:
        scale, offset = self._scale()
        return ops.add(ops.mul(self._clip(ops, action), ops.const(scale)), ops.const(offset))

    def action_of(self, ops: Ops, latent: Array) -> Array:
        return self._clip(ops, latent)

    def latent_log_prob(self, ops: Ops, params: Array, latent: Array) -> Array:
        """The Gaussian density at the latent (the unclipped draw)."""
        a = self.size
        return ops.sum(gaussian_log_density(ops, latent, ops.slice(params, 0, a), ops.slice(params, a, 2 * a)))

    def entropy(self, ops: Ops, params: Array) -> Array:
        return gaussian_entropy(ops, ops.slice(params, self.size, 2 * self.size))

    def imitation_loss(self, ops: Ops, params: Array, target: Array) -> Array:
        """Mean squared error of the mean, in the feedback's units."""
        scale, _ = self._scale()
        error = ops.mul(ops.sub(ops.slice(params, 0, self.size), target), ops.const(scale))
        return ops.div(ops.sum(ops.mul(error, error)), ops.const(float(self.size)))

    def spread_loss(self, ops: Ops, params: Array, behaviour: Array) -> Array:
        """Mean Gaussian negative log-likelihood of the behaviour's actions."""
        a = self.size
        nll = ops.sub(ops.const(-math.log(math.sqrt(2 * math.pi))),
                      gaussian_log_density(ops, behaviour, ops.slice(params, 0, a), ops.slice(params, a, 2 * a)))
        return ops.div(ops.sum(nll), ops.const(float(a)))

    def check(self, value: Any, num_envs: int, what: str = "action") -> tuple[np.ndarray, bool]:
        array, single = as_rows(value, num_envs, self.shape, what)
        return check_finite(array, what), single
