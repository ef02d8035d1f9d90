"""The Decision Transformer's rollout state (numpy only): the last K timesteps of every row, as the windowed model
reads them. Shared by the torch runner and the torch-free runtime, like ``gptrl.rollout`` for the causal family.

Per row the window holds, oldest first and left-padded: normalised states, the actions taken (zeros for the current
step, whose action is being asked for), returns-to-go in model units (env return / scale), timesteps (capped at
max_ep_len - 1) and a mask (1 = a real step). It follows the Hugging Face Decision Transformer post's evaluation
loop exactly:

- ``reset(s0, target)`` starts an episode: step 0 is (s0, 0, target / scale, t = 0).
- ``act(obs, reward)`` returns a_t. The first act after a reset uses step 0 (its ``obs`` and ``reward`` are not
  read); each later act appends step t = (obs, 0, R_{t-1} - reward / scale, t), where ``reward`` is the reward the
  env returned with ``obs``. The action the model gives is written into the step's action slot.
- ``reset_rows(mask, target)`` restarts rows: the observation each receives in its next act is its s0.

Which rows begin an episode at a step is ``gptrl.rollout.rows.Rows``, as for every runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gptrl.bundle.codecs import FloatVector
from gptrl.contract import StepInfo
from gptrl.errors import BundleError
from gptrl.rollout.checks import MAX_NUM_ENVS, check_count, check_mask, check_outputs
from gptrl.rollout.policy import PolicyBase
from gptrl.rollout.rows import Rows, RowStep

MAX_DT_ATTENTION_BYTES = 8 << 30  # float32 attention scores of one step: rows x heads x (3K)^2 x 4 bytes


def check_dt_serving(num_envs: Any, heads: int, context: int) -> int:
    """``num_envs`` checked against the rows limit and against the memory a step's attention over the window takes
    (every row and head scores 3K tokens against 3K), before anything is allocated; returns it as an int."""
    num_envs = check_count("num_envs", num_envs, MAX_NUM_ENVS)
    need = num_envs * heads * (3 * context) ** 2 * 4
    if need > MAX_DT_ATTENTION_BYTES:
        raise ValueError(f"num_envs={num_envs} x {heads} heads x (3 x K={context} tokens)^2 attention scores take "
                         f"{need / 2**30:.1f} GiB a step, past gptrl's limit of {MAX_DT_ATTENTION_BYTES >> 30} GiB "
                         "(docs/format.md, Limits): use fewer envs")
    return num_envs


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:57] + '...' if len(text) > 60 else text}"


def _numbers(value: Any, what: str, expected: str) -> np.ndarray:
    """``value`` as float64, or a ValueError naming ``what``: text (which numpy would read as "3.5" or refuse in its
    own words), booleans, objects and ragged lists are not numbers."""
    try:
        array = np.asarray(value)
    except ValueError:  # a ragged list
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be {expected}, got {_describe(value)}")
    return array.astype(np.float64)


def check_target(value: Any, num_envs: int, default: float | None) -> np.ndarray:
    """Per-row target returns (env units) from a number (every row's), a [num_envs] array or None (the bundle's
    default)."""
    if value is None:
        if default is None:
            raise ValueError("this Decision Transformer bundle records no default target return: pass target_return")
        value = default
    array = _numbers(value, "target_return", "a number or one per row")
    if array.ndim == 0:
        array = np.full(num_envs, float(array))
    if array.shape != (num_envs,):
        raise ValueError(f"target_return has shape {array.shape}, expected a number or ({num_envs},)")
    if not np.isfinite(array).all():
        raise ValueError("target_return must be finite")
    return array


def check_rewards(reward: Any, num_envs: int, running: np.ndarray) -> np.ndarray:
    """Per-row rewards (float64 [num_envs]) for a step; ``running`` rows (those past their first step) need one.

    Rewards are per env, like observations: one env takes a number or shape (1,), a batch one per row. A number or
    a (1,) array for several rows is refused rather than spread over them (one env's reward given to all).
    """
    if reward is None:
        raise ValueError("a Decision Transformer needs the reward the env returned with obs: act(obs, reward)")
    expected = "a number or (1,)" if num_envs == 1 else f"({num_envs},), one per row"
    rewards = _numbers(reward, "reward", f"numeric, {expected}")
    if rewards.shape != (num_envs,) and not (num_envs == 1 and rewards.shape == ()):
        raise ValueError(f"reward has shape {rewards.shape}, expected {expected}")
    rewards = rewards.reshape(num_envs)
    if not np.isfinite(rewards[running]).all():
        raise ValueError("reward holds non-finite values")
    return rewards


# What a step changes in a DTWindow beside its rows (begin_step slides the window before the model runs).
_STEP_STATE = ("states", "actions", "returns_to_go", "timesteps", "mask", "pending_target")


def check_targets(done_mask: Any, target_return: Any, num_envs: int, default: float | None) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """The rows a ``reset_rows`` restarts and their targets, both checked before anything changes."""
    mask = check_mask(done_mask, num_envs)
    return mask, (check_target(target_return, num_envs, default) if mask.any() else np.zeros(num_envs))


class DTWindow:
    def __init__(self, num_envs: int, state_dim: int, act_dim: int, context: int, *, heads: int, scale: float,
                 state_mean: np.ndarray, state_std: np.ndarray, max_ep_len: int, default_target: float | None):
        if scale <= 0:
            raise BundleError(f"scale must be positive, got {scale}")
        num_envs = check_dt_serving(num_envs, heads, context)  # before allocating the window
        self.rows = Rows(num_envs, FloatVector.unbounded(state_dim))
        self.num_envs, self.state_dim, self.act_dim, self.context = num_envs, state_dim, act_dim, context
        self.scale, self.max_ep_len, self.default_target = float(scale), int(max_ep_len), default_target
        self.mean, self.std = np.asarray(state_mean, np.float32), np.asarray(state_std, np.float32)
        B, K = num_envs, context
        self.states = np.zeros((B, K, state_dim), np.float32)
        self.actions = np.zeros((B, K, act_dim), np.float32)
        self.returns_to_go = np.zeros((B, K, 1), np.float32)
        self.timesteps = np.zeros((B, K), np.int64)
        self.mask = np.zeros((B, K), np.float32)
        self.pending_target = np.zeros(B, np.float64)  # the target of each row's next episode (env units)

    def _begin(self, rows: np.ndarray, obs: np.ndarray, target: np.ndarray) -> None:
        self.states[rows] = 0.0
        self.actions[rows] = 0.0
        self.returns_to_go[rows] = 0.0
        self.timesteps[rows] = 0
        self.mask[rows] = 0.0
        self.states[rows, -1] = (obs[rows] - self.mean) / self.std
        self.returns_to_go[rows, -1, 0] = target[rows] / self.scale
        self.mask[rows, -1] = 1.0

    def reset(self, obs: Any, target_return: Any = None) -> None:
        target = check_target(target_return, self.num_envs, self.default_target)
        self.rows.reset(obs)
        self.pending_target[:] = target

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        mask, target = check_targets(done_mask, target_return, self.num_envs, self.default_target)
        self.rows.reset_rows(mask)
        self.pending_target[mask] = target[mask]

    def begin_step(self, obs: Any, reward: Any) -> RowStep:
        """Begin the rows that start an episode (step 0) and append this call's step to every other row."""
        step = self.rows.begin(obs)
        self._begin(step.begins, step.obs, self.pending_target)
        running = ~step.begins
        if running.any():
            rewards = check_rewards(reward, self.num_envs, running)
            rtg = self.returns_to_go[running, -1, 0] - rewards[running] / self.scale
            t = np.minimum(self.timesteps[running, -1] + 1, self.max_ep_len - 1)
            for buf in (self.states, self.actions, self.returns_to_go, self.timesteps, self.mask):
                buf[running] = np.roll(buf[running], -1, axis=1)
            self.states[running, -1] = (step.given[running] - self.mean) / self.std
            self.actions[running, -1] = 0.0
            self.returns_to_go[running, -1, 0] = rtg
            self.timesteps[running, -1] = t
            self.mask[running, -1] = 1.0
        return step

    def snapshot(self) -> dict[str, Any]:
        """Copies of everything a step changes: a step that fails (a refused input, a non-finite output) is then
        undone with :meth:`restore`, so the window is as if it had never been tried."""
        return {"rows": self.rows.snapshot(), **{name: getattr(self, name).copy() for name in _STEP_STATE}}

    def restore(self, saved: dict[str, Any]) -> None:
        self.rows.restore(saved["rows"])
        for name in _STEP_STATE:
            getattr(self, name)[...] = saved[name]

    def end_step(self, actions: np.ndarray) -> None:
        """Record the actions given for this step in its action slot."""
        self.actions[:, -1] = actions
        self.rows.end()


class WindowPolicy(PolicyBase):
    """What every Decision Transformer runner shares: the contract on top of a ``DTWindow``; subclasses implement
    ``_forward`` (the model on ``self.window``'s buffers -> actions [B, A])."""

    return_conditioned = True
    positions = "per_row"  # every row is its own episode window
    window: DTWindow
    env_id: str | None = None

    def _forward(self) -> np.ndarray:
        raise NotImplementedError

    def _never_started(self) -> np.ndarray:
        return ~self.window.rows.started

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start every row's episode from ``obs``; ``target_return`` in env units (None: the bundle's default)."""
        self.window.reset(obs, target_return)

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        self.window.reset_rows(done_mask, target_return)

    def act_with_info(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> tuple[np.ndarray, StepInfo]:
        """The action for this step; info["value"] is the return still to go (env units) the action aims for.

        A refused input or a NaN or infinite output raises and the step is not taken: the window is restored.
        """
        self.uniforms(0, deterministic)  # a Decision Transformer's head has no distribution: refuses to sample
        w = self.window
        saved = w.snapshot()
        try:
            step = w.begin_step(obs, reward)
            actions = self._forward()
            to_go = (w.returns_to_go[:, -1, 0] * w.scale).astype(np.float32)
            check_outputs(actions, to_go, None, w.rows.steps)
        except BaseException:
            w.restore(saved)
            raise
        w.end_step(actions)
        return step.shape_out(actions), {"value": step.shape_out(to_go), "termination_prob": None, "dist": None,
                                         "log_prob": None}
