"""What a runtime checks of a loaded graph before it runs: its seal, and that its inputs and outputs are the ones
its metadata implies (either family)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from gptrl.bundle.policy_graph import TensorSpec, verify_seal
from gptrl.errors import BundleError

_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)", "bool": "tensor(bool)"}


def _axis_ok(want: int | str, have: int | str | None) -> bool:
    """An axis the spec names (``batch``, ``ring``) must be dynamic in the graph too (a graph fixing the batch to 1
    would load and then fail at the first step with two envs); a numbered axis must have that size."""
    return (have is None or isinstance(have, str)) if isinstance(want, str) else have == want


def check_io(session: ort.InferenceSession, want_in: list[TensorSpec], want_out: list[TensorSpec], source: str,
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


def check_seal(onnx_path: Path, digest: str) -> None:
    if not digest:
        raise BundleError(f"{onnx_path}: carries no seal (metadata 'gptrl.graph_sha256'); it was exported by an older "
                          f"gptrl or by another tool: re-export it with `gptrl export`")
    if not verify_seal(onnx_path.read_bytes(), digest):
        raise BundleError(f"{onnx_path}: its bytes do not match the seal recorded at export (metadata "
                          "'gptrl.graph_sha256'): the graph was changed or damaged after export; re-export it")
