"""The reference-compatible rollout runner on torch: a KV cache carries each episode.

Rollout contract (docs/format.md, "Rollout contract"): the head on the newest token emits the NEXT
action. ``reset(s0)`` queues the BOS token (s0, 0, 1); the first ``act`` runs it and returns
a0; each later ``act(s_t)`` appends the completed token (s_{t-1}, a_{t-1}, 0) and returns a_t.
Nothing is ever re-encoded: the cache is a ring of ``kv_cache_max_len`` slots (layout and
positions: ``gptrl/rollout/cache.py`` and docs/format.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gptrl.bundle import Bundle, load_bundle
from gptrl.contract import BosCacheMode, PositionMode
from gptrl.exporter.causal.convert import model_from_bundle
from gptrl.exporter.causal.model import PolicyModel
from gptrl.rollout import CachedPolicy, RolloutState, StepInputs, StepOutputs, resolve_serving

__all__ = ["PolicyRunner", "load_runner", "load_runner_from_hub"]


class PolicyRunner(CachedPolicy):
    """Stateful torch policy for ``num_envs`` rows; see the module docstring for the call contract."""

    def __init__(
        self,
        model: PolicyModel,
        *,
        num_envs: int = 1,
        kv_cache_max_len: int | None = None,
        bos_cache_mode: BosCacheMode | None = None,
        positions: PositionMode = "shared",
        device: str | torch.device = "cpu",
    ):
        config = model.config
        kv, mode = resolve_serving(config, kv_cache_max_len, bos_cache_mode, num_envs)
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.state = RolloutState(num_envs, config.observation, config.action, kv, mode, positions=positions)
        self._cache = model.empty_cache(self.state.num_envs, kv, self.device)

    def _forward(self, step: StepInputs) -> StepOutputs:
        return self._forward_latent(step)[0]

    @torch.inference_mode()
    def _forward_latent(self, step: StepInputs) -> tuple[StepOutputs, torch.Tensor]:
        """One step's outputs and the latent each row acted on (greedy, or drawn from its uniforms)."""
        dev, state, codec = self.device, self.state, self.config.action
        out, new_kv = self.model.step(
            torch.from_numpy(step.states).to(dev),
            torch.from_numpy(step.actions).to(dev),
            torch.from_numpy(step.is_bos).to(dev),
            torch.from_numpy(state.position_ids()).to(dev),
            self._cache,
            torch.from_numpy(state.valid).to(dev),
        )
        slot = state.slot  # the free slot, or the oldest entry once the ring is full
        for (cache_k, cache_v), (k, v) in zip(self._cache, new_kv):
            cache_k[:, :, slot] = k[:, :, 0]
            cache_v[:, :, slot] = v[:, :, 0]
        ops = self.model.ops
        latent = codec.greedy_latent(ops, out.params)
        if step.sample.any():
            drawn = codec.sample_latent(ops, out.params, torch.from_numpy(step.uniform).to(dev))
            sample = torch.from_numpy(step.sample).to(dev).reshape(-1, *([1] * (latent.dim() - 1)))
            latent = torch.where(sample, drawn, latent)
        term = torch.sigmoid(out.termination_logit).cpu().numpy() if out.termination_logit is not None else None
        return StepOutputs(codec.action_of(ops, latent).cpu().numpy(), out.value.cpu().numpy(), term,
                           out.params.cpu().numpy(),
                           codec.latent_log_prob(ops, out.params, latent).cpu().numpy()), latent


def load_runner(
    path: str | Path | Bundle,
    *,
    num_envs: int = 1,
    kv_cache_max_len: int | None = None,
    bos_cache_mode: BosCacheMode | None = None,
    positions: PositionMode = "shared",
    device: str = "cpu",
) -> PolicyRunner:
    """Load a bundle folder into a :class:`PolicyRunner` (validates everything first)."""
    bundle = path if isinstance(path, Bundle) else load_bundle(path)
    resolve_serving(bundle.config, kv_cache_max_len, bos_cache_mode, num_envs)  # refuse before building anything
    model = model_from_bundle(bundle, device)
    return PolicyRunner(
        model, num_envs=num_envs, kv_cache_max_len=kv_cache_max_len, bos_cache_mode=bos_cache_mode,
        positions=positions, device=device,
    )


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
    bos_cache_mode: BosCacheMode | None = None,
    device: str = "cpu",
) -> PolicyRunner:
    """Download one bundle (only its own files) from the Hugging Face Hub and load it."""
    from gptrl.bundle.hub import download_bundle

    path = download_bundle(
        repo_id, subfolder=subfolder, revision=revision, cache_dir=cache_dir, token=token,
        local_files_only=local_files_only,
    )
    return load_runner(path, num_envs=num_envs, kv_cache_max_len=kv_cache_max_len, bos_cache_mode=bos_cache_mode,
                       device=device)
