"""The per-row episode bookkeeping both runners share (numpy only, no torch).

A runner asks :class:`RolloutState` which token each row feeds next (``begin_step``), runs
its model, then reports the actions taken (``end_step``). This is where the rollout
contract lives: BOS handling, the one-step-late pairing of states and actions, row resets,
the cache layout and every check on what the caller passes in.

Cache layout. The batch shares one cache of ``kv_cache_max_len`` slots used as a ring: each
step every row writes its new token into the same slot, ``written % kv``, which holds the
oldest entry once the ring is full. Positions are shared too: the new token of every row is
at position ``min(written, kv)``, where ``written`` counts the tokens in the batch cache
(this is what the reference runtime does; the batched trace shows that a row restarted by
``reset_rows`` keeps the batch's position count rather than starting again at 0). A per-row
validity mask hides what a row must not see: entries from before its reset and its own
discarded BOS entry. When no row holds a valid entry (after a full reset's first step with
BOS discard) the cache is empty again and ``written`` returns to 0.

``positions="per_row"`` instead places each row's token at min(its own valid entries, kv),
so every row behaves exactly like a one-env runner whatever the other rows do; batched
evaluation uses it to reproduce the one-env returns seed by seed.

A ring may have ``kv + 1`` slots (the ONNX ``attention`` graph writes the new token before
attending); the cache semantics stay the same: the new token sees at most kv cached
entries plus itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from gptrl.bundle.schema import BOS_CACHE_MODES, BundleConfig
from gptrl.contract import POSITION_MODES, BosCacheMode, PositionMode, StepInfo
from gptrl.errors import NonFiniteOutputError

# Serving limits (docs/format.md, "Limits"), checked before anything is allocated.
MAX_KV_CACHE_LEN = 65_536
MAX_NUM_ENVS = 65_536
MAX_CACHE_BYTES = 8 << 30  # keys + values of every layer, float32
MAX_ABS_OBSERVATION = 1e12  # larger finite inputs overflow float32 inside the network (normaliser, norms)


def check_batch(value: Any, num_envs: int, width: int, what: str) -> tuple[np.ndarray, bool]:
    """``value`` as float32 [num_envs, width] and whether the caller passed one unbatched row; refuses a wrong
    shape, NaN or inf, and values past ``MAX_ABS_OBSERVATION`` with a ValueError naming the rows."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numeric, got {type(value).__name__}") from None
    b = num_envs
    if array.shape == (width,) and b == 1:
        array, single = array[None], True
    elif array.shape == (b, width):
        single = False
    else:
        expected = f"({width},) or (1, {width})" if b == 1 else f"({b}, {width})"
        raise ValueError(f"{what} has shape {array.shape}, expected {expected} for num_envs={b}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} holds non-finite values (NaN or inf) in rows {np.flatnonzero(bad).tolist()}")
    huge = (np.abs(array) > MAX_ABS_OBSERVATION).any(axis=1)
    if huge.any():
        raise ValueError(f"{what} holds values beyond +-{MAX_ABS_OBSERVATION:g} in rows "
                         f"{np.flatnonzero(huge).tolist()} (they would overflow float32 inside the network)")
    return array, single


def check_mask(done_mask: Any, num_envs: int) -> np.ndarray:
    """A [num_envs] bool mask from booleans or 0/1."""
    mask = np.asarray(done_mask)
    if mask.shape != (num_envs,):
        raise ValueError(f"done_mask has shape {mask.shape}, expected ({num_envs},) (one flag per env)")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"done_mask must hold booleans or 0/1, got {mask.tolist()}")
        mask = mask.astype(bool)
    return mask


def check_outputs(actions: np.ndarray, value: np.ndarray, term: np.ndarray | None, steps: np.ndarray) -> None:
    """Raise NonFiniteOutputError naming the rows and steps where a policy produced NaN or inf."""
    bad = ~np.isfinite(actions).all(axis=1) | ~np.isfinite(value)
    if term is not None:
        bad |= ~np.isfinite(term)
    if bad.any():
        rows = np.flatnonzero(bad).tolist()
        where = ", ".join(f"row {r} at step {int(steps[r])}" for r in rows[:8])
        raise NonFiniteOutputError(
            f"the policy produced a non-finite output (NaN or inf) in {where}; its inputs or weights are out "
            "of range (the step was not taken)")


