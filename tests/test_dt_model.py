"""gptrl's own Decision Transformer against Hugging Face's DecisionTransformerModel (a dev-only dependency)."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from gptrl.bundle.dt import parse_dt_config, required_dt_tensors
from gptrl.errors import BundleError
from gptrl.exporter.dt import DecisionTransformer

transformers = pytest.importorskip("transformers")  # dev extra; installed by make test
FIXTURE_CAUSAL = FIXTURES / "llama-hopper-single" / "bundle"


def _hf(**overrides):
    config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=64, n_layer=3, n_head=2,
                                                    max_ep_len=1000, **overrides)
    torch.manual_seed(0)
    model = transformers.DecisionTransformerModel(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong parameter would show
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return config, model


@pytest.mark.parametrize("overrides", [{}, {"activation_function": "gelu_new", "n_inner": 96},
                                       {"action_tanh": False}])
def test_forward_matches_transformers_with_left_padding(overrides):
    config, hf = _hf(**overrides)
    ours = DecisionTransformer(parse_dt_config(json.loads(config.to_json_string()), "config.json")).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    assert set(hf.state_dict()) == set(required_dt_tensors(ours.config))
    assert {k: tuple(v.shape) for k, v in hf.state_dict().items()} == required_dt_tensors(ours.config)
    rng = np.random.default_rng(0)
    b, t = 3, 20
    states = torch.tensor(rng.normal(size=(b, t, 11)), dtype=torch.float32)
    actions = torch.tensor(rng.uniform(-1, 1, size=(b, t, 3)), dtype=torch.float32)
    rtg = torch.tensor(rng.normal(size=(b, t, 1)), dtype=torch.float32)
    timesteps = torch.tensor(rng.integers(0, 1000, size=(b, t)))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :7] = 0  # left padding, as get_action makes it
    mask[2, :19] = 0
    with torch.no_grad():
        expected = hf(states=states, actions=actions, returns_to_go=rtg, timesteps=timesteps, attention_mask=mask,
                      return_dict=True)
        got = ours(states, actions, rtg, timesteps, mask)
    real = mask.bool()
    for name in ("state_preds", "action_preds", "return_preds"):
        diff = (getattr(got, name) - getattr(expected, name)).abs()[real].max().item()
        assert diff < 1e-5, (name, diff)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(model_type="gpt2"), "not a Decision Transformer config"),
    (lambda d: d.update(activation_function="mish"), "'activation_function' = 'mish' is not supported"),
    (lambda d: d.update(hidden_size=65), "must be divisible by 'n_head'"),
    (lambda d: d.update(n_layer=10**6), "exceeds gptrl's limit"),
    (lambda d: d.update(reorder_and_upcast_attn=True), "'reorder_and_upcast_attn' = true is not supported"),
])
def test_bad_dt_configs_are_refused(edit, message):
    config, _ = _hf()
    data = json.loads(config.to_json_string())
    edit(data)
    with pytest.raises(BundleError, match=message):
        parse_dt_config(data, "config.json")


def test_runner_matches_the_blog_get_action_loop_in_closed_loop(tmp_path):
    import gymnasium as gym
    from dt_blog import BlogLoop

    from gptrl.bundle.dt import DTSidecar
    from gptrl.exporter.dt.runner import load_dt_runner

    _, hf = _hf()
    hf.save_pretrained(tmp_path / "dt")
    rng = np.random.default_rng(1)
    mean, std = rng.normal(size=11).astype(np.float32), rng.uniform(0.5, 2, size=11).astype(np.float32)
    K, scale, target = 20, 1000.0, 3600.0
    (tmp_path / "dt" / "gptrl_dt.json").write_text(
        DTSidecar(mean.tolist(), std.tolist(), scale, target, "Hopper-v5", K).to_json())
    runner = load_dt_runner(tmp_path / "dt")
    blog = BlogLoop(hf, mean, std, scale, target, K)

    env = gym.make("Hopper-v5")
    state, _ = env.reset(seed=0)
    runner.reset(state)
    worst, reward, steps = 0.0, None, 0
    while steps < 60:  # crosses the K = 20 window
        action = blog.act(state, reward)
        worst = max(worst, float(np.abs(runner.act(state, reward) - action).max()))
        state, reward, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            break
    assert steps > 20, "the episode ended before the window slid"
    assert worst < 1e-5, worst


@pytest.fixture
def dt_bundle(tmp_path):
    from gptrl.bundle.dt import DTSidecar

    _, hf = _hf()
    hf.save_pretrained(tmp_path / "dt")
    (tmp_path / "dt" / "gptrl_dt.json").write_text(
        DTSidecar([0.0] * 11, [1.0] * 11, 1000.0, 3600.0, "Hopper-v5", 20).to_json())
    return tmp_path / "dt"


def test_one_loop_drives_both_families_with_targets(dt_bundle):
    import gptrl
    from trajectory import play, same_actions, synthetic

    runner = gptrl.load_runner(dt_bundle)
    one = gptrl.evaluate("Hopper-v5", runner, seeds=range(3), max_steps=60, target_return=1800.0)
    batched = gptrl.evaluate("Hopper-v5", gptrl.load_runner(dt_bundle, num_envs=3), seeds=range(3), max_steps=60,
                             num_envs=3, target_return=1800.0)
    assert batched.num_episodes == one.num_episodes == 3
    # Rows of a batch act as one-env runners step by step on fixed inputs (per-row targets, past K = 20)...
    inputs = synthetic(11, 3, 3, 30, targets=[1800.0, 900.0, 200.0])
    assert same_actions(runner, gptrl.load_runner(dt_bundle, num_envs=3), inputs, [0, 1, 2]) < 1e-5
    # ... and the target conditions the actions.
    low = synthetic(11, 3, 3, 30, targets=[200.0, 200.0, 200.0])
    assert np.abs(play(runner, inputs, [0]) - play(runner, low, [0])).max() > 1e-5  # float noise is ~1e-7
    causal = gptrl.load_runner(FIXTURE_CAUSAL)
    with pytest.raises(ValueError, match="not return-conditioned"):
        gptrl.evaluate("Hopper-v5", causal, seeds=range(1), target_return=100.0)
    with pytest.raises(ValueError, match="takes num_envs and device"):
        gptrl.load_runner(dt_bundle, kv_cache_max_len=4)


@pytest.mark.parametrize("target, error, message", [
    ("high", ValueError, "target_return must be a number"),
    ([1.0, 2.0], ValueError, r"target_return has shape \(2,\)"),
    (float("nan"), ValueError, "target_return must be finite"),
])
def test_bad_targets_are_refused(dt_bundle, target, error, message):
    import gptrl

    runner = gptrl.load_runner(dt_bundle)
    with pytest.raises(error, match=message):
        runner.reset(np.zeros(11, np.float32), target_return=target)


def test_a_dt_needs_the_reward(dt_bundle):
    import gptrl

    runner = gptrl.load_runner(dt_bundle)
    runner.reset(np.zeros(11, np.float32))
    runner.act(np.zeros(11, np.float32))  # the first act reads step 0 only
    with pytest.raises(ValueError, match="needs the reward"):
        runner.act(np.zeros(11, np.float32))


def test_cli_inspects_and_evaluates_a_dt_bundle(dt_bundle):
    from gptrl.cli import inspect_bundle, main

    info = inspect_bundle(str(dt_bundle))
    assert info["context_length"] == 20 and info["architecture"]["num_layers"] == 3
    assert main(["eval", str(dt_bundle), "--backend", "torch", "--episodes", "1", "--max-steps", "20",
                 "--target-return", "900", "--json"]) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(state_mean=[0.0] * 10), "'state_mean' has 10 entries, expected state_dim 11"),
    (lambda d: d.update(state_std=[0.0] * 11), "'state_std' must be positive"),
    (lambda d: d.update(scale=0), "'scale' must be a positive number"),
    (lambda d: d.update(scale=-5.0), "'scale' must be a positive number"),
    (lambda d: d.update(target_return="high"), "'target_return' must be a number"),
])
def test_bad_sidecars_are_refused(dt_bundle, edit, message):
    from gptrl.bundle.dt import load_dt_bundle

    data = json.loads((dt_bundle / "gptrl_dt.json").read_text())
    edit(data)
    (dt_bundle / "gptrl_dt.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        load_dt_bundle(dt_bundle)


def test_export_runs_torch_free_and_matches_the_torch_runner(dt_bundle, tmp_path):
    import subprocess
    import sys

    import gptrl
    from gptrl.runtime import load_policy
    from gptrl.runtime.dt import DTPolicy

    out = gptrl.export_onnx(dt_bundle)  # verified against the torch DTRunner in closed loop
    policy = load_policy(dt_bundle, num_envs=3)
    assert isinstance(policy, DTPolicy)
    from trajectory import same_actions, synthetic

    inputs = synthetic(11, 3, 3, 30, targets=[1200.0, 600.0, 3000.0])  # step by step, past K = 20
    assert same_actions(gptrl.load_runner(dt_bundle, num_envs=3), policy, inputs, [0, 1, 2]) < 1e-4
    assert same_actions(gptrl.load_runner(dt_bundle), load_policy(dt_bundle), inputs, [0, 1, 2]) < 1e-4
    onnx_result = gptrl.evaluate("Hopper-v5", policy, seeds=range(3), max_steps=50, num_envs=3,
                                 target_return=1200.0)
    assert onnx_result.num_episodes == 3
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gptrl.cli import main\n"
            f"raise SystemExit(main(['eval', {str(dt_bundle)!r}, '--episodes', '2', '--max-steps', '30', "
            "'--target-return', '900', '--json']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = bytearray(out.read_bytes())
    data[-100] ^= 1
    (tmp_path / "tampered.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="do not match the seal"):
        load_policy(tmp_path / "tampered.onnx")


def test_load_policy_runs_the_stateful_graph_like_the_window_graph(dt_bundle, tmp_path):
    """``load_policy`` on a stateful DT graph: the same contract as the window policy, the same actions and
    returns-to-go, through batches, per-row targets and a reset_rows restart; and the same errors."""
    import gptrl
    from gptrl.runtime import load_policy
    from gptrl.runtime.dt import DTPolicy, StatefulDTPolicy
    from gptrl.synthetic import ClosedLoopEnv

    gptrl.export_onnx(dt_bundle)
    stateful = load_policy(gptrl.export_onnx(dt_bundle, tmp_path / "s.onnx", variant="stateful"), num_envs=3)
    window = load_policy(dt_bundle, num_envs=3)
    assert isinstance(stateful, StatefulDTPolicy) and isinstance(window, DTPolicy)
    env = ClosedLoopEnv(11, 3, 3, seed=0)
    obs = env.reset()
    targets = np.array([3600.0, 1000.0, 200.0])
    for p in (stateful, window):
        p.reset(obs, target_return=targets)
    reward, worst = None, 0.0
    for t in range(50):  # past K = 20
        a, info = stateful.act_with_info(obs, reward=reward)
        b, expected = window.act_with_info(obs, reward=reward)
        worst = max(worst, float(np.abs(a - b).max()))
        np.testing.assert_allclose(info["value"], expected["value"], rtol=1e-6)
        obs = env.step(b)
        reward = np.tanh(obs.mean(axis=1)) * 3.0
        if t == 25:
            done = np.array([False, True, False])
            for p in (stateful, window):
                p.reset_rows(done, target_return=2500.0)
    assert worst < 1e-4, worst
    one = load_policy(tmp_path / "s.onnx")
    with pytest.raises(RuntimeError, match="before reset"):
        one.act(np.zeros(11, np.float32), reward=0.0)
    one.reset(np.zeros(11, np.float32))
    one.act(np.zeros(11, np.float32))  # the first act reads step 0 only
    with pytest.raises(ValueError, match="needs the reward"):
        one.act(np.zeros(11, np.float32))
    with pytest.raises(ValueError, match="target_return must be a number"):
        one.reset(np.zeros(11, np.float32), target_return="high")


@pytest.mark.parametrize("family", ["onnx", "torch"])
def test_a_step_with_a_non_finite_output_is_not_taken(dt_bundle, family):
    """The window slides before the model runs; when the output is refused, the slide is undone: the same step
    retried gives the action of a policy that never saw the failed try, and so do the steps after it."""
    import gptrl
    from gptrl.errors import NonFiniteOutputError
    from gptrl.runtime import load_policy
    from trajectory import synthetic

    if family == "onnx":
        gptrl.export_onnx(dt_bundle)
    load = (lambda: load_policy(dt_bundle)) if family == "onnx" else (lambda: gptrl.load_runner(dt_bundle))
    tried, clean = load(), load()
    inputs = synthetic(11, 3, 1, 30)
    obs, rewards = inputs.obs[0], inputs.rewards[0]
    for p in (tried, clean):
        p.reset(obs[0])
    for t in range(30):  # past K = 20, so the window slides
        reward = None if t == 0 else rewards[t]
        if t in (0, 25):
            real = tried._forward
            tried._forward = lambda real=real: np.full_like(real(), np.nan)
            with pytest.raises(NonFiniteOutputError):
                tried.act(obs[t], reward=reward)
            del tried._forward
        np.testing.assert_array_equal(tried.act(obs[t], reward=reward), clean.act(obs[t], reward=reward))
