"""``export_onnx``: bundle -> self-contained, self-verified policy.onnx."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import onnx

from gptrl import __version__
from gptrl.bundle import Bundle, load_bundle
from gptrl.bundle.weights import WEIGHTS_FILE
from gptrl.exporter.onnx_graph import VARIANTS, build_step_graph
from gptrl.runtime import metadata as md
from gptrl.runtime.policy import POLICY_FILE

DEFAULT_VARIANT = "attention"


class ExportVerificationError(RuntimeError):
    """The exported graph does not reproduce the torch PolicyRunner."""


def export_onnx(
    bundle_dir: str | Path,
    out: str | Path | None = None,
    *,
    variant: str = DEFAULT_VARIANT,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> Path:
    """Export the bundle's single-step policy to ``out`` (default ``bundle_dir/policy.onnx``).

    ``variant``: "attention" (opset 24 Attention + in-place TensorScatter, the default) or
    "portable" (opset 18, for runtimes without those ops). The file is written to a
    temporary name, checked with onnx.checker, verified against the torch PolicyRunner on a
    closed-loop rollout longer than 3x the context with a row reset, and only then renamed.
    """
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    out = Path(out) if out is not None else bundle_dir / POLICY_FILE
    model = build_step_graph(bundle, variant)
    layout = md.CACHE_LAYOUTS[variant]
    onnx.helper.set_model_props(model, {
        md.KEY_FORMAT: md.FORMAT,
        md.KEY_VARIANT: variant,
        md.KEY_CONFIG: json.dumps(bundle.config.to_dict()),
        md.KEY_WEIGHTS_SHA256: md.sha256_file(bundle_dir / WEIGHTS_FILE),
        md.KEY_VERSION: __version__,
        md.KEY_CACHE_LAYOUT: json.dumps(layout),
    })
    model.doc_string = f"gptrl single-step policy ({variant}, opset {VARIANTS[variant]}) for {bundle.config.env_id or 'an unnamed env'}"
    onnx.checker.check_model(model, full_check=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}.onnx"
    try:
        onnx.save_model(model, tmp)
        if verify:
            verify_export(tmp, bundle, tolerance=tolerance)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def verify_export(onnx_path: str | Path, bundle: Bundle, *, tolerance: float = 1e-4, num_envs: int = 2, seed: int = 0) -> float:
    """Closed-loop check of the graph against the torch PolicyRunner; returns the max action error.

    Two rows run 3x the context + 8 steps through synthetic dynamics in which each next
    observation depends on the actions taken, and row 1 is restarted halfway.
    """
    from gptrl.exporter.runner import load_runner
    from gptrl.runtime.policy import load_policy

    c = bundle.config
    reference = load_runner(bundle, num_envs=num_envs)
    policy = load_policy(onnx_path, num_envs=num_envs)
    rng = np.random.default_rng(seed)
    # Observations on the scale the policy was normalised for, so the check exercises real inputs.
    mean, std = bundle.normalizer.mean, bundle.normalizer.std
    if not bundle.normalizer.enabled:
        mean, std = np.zeros(c.state_dim, np.float32), np.ones(c.state_dim, np.float32)
    mixing = rng.normal(size=(c.action_dim, c.state_dim)).astype(np.float32)
    latent = rng.normal(size=(num_envs, c.state_dim)).astype(np.float32)

    def observe(z):
        return (mean + std * z).astype(np.float32)

    obs = observe(latent)
    reference.reset(obs)
    policy.reset(obs)
    steps = 3 * reference.kv_cache_max_len + 8
    worst = {"action": 0.0, "value": 0.0, "termination_prob": 0.0}
    for t in range(steps):
        expected, expected_info = reference.act_with_info(obs)
        action, info = policy.act_with_info(obs)
        worst["action"] = max(worst["action"], float(np.abs(action - expected).max()))
        worst["value"] = max(worst["value"], float((np.abs(info["value"] - expected_info["value"]) / (1.0 + np.abs(expected_info["value"]))).max()))
        if info["termination_prob"] is not None:
            worst["termination_prob"] = max(worst["termination_prob"], float(np.abs(info["termination_prob"] - expected_info["termination_prob"]).max()))
        latent = np.tanh(0.8 * latent + expected @ mixing + 0.1 * rng.normal(size=latent.shape)).astype(np.float32)
        obs = observe(latent)
        if t == steps // 2:
            done = np.zeros(num_envs, bool)
            done[-1] = True
            reference.reset_rows(done)
            policy.reset_rows(done)
    if max(worst.values()) > tolerance:
        raise ExportVerificationError(
            f"{onnx_path}: the exported graph differs from the torch PolicyRunner over {steps} closed-loop steps: "
            f"max |action diff| {worst['action']:.3e}, |value diff| / (1 + |value|) {worst['value']:.3e}, "
            f"|termination_prob diff| {worst['termination_prob']:.3e} (tolerance {tolerance:g})"
        )
    return worst["action"]
