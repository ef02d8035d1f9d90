"""Reading and validating a bundle's ``config.json`` (format versions 1 and 2).

Older bundles spell some keys differently or leave them out; everything is
normalised here into small frozen dataclasses so the rest of gptrl never looks
at raw JSON. Every problem raises :class:`BundleError` naming the file and key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gptrl.bundle.errors import BundleError
from gptrl.bundle.spaces import validate_space_dict

CONFIG_FILE = "config.json"
SUPPORTED_FORMAT_VERSIONS = (1, 2)
# Capabilities a bundle may require that this implementation provides. None exist yet:
# any capability listed in `requires_capabilities` is refused rather than silently ignored.
KNOWN_CAPABILITIES: frozenset[str] = frozenset()
BOS_CACHE_MODES = ("discard", "retain")

_NETWORK_ALIASES = {"llama": "llama", "gpt2": "gpt2", "gpt-2": "gpt2", "gpt": "gpt2"}
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
_MISSING = object()


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the policy network (section 2-3 of the format doc)."""

    network: str = "llama"  # "llama" or "gpt2"
    num_layers: int = 4
    d_model: int = 256
    num_heads: int = 8
    dropout: float = 0.0
    use_eos: bool = True
    use_bos_action_gate: bool = False
    rope_theta: float = 1000.0
    intermediate_size: int = 1024
    max_position_embeddings: int = 256
    context_length: int = 32

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def network_name(self) -> str:
        """The spelling bundles use in config.json."""
        return "Llama" if self.network == "llama" else "GPT2"

    def max_kv_cache_len(self) -> int | None:
        """Largest kv_cache_max_len this architecture can serve (None: unbounded).

        Once the cache is full every new token is written at position kv_cache_max_len,
        so GPT2's learned position table must have a row for it.
        """
        return self.max_position_embeddings - 1 if self.network == "gpt2" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "network_name": self.network_name,
            "num_layers": self.num_layers,
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "use_eos": self.use_eos,
            "use_bos_action_gate": self.use_bos_action_gate,
            "rope_theta": self.rope_theta,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "context_length": self.context_length,
        }


def default_max_position_embeddings(network: str, context_length: int) -> int:
    if network == "gpt2":
        return max(2 * context_length, 8)
    return max(8 * context_length, 32)


@dataclass(frozen=True)
class ContinuousSpec:
    """One continuous feature block of the state or action vector."""

    size: int
    dtype: str = "float32"
    low: tuple[float, ...] = ()  # -inf where unbounded
    high: tuple[float, ...] = ()  # +inf where unbounded
    squash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "continuous",
            "size": self.size,
            "dtype": self.dtype,
            "low": [None if math.isinf(v) else v for v in self.low],
            "high": [None if math.isinf(v) else v for v in self.high],
            "squash": self.squash,
        }


