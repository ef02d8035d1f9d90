"""``make_config``: a fresh config for a policy (training, tests, benchmarks)."""

from __future__ import annotations

from typing import Any

from gptrl.bundle.codecs import ActionCodec, FloatVector, ObservationEncoder, TanhBox
from gptrl.bundle.parse import NETWORK_ALIASES, parse_config
from gptrl.bundle.schema import BundleConfig, ModelConfig, default_max_position_embeddings


def make_config(*, state_dim: int | None = None, action_low: Any = None, action_high: Any = None,
                observation: ObservationEncoder | None = None, action: ActionCodec | None = None,
                env_id: str | None = None, **model: Any) -> BundleConfig:
    """A validated format-2 config. By default unbounded float states of ``state_dim`` and tanh actions in
    [action_low, action_high]; ``observation`` / ``action`` give any other type (``gptrl.bundle.codecs``).

    ``model`` takes :class:`ModelConfig` fields (``network``, ``d_model``, ``num_layers``, ...).
    """
    observation = observation or FloatVector.unbounded(int(state_dim))  # type: ignore[arg-type]
    action = action or TanhBox.from_bounds(action_low, action_high)
    network = NETWORK_ALIASES[str(model.pop("network", "llama")).lower()]
    context = int(model.pop("context_length", 32))
    d_model = int(model.get("d_model", 256))
    model.setdefault("intermediate_size", 4 * d_model)
    model.setdefault("max_position_embeddings", default_max_position_embeddings(network, context))
    data = {
        "bundle_format_version": 2,
        "model_config": ModelConfig(network=network, context_length=context, **model).to_dict(),  # type: ignore[arg-type]
        "state_specs": observation.specs(),
        "action_specs": action.specs(),
        "context_length": context,
        "state_container": observation.container(),
        "action_container": action.container(),
    }
    if not observation.normalized:
        data["state_normalization"] = {"embedded": False, "legacy_sidecar": False}
    if env_id is not None:
        data["env_id"] = env_id
    return parse_config(data, "<make_config>")