class PolicyBase:
    """What every runner shares on top of ``_act_with_info``: ``act`` and Stable-Baselines3's ``predict``."""

    num_envs: int

    def act_with_info(self, obs: Any, reward: Any = None) -> tuple[np.ndarray, StepInfo]:
        raise NotImplementedError

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        raise NotImplementedError

    def _never_started(self) -> np.ndarray:
        """[num_envs] bool: rows that have no episode yet."""
        raise NotImplementedError

    def act(self, obs: Any, reward: Any = None) -> np.ndarray:
        """The action for the current step: float32 [A] for one env, [B, A] for a batch."""
        return self.act_with_info(obs, reward)[0]

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        """Stable-Baselines3's convention: ``(action, state)``; ``episode_start`` flags new episodes.

        A row flagged in ``episode_start`` (or never started) takes this observation as its
        first state, so SB3's ``evaluate_policy`` can drive the policy through a VecEnv.
        The recurrent ``state`` lives inside the policy and is passed back unchanged.
        """
        if not deterministic:
            raise ValueError("this policy only produces deterministic actions (tanh of the mean); "
                             "pass deterministic=True")
        if episode_start is None:
            starts = np.zeros(self.num_envs, dtype=bool)
        else:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
        if starts.shape != (self.num_envs,):
            raise ValueError(f"episode_start has shape {np.shape(episode_start)}, expected ({self.num_envs},)")
        starts = starts | self._never_started()
        if starts.any():
            self.reset_rows(starts)
        return self.act(observation), state


class RowPhase(IntEnum):
    NOT_STARTED = 0  # never reset: acting is an error
    AWAIT_OBS = 1  # reset_rows flagged it: the next observation is its s0
    BOS_READY = 2  # its BOS token (s0, 0, 1) runs on the next step
    RUNNING = 3  # its next token is the completed (s_{t-1}, a_{t-1}, 0)


