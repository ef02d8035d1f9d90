"""The torch-free policy: an exported step graph driven through onnxruntime with IOBinding.

The policy owns every buffer the graph reads or writes, allocated once: the per-step
inputs, the outputs and the per-layer key/value ring. On CPU they are numpy arrays bound
by pointer, so a step copies nothing but the new token's keys into its ring slot. On CUDA
the ring stays on the GPU as OrtValues (the ``attention`` graph scatters into it in place).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gptrl.bundle.dt import (
    DT_FORMAT,
    DT_STATEFUL_FORMAT,
    KEY_WEIGHTS_FILE,
    check_folder_agrees,
    dt_io_spec,
    dt_stateful_io_spec,
    read_dt_metadata,
)
from gptrl.bundle.files import POLICY_FILE, WEIGHTS_FILE
from gptrl.bundle.policy_graph import KEY_FORMAT, PolicyMetadata, TensorSpec, io_spec, read_metadata, verify_seal
from gptrl.contract import BosCacheMode, PositionMode
from gptrl.errors import BundleError
from gptrl.fileio import sha256_file
from gptrl.rollout import CachedPolicy, RolloutState, StepInputs, resolve_serving
from gptrl.runtime.dt import DTPolicy, StatefulDTPolicy
from gptrl.runtime.session import bind_array, make_session, session_device
from gptrl.runtime.stateful import StatefulPolicy

log = logging.getLogger("gptrl.runtime")

_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)", "bool": "tensor(bool)"}


class OnnxPolicy(CachedPolicy):
    """Same contract as the torch PolicyRunner: reset, act, act_with_info, observe, reset_rows, predict."""

    def __init__(
        self,
        session: ort.InferenceSession,
        metadata: PolicyMetadata,
        *,
        num_envs: int = 1,
        kv_cache_max_len: int | None = None,
        bos_cache_mode: BosCacheMode | None = None,
        positions: PositionMode = "shared",
    ):
        config = self.config = metadata.config
        self.metadata, self.session, self.variant = metadata, session, metadata.variant
        kv, mode = resolve_serving(config, kv_cache_max_len, bos_cache_mode, num_envs)
        ring = kv + 1 if self.variant == "attention" else kv
        self.state = RolloutState(num_envs, config.state_dim, config.action_dim, kv, mode, ring_size=ring,
                                  positions=positions)
        self.device = session_device(session)
        self._allocate()
        self._bind()

    # -- buffers and bindings ----------------------------------------------------

    def _allocate(self) -> None:
        c, m = self.config, self.config.model
        B, S, A, H, hd, L = self.num_envs, c.state_dim, c.action_dim, m.num_heads, m.head_dim, m.num_layers
        ring = self.state.ring_size
        f32 = np.float32
        self._in = {
            "state": np.zeros((B, S), f32),
            "action": np.zeros((B, A), f32),
            "is_bos": np.zeros(B, f32),
            "position": np.zeros(B, np.int64),
        }
        self._out = {"action_out": np.zeros((B, A), f32), "value": np.zeros(B, f32),
                     "termination_prob": np.zeros(B, f32)}
        if self.variant == "attention":
            self._in["write_index"] = np.zeros(B, np.int64)
            self._in["attn_mask"] = np.zeros((B, ring), bool)
            key_shape = value_shape = (B, H, ring, hd)
        else:
            self._in["past_valid"] = np.zeros((B, ring), bool)
            key_shape, value_shape = (B, H, hd, ring), (B, H, ring, hd)
            for i in range(L):
                self._out[f"new_key.{i}"] = np.zeros((B, H, hd), f32)
                self._out[f"new_value.{i}"] = np.zeros((B, H, hd), f32)
        self._keys = [np.zeros(key_shape, f32) for _ in range(L)]
        self._values = [np.zeros(value_shape, f32) for _ in range(L)]
        self._slot_writes = [] if self.variant == "attention" else [
            (self._keys[i], self._values[i], self._out[f"new_key.{i}"], self._out[f"new_value.{i}"]) for i in range(L)
        ]

    def _bind(self) -> None:
        io = self._io = self.session.io_binding()
        on_gpu = self.device == "cuda"
        if on_gpu and self.variant != "attention":
            log.warning("gptrl.runtime: the portable graph keeps its cache in host memory under CUDA; "
                        "export with the default (attention) variant to keep it on the GPU")
        self._device_inputs: dict[str, ort.OrtValue] = {}
        for name, array in self._in.items():
            if on_gpu:
                value = self._device_inputs[name] = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                io.bind_ortvalue_input(name, value)
            else:
                bind_array(io.bind_input, name, array)
        for name, array in self._out.items():
            bind_array(io.bind_output, name, array)
        # Caches are never cleared on reset: slots a row may not see are masked out, and every
        # value in them was written by the graph (finite), so they contribute exactly zero.
        self._device_cache: list[ort.OrtValue] = []
        for i, (k, v) in enumerate(zip(self._keys, self._values)):
            for kind, array in (("key", k), ("value", v)):
                if on_gpu and self.variant == "attention":
                    value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                    self._device_cache.append(value)
                    io.bind_ortvalue_input(f"past_{kind}.{i}", value)
                    io.bind_ortvalue_output(f"present_{kind}.{i}", value)  # in place
                else:
                    bind_array(io.bind_input, f"past_{kind}.{i}", array)
                    if self.variant == "attention":
                        bind_array(io.bind_output, f"present_{kind}.{i}", array)  # in place

    # -- one step ------------------------------------------------------------------

    def _forward(self, step: StepInputs):
        state, ins = self.state, self._in
        slot = state.slot
        ins["state"][:] = step.states
        ins["action"][:] = step.actions
        ins["is_bos"][:] = step.is_bos
        ins["position"][:] = state.position_ids()
        if self.variant == "attention":
            ins["write_index"][:] = slot
            mask = ins["attn_mask"]
            mask[:] = state.valid
            mask[:, slot] = True  # the new token itself
        else:
            ins["past_valid"][:] = state.valid
        for name, value in self._device_inputs.items():
            value.update_inplace(ins[name])
        self.session.run_with_iobinding(self._io)
        for cache_k, cache_v, new_k, new_v in self._slot_writes:  # portable graph only
            cache_k[:, :, :, slot] = new_k
            cache_v[:, :, slot, :] = new_v
        term = self._out["termination_prob"].copy() if self.config.model.use_eos else None
        return self._out["action_out"].copy(), self._out["value"].copy(), term


def check_graph_io(session: ort.InferenceSession, metadata: PolicyMetadata, source: str) -> None:
    """The session's inputs and outputs must be exactly those ``io_spec`` gives for the metadata's variant."""
    want_in, want_out = io_spec(metadata.variant, metadata.config, metadata.kv_cache_max_len)
    _check_io(session, want_in, want_out, source, f"variant {metadata.variant!r}")


def _axis_ok(want: int | str, have: int | str | None) -> bool:
    """An axis the spec names (``batch``, ``ring``) must be dynamic in the graph too (a graph fixing the batch to 1
    would load and then fail at the first step with two envs); a numbered axis must have that size."""
    return (have is None or isinstance(have, str)) if isinstance(want, str) else have == want


def _check_io(session: ort.InferenceSession, want_in: list[TensorSpec], want_out: list[TensorSpec], source: str,
              what: str) -> None:
    for kind, want, have in (("input", want_in, session.get_inputs()), ("output", want_out, session.get_outputs())):
        got = {arg.name: arg for arg in have}
        missing = [s.name for s in want if s.name not in got]
        extra = sorted(set(got) - {s.name for s in want})
        if missing or extra:
            raise BundleError(f"{source}: the graph's {kind}s disagree with its metadata ({what}): "
                              f"missing {missing}, unexpected {extra}")
        for spec in want:
            arg = got[spec.name]
            shape = arg.shape or []
            fixed_ok = len(shape) == len(spec.shape) and all(_axis_ok(w, h) for w, h in zip(spec.shape, shape))
            if arg.type != _ORT_TYPES[spec.dtype] or not fixed_ok:
                raise BundleError(f"{source}: {kind} '{spec.name}' is {arg.type} {shape}, but the metadata implies "
                                  f"{_ORT_TYPES[spec.dtype]} {list(spec.shape)}")


def _check_seal(onnx_path: Path, digest: str) -> None:
    if not digest:
        raise BundleError(f"{onnx_path}: carries no seal (metadata 'gptrl.graph_sha256'); it was exported by an older "
                          f"gptrl or by another tool: re-export it with `gptrl export`")
    if not verify_seal(onnx_path.read_bytes(), digest):
        raise BundleError(f"{onnx_path}: its bytes do not match the seal recorded at export (metadata "
                          "'gptrl.graph_sha256'): the graph was changed or damaged after export; re-export it")


def _load_dt_policy(session: ort.InferenceSession, props: dict[str, str], onnx_path: Path, path: str | Path,
                    num_envs: int) -> DTPolicy | StatefulDTPolicy:
    config, sidecar = read_dt_metadata(props, str(onnx_path))
    _check_seal(onnx_path, props.get("gptrl.graph_sha256", ""))
    stateful = props.get(KEY_FORMAT) == DT_STATEFUL_FORMAT
    want_in, want_out = (dt_stateful_io_spec if stateful else dt_io_spec)(config, sidecar.context_length)
    _check_io(session, want_in, want_out, str(onnx_path),
              "stateful Decision Transformer" if stateful else "Decision Transformer window")
    weights = onnx_path.parent / props.get(KEY_WEIGHTS_FILE, "")
    if Path(path).is_dir() and weights.is_file() and props.get("gptrl.weights_sha256") != sha256_file(weights):
        raise BundleError(f"{onnx_path}: was exported from other weights than {weights} (sha256 differs); "
                          f"re-export with `gptrl export {onnx_path.parent}`")
    if Path(path).is_dir():
        check_folder_agrees(onnx_path.parent, config, sidecar, str(onnx_path))
    return (StatefulDTPolicy if stateful else DTPolicy)(session, config, sidecar, num_envs=num_envs)


def resolve_policy_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        onnx_path = path / POLICY_FILE
        if not onnx_path.is_file():
            raise BundleError(f"{onnx_path}: missing; export the bundle first with `gptrl export {path}`")
        return onnx_path
    if not path.is_file():
        raise BundleError(f"{path}: no such file or bundle folder")
    return path


def load_policy(
    path: str | Path,
    *,
    num_envs: int = 1,
    kv_cache_max_len: int | None = None,
    bos_cache_mode: BosCacheMode | None = None,
    providers: str | list[str] | None = None,
    intra_op_threads: int = 1,
    positions: PositionMode | None = None,
) -> OnnxPolicy | StatefulPolicy | DTPolicy | StatefulDTPolicy:
    """Load a bundle folder holding policy.onnx, or a bare .onnx file: an :class:`OnnxPolicy` for the attention and
    portable graphs, a :class:`StatefulPolicy` for a stateful one, and for Decision Transformers a
    :class:`DTPolicy` (window graph) or :class:`StatefulDTPolicy` (recognised from the metadata).

    Before anything runs: the file's seal must match its bytes (a changed initializer or node is refused), its
    inputs and outputs must match its metadata, and in a bundle folder the graph must have been exported from the
    folder's model.safetensors (sha256), so stale exports are refused rather than silently run.
    """
    onnx_path = resolve_policy_path(path)
    try:
        session = make_session(onnx_path, providers, intra_op_threads)
    except ValueError:  # bad arguments (providers, threads): the caller's mistake, not the file's
        raise
    except Exception as exc:  # onnxruntime's Fail, InvalidProtobuf, InvalidGraph, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BundleError(f"{onnx_path}: onnxruntime cannot load it ({type(exc).__name__}: {first_line})") from None
    props = session.get_modelmeta().custom_metadata_map
    if props.get(KEY_FORMAT) in (DT_FORMAT, DT_STATEFUL_FORMAT):
        return _load_dt_policy(session, props, onnx_path, path, num_envs)
    metadata = read_metadata(props, str(onnx_path))
    _check_seal(onnx_path, metadata.graph_sha256)
    check_graph_io(session, metadata, str(onnx_path))
    weights = onnx_path.parent / WEIGHTS_FILE
    if Path(path).is_dir() and weights.is_file() and metadata.weights_sha256 != sha256_file(weights):
        raise BundleError(
            f"{onnx_path}: was exported from other weights than {weights} (sha256 differs); "
            f"re-export with `gptrl export {onnx_path.parent}`"
        )
    if metadata.variant == "stateful":
        fixed = {"kv_cache_max_len": (kv_cache_max_len, metadata.kv_cache_max_len),
                 "bos_cache_mode": (bos_cache_mode, metadata.bos_cache_mode)}
        for name, (asked, exported) in fixed.items():
            if asked is not None and asked != exported:
                raise ValueError(f"{onnx_path}: {name} is fixed at export in a stateful graph ({exported!r}); "
                                 f"re-export with `gptrl export --stateful` to get {asked!r}")
        policy = StatefulPolicy(session, metadata, num_envs=num_envs)
        policy.positions = positions or "per_row"  # "shared" is refused: the graph keeps per-row positions
        return policy
    return OnnxPolicy(session, metadata, num_envs=num_envs, kv_cache_max_len=kv_cache_max_len,
                      bos_cache_mode=bos_cache_mode, positions=positions or "shared")
