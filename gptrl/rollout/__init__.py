"""The rollout contract every runner shares (numpy only, no torch): docs/format.md, "Rollout contract".

- ``rows``: the per-row episode state of every runner (who has an episode, who begins one next, from which
  observation);
- ``policy``: ``act``, ``predict`` and the seeded generator samples are drawn from (``PolicyBase``);
- ``cache``: the Causal GPT-RL key/value-cache rollout (``RolloutState``, ``CachedPolicy``);
- ``window``: the Decision Transformer's window (``DTWindow``, ``WindowPolicy``);
- ``checks``: the checks on inputs and outputs, and the serving limits.
"""

from gptrl.rollout.cache import CachedPolicy, RolloutState, StepInputs, StepOutputs
from gptrl.rollout.checks import (
    MAX_CACHE_BYTES,
    MAX_KV_CACHE_LEN,
    MAX_NUM_ENVS,
    check_count,
    check_mask,
    check_outputs,
    resolve_serving,
)
from gptrl.rollout.policy import PolicyBase
from gptrl.rollout.rows import Rows, RowStep

__all__ = ["MAX_CACHE_BYTES", "MAX_KV_CACHE_LEN", "MAX_NUM_ENVS", "CachedPolicy", "PolicyBase", "RolloutState",
           "RowStep", "Rows", "StepInputs", "StepOutputs", "check_count", "check_mask", "check_outputs",
           "resolve_serving"]
