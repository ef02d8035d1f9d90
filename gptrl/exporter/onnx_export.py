"""``export_onnx``: bundle -> self-contained, sealed, self-verified policy.onnx.

The graph is built torch-free by ``gptrl.graph``; this module adds the torch part: the closed-loop check against
the reference ``PolicyRunner`` that every export passes before it is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from gptrl import __version__
from gptrl.bundle import Bundle, load_bundle
from gptrl.bundle.codecs import NUMPY
from gptrl.bundle.files import POLICY_FILE, source_files
from gptrl.bundle.policy_graph import VARIANT_OPSETS
from gptrl.contract import GraphVariant
from gptrl.families import family_of_folder
from gptrl.fileio import atomic_path, check_output
from gptrl.graph import serialize
from gptrl.graph.policy import build_policy_graph as graph_with_metadata
from gptrl.rollout import resolve_serving
from gptrl.synthetic import ClosedLoopEnv

DEFAULT_VARIANT: GraphVariant = "attention"


class ExportVerificationError(RuntimeError):
    """The exported graph does not reproduce the torch PolicyRunner."""


def build_policy_graph(bundle: Bundle, variant: GraphVariant = DEFAULT_VARIANT, *, kv: int | None = None,
                       bos_cache_mode: str | None = None) -> onnx.ModelProto:
    """The step graph with its metadata (config, weights digest, version, seal placeholder), checked by onnx
    (``gptrl.graph.policy``).

    A stateful graph fixes ``kv`` (default: the bundle's context length) and ``bos_cache_mode`` (default: the
    bundle's, else "discard"); the other variants take both at run time.
    """
    kv, mode = resolve_serving(bundle.config, kv, bos_cache_mode)
    return graph_with_metadata(bundle, variant, kv=kv, bos_cache_mode=mode, version=__version__)


def export_onnx(bundle_dir: str | Path, out: str | Path | None = None, *, variant: GraphVariant = DEFAULT_VARIANT,
                kv: int | None = None, bos_cache_mode: str | None = None, **options) -> Path:
    """Export a bundle folder's policy graph with its family's exporter (``gptrl.families``); see
    :func:`export_causal_onnx` for the options (a Decision Transformer takes ``variant``, ``verify`` and
    ``tolerance``)."""
    if variant not in VARIANT_OPSETS:
        raise ValueError(f"variant must be one of {sorted(VARIANT_OPSETS)}, got {variant!r}")
    if variant != "stateful" and (kv is not None or bos_cache_mode is not None):
        raise ValueError("kv and bos_cache_mode are fixed at export only in a stateful graph; the attention and "
                         "portable graphs take them when loaded")
    export = family_of_folder(bundle_dir).part("export")
    return export(bundle_dir, out, variant=variant, kv=kv, bos_cache_mode=bos_cache_mode, **options)


def export_causal_onnx(
    bundle_dir: str | Path,
    out: str | Path | None = None,
    *,
    variant: GraphVariant = DEFAULT_VARIANT,
    verify: bool = True,
    tolerance: float = 1e-4,
    kv: int | None = None,
    bos_cache_mode: str | None = None,
    quantize: str | None = None,
    quantize_env: str | None = None,
    quantize_episodes: int = 10,
    quantize_max_loss: float = 0.02,
    allow_loss: bool = False,
) -> Path:
    """Export a Causal GPT-RL bundle's single-step policy to ``out`` (default ``bundle_dir/policy.onnx``).

    ``variant``: "attention" (opset 24 Attention + in-place TensorScatter, the default) or "portable" (opset 18,
    for runtimes without those ops), or "stateful" (``obs, reset, state_in.* -> action, ..., state_out.*``, standard
    opset-18 ops, ``kv`` and ``bos_cache_mode`` fixed; docs/stateful.md). The file is written to a temporary name,
    checked with onnx.checker, verified against the torch PolicyRunner on a closed-loop rollout longer than 3x the
    context with a row reset, and only then renamed over ``out``.

    ``quantize`` ("int8" or "int4") then quantizes the verified graph's layer weights and keeps it only if its
    return on ``quantize_episodes`` held-out seeds (1000+) of ``quantize_env`` (default: the bundle's env_id) is
    within 2% of the fp32 graph's (``allow_loss`` overrides); see ``gptrl.exporter.quantize``.
    """
    bundle_dir = Path(bundle_dir)
    out = Path(out) if out is not None else bundle_dir / POLICY_FILE
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; give the .onnx file to write (e.g. {out / POLICY_FILE})")
    reads = source_files(bundle_dir)
    check_output(out, reads)  # before the minutes a verification or a quantization check takes
    bundle = load_bundle(bundle_dir)
    env_id = quantize_env or bundle.config.env_id
    if quantize is not None and not env_id:
        raise ValueError(f"{bundle_dir}: the bundle records no env_id to check the quantized policy on; pass one")
    model = build_policy_graph(bundle, variant, kv=kv, bos_cache_mode=bos_cache_mode)
    data = serialize(model)
    with atomic_path(out, reads=reads) as tmp:
        tmp.write_bytes(data)
        if verify:
            verify_export(tmp, bundle, tolerance=tolerance, name=out)
        if quantize is not None:
            from gptrl.exporter.quantize import check_returns, quantize_model, with_record

            quantized = quantize_model(onnx.load_from_string(data), quantize)  # type: ignore[arg-type]
            check = check_returns(data, serialize(quantized), quantize, env_id,  # type: ignore[arg-type]
                                  episodes=quantize_episodes, max_loss=quantize_max_loss, allow_loss=allow_loss)
            tmp.write_bytes(with_record(quantized, check))
    return out


def verify_export(onnx_path: str | Path, bundle: Bundle, *, tolerance: float = 1e-4, num_envs: int = 2,
                  seed: int = 0, name: str | Path | None = None) -> float:
    """Closed-loop check of the graph against the torch PolicyRunner; returns the max action error.

    Two rows run 3x the context + 8 steps through ``gptrl.synthetic.ClosedLoopEnv`` on the scale of the policy's
    normaliser, and row 1 is restarted halfway; the actions, values, termination probabilities, distribution
    parameters and log-probabilities must agree. Where the graph samples, samples drawn by both from the same
    seeded uniforms are compared after greedy prefixes of every length up to 8 (a sample is not fed back: a tanh
    action that saturates in float32 would make any two correct runtimes drift apart). ``name`` is the path errors
    mention (the file being written).
    """
    from gptrl.exporter.causal.runner import load_runner
    from gptrl.runtime.policy import load_policy

    policy = load_policy(onnx_path, num_envs=num_envs)
    reference = load_runner(bundle, num_envs=num_envs, kv_cache_max_len=policy.kv_cache_max_len,
                            bos_cache_mode=policy.bos_cache_mode, positions=policy.positions)
    loop = _ClosedLoop(bundle, num_envs, seed)
    steps = 3 * reference.kv_cache_max_len + 8
    worst = dict.fromkeys(("action", "value", "termination_prob", "dist", "log_prob"), 0.0)
    loop.start(policy, reference)
    for t in range(steps):
        loop.compare(policy, reference, worst, deterministic=True)
        if t == steps // 2:
            done = np.arange(num_envs) == num_envs - 1
            reference.reset_rows(done)
            policy.reset_rows(done)
    if policy.stochastic:
        policy.seed(seed)
        reference.seed(seed)
        for prefix in range(8):
            loop.start(policy, reference)
            for _ in range(prefix):
                loop.compare(policy, reference, worst, deterministic=True)
            loop.compare(policy, reference, worst, deterministic=False)
    if max(worst.values()) > tolerance:
        raise ExportVerificationError(
            f"{name or onnx_path}: the exported graph differs from the torch PolicyRunner over {steps} closed-loop "
            f"steps: max |action diff| {worst['action']:.3e}, |value diff| / (1 + |value|) {worst['value']:.3e}, "
            f"|termination_prob diff| {worst['termination_prob']:.3e}, |dist diff| / (1 + |dist|) {worst['dist']:.3e}, "
            f"|log_prob diff| / (1 + |log_prob|) {worst['log_prob']:.3e} (tolerance {tolerance:g}); nothing was "
            "written"
        )
    return worst["action"]


class _ClosedLoop:
    """A synthetic env both runners act in (the reference's actions drive it), on the policy's observation scale."""

    def __init__(self, bundle: Bundle, num_envs: int, seed: int):
        c, norm = bundle.config, bundle.normalizer
        self.config = c
        self.env = ClosedLoopEnv(c.state_dim, c.action.width, num_envs, mean=norm.mean if norm.enabled else None,
                                 std=norm.std if norm.enabled else None, seed=seed)

    def start(self, policy, reference) -> None:
        self.obs = self.config.observation.from_unit(self.env.reset())
        reference.reset(self.obs)
        policy.reset(self.obs)

    def compare(self, policy, reference, worst: dict[str, float], *, deterministic: bool) -> None:
        expected, want = reference.act_with_info(self.obs, deterministic=deterministic)
        action, got = policy.act_with_info(self.obs, deterministic=deterministic)
        worst["action"] = max(worst["action"], float(np.abs(action - expected).max()))
        # Relative to the size: values, log-probabilities and the distribution's parameters (a tanh head's pre-squash
        # mean reaches tens where its action saturates) are unbounded, and float32 rounds them relative to their size.
        for key in ("value", "log_prob", "dist"):
            if got[key] is not None:
                error = np.abs(got[key] - want[key]) / (1.0 + np.abs(want[key]))
                worst[key] = max(worst[key], float(error.max()))
        if got["termination_prob"] is not None:
            worst["termination_prob"] = max(worst["termination_prob"],
                                            float(np.abs(got["termination_prob"] - want["termination_prob"]).max()))
        self.obs = self.config.observation.from_unit(self.env.step(self.config.action.feedback(NUMPY, expected)))
