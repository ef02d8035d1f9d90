"""What produced a measurement: package versions, the execution provider, the CPU and its vector ISA, threads.

A closed-loop return of a chaotic env depends on the float rounding of every step, which depends on the kernels
onnxruntime (or torch) picks for this CPU; so every number gptrl writes (``gptrl eval --json``, the model cards'
eval.json and conditioning.json, the benchmark JSONs) carries this record, and a reader can tell a regression from
another machine. torch is reported only when it is already imported: asking must not load it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# Distributions whose versions decide a number (onnxruntime-gpu provides the same module as onnxruntime).
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "gymnasium", "mujoco")
# The vector extensions that decide which kernels run, widest last.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_tile")
# What decides a number, for the "+dirty" mark on the commit.
CODE_PATHS = ("gptrl", "locks", "pyproject.toml")
# What must agree for two machines to give the same closed-loop numbers.
MATCH_KEYS = ("packages", "provider", "cpu.model", "cpu.vector_isa")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent ones left out), and torch's if torch is already imported."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "__version__"):
        found["torch"] = str(torch.__version__)
    return found


def git_commit(path: Path = Path(__file__).parent) -> str | None:
    """The commit of the checkout gptrl runs from, None outside git; "+dirty" where the code or the locks have
    uncommitted changes (not the bundles: a model card run rewrites its own eval.json and README)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=path, capture_output=True,
                              text=True, timeout=10)
        lines = head.stdout.split()
        if head.returncode != 0 or Path(lines[0]).resolve() != path.resolve().parent:
            return None  # not a gptrl checkout (an installed copy inside some other repository, say)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=lines[0], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("+dirty" if dirty else "")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU model, its widest vector ISA and the relevant flags (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if flags and model:
                break
    present = [f for f in ISA_FLAGS if f in flags]
    widest = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), None)
    return {"model": model, "machine": platform.machine(), "vector_isa": widest, "isa_flags": present,
            "logical_cpus": os.cpu_count()}


def session_info(policy: Any) -> tuple[str | None, int | None]:
    """The execution provider and intra-op thread count of a runtime policy's onnxruntime session, if it has one."""
    session = getattr(policy, "session", None)
    if session is None:
        return None, None
    threads = session.get_session_options().intra_op_num_threads
    return session.get_providers()[0], threads


def provenance(policy: Any = None) -> dict[str, Any]:
    """The record for a measurement made with ``policy`` (a runtime policy, a torch runner, or None)."""
    from gptrl import __version__

    provider, ort_threads = session_info(policy)
    threads: dict[str, Any] = {"onnxruntime_intra_op": ort_threads}
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        threads["torch"] = torch.get_num_threads()
    threads.update({k.lower(): os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ})
    return {"gptrl": __version__, "commit": git_commit(), "python": platform.python_version(),
            "packages": package_versions(), "provider": provider, "cpu": cpu_info(), "threads": threads}


def summary(record: dict[str, Any] | None) -> str:
    """One line for a model card or a report."""
    if not record:
        return "not recorded (measured before gptrl recorded provenance)"
    commit = record.get("commit")
    packages = record.get("packages", {})
    parts = [f"gptrl {record.get('gptrl')}" + (f" ({commit[:10]}{'+dirty' if commit.endswith('+dirty') else ''})"
                                               if commit else "")]
    parts += [f"{k} {v}" for k, v in packages.items()]
    threads = record.get("threads", {})
    if record.get("provider"):
        parts.append(f"{record['provider']} x{threads.get('onnxruntime_intra_op')} thread")
    if "torch" in threads:
        parts.append(f"torch x{threads['torch']} thread")
    cpu = record.get("cpu", {})
    parts.append(f"{cpu.get('model')} ({cpu.get('vector_isa') or 'no AVX'}, {cpu.get('logical_cpus')} CPUs)")
    parts.append(f"Python {record.get('python')}")
    return ", ".join(parts)


def _field(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def differences(recorded: dict[str, Any] | None, here: dict[str, Any]) -> list[str]:
    """What differs between a recorded provenance and this machine's, in words (empty: they match)."""
    if not recorded:
        return ["the card records no provenance"]
    out = []
    for key in MATCH_KEYS:
        a, b = _field(recorded, key), _field(here, key)
        if key == "packages":
            names = sorted(set(a or {}) | set(b or {}))
            out += [f"{n} {(a or {}).get(n, 'absent')} (card) vs {(b or {}).get(n, 'absent')} (here)"
                    for n in names if (a or {}).get(n) != (b or {}).get(n)]
        elif a != b:
            out.append(f"{key} {a} (card) vs {b} (here)")
    return out
