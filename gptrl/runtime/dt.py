"""The torch-free Decision Transformer policies: the exact windowed graph driven through onnxruntime with the same
window bookkeeping as the torch runner (``gptrl.rollout.window``), and the stateful graph, which keeps the window
itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gptrl.bundle.codecs import FloatVector
from gptrl.bundle.dt import (
    DT_STATEFUL_FORMAT,
    KEY_WEIGHTS_FILE,
    DTConfig,
    DTSidecar,
    check_folder_agrees,
    dt_io_spec,
    dt_state_spec,
    dt_stateful_io_spec,
    read_dt_metadata,
)
from gptrl.bundle.policy_graph import KEY_FORMAT, KEY_GRAPH_SHA256, KEY_WEIGHTS_SHA256
from gptrl.contract import StepInfo
from gptrl.rollout import PolicyBase, Rows, check_outputs
from gptrl.rollout.window import DTWindow, WindowPolicy, check_dt_serving, check_rewards, check_target, check_targets
from gptrl.runtime.buffers import StateBuffers
from gptrl.runtime.checks import check_io, check_seal

DETERMINISTIC = "a Decision Transformer's action head is deterministic"


class DTPolicy(WindowPolicy):
    """``reset(obs, target_return=None)``, ``act(obs, reward=None)``, ``act_with_info``, ``reset_rows``, batches."""

    deterministic_reason = DETERMINISTIC

    def __init__(self, session: ort.InferenceSession, config: DTConfig, sidecar: DTSidecar, *, num_envs: int = 1):
        self.session, self.config, self.sidecar, self.env_id = session, config, sidecar, sidecar.env_id
        self.window = DTWindow(num_envs, config.state_dim, config.act_dim, sidecar.context_length,
                               heads=config.n_head, scale=sidecar.scale,
                               state_mean=np.asarray(sidecar.state_mean, np.float32),
                               state_std=np.asarray(sidecar.state_std, np.float32), max_ep_len=config.max_ep_len,
                               default_target=sidecar.target_return)
        self.num_envs = self.window.num_envs

    def _forward(self) -> np.ndarray:
        w = self.window
        return self.session.run(["action"], {"states": w.states, "actions": w.actions,
                                             "returns_to_go": w.returns_to_go, "timesteps": w.timesteps,
                                             "attention_mask": w.mask})[0]


class StatefulDTPolicy(PolicyBase):
    """A stateful Decision Transformer graph (``obs, reset, reward, target_return, state_in.* -> action,
    state_out.*``) behind the same contract as :class:`DTPolicy`; the graph keeps the window itself."""

    return_conditioned = True
    positions = "per_row"
    deterministic_reason = DETERMINISTIC

    def __init__(self, session: ort.InferenceSession, config: DTConfig, sidecar: DTSidecar, *, num_envs: int = 1):
        self.session, self.config, self.sidecar, self.env_id = session, config, sidecar, sidecar.env_id
        B = self.num_envs = check_dt_serving(num_envs, config.n_head, sidecar.context_length)  # before allocating
        self.rows = Rows(B, FloatVector.unbounded(config.state_dim))
        self._inputs = {"obs": np.zeros((B, config.state_dim), np.float32), "reset": np.zeros(B, bool),
                        "reward": np.zeros(B, np.float32), "target_return": np.zeros(B, np.float32)}
        self._action = np.zeros((B, config.act_dim), np.float32)
        self.buffers = StateBuffers(session, dt_state_spec(config, sidecar.context_length), B, self._inputs,
                                    {"action": self._action})
        self._target = np.zeros(B, np.float32)  # each row's target (env units), read when its episode begins

    def _never_started(self) -> np.ndarray:
        return ~self.rows.started

    def reset(self, obs: Any, target_return: Any = None) -> None:
        """Start every row's episode from ``obs``; ``target_return`` in env units (None: the bundle's default)."""
        target = check_target(target_return, self.num_envs, self.sidecar.target_return)
        self.rows.reset(obs)
        self._target[:] = target

    def reset_rows(self, done_mask: Any, target_return: Any = None) -> None:
        """Restart the flagged rows; the observation each receives in its next act is its s0."""
        mask, target = check_targets(done_mask, target_return, self.num_envs, self.sidecar.target_return)
        self.rows.reset_rows(mask)
        self._target[mask] = target[mask]

    def act_with_info(self, obs: Any, reward: Any = None, *, deterministic: bool = True) -> tuple[np.ndarray, StepInfo]:
        """The action for this step (``reward``: what the env returned with ``obs``; not read on a row's first
        step); info["value"] is the return still to go (env units) the action aims for, read from the new state."""
        self.uniforms(0, deterministic)  # refuses to sample: the head has no distribution
        step = self.rows.begin(obs)
        running = ~step.begins
        if running.any():
            self._inputs["reward"][:] = np.where(running, check_rewards(reward, self.num_envs, running), 0.0)
        np.copyto(self._inputs["obs"], step.obs)
        self._inputs["reset"][:] = step.begins
        self._inputs["target_return"][:] = self._target
        self.buffers.run(self.session)
        to_go = (self.buffers.state_out["returns_to_go"][:, -1, 0] * self.sidecar.scale).astype(np.float32)
        check_outputs(self._action, to_go, None, self.rows.steps)  # on error the state is not advanced
        self.buffers.advance()
        self.rows.end()
        pick = (lambda a: a[0].copy()) if step.single else (lambda a: a.copy())
        return pick(self._action), {"value": pick(to_go), "termination_prob": None, "dist": None, "log_prob": None}


def load_dt_policy(session: ort.InferenceSession, props: dict[str, str], onnx_path: Path, *, in_folder: bool,
                   num_envs: int = 1, kv_cache_max_len: Any = None, bos_cache_mode: Any = None,
                   positions: Any = None) -> DTPolicy | StatefulDTPolicy:
    """The Decision Transformer family's runtime policy for a loaded graph (``gptrl.families``)."""
    from gptrl.runtime.policy import check_weights

    if kv_cache_max_len is not None or bos_cache_mode is not None or positions not in (None, "per_row"):
        raise ValueError(f"{onnx_path}: a Decision Transformer has no key/value cache and keeps per-row windows: it "
                         "takes no kv_cache_max_len, bos_cache_mode or shared positions")
    config, sidecar = read_dt_metadata(props, str(onnx_path))
    check_seal(onnx_path, props.get(KEY_GRAPH_SHA256, ""))
    stateful = props.get(KEY_FORMAT) == DT_STATEFUL_FORMAT
    want_in, want_out = (dt_stateful_io_spec if stateful else dt_io_spec)(config, sidecar.context_length)
    check_io(session, want_in, want_out, str(onnx_path),
             "stateful Decision Transformer" if stateful else "Decision Transformer window")
    check_weights(onnx_path, onnx_path.parent / props.get(KEY_WEIGHTS_FILE, ""), props.get(KEY_WEIGHTS_SHA256, ""),
                  in_folder)
    if in_folder:
        check_folder_agrees(onnx_path.parent, config, sidecar, str(onnx_path))
    return (StatefulDTPolicy if stateful else DTPolicy)(session, config, sidecar, num_envs=num_envs)
