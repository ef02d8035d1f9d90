"""What an action codec and an observation encoder are: the interface every type implements once, in the backend-free
ops of ``gptrl.bundle.codecs.ops``.

An **action codec** says how a policy's actions enter and leave the network: the feedback features a token carries
for the action taken, the policy heads (their sizes, under the format's tensor names ``output_head.<k>``), and the
distribution those heads describe (its parameters, greedy action, a sample from uniforms, log-probability and
entropy). An **observation encoder** says how an observation becomes the token's state features and what a valid
observation is. docs/format.md ("Action and observation types") states the math of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.ops import Array, Ops

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

MAX_ABS_OBSERVATION = 1e12  # larger finite float inputs overflow float32 inside the network (normaliser, norms)


def rows_where(bad: np.ndarray) -> list[int]:
    """The row indices a check failed in (for messages)."""
    return np.flatnonzero(bad).tolist()


def as_rows(value: Any, num_envs: int, shape: tuple[int, ...], what: str) -> tuple[np.ndarray, bool]:
    """``value`` as an array [num_envs, *shape] and whether the caller passed one unbatched row (num_envs == 1)."""
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numeric, got {type(value).__name__}") from None
    if array.shape == shape and num_envs == 1:
        array, single = array[None], True
    elif array.shape == (num_envs, *shape):
        single = False
    else:
        expected = f"{shape} or {(1, *shape)}" if num_envs == 1 else f"{(num_envs, *shape)}"
        raise ValueError(f"{what} has shape {array.shape}, expected {expected} for num_envs={num_envs}")
    return array, single


def check_finite(array: np.ndarray, what: str) -> np.ndarray:
    """float32 rows [B, ...] that are finite and within +-MAX_ABS_OBSERVATION, or a ValueError naming the rows."""
    array = np.asarray(array, np.float32)
    flat = array.reshape(len(array), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} holds non-finite values (NaN or inf) in rows {rows_where(bad)}")
    huge = (np.abs(flat) > MAX_ABS_OBSERVATION).any(axis=1)
    if huge.any():
        raise ValueError(f"{what} holds values beyond +-{MAX_ABS_OBSERVATION:g} in rows {rows_where(huge)} "
                         "(they would overflow float32 inside the network)")
    return array


def check_integers(array: np.ndarray, count: int, what: str, name: str) -> np.ndarray:
    """int64 rows whose every entry is a whole number in [0, count), or a ValueError naming the rows."""
    values = np.asarray(array)
    if values.dtype.kind == "b" or (values.dtype.kind == "f" and not np.all(np.isfinite(values))):
        raise ValueError(f"{what} must hold integers (0 <= {name} < {count}), got dtype {values.dtype}")
    flat = values.reshape(len(values), -1)
    bad = (flat != np.round(flat)).any(axis=1) if values.dtype.kind == "f" else np.zeros(len(values), bool)
    bad |= ((flat < 0) | (flat >= count)).any(axis=1)
    if bad.any():
        raise ValueError(f"{what} holds values outside 0 <= {name} < {count} (or not whole numbers) in rows "
                         f"{rows_where(bad)}: {flat[bad][:1].tolist()}")
    return values.astype(np.int64)


@dataclass(frozen=True)
class SpecType:
    """What every action and observation type reads and writes in config.json: its spec entries and its space."""

    kind: ClassVar[str]  # the registry key, as docs and errors name it
    # The name a config lists in ``requires_capabilities`` when it holds this type: None for the Causal GPT-RL
    # format's own types; gptrl's extensions name one, so a runtime that does not know the type refuses the bundle
    # instead of misreading it (docs/format.md, "gptrl's extension").
    capability: ClassVar[str | None] = None

    @classmethod
    def matches(cls, spec: dict[str, Any]) -> bool:
        """Whether this type reads a spec entry (of ``action_specs`` or ``state_specs``) like ``spec``: by default,
        one whose ``type`` is this type's ``kind``."""
        return spec.get("type") == cls.kind

    @staticmethod
    def one_entry(readers: list[JsonReader], what: str) -> JsonReader:
        """The single spec entry of a type that takes one (``what`` says so in the error about a second)."""
        if len(readers) != 1:
            raise readers[1].error(f"key '{readers[1].prefix.rstrip('.')}': {what}")
        return readers[0]

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> SpecType:
        """The type from every spec entry (each a reader naming its key in errors)."""
        raise NotImplementedError

    @classmethod
    def from_space(cls, space: Any) -> SpecType | None:
        """The type for a gymnasium space, or None when this type does not describe it."""
        return None

    def specs(self) -> list[dict[str, Any]]:
        """The spec entries as config.json writes them."""
        raise NotImplementedError

    def container(self) -> dict[str, Any]:
        """The serialised gymnasium space."""
        raise NotImplementedError

    def check_container(self, container: dict[str, Any], key: str) -> str | None:
        """Why ``container`` (config key ``key``) does not describe this type (None: it does)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ActionCodec(SpecType):
    """One action type. Subclasses are frozen dataclasses holding what the spec says (bounds, counts)."""

    stochastic: ClassVar[bool] = True

    def format_buffers(self) -> dict[str, np.ndarray]:
        """Buffers the format writes beside the weights for this type (read by no math)."""
        return {}

    # -- shapes -----------------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """One row's action as the env takes it."""
        raise NotImplementedError

    dtype: ClassVar[str] = "float32"  # numpy name of an action

    @property
    def size(self) -> int:
        """Entries of one row's action."""
        return int(np.prod(self.shape))

    @property
    def width(self) -> int:
        """Features of the action slot in a token (the feedback encoding)."""
        raise NotImplementedError

    @property
    def heads(self) -> dict[int, int]:
        """Policy heads: format index k (``output_head.<k>``) -> output size."""
        raise NotImplementedError

    @property
    def param_width(self) -> int:
        """Distribution parameters per row (the heads' outputs, concatenated in index order)."""
        return sum(self.heads.values())

    @property
    def noise_width(self) -> int:
        """Uniforms in [0, 1) per row that one sample consumes."""
        raise NotImplementedError

    # -- the math (any backend) ---------------------------------------------------------------------------------------
    def params(self, ops: Ops, heads: dict[int, Array]) -> Array:
        """Head outputs -> distribution parameters [..., param_width] (ranges clipped where the type says so)."""
        return ops.concat(*(heads[k] for k in sorted(self.heads)))

    def feedback(self, ops: Ops, action: Array) -> Array:
        """The action taken, in env units -> the token's action features [..., width]."""
        raise NotImplementedError

    # An action is drawn as a *latent* (the pre-tanh value of a tanh Box, a Discrete's index), which the log-
    # probability reads: computed from the latent it stays exact where the action itself saturates in float32.
    def greedy_latent(self, ops: Ops, params: Array) -> Array:
        """The deterministic choice (it reads only the first head's columns)."""
        raise NotImplementedError

    def sample_latent(self, ops: Ops, params: Array, uniform: Array) -> Array:
        """A choice drawn from the distribution by uniforms [..., noise_width] in [0, 1)."""
        raise NotImplementedError

    def action_of(self, ops: Ops, latent: Array) -> Array:
        """Latent -> the action in env units."""
        return latent

    def latent_of(self, ops: Ops, action: Array) -> Array:
        """An action in env units -> its latent (for actions chosen elsewhere)."""
        return action

    def latent_log_prob(self, ops: Ops, params: Array, latent: Array) -> Array:
        """Log-probability (density) of the action a latent gives [...]."""
        raise NotImplementedError

    def greedy(self, ops: Ops, params: Array) -> Array:
        """The deterministic action."""
        return self.action_of(ops, self.greedy_latent(ops, params))

    def sample(self, ops: Ops, params: Array, uniform: Array) -> Array:
        """An action drawn by uniforms [..., noise_width] in [0, 1)."""
        return self.action_of(ops, self.sample_latent(ops, params, uniform))

    def log_prob(self, ops: Ops, params: Array, action: Array) -> Array:
        """Log-probability (density) of an action in env units [...]."""
        return self.latent_log_prob(ops, params, self.latent_of(ops, action))

    def entropy(self, ops: Ops, params: Array) -> Array:
        """Entropy of the distribution [...]."""
        raise NotImplementedError

    # -- behaviour cloning ------------------------------------------------------------------------------------------
    def imitation_loss(self, ops: Ops, params: Array, target: Array) -> Array:
        """Per-token loss that pulls the greedy action towards an expert's ``target`` [...]."""
        raise NotImplementedError

    def spread_loss(self, ops: Ops, params: Array, behaviour: Array) -> Array | None:
        """Per-token loss that fits the distribution's spread to the behaviour's actions (with the greedy part held
        fixed by the caller); None where the type has no separate spread."""
        return None

    # -- the runtime's input check ------------------------------------------------------------------------------------
    def check(self, value: Any, num_envs: int, what: str = "action") -> tuple[np.ndarray, bool]:
        """Actions a caller passes (``observe``) as [num_envs, *shape] of ``dtype``, and whether unbatched."""
        raise NotImplementedError


