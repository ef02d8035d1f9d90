"""The reference-compatible rollout runner on torch: a KV cache carries each episode.

Rollout contract (format doc, section 4): the head on the newest token emits the NEXT
action. ``reset(s0)`` queues the BOS token (s0, 0, 1); the first ``act`` runs it and returns
a0; each later ``act(s_t)`` appends the completed token (s_{t-1}, a_{t-1}, 0) and returns a_t.
Nothing is ever re-encoded: each row's cache is a ring of ``kv_cache_max_len`` slots, and a
token is written at position min(cached tokens, kv_cache_max_len).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptrl.bundle import Bundle, BundleError, load_bundle
from gptrl.bundle.config import BOS_CACHE_MODES
from gptrl.exporter.loading import model_from_bundle
from gptrl.exporter.model import PolicyModel
from gptrl.rollout import RolloutState, resolve_serving

__all__ = ["PolicyRunner", "load_runner", "load_runner_from_hub"]


class PolicyRunner:
    """Stateful policy for ``num_envs`` rows; see the module docstring for the call contract."""

    def __init__(
        self,
        model: PolicyModel,
        *,
        num_envs: int = 1,
        kv_cache_max_len: int | None = None,
        bos_cache_mode: str | None = None,
        device: str | torch.device = "cpu",
    ):
        config = model.config
        self.kv_cache_max_len, self.bos_cache_mode = resolve_serving(config, kv_cache_max_len, bos_cache_mode)
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.state = RolloutState(num_envs, config.state_dim, config.action_dim, self.kv_cache_max_len, self.bos_cache_mode)
        self._cache = model.empty_cache(num_envs, self.kv_cache_max_len, self.device)

    @property
    def num_envs(self) -> int:
        return self.state.num_envs

    # -- episode control --------------------------------------------------------

    def reset(self, obs: Any) -> None:
        """Start a new episode in every row from its first observation ([S] or [B, S])."""
        self.state.reset(obs)

    def reset_rows(self, done_mask: Any) -> None:
        """Restart the flagged rows; their next observation (act/observe) becomes their s0."""
        self.state.reset_rows(done_mask)

    # -- stepping ---------------------------------------------------------------

    def act(self, obs: Any) -> np.ndarray:
        """The action for the current step: float32 [A] for one env, [B, A] for a batch."""
        return self.act_with_info(obs)[0]

    def act_with_info(self, obs: Any) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
        """``act`` plus the value estimate and termination probability of the same token."""
        step = self.state.begin_step(obs)
        out = self._run(step.states, step.actions, step.is_bos)
        actions = self.model.squash_actions(out.mu).cpu().numpy()
        self.state.end_step(step, actions)
        value = out.value.cpu().numpy()
        term = torch.sigmoid(out.termination_logit).cpu().numpy() if out.termination_logit is not None else None
        return step.shape_out(actions), {"value": step.shape_out(value), "termination_prob": step.shape_out(term)}

    def observe(self, obs: Any, action: Any) -> None:
        """Advance like ``act(obs)``, but record ``action`` as the one taken instead of the policy's.

        Use it when something else chose the action (exploration, a safety override, a
        teacher): the cache then holds what really happened.
        """
        step = self.state.begin_step(obs)
        taken = self.state.check_actions(action, step)
        self._run(step.states, step.actions, step.is_bos)
        self.state.end_step(step, taken)

    @torch.inference_mode()
    def _run(self, states: np.ndarray, actions: np.ndarray, is_bos: np.ndarray):
        dev, state = self.device, self.state
        out, new_kv = self.model.step(
            torch.from_numpy(states).to(dev),
            torch.from_numpy(actions).to(dev),
            torch.from_numpy(is_bos).to(dev),
            torch.full((self.num_envs,), state.position, dtype=torch.int64, device=dev),
            self._cache,
            torch.from_numpy(state.valid).to(dev),
        )
        slot = state.slot  # the free slot, or the oldest entry once the ring is full
        for (cache_k, cache_v), (k, v) in zip(self._cache, new_kv):
            cache_k[:, :, slot] = k[:, :, 0]
            cache_v[:, :, slot] = v[:, :, 0]
        return out


def load_runner(
    path: str | Path | Bundle,
    *,
    num_envs: int = 1,
    kv_cache_max_len: int | None = None,
    bos_cache_mode: str | None = None,
    device: str = "cpu",
) -> PolicyRunner:
    """Load a bundle folder into a :class:`PolicyRunner` (validates everything first)."""
    bundle = path if isinstance(path, Bundle) else load_bundle(path)
    resolve_serving(bundle.config, kv_cache_max_len, bos_cache_mode)  # refuse before building anything
    model = model_from_bundle(bundle, device)
    return PolicyRunner(model, num_envs=num_envs, kv_cache_max_len=kv_cache_max_len, bos_cache_mode=bos_cache_mode, device=device)


def load_runner_from_hub(
    repo_id: str,
    *,
    subfolder: str = "",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    num_envs: int = 1,
    kv_cache_max_len: int | None = None,
    bos_cache_mode: str | None = None,
    device: str = "cpu",
) -> PolicyRunner:
    """Download one bundle (only its own files) from the Hugging Face Hub and load it."""
    from gptrl.bundle.hub import download_bundle

    path = download_bundle(
        repo_id, subfolder=subfolder, revision=revision, cache_dir=cache_dir, token=token,
        local_files_only=local_files_only,
    )
    return load_runner(path, num_envs=num_envs, kv_cache_max_len=kv_cache_max_len, bos_cache_mode=bos_cache_mode, device=device)
