"""ONNX export and the torch-free runtime: trace replays, the graph's promises, bad input."""

import json
import logging
import shutil

import gymnasium as gym
import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file, save_file

import gptrl
from conftest import CASES, FIXTURES, load_trace, replay
from gptrl.bundle import BundleError, load_bundle
from gptrl.exporter import ExportVerificationError, export_onnx, verify_export
from gptrl.fileio import sha256_file
from gptrl.runtime import load_policy

VARIANTS = ["attention", "portable"]
HOPPER = FIXTURES / "llama-hopper-single" / "bundle"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every fixture bundle exported in both variants (through the self-verifying exporter)."""
    root = tmp_path_factory.mktemp("onnx")
    return {(name, v): export_onnx(FIXTURES / name / "bundle", root / f"{name}-{v}.onnx", variant=v)
            for name in CASES for v in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CASES)
def test_replay_through_export_and_runtime(exported, name, variant):
    trace = load_trace(name)
    policy = load_policy(exported[name, variant], num_envs=trace.num_envs, **trace.load_kwargs)
    action_err, term_err = replay(trace, policy)
    assert action_err < 1e-4, f"{name}/{variant}: max action error {action_err:.2e}"
    assert term_err < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_graph_is_self_contained_and_valid(exported, variant):
    path = exported["llama-hopper-v1-single", variant]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == (24 if variant == "attention" else 18)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["gptrl.variant"] == variant
    assert props["gptrl.weights_sha256"] == sha256_file(FIXTURES / "llama-hopper-v1-single" / "bundle" / "model.safetensors")
    config = json.loads(props["gptrl.config"])
    assert config["env_id"] == "Hopper-v5" and config["model_config"]["network_name"] == "Llama"
    # Batch and cache length are symbolic: the same file serves any num_envs and kv_cache_max_len.
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["state"] == ["batch", 11]
    assert dims["past_key.0"][0] == "batch" and isinstance(dims["past_key.0"][2 if variant == "attention" else 3], str)
    op_types = {n.op_type for n in model.graph.node}
    if variant == "attention":
        assert {"Attention", "TensorScatter"} <= op_types
    else:
        assert not {"Attention", "TensorScatter"} & op_types
    assert "Atanh" in op_types and "Tanh" in op_types  # the action encoding lives in the graph


def test_export_default_location_and_bundle_loading(tmp_path):
    bundle = shutil.copytree(HOPPER, tmp_path / "b")
    out = export_onnx(bundle)
    assert out == bundle / "policy.onnx"
    policy = load_policy(bundle)  # a folder holding policy.onnx
    assert policy.variant == "attention" and policy.config.env_id == "Hopper-v5"


def test_runtime_refuses_a_stale_export(tmp_path):
    bundle = shutil.copytree(HOPPER, tmp_path / "b")
    export_onnx(bundle)
    tensors = load_file(str(bundle / "model.safetensors"))
    tensors["output_head.0.layers.1.bias"] += 0.5
    save_file(tensors, str(bundle / "model.safetensors"))
    with pytest.raises(BundleError, match="exported from other weights.*re-export"):
        load_policy(bundle)
    load_policy(bundle / "policy.onnx")  # the bare file alone is still a complete policy


def test_bad_policy_files(tmp_path):
    with pytest.raises(BundleError, match=r"policy\.onnx: missing; export the bundle first"):
        load_policy(shutil.copytree(HOPPER, tmp_path / "b"))
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(BundleError, match="junk.onnx: onnxruntime cannot load it"):
        load_policy(tmp_path / "junk.onnx")
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]), ir_version=8,
        opset_imports=[onnx.helper.make_opsetid("", 18)])
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(BundleError, match="not a gptrl policy graph"):
        load_policy(tmp_path / "plain.onnx")


def test_verification_reports_the_measured_error(tmp_path):
    """A graph from other weights fails the closed-loop check, with the numbers in the message."""
    bundle = shutil.copytree(HOPPER, tmp_path / "b")
    out = export_onnx(bundle, tmp_path / "p.onnx")
    tensors = load_file(str(bundle / "model.safetensors"))
    tensors["output_head.0.layers.1.bias"] += 0.01
    save_file(tensors, str(bundle / "model.safetensors"))
    with pytest.raises(ExportVerificationError, match=r"max \|action diff\| \d\.\d+e-0\d.*tolerance 0.0001"):
        verify_export(out, load_bundle(bundle))
    assert verify_export(out, load_bundle(HOPPER)) < 1e-4


def test_failed_export_leaves_the_old_file(tmp_path, monkeypatch):
    bundle = shutil.copytree(HOPPER, tmp_path / "b")
    out = export_onnx(bundle)
    before = out.read_bytes()

    def fail(*args, **kwargs):
        raise ExportVerificationError("simulated mismatch")

    monkeypatch.setattr("gptrl.exporter.onnx_export.verify_export", fail)
    with pytest.raises(ExportVerificationError):
        export_onnx(bundle, variant="portable")
    assert out.read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "model.safetensors", "policy.onnx"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_runtime_bad_input(exported, variant):
    path = exported["llama-hopper-single", variant]
    obs = load_trace("llama-hopper-single").observations[:, 0]
    policy = load_policy(path)
    with pytest.raises(RuntimeError, match="before reset"):
        policy.act(obs[0])
    with pytest.raises(ValueError, match=r"observation has shape \(12,\), expected \(11,\)"):
        policy.reset(np.zeros(12))
    policy.reset(obs[0])
    with pytest.raises(ValueError, match="non-finite"):
        policy.act(np.full(11, np.inf))
    batch = load_policy(path, num_envs=2)
    with pytest.raises(ValueError, match=r"done_mask has shape \(3,\), expected \(2,\)"):
        batch.reset_rows([0, 1, 0])
    with pytest.raises(ValueError, match="kv_cache_max_len must be a positive integer"):
        load_policy(path, kv_cache_max_len=-1)


def test_gpt2_graph_refuses_an_unservable_cache(exported):
    with pytest.raises(ValueError, match="cannot be served by this GPT2 policy"):
        load_policy(exported["gpt2-hopper-single", "attention"], kv_cache_max_len=16)


def test_cache_buffers_are_preallocated_and_updated_in_place(exported):
    policy = load_policy(exported["llama-hopper-single", "attention"], num_envs=2)
    pointers = [a.ctypes.data for a in policy.cache.keys + policy.cache.values]
    obs = load_trace("llama-hopper-single").observations[:20, 0]
    policy.reset(np.stack([obs[0], obs[1]]))
    before = policy.cache.keys[0].copy()
    for t in range(2, 19):
        policy.act(np.stack([obs[t], obs[t + 1]]))
    assert [a.ctypes.data for a in policy.cache.keys + policy.cache.values] == pointers
    assert not np.array_equal(before, policy.cache.keys[0])  # the graph wrote into our buffer


def test_cuda_request_without_a_gpu_falls_back_with_one_log_line(exported, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the fallback path does not run")
    with caplog.at_level(logging.INFO, logger="gptrl.runtime"):
        policy = load_policy(exported["llama-hopper-single", "attention"], providers="cuda")
    lines = [r.getMessage() for r in caplog.records if r.name == "gptrl.runtime"]
    assert len(lines) == 1 and "falling back to CPU" in lines[0]
    assert policy.device == "cpu"


def test_sb3_predict_drives_evaluate_policy(exported):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    path = exported["llama-hopper-single", "attention"]
    vec_env = DummyVecEnv([lambda: gym.make("Hopper-v5")])
    vec_env.seed(0)
    rewards, lengths = evaluate_policy(load_policy(path), vec_env, n_eval_episodes=3, return_episode_rewards=True, warn=False)
    ours = gptrl.run_episodes(gym.make("Hopper-v5"), load_policy(path), num_episodes=3, seed=0)
    np.testing.assert_allclose(rewards, ours["returns"], rtol=1e-6)
    assert lengths == ours["lengths"]
    # The head has a log-std: deterministic=False samples, reproducibly from a seed, and differs from the mean.
    def sampled(seed):
        policy = load_policy(path)
        policy.seed(seed)
        return [policy.predict(np.full(11, 0.1 * t), deterministic=False)[0] for t in range(4)]

    assert np.array_equal(sampled(3), sampled(3)) and not np.array_equal(sampled(3), sampled(4))
    assert not np.allclose(sampled(3), [load_policy(path).predict(np.full(11, 0.1 * t))[0] for t in range(4)])
    # A policy whose graph cannot sample refuses (a gptrl-policy-step/1 graph, as shipped before sampling).
    with pytest.raises(ValueError, match="deterministic"):
        load_policy(FIXTURES.parents[1].parent / "bundles" / "hopper-v5").predict(np.zeros(11), deterministic=False)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_batched_evaluate_reproduces_the_one_env_loop(exported, backend):
    """num_envs=3 over 7 seeds (episodes cross the context): on one ONNX session each seed's return is the one-env
    loop's bit for bit. torch's batched matrix products round differently from its one-row ones, so for torch the
    rows are compared with one-env runners step by step on fixed inputs instead of through a closed loop."""
    def make(n):
        if backend == "torch":
            return gptrl.load_runner(HOPPER, num_envs=n, positions="per_row")
        return load_policy(exported["llama-hopper-single", "attention"], num_envs=n)

    kwargs = dict(seeds=range(7), max_steps=30, env_kwargs={"terminate_when_unhealthy": False})
    one = gptrl.evaluate("Hopper-v5", make(1), **kwargs)
    three = gptrl.evaluate("Hopper-v5", make(3), num_envs=3, **kwargs)
    assert three["lengths"] == one["lengths"] == [30] * 7
    if backend == "onnx":
        assert three["returns"] == one["returns"]
    else:
        from trajectory import same_actions, synthetic

        assert same_actions(make(1), make(3), synthetic(11, 3, 3, 30), [0, 1, 2]) < 1e-5
    with pytest.raises(ValueError, match="num_envs=3"):
        gptrl.evaluate("Hopper-v5", make(3), **kwargs)
