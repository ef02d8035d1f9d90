"""onnxruntime sessions tuned for a per-step loop, and the choice of execution provider."""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from pathlib import Path

import numpy as np


def installed_onnxruntime_wheels() -> list[str]:
    """Which of the wheels that provide the ``onnxruntime`` module are installed."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def check_onnxruntime_wheels(wheels: list[str]) -> None:
    """Warn when both wheels are installed: they write the same files, so the module is whichever came last."""
    if len(wheels) > 1:
        warnings.warn("both onnxruntime and onnxruntime-gpu are installed; they provide the same module and "
                      "conflict. Keep one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
                      "'gptrl[cuda]' (or 'gptrl[cpu]')", RuntimeWarning, stacklevel=3)


check_onnxruntime_wheels(installed_onnxruntime_wheels())
try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("gptrl's runtime needs onnxruntime: pip install 'gptrl[cpu]' (or 'gptrl[cuda]' for "
                      "onnxruntime-gpu)") from exc

log = logging.getLogger("gptrl.runtime")

_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """One intra-op thread by default and no spinning: a step is far too small to split."""
    if intra_op_threads < 1:
        raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # onnxruntime's own warnings are not ours to print every step
    return so


def resolve_providers(providers: str | list[str] | None) -> list[str]:
    """None: CUDA when onnxruntime can use it, else CPU; "cpu" / "cuda" or explicit provider names."""
    available = ort.get_available_providers()
    if providers is None:
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.info("gptrl.runtime: running on CPU (this onnxruntime has no CUDA provider; "
                 "install onnxruntime-gpu for CUDA)")
        return ["CPUExecutionProvider"]
    names = [providers] if isinstance(providers, str) else list(providers)
    names = [_ALIASES.get(n.lower(), n) for n in names]
    unknown = [n for n in names if n not in ort.get_all_providers()]
    if unknown:
        raise ValueError(f"unknown execution providers {unknown}; use 'cpu', 'cuda' or one of "
                         f"{ort.get_all_providers()}")
    usable = [n for n in names if n in available]
    if not usable:
        log.warning("gptrl.runtime: %s not available in this onnxruntime (%s); falling back to CPU", names, available)
        return ["CPUExecutionProvider"]
    if "CPUExecutionProvider" not in usable:
        usable.append("CPUExecutionProvider")
    return usable


def make_session(path: str | Path, providers: str | list[str] | None = None,
                 intra_op_threads: int = 1) -> ort.InferenceSession:
    wanted = resolve_providers(providers)
    session = ort.InferenceSession(str(path), sess_options=session_options(intra_op_threads), providers=wanted)
    if wanted[0] != "CPUExecutionProvider" and session.get_providers()[0] != wanted[0]:
        log.warning("gptrl.runtime: %s could not start (no usable GPU?); falling back to CPU", wanted[0])
    return session


def session_device(session: ort.InferenceSession) -> str:
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


def bind_array(bind, name: str, array: np.ndarray) -> None:
    """Bind a preallocated CPU numpy array by pointer (``io_binding().bind_input`` or ``bind_output``)."""
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
