"""``make_config``: a fresh config for a continuous-control policy (training, tests, benchmarks)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gptrl.bundle.parse import NETWORK_ALIASES, box_dict, parse_config
from gptrl.bundle.schema import BundleConfig, ContinuousSpec, ModelConfig, default_max_position_embeddings


def make_config(*, state_dim: int, action_low: Any, action_high: Any, env_id: str | None = None,
                **model: Any) -> BundleConfig:
    """A validated format-2 config: unbounded states of ``state_dim``, tanh actions in [action_low, action_high].

    ``model`` takes :class:`ModelConfig` fields (``network``, ``d_model``, ``num_layers``, ...).
    """
    high_array = np.atleast_1d(np.asarray(action_high, dtype=np.float64))
    high = tuple(float(v) for v in high_array)
    low = tuple(float(v) for v in np.broadcast_to(np.asarray(action_low, dtype=np.float64), high_array.shape))
    network = NETWORK_ALIASES[str(model.pop("network", "llama")).lower()]
    context = int(model.pop("context_length", 32))
    d_model = int(model.get("d_model", 256))
    model.setdefault("intermediate_size", 4 * d_model)
    model.setdefault("max_position_embeddings", default_max_position_embeddings(network, context))
    state = ContinuousSpec(state_dim, "float64", (-math.inf,) * state_dim, (math.inf,) * state_dim, None)
    action = ContinuousSpec(len(high), "float32", low, high, "tanh")
    data = {
        "bundle_format_version": 2,
        "model_config": ModelConfig(network=network, context_length=context, **model).to_dict(),  # type: ignore[arg-type]
        "state_specs": [state.to_dict()],
        "action_specs": [action.to_dict()],
        "context_length": context,
        "state_container": box_dict((state,)),
        "action_container": {**box_dict((action,)), "dtype": "float32"},
    }
    if env_id is not None:
        data["env_id"] = env_id
    return parse_config(data, "<make_config>")
