"""The Causal GPT-RL action: a Box squashed by tanh (docs/format.md, "Model math"; unchanged on disk).

Heads ``output_head.0`` (mu) and ``.1`` (log-std) describe a Gaussian over pre-tanh values u; the action is
tanh(u) scaled to [low, high]. The action fed back is atanh of the clipped [-1, 1] action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import as_rows, check_finite
from gptrl.bundle.codecs.box import BoxActionCodec, bounds_of, parse_block
from gptrl.bundle.codecs.ops import Array, Ops

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

ACTION_CLIP_EPS = 1e-6  # action feedback: atanh(clip(unit, -1 + eps, 1 - eps))
LOG_STD_RANGE = (-5.0, 2.0)  # the log-std head is read clipped to this range (sampling, log-prob, training)
SPREAD_FIT_CLIP = 0.999  # behaviour actions are clipped this far inside the bounds before atanh (spread fit)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_density(ops: Ops, x: Array, mu: Array, log_std: Array) -> Array:
    """log N(x; mu, exp(log_std)) per entry."""
    z = ops.div(ops.sub(x, mu), ops.exp(log_std))
    return ops.sub(ops.sub(ops.mul(ops.const(-0.5), ops.mul(z, z)), log_std), ops.const(HALF_LOG_2PI))


def gaussian_entropy(ops: Ops, log_std: Array) -> Array:
    return ops.sum(ops.add(log_std, ops.const(0.5 + HALF_LOG_2PI)))


@dataclass(frozen=True)
class TanhBox(BoxActionCodec):
    squash: ClassVar[str] = "tanh"
    kind: ClassVar[str] = "tanh"
    requirement: ClassVar[str] = "finite low/high and squash 'tanh'"

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> TanhBox:
        blocks = tuple(parse_block(r) for r in readers)
        for r, spec in zip(readers, blocks):
            where = r.prefix.rstrip(".")
            if spec.squash != "tanh" or not all(map(math.isfinite, spec.low + spec.high)):
                raise r.error(f"key '{where}' needs {cls.requirement} (got squash {spec.squash!r})")
            if any(lo >= hi for lo, hi in zip(spec.low, spec.high)):
                raise r.error(f"key '{where}' needs low < high in every dimension (an empty range has no tanh "
                              "encoding)")
        return cls(blocks)

    @property
    def low(self) -> np.ndarray:
        return bounds_of(self.blocks)[0]

    @property
    def high(self) -> np.ndarray:
        return bounds_of(self.blocks)[1]

    def format_buffers(self) -> dict[str, np.ndarray]:
        """The bound and switch buffers the reference writes beside the weights: gptrl's math does not read them,
        but writing them keeps our bundles loadable by every runtime that reads the format."""
        low, high, a = self.low, self.high, self.size
        out = {
            "_action_scale": ((high - low) / 2).reshape(1, a),
            "_action_bias": ((high + low) / 2).reshape(1, a),
            "action_normalization_enabled": np.zeros(1),
            "action_normalization_mean": np.zeros(a),
            "action_normalization_std": np.ones(a),
            "input_adapter.1.low": low.reshape(1, 1, a),
            "input_adapter.1.high": high.reshape(1, 1, a),
        }
        for k in (0, 1):
            out[f"output_adapter.{k}.low"] = low.reshape(1, 1, a)
            out[f"output_adapter.{k}.high"] = high.reshape(1, 1, a)
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}

    # -- the math --------------------------------------------------------------------------------------------------
    def _unit(self, ops: Ops, action: Array) -> Array:
        """Env units -> [-1, 1]: 2 (a - low) / (high - low) - 1."""
        scaled = ops.div(ops.mul(ops.sub(action, ops.const(self.low)), ops.const(2.0)),
                         ops.const(self.high - self.low))
        return ops.sub(scaled, ops.const(1.0))

    def _squash(self, ops: Ops, pre: Array) -> Array:
        """Pre-tanh values -> env units."""
        return ops.add(ops.mul(ops.tanh(pre), ops.const((self.high - self.low) / 2)),
                       ops.const((self.high + self.low) / 2))

    def _pre(self, ops: Ops, action: Array, clip: float) -> Array:
        return ops.atanh(ops.clip(self._unit(ops, action), ops.const(-clip), ops.const(clip)))

    def params(self, ops: Ops, heads: dict[int, Array]) -> Array:
        return ops.concat(heads[0], ops.clip(heads[1], ops.const(LOG_STD_RANGE[0]), ops.const(LOG_STD_RANGE[1])))

    def feedback(self, ops: Ops, action: Array) -> Array:
        return self._pre(ops, action, 1.0 - ACTION_CLIP_EPS)

    def action_of(self, ops: Ops, latent: Array) -> Array:
        return self._squash(ops, latent)

    def latent_of(self, ops: Ops, action: Array) -> Array:
        return self.feedback(ops, action)

    def latent_log_prob(self, ops: Ops, params: Array, latent: Array) -> Array:
        """The pre-tanh Gaussian's density over the squashing's Jacobian, half (1 - tanh(u)^2), with
        log(1 - tanh(u)^2) = 2 (log 2 - |u| - log(1 + exp(-2 |u|))) exact where tanh(u) rounds to 1."""
        a = self.size
        density = gaussian_log_density(ops, latent, ops.slice(params, 0, a), ops.slice(params, a, 2 * a))
        size = ops.abs(latent)
        log_sech2 = ops.mul(ops.const(2.0), ops.sub(ops.sub(ops.const(math.log(2.0)), size),
                                                    ops.log(ops.add(ops.const(1.0),
                                                                    ops.exp(ops.mul(ops.const(-2.0), size))))))
        jacobian = ops.add(log_sech2, ops.const(np.log((self.high - self.low) / 2)))
        return ops.sum(ops.sub(density, jacobian))

    def entropy(self, ops: Ops, params: Array) -> Array:
        """The pre-tanh Gaussian's entropy (the squashed one has no closed form)."""
        return gaussian_entropy(ops, ops.slice(params, self.size, 2 * self.size))

    def imitation_loss(self, ops: Ops, params: Array, target: Array) -> Array:
        """Mean squared error of the squashed action in [-1, 1] units."""
        error = ops.sub(ops.tanh(ops.slice(params, 0, self.size)), self._unit(ops, target))
        return ops.div(ops.sum(ops.mul(error, error)), ops.const(float(self.size)))

    def spread_loss(self, ops: Ops, params: Array, behaviour: Array) -> Array:
        """Mean Gaussian negative log-likelihood (constant dropped) of the behaviour's pre-tanh actions."""
        a = self.size
        log_std = ops.slice(params, a, 2 * a)
        z = ops.div(ops.sub(self._pre(ops, behaviour, SPREAD_FIT_CLIP), ops.slice(params, 0, a)), ops.exp(log_std))
        nll = ops.add(log_std, ops.mul(ops.const(0.5), ops.mul(z, z)))
        return ops.div(ops.sum(nll), ops.const(float(a)))

    def check(self, value: Any, num_envs: int, what: str = "action") -> tuple[np.ndarray, bool]:
        array, single = as_rows(value, num_envs, self.shape, what)
        return check_finite(array, what), single
