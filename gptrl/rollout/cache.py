"""The key/value-cache rollout of the Causal GPT-RL family, shared by the torch runner and the runtime (numpy only).

A runner asks :class:`RolloutState` which token each row feeds next (``begin_step``), runs
its model, then reports the actions taken (``end_step``). This is where the rollout
contract lives: BOS handling, the one-step-late pairing of states and actions, the cache layout and the positions;
row resets are ``gptrl.rollout.rows``, the checks on inputs the codecs'.

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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gptrl.bundle.codecs import ActionCodec, ObservationEncoder
from gptrl.bundle.schema import BundleConfig
from gptrl.contract import POSITION_MODES, BosCacheMode, PositionMode, StepInfo
from gptrl.rollout.checks import check_outputs
from gptrl.rollout.policy import PolicyBase
from gptrl.rollout.rows import Rows, RowStep


@dataclass
class StepInputs:
    """The token each row feeds this step, and how to shape what goes back to the caller."""

    states: np.ndarray  # [B, S] raw (un-normalised) observations of the token
    actions: np.ndarray  # [B, *action] env units (zeros on BOS rows)
    is_bos: np.ndarray  # [B] bool
    rows: RowStep
    uniform: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # [B, noise] in [0, 1)
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [B] rows whose action is a sample

    @property
    def single(self) -> bool:
        return self.rows.single

    def shape_out(self, array: np.ndarray | None) -> np.ndarray | None:
        return self.rows.shape_out(array)


@dataclass
class StepOutputs:
    """What a model gives for one step: [B, ...] numpy arrays."""

    actions: np.ndarray  # the greedy action, or a sample where the row samples
    value: np.ndarray
    termination_prob: np.ndarray | None
    dist: np.ndarray | None = None  # [B, params]: the distribution's parameters
    log_prob: np.ndarray | None = None  # [B] of ``actions``

    def info(self, step: StepInputs) -> StepInfo:
        out = step.shape_out
        return {"value": out(self.value), "termination_prob": out(self.termination_prob), "dist": out(self.dist),
                "log_prob": out(self.log_prob)}


class RolloutState:
    def __init__(
        self,
        num_envs: int,
        observation: ObservationEncoder,
        action: ActionCodec,
        kv_cache_max_len: int,
        bos_cache_mode: BosCacheMode,
        *,
        ring_size: int | None = None,
        positions: PositionMode = "shared",
    ):
        self.rows = Rows(num_envs, observation)
        self.num_envs, self.action = self.rows.num_envs, action
        self.kv_cache_max_len, self.bos_cache_mode = kv_cache_max_len, bos_cache_mode
        self.ring_size = ring_size or kv_cache_max_len
        self.positions = positions
        B = self.num_envs
        self.pending_state = np.zeros((B, observation.size), observation.dtype)  # s_{t-1} (s0 for a BOS token)
        self.pending_action = np.zeros((B, *action.shape), action.dtype)  # a_{t-1}
        self.written = 0  # tokens in the batch cache since it was last empty
        self.valid = np.zeros((B, self.ring_size), dtype=bool)  # [B, ring] row may attend to slot

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

    # -- episode control --------------------------------------------------------

    def reset(self, obs: Any) -> None:
        self.rows.reset(obs)
        self.written = 0
        self.valid[:] = False

    def reset_rows(self, done_mask: Any) -> None:
        mask = self.rows.reset_rows(done_mask)
        self.valid[mask] = False

    # -- stepping ---------------------------------------------------------------

    def begin_step(self, obs: Any) -> StepInputs:
        rows = self.rows.begin(obs)
        begins = rows.begins
        self.pending_state[begins] = rows.obs[begins]
        self.pending_action[begins] = 0
        return StepInputs(self.pending_state.copy(), self.pending_action.copy(), begins, rows)

    def check_actions(self, action: Any, step: StepInputs) -> np.ndarray:
        actions, single = self.action.check(action, self.num_envs)
        if single != step.single:
            raise ValueError(f"action has shape {np.shape(action)}, but the observation was "
                             f"{'un' if step.single else ''}batched")
        return actions

    def end_step(self, step: StepInputs, actions_taken: np.ndarray) -> None:
        """Record that every row wrote its token into ``slot`` and took ``actions_taken`` [B, *action]."""
        slot = self.slot
        self.valid[:, slot] = True
        if self.bos_cache_mode == "discard":
            self.valid[step.is_bos, slot] = False  # the BOS entry is dropped right after its act
        self.written += 1
        if not self.valid.any():
            self.written = 0  # nothing left to attend to: the cache is empty again
        running = ~step.is_bos
        self.pending_state[running] = step.rows.given[running]  # BOS rows keep s0: it pairs with a0
        self.pending_action[:] = actions_taken
        self.rows.end()

    def check_outputs(self, out: StepOutputs) -> None:
        check_outputs(out.actions, out.value, out.termination_prob, self.rows.steps)


class CachedPolicy(PolicyBase):
    """The public contract both runners share; subclasses implement ``_forward``.

    ``_forward(step)`` runs the model on ``step``'s tokens against the cache (at ``self.state.slot`` /
    ``self.state.position_ids()``), stores the new keys and values, and returns :class:`StepOutputs` (the action is a
    sample from ``step.uniform`` where ``step.sample`` says so).
    """

    state: RolloutState
    config: BundleConfig

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
    def stochastic(self) -> bool:
        return self.config.action.stochastic

    @property
    def positions(self) -> PositionMode:
        """"shared" (the reference's batch behaviour) or "per_row" (every row as its own runner)."""
        return self.state.positions

    @positions.setter
    def positions(self, mode: PositionMode) -> None:
        self.state.positions = mode

    def _forward(self, step: StepInputs) -> StepOutputs:
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
        return ~self.state.rows.started

    def _step(self, obs: Any, deterministic: bool) -> tuple[StepInputs, StepOutputs]:
        step = self.state.begin_step(obs)
        step.uniform, step.sample = self.uniforms(self.config.action.noise_width, deterministic)
        out = self._forward(step)
        self.state.check_outputs(out)
        return step, out

    def act_with_info(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> tuple[np.ndarray, StepInfo]:
        """``act`` plus the value estimate, termination probability, the distribution's parameters and the
        log-probability of the action given back, of the same token (``reward`` is ignored).

        A NaN or infinite output raises :class:`gptrl.errors.NonFiniteOutputError` naming the row and step.
        """
        step, out = self._step(obs, deterministic)
        self.state.end_step(step, out.actions)
        return step.shape_out(out.actions), out.info(step)

    def observe(self, obs: Any, action: Any) -> np.ndarray:
        """Advance like ``act(obs)``, but record ``action`` as the one taken instead of the policy's.

        Use it when something else chose the action (exploration, a safety override, a
        teacher): the cache then holds what really happened. Returns the policy's own (greedy) action, so a
        teacher-forced replay can compare it step by step.
        """
        step = self.state.begin_step(obs)
        taken = self.state.check_actions(action, step)
        step.uniform, step.sample = self.uniforms(self.config.action.noise_width, True)
        out = self._forward(step)
        self.state.check_outputs(out)
        own = np.array(step.shape_out(out.actions), copy=True)
        self.state.end_step(step, taken)
        return own