def check_count(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value > limit:
        raise ValueError(f"{name}={value} exceeds gptrl's limit of {limit} (docs/format.md, Limits)")
    return int(value)


def resolve_serving(config: BundleConfig, kv_cache_max_len: int | None, bos_cache_mode: str | None,
                    num_envs: int = 1) -> tuple[int, BosCacheMode]:
    """Apply defaults to the serving settings and refuse those the architecture (or memory) cannot serve."""
    kv = check_count("kv_cache_max_len", config.context_length if kv_cache_max_len is None else kv_cache_max_len,
                      MAX_KV_CACHE_LEN)
    num_envs = check_count("num_envs", num_envs, MAX_NUM_ENVS)
    m = config.model
    cache_bytes = 2 * m.num_layers * num_envs * (kv + 1) * m.d_model * 4
    if cache_bytes > MAX_CACHE_BYTES:
        raise ValueError(
            f"num_envs={num_envs} x kv_cache_max_len={kv} needs a {cache_bytes / 2**30:.1f} GiB key/value cache "
            f"({m.num_layers} layers, d_model {m.d_model}), past gptrl's limit of {MAX_CACHE_BYTES / 2**30:.0f} GiB; "
            "use fewer rows or a shorter cache")
    limit = config.model.max_kv_cache_len()
    if limit is not None and kv > limit:
        raise ValueError(
            f"kv_cache_max_len={kv} cannot be served by this GPT2 policy: once the cache is full every "
            f"token is written at position {kv}, but its learned position table has only "
            f"max_position_embeddings={config.model.max_position_embeddings} rows (positions 0..{limit}); "
            f"use kv_cache_max_len <= {limit}"
        )
    mode = bos_cache_mode or config.bos_cache_mode or "discard"
    if mode not in BOS_CACHE_MODES:
        raise ValueError(f"bos_cache_mode must be one of {BOS_CACHE_MODES}, got {bos_cache_mode!r}")
    return kv, mode  # type: ignore[return-value]


@dataclass
class StepInputs:
    """The token each row feeds this step, and how to shape what goes back to the caller."""

    states: np.ndarray  # [B, S] float32, raw (un-normalised)
    actions: np.ndarray  # [B, A] float32, env units (zeros on BOS rows)
    is_bos: np.ndarray  # [B] bool
    obs: np.ndarray  # [B, S] float32, this call's observations
    single: bool  # the caller passed one unbatched observation

    def shape_out(self, array: np.ndarray | None) -> np.ndarray | None:
        """[B, ...] -> [...] for an unbatched caller."""
        if array is None:
            return None
        return array[0] if self.single else array


class RolloutState:
    def __init__(
        self,
        num_envs: int,
        state_dim: int,
        action_dim: int,
        kv_cache_max_len: int,
        bos_cache_mode: BosCacheMode,
        *,
        ring_size: int | None = None,
        positions: PositionMode = "shared",
    ):
        num_envs = check_count("num_envs", num_envs, MAX_NUM_ENVS)
        self.num_envs, self.state_dim, self.action_dim = int(num_envs), state_dim, action_dim
        self.kv_cache_max_len, self.bos_cache_mode = kv_cache_max_len, bos_cache_mode
        self.ring_size = ring_size or kv_cache_max_len
        self.positions = positions
        self.phase = np.full(num_envs, RowPhase.NOT_STARTED, dtype=np.int8)
        self.pending_state = np.zeros((num_envs, state_dim), np.float32)
        self.pending_action = np.zeros((num_envs, action_dim), np.float32)
        self.written = 0  # tokens in the batch cache since it was last empty
        self.valid = np.zeros((num_envs, self.ring_size), dtype=bool)  # [B, ring] row may attend to slot
        self.steps = np.zeros(num_envs, dtype=np.int64)  # acts since each row's episode began (for messages)

    @property
    def positions(self) -> PositionMode:
        return self._positions

    @positions.setter
    def positions(self, mode: PositionMode) -> None:
        if mode not in POSITION_MODES:
            raise ValueError(f"positions must be one of {POSITION_MODES}, got {mode!r}")
        self._positions = mode

    def position_ids(self) -> np.ndarray:
        """[B] int64 positions of the next tokens."""
        kv = self.kv_cache_max_len
        if self._positions == "per_row":
            valid = self.valid.copy()
            if self.ring_size > kv:
                valid[:, self.slot] = False  # a kv+1 ring evicts this entry before the new token attends
            return np.minimum(valid.sum(axis=1), kv).astype(np.int64)
        return np.full(self.num_envs, min(self.written, kv), dtype=np.int64)

    @property
    def slot(self) -> int:
        """Ring slot the next token goes to: a free one, or the oldest entry once full."""
        return self.written % self.ring_size

    # -- checks -----------------------------------------------------------------

    def _batch(self, value: Any, width: int, what: str) -> tuple[np.ndarray, bool]:
        return check_batch(value, self.num_envs, width, what)

    def check_actions(self, action: Any, step: StepInputs) -> np.ndarray:
        actions, single = self._batch(action, self.action_dim, "action")
        if single != step.single:
            raise ValueError(f"action has shape {np.shape(action)}, but the observation was "
                             f"{'un' if step.single else ''}batched")
        return actions

    # -- episode control --------------------------------------------------------

    def reset(self, obs: Any) -> None:
        states, _ = self._batch(obs, self.state_dim, "observation")
        self.pending_state[:] = states
        self.pending_action[:] = 0.0
        self.phase[:] = RowPhase.BOS_READY
        self.written = 0
        self.valid[:] = False
        self.steps[:] = 0

    def reset_rows(self, done_mask: Any) -> None:
        mask = check_mask(done_mask, self.num_envs)
        self.phase[mask] = RowPhase.AWAIT_OBS
        self.pending_action[mask] = 0.0
        self.valid[mask] = False
        self.steps[mask] = 0

    # -- stepping ---------------------------------------------------------------

    def begin_step(self, obs: Any) -> StepInputs:
        idle = np.flatnonzero(self.phase == RowPhase.NOT_STARTED)
        if idle.size:
            raise RuntimeError(
                f"act()/observe() called before reset(): rows {idle.tolist()} have no episode; "
                "call reset(first_observation) first"
            )
        obs32, single = self._batch(obs, self.state_dim, "observation")
        fresh = self.phase == RowPhase.AWAIT_OBS
        self.pending_state[fresh] = obs32[fresh]
        self.phase[fresh] = RowPhase.BOS_READY
        is_bos = self.phase == RowPhase.BOS_READY
        return StepInputs(self.pending_state.copy(), self.pending_action.copy(), is_bos, obs32, single)

    def end_step(self, step: StepInputs, actions_taken: np.ndarray) -> None:
        """Record that every row wrote its token into ``slot`` and took ``actions_taken`` [B, A]."""
        slot = self.slot
        self.valid[:, slot] = True
        if self.bos_cache_mode == "discard":
            self.valid[step.is_bos, slot] = False  # the BOS entry is dropped right after its act
        self.written += 1
        if not self.valid.any():
            self.written = 0  # nothing left to attend to: the cache is empty again
        running = ~step.is_bos
        self.pending_state[running] = step.obs[running]  # BOS rows keep s0: it pairs with a0
        self.pending_action[:] = actions_taken
        self.phase[:] = RowPhase.RUNNING
        self.steps += 1

    def check_outputs(self, actions: np.ndarray, value: np.ndarray, term: np.ndarray | None) -> None:
        check_outputs(actions, value, term, self.steps)


class CachedPolicy(PolicyBase):
    """The public contract both runners share; subclasses implement ``_forward``.

    ``_forward(step)`` runs the model on ``step``'s tokens against the cache (at
    ``self.state.slot`` / ``self.state.position_ids()``), stores the new keys and values,
    and returns (actions [B, A], value [B], termination_prob [B] or None) as numpy.
    """

    state: RolloutState

    @property
    def num_envs(self) -> int:
        return self.state.num_envs

    @property
    def kv_cache_max_len(self) -> int:
        return self.state.kv_cache_max_len

    @property
    def bos_cache_mode(self) -> str:
        return self.state.bos_cache_mode

    @property
    def positions(self) -> PositionMode:
        """"shared" (the reference's batch behaviour) or "per_row" (every row as its own runner)."""
        return self.state.positions

    @positions.setter
    def positions(self, mode: PositionMode) -> None:
        self.state.positions = mode

    def _forward(self, step: StepInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    # -- episode control --------------------------------------------------------

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start a new episode in every row from its first observation ([S] or [B, S]).

        ``target_return`` is accepted so one loop drives every family; a causal policy is not return-conditioned.
        """
        self.state.reset(obs)

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        """Restart the flagged rows; their next observation (act/observe) becomes their s0."""
        self.state.reset_rows(done_mask)

    # -- stepping ---------------------------------------------------------------

    def _never_started(self) -> np.ndarray:
        return self.state.phase == RowPhase.NOT_STARTED

    def act_with_info(self, obs: Any, reward: Any = None) -> tuple[np.ndarray, StepInfo]:
        """``act`` plus the value estimate and termination probability of the same token (``reward`` is ignored).

        A NaN or infinite output raises :class:`gptrl.errors.NonFiniteOutputError` naming the row and step.
        """
        step = self.state.begin_step(obs)
        actions, value, term = self._forward(step)
        self.state.check_outputs(actions, value, term)
        self.state.end_step(step, actions)
        return step.shape_out(actions), {"value": step.shape_out(value), "termination_prob": step.shape_out(term)}

    def observe(self, obs: Any, action: Any) -> np.ndarray:
        """Advance like ``act(obs)``, but record ``action`` as the one taken instead of the policy's.

        Use it when something else chose the action (exploration, a safety override, a
        teacher): the cache then holds what really happened. Returns the policy's own action (what ``act``
        would have returned), so a teacher-forced replay can compare it step by step.
        """
        step = self.state.begin_step(obs)
        taken = self.state.check_actions(action, step)
        actions, value, term = self._forward(step)
        self.state.check_outputs(actions, value, term)
        own = np.array(step.shape_out(actions), copy=True)
        self.state.end_step(step, taken)
        return own