@dataclass(frozen=True)
class BundleConfig:
    """Everything config.json says, validated and with defaults filled in."""

    format_version: int
    model: ModelConfig
    state_specs: tuple[ContinuousSpec, ...]
    action_specs: tuple[ContinuousSpec, ...]
    state_container: dict[str, Any]
    action_container: dict[str, Any]
    normalization_embedded: bool = True
    normalization_sidecar: bool = False
    requires_capabilities: tuple[str, ...] = ()
    env_id: str | None = None
    bos_cache_mode: str | None = None  # from `serving`; None means the runner default
    package: str | None = None
    package_version: str | None = None
    # Keys we carry through unchanged when rewriting a bundle.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def state_dim(self) -> int:
        return sum(s.size for s in self.state_specs)

    @property
    def action_dim(self) -> int:
        return sum(s.size for s in self.action_specs)

    @property
    def action_low(self) -> np.ndarray:
        return np.array([v for s in self.action_specs for v in s.low], dtype=np.float32)

    @property
    def action_high(self) -> np.ndarray:
        return np.array([v for s in self.action_specs for v in s.high], dtype=np.float32)

    @property
    def observation_space(self):
        """The gymnasium observation space (needs gymnasium)."""
        from gptrl.bundle.spaces import space_from_dict

        return space_from_dict(self.state_container)

    @property
    def action_space(self):
        """The gymnasium action space (needs gymnasium)."""
        from gptrl.bundle.spaces import space_from_dict

        return space_from_dict(self.action_container)

    def with_model(self, **changes: Any) -> "BundleConfig":
        return replace(self, model=replace(self.model, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The config.json of a format-2 bundle written by gptrl."""
        from gptrl import __version__

        out: dict[str, Any] = {
            "bundle_format_version": 2,
            "package": "gptrl",
            "package_version": __version__,
            "model_config": self.model.to_dict(),
            "state_specs": [s.to_dict() for s in self.state_specs],
            "action_specs": [s.to_dict() for s in self.action_specs],
            "context_length": self.context_length,
            "requires_capabilities": list(self.requires_capabilities),
            "state_container": self.state_container,
            "action_container": self.action_container,
            "state_normalization": {"embedded": True, "legacy_sidecar": False},
        }
        if self.env_id is not None:
            out["env_id"] = self.env_id
        if self.bos_cache_mode is not None:
            out["serving"] = {"bos_cache_mode": self.bos_cache_mode}
        out.update(self.extra)
        return out


class _Reader:
    """Typed access to a JSON object that reports the file and dotted key on error."""

    def __init__(self, data: Any, source: str, prefix: str = ""):
        self.source, self.prefix = source, prefix
        if not isinstance(data, dict):
            where = f"key '{prefix.rstrip('.')}'" if prefix else "the top level"
            raise self.error(f"{where} must be a JSON object, got {_describe(data)}")
        self.data = data

    def error(self, message: str) -> BundleError:
        return BundleError(f"{self.source}: {message}")

    def key(self, name: str) -> str:
        return f"'{self.prefix}{name}'"

    def get(self, name: str, kind: str, default: Any = _MISSING) -> Any:
        if name not in self.data or (self.data[name] is None and default is not _MISSING):
            if default is _MISSING:
                raise self.error(f"missing required key {self.key(name)}")
            return default
        value = self.data[name]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
            "list": isinstance(value, list),
            "dict": isinstance(value, dict),
        }[kind]
        if not ok:
            raise self.error(f"key {self.key(name)} must be {_KIND_NAMES[kind]}, got {_describe(value)}")
        return value

    def child(self, name: str, default: Any = _MISSING) -> "_Reader":
        value = self.get(name, "dict", default)
        return _Reader(value, self.source, f"{self.prefix}{name}.")


_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "dict": "a JSON object",
}


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _positive(r: _Reader, name: str, value: int) -> int:
    if value <= 0:
        raise r.error(f"key {r.key(name)} must be positive, got {value}")
    return value


def _parse_model(r: _Reader, top_context: int | None) -> ModelConfig:
    raw = {}
    for key, value in r.data.items():
        canonical = _MODEL_KEY_ALIASES.get(key, key)
        if canonical in raw and canonical != key:
            continue  # the current spelling wins over an older one
        raw[canonical] = value
    r = _Reader(raw, r.source, r.prefix)

    name = r.get("network_name", "str", "Llama")
    network = _NETWORK_ALIASES.get(name.lower())
    if network is None:
        raise r.error(f"key {r.key('network_name')} must be Llama or GPT2, got {name!r}")
    context = r.get("context_length", "int", top_context if top_context is not None else 32)
    if top_context is not None and context != top_context:
        raise r.error(
            f"key {r.key('context_length')} ({context}) disagrees with the top-level "
            f"'context_length' ({top_context})"
        )
    d_model = _positive(r, "d_model", r.get("d_model", "int", 256))
    num_heads = _positive(r, "num_heads", r.get("num_heads", "int", 8))
    if d_model % num_heads:
        raise r.error(f"key {r.key('d_model')} ({d_model}) must be divisible by num_heads ({num_heads})")
    if network == "llama" and (d_model // num_heads) % 2:
        raise r.error(f"Llama needs an even head dimension for RoPE, got d_model/num_heads = {d_model // num_heads}")
    model = ModelConfig(
        network=network,
        num_layers=_positive(r, "num_layers", r.get("num_layers", "int", 4)),
        d_model=d_model,
        num_heads=num_heads,
        dropout=float(r.get("dropout", "float", 0.0)),
        use_eos=r.get("use_eos", "bool", True),
        use_bos_action_gate=r.get("use_bos_action_gate", "bool", False),
        rope_theta=float(r.get("rope_theta", "float", 1000.0)),
        intermediate_size=_positive(r, "intermediate_size", r.get("intermediate_size", "int", 4 * d_model)),
        max_position_embeddings=_positive(
            r,
            "max_position_embeddings",
            r.get("max_position_embeddings", "int", default_max_position_embeddings(network, context)),
        ),
        context_length=_positive(r, "context_length", context),
    )
    if model.use_bos_action_gate:
        raise r.error(f"key {r.key('use_bos_action_gate')} = true is not supported by gptrl")
    return model


def _bound(value: Any, r: _Reader, key: str, sign: float) -> float:
    if value is None:
        return sign * math.inf
    if isinstance(value, str) and value.strip().lstrip("+-").lower() in ("inf", "infinity"):
        return -math.inf if value.strip().startswith("-") else math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise r.error(f"key {r.key(key)} must hold numbers or null, got {_describe(value)}")
    return float(value)


def _parse_spec(data: Any, source: str, prefix: str) -> ContinuousSpec:
    r = _Reader(data, source, prefix)
    kind = r.get("type", "str", "continuous")
    if kind != "continuous":
        raise r.error(f"key {r.key('type')} = {kind!r} is not supported (only continuous specs are)")
    size = _positive(r, "size", r.get("size", "int"))
    bounds = {}
    for key, sign in (("low", -1.0), ("high", 1.0)):
        values = r.get(key, "list", [None] * size)
        if len(values) != size:
            raise r.error(f"key {r.key(key)} has {len(values)} entries, expected size {size}")
        bounds[key] = tuple(_bound(v, r, key, sign) for v in values)
    if any(lo > hi for lo, hi in zip(bounds["low"], bounds["high"])):
        raise r.error(f"key {r.key('low')} exceeds {r.key('high')}")
    squash = r.get("squash", "str", None)
    return ContinuousSpec(size, r.get("dtype", "str", "float32"), bounds["low"], bounds["high"], squash)


def _specs_from_box(container: dict[str, Any], source: str, key: str) -> tuple[ContinuousSpec, ...]:
    if container.get("type") != "Box":
        raise BundleError(f"{source}: '{key}' is missing and '{key.replace('specs', 'container')}' is no Box")
    shape = container.get("shape") or []
    size = int(np.prod(shape)) if shape else 1
    data = {"size": size, "dtype": container.get("dtype", "float32"), "low": container.get("low"),
            "high": container.get("high")}
    return (_parse_spec(data, source, f"{key}[0]."),)


def parse_config(data: Any, source: str = CONFIG_FILE, *, sidecar_present: bool = False) -> BundleConfig:
    """Validate a decoded config.json; ``source`` names the file in error messages."""
    r = _Reader(data, source)
    version = r.get("bundle_format_version", "int", 1)
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise r.error(
            f"key 'bundle_format_version' = {version} is not supported (gptrl reads versions "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    capabilities = r.get("requires_capabilities", "list", [])
    unknown = [c for c in capabilities if c not in KNOWN_CAPABILITIES]
    if unknown:
        raise r.error(
            f"key 'requires_capabilities' lists {unknown}, which gptrl does not provide; "
            "refusing to run a policy whose behaviour it would get wrong"
        )
    top_context = r.get("context_length", "int", None)
    model = _parse_model(r.child("model_config", {}), top_context)

    containers = {}
    for key in ("state_container", "action_container"):
        value = r.get(key, "dict", None)
        if value is not None:
            try:
                validate_space_dict(value)
            except ValueError as exc:
                raise r.error(f"key '{key}' is not a valid space: {exc}") from None
        containers[key] = value
    specs = {}
    for key, container_key in (("state_specs", "state_container"), ("action_specs", "action_container")):
        raw = r.get(key, "list", None)
        if raw is None:
            if containers[container_key] is None:
                raise r.error(f"missing required key '{key}' (and no '{container_key}' to derive it from)")
            specs[key] = _specs_from_box(containers[container_key], source, key)
        else:
            if not raw:
                raise r.error(f"key '{key}' is empty")
            specs[key] = tuple(_parse_spec(s, source, f"{key}[{i}].") for i, s in enumerate(raw))
    for key, container_key in (("state_specs", "state_container"), ("action_specs", "action_container")):
        if containers[container_key] is None:
            containers[container_key] = _box_dict(specs[key])

    for i, spec in enumerate(specs["action_specs"]):
        if spec.squash != "tanh" or not all(map(math.isfinite, spec.low + spec.high)):
            raise r.error(
                f"key 'action_specs[{i}]' needs finite low/high and squash 'tanh' "
                f"(got squash {spec.squash!r}); other action encodings are not supported"
            )

    norm = r.child("state_normalization", {})
    embedded = norm.get("embedded", "bool", version >= 2)
    sidecar = norm.get("legacy_sidecar", "bool", version == 1 and sidecar_present)

    serving = r.child("serving", {})
    bos_mode = serving.get("bos_cache_mode", "str", None)
    if bos_mode is not None and bos_mode not in BOS_CACHE_MODES:
        raise serving.error(f"key 'serving.bos_cache_mode' must be one of {BOS_CACHE_MODES}, got {bos_mode!r}")

    action_norm = r.get("action_normalization", "dict", None)
    if action_norm and action_norm.get("enabled"):
        raise r.error("key 'action_normalization.enabled' = true is not supported by gptrl")

    known = {
        "bundle_format_version", "package", "package_version", "model_config", "state_specs",
        "action_specs", "context_length", "requires_capabilities", "state_container",
        "action_container", "state_normalization", "env_id", "serving",
    }
    extra = {k: v for k, v in r.data.items() if k not in known}
    return BundleConfig(
        format_version=version,
        model=model,
        state_specs=specs["state_specs"],
        action_specs=specs["action_specs"],
        state_container=containers["state_container"],
        action_container=containers["action_container"],
        normalization_embedded=embedded,
        normalization_sidecar=sidecar,
        requires_capabilities=tuple(capabilities),
        env_id=r.get("env_id", "str", None),
        bos_cache_mode=bos_mode,
        package=r.get("package", "str", None),
        package_version=str(r.data["package_version"]) if r.data.get("package_version") is not None else None,
        extra=extra,
    )


def _box_dict(specs: tuple[ContinuousSpec, ...]) -> dict[str, Any]:
    low = [v for s in specs for v in s.low]
    high = [v for s in specs for v in s.high]
    return {
        "type": "Box",
        "shape": [len(low)],
        "dtype": specs[0].dtype,
        "low": [_json_float(v) for v in low],
        "high": [_json_float(v) for v in high],
    }


def _json_float(v: float) -> float | str:
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else v


def read_config(bundle_dir: str | Path) -> BundleConfig:
    """Read and validate ``bundle_dir/config.json``."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / CONFIG_FILE
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle folder (it does not exist or is not a directory)")
    if not path.is_file():
        raise BundleError(f"{path}: missing (a bundle needs config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    from gptrl.bundle.normalizer import SIDECAR_FILE

    return parse_config(data, str(path), sidecar_present=(bundle_dir / SIDECAR_FILE).is_file())


def make_config(
    *,
    state_dim: int,
    action_low: Any,
    action_high: Any,
    env_id: str | None = None,
    **model: Any,
) -> BundleConfig:
    """A fresh config for a continuous-control policy (used by training and tests)."""
    high_array = np.atleast_1d(np.asarray(action_high, dtype=np.float64))
    high = tuple(float(v) for v in high_array)
    low = tuple(float(v) for v in np.broadcast_to(np.asarray(action_low, dtype=np.float64), high_array.shape))
    network = _NETWORK_ALIASES[str(model.pop("network", "llama")).lower()]
    context = int(model.pop("context_length", 32))
    d_model = int(model.get("d_model", 256))
    model.setdefault("intermediate_size", 4 * d_model)
    model.setdefault("max_position_embeddings", default_max_position_embeddings(network, context))
    state = ContinuousSpec(state_dim, "float64", (-math.inf,) * state_dim, (math.inf,) * state_dim, None)
    action = ContinuousSpec(len(high), "float32", low, high, "tanh")
    data = {
        "bundle_format_version": 2,
        "model_config": {**ModelConfig(network=network, context_length=context, **model).to_dict()},
        "state_specs": [state.to_dict()],
        "action_specs": [action.to_dict()],
        "context_length": context,
        "state_container": _box_dict((state,)),
        "action_container": {**_box_dict((action,)), "dtype": "float32"},
    }
    if env_id is not None:
        data["env_id"] = env_id
    return parse_config(data, "<make_config>")