@dataclass(frozen=True)
class ObservationEncoder(SpecType):
    """One observation type. Subclasses are frozen dataclasses holding what the state specs say."""

    normalized: ClassVar[bool] = False  # whether the format's state normaliser applies
    dtype: ClassVar[str] = "float32"  # numpy name of an observation entry as the graphs take it

    @property
    def size(self) -> int:
        """Entries of one observation."""
        raise NotImplementedError

    @property
    def width(self) -> int:
        """Features of the state slot in a token."""
        raise NotImplementedError

    def features(self, ops: Ops, obs: Array, mean: Array | None = None, std: Array | None = None,
                 params: dict[str, Array] | None = None) -> Array:
        """Observations [..., size] -> the token's state features [..., width] (``mean``/``std``: the normaliser;
        ``params``: the encoder's own weights by the names of ``tensors``, in the backend's arrays)."""
        raise NotImplementedError

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """The encoder's own learned weights: name -> shape. They are stored as ``state_encoder.<name>`` in
        model.safetensors; most types have none."""
        return {}

    def fold(self, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
             std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A Linear whose first rows read the features, with the normaliser folded in (float64). Without a
        normaliser: unchanged."""
        return weight, bias

    def check(self, value: Any, num_envs: int, what: str = "observation") -> tuple[np.ndarray, bool]:
        """What a caller passes as [num_envs, size] of ``dtype`` and whether unbatched; refuses what the network
        cannot read with a ValueError naming the rows."""
        raise NotImplementedError

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Synthetic observations from values in [-1, 1] (checks that need no simulator: ``gptrl.synthetic``)."""
        raise NotImplementedError
