"""The torch-free parts of gptrl import and work with torch made unimportable."""

import subprocess
import sys
import textwrap

from conftest import FIXTURES


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True)


def test_bundle_io_cli_and_evaluation_need_no_torch():
    result = _run_without_torch(f"""
        import gptrl, gptrl.bundle, gptrl.rollout, gptrl.evaluation, gptrl.cli, gptrl.bundle.hub, gptrl.bundle.writer
        b = gptrl.load_bundle({str(FIXTURES / 'llama-hopper-v1-single' / 'bundle')!r})
        assert b.config.model.network == "llama"
        assert gptrl.cli.main(["inspect", {str(FIXTURES / 'gpt2-hopper-single' / 'bundle')!r}]) == 0
        try:
            gptrl.load_runner
        except ImportError:
            print("torch side refused as expected")
    """)
    assert result.returncode == 0, result.stderr
    assert "torch side refused as expected" in result.stdout


def test_runtime_runs_with_torch_unimportable(tmp_path):
    """Export (torch side) here, then load, replay, evaluate and use the CLI in a torch-free process."""
    from gptrl.exporter import export_onnx

    onnx_path = export_onnx(FIXTURES / "llama-halfcheetah-batch3" / "bundle", tmp_path / "policy.onnx")
    result = _run_without_torch(f"""
        import numpy as np, sys
        sys.path.insert(0, {str(FIXTURES.parent.parent)!r})
        from conftest import load_trace, replay
        from gptrl.runtime import load_policy
        import gptrl, gptrl.cli
        trace = load_trace("llama-halfcheetah-batch3")
        err, _ = replay(trace, load_policy({str(onnx_path)!r}, num_envs=3))
        assert err < 1e-4, err
        stats = gptrl.evaluate("HalfCheetah-v5", load_policy({str(onnx_path)!r}, num_envs=2), seeds=range(2), max_steps=20, num_envs=2)
        assert stats["lengths"] == [20, 20]
        assert gptrl.cli.main(["eval", {str(onnx_path)!r}, "--episodes", "1", "--max-steps", "5", "--json"]) == 0
        assert not any(name == "torch" or name.startswith("torch.") for name, m in sys.modules.items() if m is not None)
        print("torch-free ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "torch-free ok" in result.stdout


def test_runtime_sources_never_import_torch():
    import ast
    from pathlib import Path

    import gptrl.runtime

    for path in Path(gptrl.runtime.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("torch", "gptrl.exporter", "safetensors.torch")), f"{path}: imports {name}"


def test_conflicting_onnxruntime_wheels_are_reported(monkeypatch):
    import importlib.metadata

    import pytest

    from gptrl.runtime import session

    versions = {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"}

    def version(name):
        if name in versions:
            return versions[name]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert session.installed_onnxruntime_wheels() == ["onnxruntime", "onnxruntime-gpu"]
    with pytest.warns(RuntimeWarning, match="pip install 'gptrl\\[cuda\\]'"):
        session.check_onnxruntime_wheels(session.installed_onnxruntime_wheels())
    del versions["onnxruntime-gpu"]
    session.check_onnxruntime_wheels(session.installed_onnxruntime_wheels())  # one wheel: silent
