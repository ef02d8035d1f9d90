"""Decision Transformer bundles, read without torch: a Hugging Face ``DecisionTransformerModel`` checkpoint as it is
(``config.json`` with ``model_type`` "decision_transformer", and ``model.safetensors`` or the older
``pytorch_model.bin``) plus gptrl's sidecar ``gptrl_dt.json`` with what the checkpoint does not say: the state
normaliser, the return scale, the default target return, the env and the context length K.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptrl.bundle import files
from gptrl.bundle.jsonreader import JsonReader, describe
from gptrl.bundle.policy_graph import (
    KEY_FORMAT,
    KEY_GRAPH_SHA256,
    KEY_IO,
    KEY_VERSION,
    KEY_WEIGHTS_SHA256,
    SEAL_PLACEHOLDER,
    STATEFUL_IO,
    TensorSpec,
    check_io_convention,
)
from gptrl.bundle.schema import LIMITS, MAX_PARAMETERS
from gptrl.errors import BundleError
from gptrl.fileio import loads_json, read_json

CONFIG_FILE = files.CONFIG_FILE
SAFETENSORS_FILE = files.WEIGHTS_FILE
PICKLE_FILE = files.DT_PICKLE_FILE
SIDECAR_FILE = files.DT_SIDECAR_FILE
MODEL_TYPE = "decision_transformer"
ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "tanh", "silu", "swish")
MAX_EP_LEN = 1 << 20
SIDECAR_FORMAT = "gptrl-decision-transformer/1"
# K: every step encodes 3K tokens, and the attention over them holds (3K)^2 scores per head and row, so the limit is
# one a machine can serve (3 x 1024 tokens: 38 MB of float32 scores per head and row), far above the K of 20 that
# Decision Transformers use; the serving budget in gptrl.rollout.window bounds rows x heads on top of it.
MAX_DT_CONTEXT = 1024


@dataclass(frozen=True)
class DTConfig:
    """The architecture fields of a Hugging Face DecisionTransformerConfig that the math reads."""

    state_dim: int
    act_dim: int
    hidden_size: int = 128
    n_layer: int = 3
    n_head: int = 1
    n_inner: int | None = None  # None: 4 x hidden_size
    activation_function: str = "relu"
    max_ep_len: int = 4096
    action_tanh: bool = True
    n_positions: int = 1024
    layer_norm_epsilon: float = 1e-5
    vocab_size: int = 1
    # Dropout rates (training only; a no-op when the model runs).
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1

    @property
    def inner(self) -> int:
        return self.n_inner or 4 * self.hidden_size


@dataclass(frozen=True)
class DTSidecar:
    """What gptrl needs beside the checkpoint to run it as a policy (``gptrl_dt.json``)."""

    state_mean: list[float]
    state_std: list[float]
    scale: float = 1000.0  # returns-to-go are divided by this before the model sees them
    target_return: float | None = None  # env units; None: the caller must give one at reset
    env_id: str | None = None
    context_length: int = 20  # K timesteps (3K tokens)
    format: str = SIDECAR_FORMAT  # a reader refuses any other

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


@dataclass(frozen=True)
class DTBundle:
    path: Path
    config: DTConfig
    sidecar: DTSidecar
    weights_file: Path  # model.safetensors, or pytorch_model.bin (read by the torch side only)

    @property
    def state_mean(self) -> np.ndarray:
        return np.asarray(self.sidecar.state_mean, np.float32)

    @property
    def state_std(self) -> np.ndarray:
        return np.asarray(self.sidecar.state_std, np.float32)


def is_dt_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder whose config.json says ``model_type: decision_transformer``."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        data = read_json(config)
    except BundleError:
        return False
    return isinstance(data, dict) and data.get("model_type") == MODEL_TYPE


def parse_dt_config(data: Any, source: str) -> DTConfig:
    r = JsonReader(data, source)
    model_type = r.get("model_type", "str", None)
    if model_type != MODEL_TYPE:
        raise r.error(f"key 'model_type' is {model_type!r}: not a Decision Transformer config "
                      f"(expected {MODEL_TYPE!r})")
    hidden = r.positive("hidden_size", 128, limit=LIMITS["d_model"])
    n_head = r.positive("n_head", 1, limit=LIMITS["num_heads"])
    if hidden % n_head:
        raise r.error(f"key 'hidden_size' ({hidden}) must be divisible by 'n_head' ({n_head})")
    activation = r.get("activation_function", "str", "relu")
    if activation not in ACTIVATIONS:
        raise r.error(f"key 'activation_function' = {activation!r} is not supported (one of {list(ACTIVATIONS)})")
    n_inner = r.get("n_inner", "int", None)
    if n_inner is not None and not 0 < n_inner <= LIMITS["intermediate_size"]:
        raise r.error(f"key 'n_inner' must be positive and at most {LIMITS['intermediate_size']}, got {n_inner}")
    eps = float(r.get("layer_norm_epsilon", "float", 1e-5))
    if not (math.isfinite(eps) and eps > 0):
        raise r.error(f"key 'layer_norm_epsilon' must be a positive number, got {eps}")
    rates = {}
    for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
        rates[key] = float(r.get(key, "float", 0.1))
        if not 0.0 <= rates[key] < 1.0:
            raise r.error(f"key '{key}' must be in [0, 1), got {rates[key]}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if r.flag(flag, False):
            raise r.error(f"key '{flag}' = true is not supported by gptrl")
    if not r.flag("scale_attn_weights", True):
        raise r.error("key 'scale_attn_weights' = false is not supported by gptrl")
    config = DTConfig(
        state_dim=r.positive("state_dim", 17, limit=LIMITS["size"]),
        act_dim=r.positive("act_dim", 4, limit=LIMITS["size"]),
        hidden_size=hidden,
        n_layer=r.positive("n_layer", 3, limit=LIMITS["num_layers"]),
        n_head=n_head,
        n_inner=n_inner,
        activation_function=activation,
        max_ep_len=r.positive("max_ep_len", 4096, limit=MAX_EP_LEN),
        action_tanh=r.flag("action_tanh", True),
        n_positions=r.positive("n_positions", 1024, limit=LIMITS["max_position_embeddings"]),
        layer_norm_epsilon=eps,
        vocab_size=r.positive("vocab_size", 1, limit=1 << 20),
        **rates,
    )
    params = sum(math.prod(shape) for shape in required_dt_tensors(config).values())
    if params > MAX_PARAMETERS:  # refused before a model is built or a weights file is read
        raise r.error(f"the config describes {params:,} parameters, past gptrl's limit of {MAX_PARAMETERS:,}")
    return config


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_sidecar(data: Any, source: str, config: DTConfig) -> DTSidecar:
    r = JsonReader(data, source)
    version = r.get("format", "str", SIDECAR_FORMAT)
    if version != SIDECAR_FORMAT:
        raise r.error(f"key 'format' = {version!r}: this gptrl reads {SIDECAR_FORMAT!r} only (a newer gptrl wrote "
                      "it, or another tool)")
    out = {}
    for key in ("state_mean", "state_std"):
        values = r.get(key, "list")
        if len(values) != config.state_dim:
            raise r.error(f"key '{key}' has {len(values)} entries, expected state_dim {config.state_dim}")
        bad = next((i for i, v in enumerate(values) if not _finite_number(v)), None)
        if bad is not None:
            raise r.error(f"key '{key}' must hold finite numbers, got {describe(values[bad])} at index {bad}")
        out[key] = [float(v) for v in values]
    if any(v <= 0 for v in out["state_std"]):
        raise r.error("key 'state_std' must be positive")
    scale = float(r.get("scale", "float", 1000.0))
    if not (math.isfinite(scale) and scale > 0):
        raise r.error(f"key 'scale' must be a positive number, got {scale}")
    target = r.get("target_return", "float", None)
    if target is not None and not math.isfinite(target):
        raise r.error(f"key 'target_return' must be finite, got {target}")
    k = r.positive("context_length", 20, limit=MAX_DT_CONTEXT)
    return DTSidecar(out["state_mean"], out["state_std"], scale, None if target is None else float(target),
                     r.get("env_id", "str", None), k)


def load_dt_bundle(path: str | Path) -> DTBundle:
    """Read and validate a DT bundle folder (config, sidecar, which weights file); raises BundleError."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder (it does not exist or is not a directory)")
    config = parse_dt_config(read_json(path / CONFIG_FILE), str(path / CONFIG_FILE))
    sidecar_path = path / SIDECAR_FILE
    if not sidecar_path.is_file():
        raise BundleError(f"{sidecar_path}: missing; a Decision Transformer bundle needs gptrl's sidecar (state "
                          "normaliser, return scale): make one with gptrl.import_decision_transformer or "
                          "gptrl dt-import")
    sidecar = parse_sidecar(read_json(sidecar_path), str(sidecar_path), config)
    weights = path / SAFETENSORS_FILE if (path / SAFETENSORS_FILE).is_file() else path / PICKLE_FILE
    if not weights.is_file():
        raise BundleError(f"{path}: holds neither {SAFETENSORS_FILE} nor {PICKLE_FILE}")
    return DTBundle(path, config, sidecar, weights)


