"""config.json -> :class:`BundleConfig`: every key checked, older spellings normalised, limits enforced.

Every problem raises :class:`BundleError` naming the file and the dotted key. Keys the parser does not read are
kept in ``BundleConfig.extra`` (the reader records what it read, so there is no second list of known keys).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gptrl.bundle.codecs import CAPABILITIES, parse_action, parse_observation
from gptrl.bundle.codecs.box import box_dict
from gptrl.bundle.files import CONFIG_FILE
from gptrl.bundle.jsonreader import JsonReader, describe
from gptrl.bundle.schema import (
    BOS_CACHE_MODES,
    LIMITS,
    MAX_PARAMETERS,
    SUPPORTED_FORMAT_VERSIONS,
    BundleConfig,
    ModelConfig,
    default_max_position_embeddings,
)
from gptrl.bundle.spaces import validate_space_dict
from gptrl.bundle.weights import parameter_count, required_tensors
from gptrl.errors import BundleError
from gptrl.fileio import read_json

NETWORK_ALIASES = {"llama": "llama", "gpt2": "gpt2", "gpt-2": "gpt2", "gpt": "gpt2"}
# Older spellings of model_config keys -> current name.
_MODEL_KEY_ALIASES = {
    "train_context_length": "context_length",
    "n_layer": "num_layers",
    "n_layers": "num_layers",
    "n_head": "num_heads",
    "n_heads": "num_heads",
    "n_embd": "d_model",
    "hidden_size": "d_model",
    "network": "network_name",
}


def _parse_model(r: JsonReader, top_context: int | None) -> ModelConfig:
    raw: dict[str, Any] = {}
    for key, value in r.data.items():
        canonical = _MODEL_KEY_ALIASES.get(key, key)
        if canonical in raw and canonical != key:
            continue  # the current spelling wins over an older one
        raw[canonical] = value
    r = JsonReader(raw, r.source, r.prefix)

    name = r.get("network_name", "str", "Llama")
    network = NETWORK_ALIASES.get(name.lower())
    if network is None:
        raise r.error(f"key {r.key('network_name')} must be Llama or GPT2, got {name!r}")
    context = r.positive("context_length", top_context if top_context is not None else 32,
                         limit=LIMITS["context_length"])
    if top_context is not None and context != top_context:
        raise r.error(f"key {r.key('context_length')} ({context}) disagrees with the top-level "
                      f"'context_length' ({top_context})")
    d_model = r.positive("d_model", 256, limit=LIMITS["d_model"])
    num_heads = r.positive("num_heads", 8, limit=LIMITS["num_heads"])
    if d_model % num_heads:
        raise r.error(f"key {r.key('d_model')} ({d_model}) must be divisible by num_heads ({num_heads})")
    if network == "llama" and (d_model // num_heads) % 2:
        raise r.error(f"Llama needs an even head dimension for RoPE, got d_model/num_heads = {d_model // num_heads}")
    rope_theta = float(r.get("rope_theta", "float", 1000.0))
    if not (math.isfinite(rope_theta) and rope_theta > 0):
        raise r.error(f"key {r.key('rope_theta')} must be a positive finite number, got {rope_theta}")
    dropout = float(r.get("dropout", "float", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise r.error(f"key {r.key('dropout')} must be in [0, 1), got {dropout}")
    model = ModelConfig(
        network=network,  # type: ignore[arg-type]
        num_layers=r.positive("num_layers", 4, limit=LIMITS["num_layers"]),
        d_model=d_model,
        num_heads=num_heads,
        dropout=dropout,
        use_eos=r.get("use_eos", "bool", True),
        use_bos_action_gate=r.get("use_bos_action_gate", "bool", False),
        rope_theta=rope_theta,
        intermediate_size=r.positive("intermediate_size", 4 * d_model, limit=LIMITS["intermediate_size"]),
        max_position_embeddings=r.positive("max_position_embeddings",
                                           default_max_position_embeddings(network, context),
                                           limit=LIMITS["max_position_embeddings"]),
        context_length=context,
    )
    if model.use_bos_action_gate:
        raise r.error(f"key {r.key('use_bos_action_gate')} = true is not supported by gptrl")
    return model


def _spec_readers(r: JsonReader, key: str, container: dict[str, Any] | None) -> list[JsonReader]:
    """One reader per entry of ``key`` (a spec list); a missing list is derived from a Box container."""
    raw = r.get(key, "list", None)
    if raw is None:
        if container is None:
            raise r.error(f"missing required key '{key}' (and no '{key.replace('specs', 'container')}' to derive "
                          "it from)")
        raw = [_spec_from_box(container, r, key)]
    if not raw:
        raise r.error(f"key '{key}' is empty")
    return [JsonReader(s, r.source, f"{key}[{i}].") for i, s in enumerate(raw)]


def _spec_from_box(container: dict[str, Any], r: JsonReader, key: str) -> dict[str, Any]:
    if container.get("type") != "Box":
        raise r.error(f"'{key}' is missing and '{key.replace('specs', 'container')}' is no Box")
    shape = container.get("shape") or []
    size = int(np.prod(shape)) if shape else 1
    low, high = container.get("low"), container.get("high")
    as_list = lambda v: v if isinstance(v, list) else [v] * size
    return {"size": size, "dtype": container.get("dtype", "float32"),
            "low": as_list(low) if low is not None else None, "high": as_list(high) if high is not None else None}


def parse_config(data: Any, source: str = CONFIG_FILE) -> BundleConfig:
    """Validate a decoded config.json; ``source`` names the file in error messages. Which normaliser applies is
    decided at load, from the config and the weights together (``gptrl.bundle.normalizer``)."""
    r = JsonReader(data, source)
    version = r.get("bundle_format_version", "int", 1)
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise r.error(f"key 'bundle_format_version' = {version} is not supported (gptrl reads versions "
                      f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})")
    capabilities = r.get("requires_capabilities", "list", [])
    if not all(isinstance(c, str) for c in capabilities):
        raise r.error(f"key 'requires_capabilities' must list strings, got {capabilities!r}"[:300])
    unknown = [c for c in capabilities if c not in CAPABILITIES]
    if unknown:
        raise r.error(f"key 'requires_capabilities' lists {unknown}, which gptrl does not provide (it provides "
                      f"{sorted(CAPABILITIES)}); refusing to run a policy whose behaviour it would get wrong")
    top_context = r.get("context_length", "int", None)
    model = _parse_model(r.child("model_config", {}), top_context)

    containers: dict[str, Any] = {}
    for key in ("state_container", "action_container"):
        value = r.get(key, "dict", None)
        if value is not None:
            try:
                validate_space_dict(value)
            except ValueError as exc:
                raise r.error(f"key '{key}' is not a valid space: {exc}") from None
        containers[key] = value
    observation = parse_observation(_spec_readers(r, "state_specs", containers["state_container"]))
    action = parse_action(_spec_readers(r, "action_specs", containers["action_container"]))
    for key, codec in (("state_specs", observation), ("action_specs", action)):
        container_key = key.replace("specs", "container")
        if codec.size > LIMITS["size"]:
            raise r.error(f"key '{key}' totals {codec.size} features, past gptrl's limit of {LIMITS['size']}")
        if containers[container_key] is None:
            containers[container_key] = codec.container()
        else:
            problem = codec.check_container(containers[container_key], container_key)
            if problem:
                raise r.error(problem)

    norm = r.child("state_normalization", {})
    embedded = norm.get("embedded", "bool", None)
    sidecar = norm.get("legacy_sidecar", "bool", None)
    if not observation.normalized:
        if embedded or sidecar:
            raise norm.error(f"key 'state_normalization' switches a normaliser on, but {observation.kind} "
                             "observations have none")
        embedded = sidecar = False
    if version >= 2 and embedded is None:
        embedded = True
    if version >= 2 and sidecar is None:
        sidecar = False

    serving = r.child("serving", {})
    bos_mode = serving.get("bos_cache_mode", "str", None)
    if bos_mode is not None and bos_mode not in BOS_CACHE_MODES:
        raise serving.error(f"key 'serving.bos_cache_mode' must be one of {BOS_CACHE_MODES}, got {bos_mode!r}")

    action_norm = r.get("action_normalization", "dict", None)
    if action_norm and action_norm.get("enabled"):
        raise r.error("key 'action_normalization.enabled' = true is not supported by gptrl")
    r.seen.discard("action_normalization")  # carried through unchanged

    params = parameter_count(required_tensors(model, observation, action, embedded_normalizer=False))
    if params > MAX_PARAMETERS:
        raise r.error(f"'model_config' describes {params:,} parameters, past gptrl's limit of {MAX_PARAMETERS:,}")
    package_version = r.data.get("package_version")
    r.seen.add("package_version")
    env_id = r.get("env_id", "str", None)
    package = r.get("package", "str", None)
    return BundleConfig(
        format_version=version,
        model=model,
        observation=observation,
        action=action,
        state_container=containers["state_container"],
        action_container=containers["action_container"],
        normalization_embedded=embedded,
        normalization_sidecar=sidecar,
        requires_capabilities=tuple(capabilities),
        env_id=env_id,
        bos_cache_mode=bos_mode,  # type: ignore[arg-type]
        package=package,
        package_version=str(package_version) if package_version is not None else None,
        extra=r.unread(),
    )


def read_config(bundle_dir: str | Path) -> BundleConfig:
    """Read and validate ``bundle_dir/config.json``."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / CONFIG_FILE
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle folder (it does not exist or is not a directory)")
    if not path.is_file():
        raise BundleError(f"{path}: missing (a bundle needs config.json)")
    return parse_config(read_json(path), str(path))


__all__ = ["box_dict", "describe", "parse_config", "read_config"]
