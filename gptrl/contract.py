"""The typed public contract: the ``Policy`` protocol every runner satisfies, and the typed results it returns.

Both halves of gptrl implement :class:`Policy`: the torch ``gptrl.exporter.PolicyRunner`` and the torch-free
``gptrl.runtime.OnnxPolicy``. ``gptrl.evaluation`` drives anything with the smaller :class:`Actor` surface.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol, TypedDict, get_args, runtime_checkable

import numpy as np

from gptrl.bundle.schema import BOS_CACHE_MODES, BosCacheMode

PositionMode = Literal["shared", "per_row"]
POSITION_MODES: tuple[str, ...] = get_args(PositionMode)
GraphVariant = Literal["attention", "portable", "stateful"]
Backend = Literal["onnx", "torch"]

__all__ = ["BOS_CACHE_MODES", "POSITION_MODES", "Actor", "Backend", "BosCacheMode", "EpisodeStats", "EvalResult",
           "GraphVariant", "Policy", "PositionMode", "StepInfo"]


class StepInfo(TypedDict):
    """What ``act_with_info`` returns beside the action: float32 [B] (or scalars' shape [] for one env)."""

    value: np.ndarray
    termination_prob: np.ndarray | None  # None for policies without a termination head
    dist: np.ndarray | None  # [B, params] the distribution's parameters (the codec's heads); None: no distribution
    log_prob: np.ndarray | None  # [B] log-probability of the action given back; None: no distribution


@runtime_checkable
class Actor(Protocol):
    """The least a controller needs: ``gptrl.evaluation`` drives any object like this.

    One loop drives every family: ``reset(obs, target_return=None)`` and ``act(obs, reward=None)``, where ``reward``
    is the reward the env returned with ``obs``. Return-conditioned policies (Decision Transformers) read both and
    say so in ``return_conditioned``; the others accept and ignore them.
    """

    return_conditioned: bool

    @property
    def num_envs(self) -> int: ...

    def reset(self, obs: Any, target_return: Any = None) -> None: ...

    def act(self, obs: Any, reward: Any = None) -> np.ndarray: ...


@runtime_checkable
class Policy(Actor, Protocol):
    """A stateful policy over ``num_envs`` rows, torch or torch-free (see docs/format.md, "Rollout contract").

    ``stochastic``: its head describes a distribution, so ``act(obs, deterministic=False)`` (and ``predict``) samples
    from it with uniforms from the generator ``seed(s)`` seeds; the action's log-probability and the distribution's
    parameters come back in ``StepInfo``. Otherwise asking for a sample is a ValueError.
    """

    @property
    def stochastic(self) -> bool: ...

    def act(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> np.ndarray: ...

    def act_with_info(self, obs: Any, reward: Any = None, *,
                      deterministic: bool = True) -> tuple[np.ndarray, StepInfo]: ...

    def seed(self, seed: Any = None) -> None: ...

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None: ...

    def observe(self, obs: Any, action: Any) -> np.ndarray: ...

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


def conditioning(actor: Any, target_return: Any) -> bool:
    """Whether ``actor`` is return-conditioned (a Decision Transformer: a target at reset, each step's reward). A
    target for one that is not is refused rather than ignored: every command that takes a target uses this rule."""
    conditioned = bool(actor.return_conditioned)
    if target_return is not None and not conditioned:
        raise ValueError(f"{type(actor).__name__} is not return-conditioned: it takes no target_return")
    return conditioned


class _FieldMapping(Mapping[str, Any]):
    """Read-only mapping access to a dataclass's fields, so ``result["return_mean"]`` keeps working."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class EpisodeStats(_FieldMapping):
    """Episode statistics (population std, as numpy's default)."""

    num_episodes: int
    returns: list[float]
    lengths: list[int]
    return_mean: float
    return_std: float
    length_mean: float
    length_std: float

    @classmethod
    def from_episodes(cls, returns: list[float], lengths: list[int], **more: Any) -> Any:
        if not returns:
            raise ValueError("no episodes to summarise")
        r, n = np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
        return cls(len(returns), [float(x) for x in returns], [int(x) for x in lengths], float(r.mean()),
                   float(r.std()), float(n.mean()), float(n.std()), **more)


@dataclass(frozen=True)
class EvalResult(EpisodeStats):
    """``EpisodeStats`` plus the normalised score 100 (R - random) / (expert - random) (None without references)."""

    normalized_score: float | None = None
