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


def test_export_then_eval_on_both_backends(tmp_path):
    bundle = shutil.copytree(FIXTURES / "llama-hopper-single" / "bundle", tmp_path / "b")
    result = _gptrl("export", str(bundle))
    assert result.returncode == 0, result.stderr
    assert "verified against the torch PolicyRunner" in result.stdout and (bundle / "policy.onnx").is_file()
    result = _gptrl("export", str(bundle), "-o", str(tmp_path / "portable.onnx"), "--opset", "18")
    assert result.returncode == 0, result.stderr
    runs = {}
    for args in (["--backend", "onnx"], ["--backend", "torch"], ["--num-envs", "2"]):
        result = _gptrl("eval", str(bundle), "--episodes", "4", "--seed", "3", "--json", *args)
        assert result.returncode == 0, result.stderr
        runs[" ".join(args)] = json.loads(result.stdout)
    first = runs["--backend onnx"]
    assert first["env_id"] == "Hopper-v5" and first["num_episodes"] == 4 and first["seeds"] == [3, 6]
    # One ONNX session batched or not: the same numbers bit for bit (same machine, same kernels).
    assert runs["--num-envs 2"]["returns"] == first["returns"]
    # The torch backend measures the same episodes; its closed-loop returns may round apart from ONNX's (the
    # per-step agreement is tests/test_trajectories.py), so here it must only say what ran it.
    torch_run = runs["--backend torch"]
    assert torch_run["backend"] == "torch" and torch_run["seeds"] == [3, 6] and len(torch_run["returns"]) == 4
    assert "torch" in torch_run["provenance"]["packages"] and "torch" not in first["provenance"]["packages"]
    assert torch_run["provenance"]["provider"] is None and first["provenance"]["provider"] == "CPUExecutionProvider"
    text = _gptrl("eval", str(tmp_path / "portable.onnx"), "--episodes", "2")
    assert text.returncode == 0, text.stderr
    assert "Hopper-v5 (onnx, 2 episodes, seeds 0..1" in text.stdout and "normalised score" in text.stdout


def _tiny_bundle(kind: str, folder):
    from sampling_loop import spread_bundle

    from gptrl.bundle import make_config
    from gptrl.bundle.codecs import Discrete, GaussianBox

    tiny = dict(context_length=4, d_model=16, num_layers=1, num_heads=2)
    if kind == "discrete":
        config = make_config(state_dim=4, action=Discrete(2), env_id="CartPole-v1", **tiny)
    else:
        config = make_config(state_dim=3, action=GaussianBox.from_bounds(-2.0, 2.0), env_id="Pendulum-v1", **tiny)
    return spread_bundle(config, folder)


def test_discrete_and_gaussian_bundles_through_the_cli(tmp_path):
    """export, inspect and eval of a Discrete (CartPole) and a clipped Gaussian (Pendulum) bundle; eval
    --sample-seed samples reproducibly, and on the Discrete bundle the torch backend samples what the ONNX runtime
    samples."""
    for kind, capability in (("discrete", "gptrl.actions.discrete"), ("gaussian", "gptrl.actions.gaussian")):
        bundle = _tiny_bundle(kind, tmp_path / kind)
        result = _gptrl("export", str(bundle))
        assert result.returncode == 0 and "verified against the torch PolicyRunner" in result.stdout, result.stderr
        info = json.loads(_gptrl("inspect", "--json", str(bundle)).stdout)
        assert info["action_type"] == kind and info["requires_capabilities"] == [capability]
        runs = {}
        for name, args in (("greedy", []), ("sampled", ["--sample-seed", "3"]), ("again", ["--sample-seed", "3"]),
                           *([("torch", ["--sample-seed", "3", "--backend", "torch"])] if kind == "discrete" else [])):
            result = _gptrl("eval", str(bundle), "--episodes", "3", "--max-steps", "40", "--json", *args)
            assert result.returncode == 0, result.stderr
            runs[name] = json.loads(result.stdout)
        assert "sample_seed" not in runs["greedy"] and runs["sampled"]["sample_seed"] == 3
        assert runs["sampled"]["returns"] == runs["again"]["returns"]
        if kind == "discrete":
            assert runs["torch"]["lengths"] == runs["sampled"]["lengths"]
        else:
            assert runs["sampled"]["returns"] != runs["greedy"]["returns"]
    text = _gptrl("eval", str(tmp_path / "gaussian"), "--episodes", "1", "--max-steps", "5", "--sample-seed", "4")
    assert text.returncode == 0 and "actions sampled (generator seed 4)" in text.stdout, text.stderr