def required_dt_tensors(c: DTConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a Hugging Face DecisionTransformerModel with config ``c``."""
    h, inner = c.hidden_size, c.inner
    shapes: dict[str, tuple[int, ...]] = {"encoder.wte.weight": (c.vocab_size, h),
                                          "encoder.wpe.weight": (c.n_positions, h)}
    for i in range(c.n_layer):
        p = f"encoder.h.{i}."
        for name, shape in (("ln_1", (h,)), ("ln_2", (h,)), ("attn.c_attn", (h, 3 * h)), ("attn.c_proj", (h, h)),
                            ("mlp.c_fc", (h, inner)), ("mlp.c_proj", (inner, h))):
            shapes[f"{p}{name}.weight"] = shape
            shapes[f"{p}{name}.bias"] = (shape[-1],)
    shapes |= {"encoder.ln_f.weight": (h,), "encoder.ln_f.bias": (h,), "embed_timestep.weight": (c.max_ep_len, h),
               "embed_return.weight": (h, 1), "embed_return.bias": (h,), "embed_state.weight": (h, c.state_dim),
               "embed_state.bias": (h,), "embed_action.weight": (h, c.act_dim), "embed_action.bias": (h,),
               "embed_ln.weight": (h,), "embed_ln.bias": (h,), "predict_state.weight": (c.state_dim, h),
               "predict_state.bias": (c.state_dim,), "predict_action.0.weight": (c.act_dim, h),
               "predict_action.0.bias": (c.act_dim,), "predict_return.weight": (1, h), "predict_return.bias": (1,)}
    return shapes


# -- the exported window graph (gptrl.graph.dt builds it, gptrl.runtime checks it) --------------------------------
DT_FORMAT = "gptrl-dt-window/1"
DT_STATEFUL_FORMAT = "gptrl-dt-stateful/1"  # also gptrl.io = stateful-v1
KEY_DT_CONFIG = "gptrl.dt_config"
KEY_DT_SIDECAR = "gptrl.dt_sidecar"
KEY_WEIGHTS_FILE = "gptrl.weights_file"


def dt_io_spec(config: DTConfig, context_length: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of the windowed DT graph: the window ``gptrl.rollout.window.DTWindow`` keeps -> the action."""
    K = context_length
    inputs = [TensorSpec("states", "float32", ("batch", K, config.state_dim)),
              TensorSpec("actions", "float32", ("batch", K, config.act_dim)),
              TensorSpec("returns_to_go", "float32", ("batch", K, 1)),
              TensorSpec("timesteps", "int64", ("batch", K)),
              TensorSpec("attention_mask", "float32", ("batch", K))]
    return inputs, [TensorSpec("action", "float32", ("batch", config.act_dim))]


def dt_state_spec(config: DTConfig, context_length: int) -> list[TensorSpec]:
    """The state of a stateful DT graph (all float32; all zeros = a fresh policy): its window buffers."""
    K = context_length
    return [TensorSpec("states", "float32", ("batch", K, config.state_dim)),
            TensorSpec("actions", "float32", ("batch", K, config.act_dim)),
            TensorSpec("returns_to_go", "float32", ("batch", K, 1)),
            TensorSpec("timesteps", "float32", ("batch", K)),
            TensorSpec("mask", "float32", ("batch", K)),
            TensorSpec("started", "float32", ("batch",))]


def dt_stateful_io_spec(config: DTConfig, context_length: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """``obs, reset, reward, target_return, state_in.* -> action, state_out.*`` (docs/stateful.md)."""
    state = dt_state_spec(config, context_length)
    inputs = [TensorSpec("obs", "float32", ("batch", config.state_dim)), TensorSpec("reset", "bool", ("batch",)),
              TensorSpec("reward", "float32", ("batch",)), TensorSpec("target_return", "float32", ("batch",))]
    inputs += [TensorSpec(f"state_in.{s.name}", s.dtype, s.shape) for s in state]
    outputs = [TensorSpec("action", "float32", ("batch", config.act_dim))]
    outputs += [TensorSpec(f"state_out.{s.name}", s.dtype, s.shape) for s in state]
    return inputs, outputs


def dt_metadata_props(bundle: DTBundle, weights_sha256: str, version: str, *,
                      stateful: bool = False) -> dict[str, str]:
    extra = {KEY_IO: STATEFUL_IO} if stateful else {}
    config = json.dumps({"model_type": MODEL_TYPE, **asdict(bundle.config)})
    return extra | {KEY_FORMAT: DT_STATEFUL_FORMAT if stateful else DT_FORMAT, KEY_DT_CONFIG: config,
            KEY_DT_SIDECAR: bundle.sidecar.to_json(), KEY_WEIGHTS_FILE: bundle.weights_file.name,
            KEY_WEIGHTS_SHA256: weights_sha256, KEY_VERSION: version, KEY_GRAPH_SHA256: SEAL_PLACEHOLDER}


def read_dt_metadata(props: dict[str, str], source: str) -> tuple[DTConfig, DTSidecar]:
    check_io_convention(props, source, stateful=props.get(KEY_FORMAT) == DT_STATEFUL_FORMAT)
    config = parse_dt_config(loads_json(props.get(KEY_DT_CONFIG, ""), f"{source} metadata '{KEY_DT_CONFIG}'"),
                             f"{source} metadata '{KEY_DT_CONFIG}'")
    sidecar = parse_sidecar(loads_json(props.get(KEY_DT_SIDECAR, ""), f"{source} metadata '{KEY_DT_SIDECAR}'"),
                            f"{source} metadata '{KEY_DT_SIDECAR}'", config)
    return config, sidecar


def check_folder_agrees(folder: Path, config: DTConfig, sidecar: DTSidecar, source: str) -> None:
    """A graph in a bundle folder must carry the values of the folder's config.json and gptrl_dt.json as they are
    now: the torch runner reads the files and the runtime reads the graph, so an edit the graph ignores would make
    the two act differently. Values are compared, not bytes, so the error names the keys and a harmless edit (white
    space, a key neither reads) is no disagreement."""
    for name, embedded in ((CONFIG_FILE, config), (SIDECAR_FILE, sidecar)):
        path = folder / name
        if not path.is_file():
            continue
        data = read_json(path)
        current = (parse_dt_config(data, str(path)) if name == CONFIG_FILE
                   else parse_sidecar(data, str(path), config))
        have, want = asdict(embedded), asdict(current)
        changed = [key for key in have if have[key] != want[key]]
        if changed:
            raise BundleError(f"{source}: was exported with other values than {path} now holds (keys {changed}); "
                              f"re-export with `gptrl export {folder}`")

