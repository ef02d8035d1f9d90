"""``export_dt_onnx``: a DT bundle -> its exact windowed graph (``gptrl.graph.dt``), sealed, verified against the
torch ``DTRunner`` in closed loop before it is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from gptrl import __version__
from gptrl.bundle.dt import DTBundle, dt_metadata_props, load_dt_bundle
from gptrl.bundle.files import POLICY_FILE, source_files
from gptrl.fileio import atomic_path, check_output, sha256_file
from gptrl.graph import serialize
from gptrl.graph.dt import build_dt_stateful_graph, build_dt_window_graph
from gptrl.synthetic import ClosedLoopEnv


class DTExportVerificationError(RuntimeError):
    """The exported DT graph does not reproduce the torch runner."""


def export_dt_onnx(bundle_dir: str | Path, out: str | Path | None = None, *, variant: str = "attention",
                   verify: bool = True, tolerance: float = 1e-4, **unsupported) -> Path:
    """The windowed graph (``policy.onnx``, run by ``gptrl.runtime.load_policy``), or with variant "stateful" the
    ``obs, reset, reward, target_return, state_in.* -> action, state_out.*`` graph any ONNX runtime drives."""
    from gptrl.exporter.dt.runner import dt_tensors

    if variant not in ("attention", "stateful") or any(unsupported.get(k) is not None
                                                       for k in ("kv", "bos_cache_mode", "quantize")):
        raise ValueError(f"{bundle_dir}: a Decision Transformer exports its exact windowed graph or, with "
                         "--stateful, the stateful one (its K is fixed by the bundle; no kv, bos_cache_mode or "
                         "quantization)")
    stateful = variant == "stateful"
    bundle_dir = Path(bundle_dir)
    out = Path(out) if out is not None else bundle_dir / POLICY_FILE
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; give the .onnx file to write (e.g. {out / POLICY_FILE})")
    reads = source_files(bundle_dir)
    check_output(out, reads)
    bundle = load_dt_bundle(bundle_dir)
    build = build_dt_stateful_graph if stateful else build_dt_window_graph
    model = build(bundle, dt_tensors(bundle))
    onnx.helper.set_model_props(model, dt_metadata_props(bundle, sha256_file(bundle.weights_file), __version__,
                                                         stateful=stateful))
    model.doc_string = f"gptrl Decision Transformer window (K={bundle.sidecar.context_length})"
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(out, reads=reads) as tmp:
        tmp.write_bytes(serialize(model))
        if verify:
            (verify_dt_stateful if stateful else verify_dt_export)(tmp, bundle, tolerance=tolerance, name=out)
    return out


def verify_dt_export(onnx_path: str | Path, bundle: DTBundle, *, tolerance: float = 1e-4, num_envs: int = 2,
                     seed: int = 0, name: str | Path | None = None) -> float:
    """Two rows for 2K + 8 steps through synthetic closed-loop dynamics with synthetic rewards, row 1 restarted
    with another target halfway; returns the largest action difference from the torch runner."""
    from gptrl.exporter.dt.runner import load_dt_runner
    from gptrl.runtime import load_policy

    c, side = bundle.config, bundle.sidecar
    reference, policy = load_dt_runner(bundle, num_envs=num_envs), load_policy(onnx_path, num_envs=num_envs)
    env = ClosedLoopEnv(c.state_dim, c.act_dim, num_envs, mean=bundle.state_mean, std=bundle.state_std, seed=seed)
    target = side.target_return if side.target_return is not None else 1000.0
    obs = env.reset()
    reference.reset(obs, target_return=target)
    policy.reset(obs, target_return=target)
    steps, worst, reward = 2 * side.context_length + 8, 0.0, None
    for t in range(steps):
        expected = reference.act(obs, reward=reward)
        worst = max(worst, float(np.abs(policy.act(obs, reward=reward) - expected).max()))
        obs = env.step(expected)
        reward = np.tanh(obs.mean(axis=1)) * 3.0  # a reward that depends on the trajectory
        if t == steps // 2:
            done = np.arange(num_envs) == num_envs - 1
            reference.reset_rows(done, target_return=0.5 * target)
            policy.reset_rows(done, target_return=0.5 * target)
    if worst > tolerance:
        raise DTExportVerificationError(f"{name or onnx_path}: the exported graph differs from the torch DTRunner by "
                                        f"{worst:.3e} over {steps} closed-loop steps (tolerance {tolerance:g}); "
                                        "nothing was written")
    return worst


def verify_dt_stateful(onnx_path: str | Path, bundle: DTBundle, *, tolerance: float = 1e-4, num_envs: int = 2,
                       seed: int = 0, name: str | Path | None = None) -> float:
    """The stateful graph driven by plain onnxruntime (state fed back) against the torch DTRunner, as
    ``verify_dt_export`` drives the window graph."""
    import onnxruntime as ort

    from gptrl.exporter.dt.runner import load_dt_runner

    c, side = bundle.config, bundle.sidecar
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros([num_envs if d == "batch" else d for d in i.shape], np.float32)
             for i in session.get_inputs() if i.name.startswith("state_in.")}
    reference = load_dt_runner(bundle, num_envs=num_envs)
    env = ClosedLoopEnv(c.state_dim, c.act_dim, num_envs, mean=bundle.state_mean, std=bundle.state_std, seed=seed)
    target = np.full(num_envs, side.target_return if side.target_return is not None else 1000.0, np.float32)
    obs = env.reset()
    reference.reset(obs, target_return=target)
    reset, reward = np.ones(num_envs, bool), np.zeros(num_envs, np.float32)
    steps, worst = 2 * side.context_length + 8, 0.0
    for t in range(steps):
        expected = reference.act(obs, reward=None if t == 0 else reward)
        out = dict(zip(outputs, session.run(None, {"obs": obs, "reset": reset, "reward": reward,
                                                     "target_return": target, **state})))
        worst = max(worst, float(np.abs(out["action"] - expected).max()))
        state = {k.replace("state_out.", "state_in."): v for k, v in out.items() if k.startswith("state_out.")}
        obs = env.step(expected)
        reward = (np.tanh(obs.mean(axis=1)) * 3.0).astype(np.float32)
        reset = np.zeros(num_envs, bool)
        if t == steps // 2:
            reset[-1] = True
            target[-1] *= 0.5
            reference.reset_rows(reset, target_return=target)
    if worst > tolerance:
        raise DTExportVerificationError(f"{name or onnx_path}: the stateful graph differs from the torch DTRunner "
                                        f"by {worst:.3e} over {steps} closed-loop steps (tolerance {tolerance:g}); "
                                        "nothing was written")
    return worst
