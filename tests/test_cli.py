"""The gptrl console script."""

import json
import shutil
import subprocess
import sys

from conftest import FIXTURES

GPT2 = FIXTURES / "gpt2-hopper-single" / "bundle"


def _gptrl(*args):
    return subprocess.run([sys.executable, "-m", "gptrl.cli", *args], capture_output=True, text=True)


def test_inspect_prints_the_bundle_summary():
    result = _gptrl("inspect", str(GPT2))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("format version       2", "Hopper-v5", "Box(11,) float64 unbounded", "Box(3,) float32 [-1, 1]",
                     "GPT2: 2 layers, d_model 32, 4 heads", "26,760", "context length       8",
                     "default 8, max 15", "discard"):
        assert expected in out, (expected, out)


def test_inspect_json():
    info = json.loads(_gptrl("inspect", "--json", str(FIXTURES / "llama-hopper-v1-single" / "bundle")).stdout)
    assert info["format_version"] == 1 and info["state_normalization"] == "sidecar"
    assert info["architecture"]["network"] == "Llama" and info["kv_cache_max_len_limit"] is None


def test_inspect_bad_bundle_exits_2_with_the_reason(tmp_path):
    shutil.copytree(GPT2, tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"\x00" * 4)
    result = _gptrl("inspect", str(tmp_path / "b"))
    assert result.returncode == 2
    assert "model.safetensors: not a readable safetensors file" in result.stderr
