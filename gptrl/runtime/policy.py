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

from gptrl.bundle.files import POLICY_FILE, WEIGHTS_FILE
from gptrl.bundle.policy_graph import PolicyMetadata, io_spec, read_metadata
from gptrl.contract import BosCacheMode, PositionMode
from gptrl.errors import BundleError
from gptrl.families import family_of_graph
from gptrl.fileio import sha256_file
from gptrl.rollout import CachedPolicy, RolloutState, StepInputs, StepOutputs, resolve_serving
from gptrl.runtime.cache import CACHES
from gptrl.runtime.checks import check_io, check_seal
from gptrl.runtime.sampling import GraphSampling
from gptrl.runtime.session import bind_array, make_session, session_device
from gptrl.runtime.stateful import StatefulPolicy

log = logging.getLogger("gptrl.runtime")


class OnnxPolicy(GraphSampling, CachedPolicy):
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
        layout = CACHES[metadata.variant]
        self.state = RolloutState(num_envs, config.observation, config.action, kv, mode,
                                  ring_size=kv + layout.extra_slots, positions=positions)
        self.device = session_device(session)
        self.cache = layout(config.model, self.num_envs, self.state.ring_size, self.device == "cuda")
        self._allocate()
        self._bind()

    # -- buffers and bindings ----------------------------------------------------

    def _allocate(self) -> None:
        c, codec, B, f32 = self.config, self.config.action, self.num_envs, np.float32
        self._in = {
            "state": np.zeros((B, c.state_dim), c.observation.dtype),
            "action": np.zeros((B, *codec.shape), codec.dtype),
            "is_bos": np.zeros(B, f32),
            "position": np.zeros(B, np.int64),
            **self.cache.inputs,
        }
        self._out = {"action_out": np.zeros((B, *codec.shape), codec.dtype), "value": np.zeros(B, f32),
                     "termination_prob": np.zeros(B, f32), **self.cache.outputs}
        if self.metadata.sampling:
            self._in |= {"uniform": np.zeros((B, codec.noise_width), f32), "sample": np.zeros(B, bool)}
            self._out |= {"log_prob": np.zeros(B, f32), "dist": np.zeros((B, codec.param_width), f32)}

    def _bind(self) -> None:
        """Every buffer bound once: by pointer on CPU; on CUDA the step's inputs as device copies updated per
        step (and the attention ring on the device)."""
        io = self._io = self.session.io_binding()
        on_gpu = self.device == "cuda"
        self._device_inputs: dict[str, ort.OrtValue] = {}
        for name, array in self._in.items():
            if on_gpu:
                value = self._device_inputs[name] = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                io.bind_ortvalue_input(name, value)
            else:
                bind_array(io.bind_input, name, array)
        for name, array in self._out.items():
            bind_array(io.bind_output, name, array)
        self.cache.bind(io)

    # -- one step ------------------------------------------------------------------

    def _forward(self, step: StepInputs) -> StepOutputs:
        state, ins = self.state, self._in
        slot = state.slot
        ins["state"][:] = step.states
        ins["action"][:] = step.actions
        ins["is_bos"][:] = step.is_bos
        ins["position"][:] = state.position_ids()
        if self.metadata.sampling:
            ins["uniform"][:], ins["sample"][:] = step.uniform, step.sample
        self.cache.before(state)
        for name, value in self._device_inputs.items():
            value.update_inplace(ins[name])
        self.session.run_with_iobinding(self._io)
        self.cache.after(slot)
        out = self._out
        term = out["termination_prob"].copy() if self.config.model.use_eos else None
        copy = lambda name: out[name].copy() if name in out else None
        return StepOutputs(copy("action_out"), copy("value"), term, copy("dist"), copy("log_prob"))


def check_graph_io(session: ort.InferenceSession, metadata: PolicyMetadata, source: str) -> None:
    """The session's inputs and outputs must be exactly those ``io_spec`` gives for the metadata's variant."""
    want_in, want_out = io_spec(metadata.variant, metadata.config, metadata.kv_cache_max_len,
                                sampling=metadata.sampling)
    check_io(session, want_in, want_out, source, f"variant {metadata.variant!r}")


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
):
    """Load a bundle folder holding policy.onnx, or a bare .onnx file, as the runtime policy of its family
    (``gptrl.families``, from the graph's ``gptrl.format`` metadata): for Causal GPT-RL an :class:`OnnxPolicy` (the
    attention and portable graphs) or a :class:`StatefulPolicy`; for Decision Transformers a ``DTPolicy`` (window
    graph) or ``StatefulDTPolicy``.

    Before anything runs: the file's seal must match its bytes (a changed initializer or node is refused), its
    inputs and outputs must match its metadata, and in a bundle folder the graph must have been exported from the
    folder's weights (sha256), so stale exports are refused rather than silently run.
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
    load = family_of_graph(props, str(onnx_path)).part("policy")
    policy = load(session, props, onnx_path, in_folder=Path(path).is_dir(), num_envs=num_envs,
                  kv_cache_max_len=kv_cache_max_len, bos_cache_mode=bos_cache_mode, positions=positions)
    policy.source = PolicySource(str(onnx_path), onnx_path.read_bytes(), {
        "kv_cache_max_len": kv_cache_max_len, "bos_cache_mode": bos_cache_mode, "providers": providers,
        "intra_op_threads": intra_op_threads, "positions": positions})
    return policy


class PolicySource:
    """What rebuilds a loaded policy in another process or on another machine (a Ray worker): the graph's bytes,
    already checked against its folder by the ``load_policy`` that made it, and the keywords it was loaded with.

    ``load`` writes the bytes to a private temporary file and loads that, so a worker needs no copy of the bundle
    folder; ``name`` (the original path) is kept for messages. The graph's own seal is checked again there.
    """

    def __init__(self, name: str, graph: bytes, kwargs: dict):
        self.name, self.graph, self.kwargs = name, graph, dict(kwargs)

    def describe(self) -> dict:
        """A JSON description (the graph by sha256, not by path), for results files that must match the policy they
        came from wherever it is loaded from."""
        import hashlib

        return {"graph_sha256": hashlib.sha256(self.graph).hexdigest(),
                **{k: v for k, v in self.kwargs.items() if v is not None}}

    def load(self, num_envs: int = 1):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gptrl-policy-") as tmp:
            path = Path(tmp) / Path(self.name).name
            path.write_bytes(self.graph)
            policy = load_policy(path, num_envs=num_envs, **self.kwargs)
        policy.source = self
        return policy


def check_weights(onnx_path: Path, weights: Path, digest: str, in_folder: bool) -> None:
    """In a bundle folder, the graph must have been exported from the folder's weights."""
    if in_folder and weights.is_file() and digest != sha256_file(weights):
        raise BundleError(f"{onnx_path}: was exported from other weights than {weights} (sha256 differs); "
                          f"re-export with `gptrl export {onnx_path.parent}`")


def load_causal_policy(session: ort.InferenceSession, props: dict[str, str], onnx_path: Path, *, in_folder: bool,
                       num_envs: int = 1, kv_cache_max_len: int | None = None,
                       bos_cache_mode: BosCacheMode | None = None,
                       positions: PositionMode | None = None) -> OnnxPolicy | StatefulPolicy:
    """The Causal GPT-RL family's runtime policy for a loaded graph (``gptrl.families``)."""
    metadata = read_metadata(props, str(onnx_path))
    check_seal(onnx_path, metadata.graph_sha256)
    check_graph_io(session, metadata, str(onnx_path))
    check_weights(onnx_path, onnx_path.parent / WEIGHTS_FILE, metadata.weights_sha256, in_folder)
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
