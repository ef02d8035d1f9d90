"""The action codecs and observation encoders: each is defined once, so numpy, torch and ONNX must compute the same
thing from it; its distribution must be a distribution (samples follow it, densities integrate to 1); and the
format reads and writes each type, refusing what it cannot run with an error naming the file and key."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from gptrl.bundle import BundleError, make_config, parse_config
from gptrl.bundle.codecs import NUMPY, Discrete, FloatVector, GaussianBox, TanhBox, Tokens
from gptrl.exporter.torch_ops import TorchOps
from gptrl.graph.builder import GraphBuilder
from gptrl.graph.ops import GraphOps

CODECS = {
    "tanh": TanhBox.from_bounds([-1.0, 0.0, -3.0], [1.0, 2.0, 5.0]),
    "gaussian": GaussianBox.from_bounds([-1.0, -np.inf, 0.0], [1.0, np.inf, 4.0]),
    "discrete": Discrete(5),
}


def _inputs(codec, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = rng.normal(size=(rows, codec.param_width)).astype(np.float32)
    uniform = rng.random((rows, codec.noise_width), dtype=np.float32)
    if codec.kind == "discrete":
        action = rng.integers(0, codec.n, rows)
    else:
        low, high = np.maximum(codec.low, -4.0), np.minimum(codec.high, 4.0)
        action = (low + (high - low) * rng.random((rows, codec.size))).astype(np.float32)
    return {"params": params, "uniform": uniform, "action": action}


def _functions(codec):
    """What each backend computes from the codec's one definition."""
    return {
        "feedback": lambda ops, x: codec.feedback(ops, x["action"]),
        "greedy": lambda ops, x: codec.greedy(ops, x["params"]),
        "sample": lambda ops, x: codec.sample(ops, x["params"], x["uniform"]),
        "log_prob": lambda ops, x: codec.log_prob(ops, x["params"], x["action"]),
        "sample_log_prob": lambda ops, x: codec.latent_log_prob(ops, x["params"],
                                                                codec.sample_latent(ops, x["params"], x["uniform"])),
        "entropy": lambda ops, x: codec.entropy(ops, x["params"]),
    }


def _onnx(codec, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The codec's functions as one ONNX graph, run by onnx's reference evaluator."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    g = GraphBuilder()
    ops = GraphOps(g)
    for name, fn in _functions(codec).items():
        g.op("Identity", fn(ops, {n: n for n in x}), outputs=[name])
    kind = {"i": TensorProto.INT64, "f": TensorProto.FLOAT}
    inputs = [helper.make_tensor_value_info(n, kind[v.dtype.kind], v.shape) for n, v in x.items()]
    outputs = [helper.make_empty_tensor_value_info(n) for n in _functions(codec)]
    model = helper.make_model(helper.make_graph(g.nodes, "codec", inputs, outputs, g.initializers),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    return dict(zip(_functions(codec), ReferenceEvaluator(model).run(None, x)))


@pytest.mark.parametrize("kind", CODECS)
def test_numpy_torch_and_onnx_compute_the_same_codec(kind):
    codec = CODECS[kind]
    x = _inputs(codec, 64)
    torch_x = {k: torch.from_numpy(v) for k, v in x.items()}
    graph = _onnx(codec, x)
    for name, fn in _functions(codec).items():
        expected = np.asarray(fn(NUMPY, x))
        got_torch = fn(TorchOps(), torch_x).numpy()
        assert got_torch.shape == expected.shape == graph[name].shape, name
        if expected.dtype.kind == "i":  # a Discrete choice: exactly the same
            assert np.array_equal(got_torch, expected) and np.array_equal(graph[name], expected), name
        else:
            np.testing.assert_allclose(got_torch, expected, rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(graph[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", CODECS)
def test_samples_follow_the_distribution_and_densities_integrate_to_one(kind):
    codec = CODECS[kind]
    rng = np.random.default_rng(1)
    n = 40_000
    uniform = rng.random((n, codec.noise_width), dtype=np.float32)
    if kind == "discrete":
        params = np.tile(rng.normal(size=(1, codec.n)).astype(np.float32), (n, 1))
        counts = np.bincount(codec.sample(NUMPY, params, uniform), minlength=codec.n) / n
        probs = np.exp(codec.log_prob(NUMPY, params[: codec.n], np.arange(codec.n)))
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(counts, probs, atol=0.01)
        assert codec.entropy(NUMPY, params[:1])[0] == pytest.approx(-(probs * np.log(probs)).sum(), rel=1e-5)
        assert np.array_equal(codec.greedy(NUMPY, params[:1]), [np.argmax(params[0])])
        return
    a = codec.size
    mu, std = (rng.normal(size=a) * 0.5).astype(np.float32), np.full(a, 0.5, np.float32)
    params = np.tile(np.concatenate([mu, np.log(std)])[None], (n, 1))
    latent = codec.sample_latent(NUMPY, params, uniform)
    if kind == "tanh":  # the draws before tanh are the Gaussian
        np.testing.assert_allclose(latent.mean(0), mu, atol=0.02)
        np.testing.assert_allclose(latent.std(0), std, rtol=0.02)
    else:  # the unclipped Gaussian is the latent; the action is it clipped to the bounds
        np.testing.assert_allclose(latent.mean(0), mu, atol=0.02)
        np.testing.assert_allclose(latent.std(0), std, rtol=0.02)
        action = codec.action_of(NUMPY, latent)
        assert np.all(action >= codec.low) and np.all(action <= codec.high) and (action != latent).any()
    # from the latent or from the action it gives, where they are one (inside the bounds): the same log-probability
    same = np.flatnonzero((codec.action_of(NUMPY, latent) == latent).all(1))[:100] if kind == "gaussian" \
        else np.arange(100)
    np.testing.assert_allclose(codec.latent_log_prob(NUMPY, params[same], latent[same]),
                               codec.log_prob(NUMPY, params[same], codec.action_of(NUMPY, latent[same])), atol=1e-3)
    for dim in range(a):  # each dimension's density integrates to 1 over its range (a grid in env units)
        single = type(codec).from_bounds([codec.low[dim]], [codec.high[dim]])
        low, high = single.low[0], single.high[0]
        if kind == "gaussian":
            low, high = max(low, mu[dim] - 8 * std[dim]), min(high, mu[dim] + 8 * std[dim])
        grid = np.linspace(low, high, 400_001)[1:-1].astype(np.float32)
        one = np.tile(np.array([[mu[dim], np.log(std[dim])]], np.float32), (len(grid), 1))
        mass = float(np.trapezoid(np.exp(single.log_prob(NUMPY, one, grid[:, None])), grid))
        clipped = kind == "gaussian" and (low > mu[dim] - 8 * std[dim] or high < mu[dim] + 8 * std[dim])
        assert mass < 0.999 if clipped else mass == pytest.approx(1.0, abs=2e-3), (kind, dim, mass)
    assert codec.entropy(NUMPY, params[:1])[0] == pytest.approx(float(np.sum(np.log(std) + 0.5 * np.log(2 * np.pi *
                                                                                                         np.e))))


def test_greedy_actions_and_feedback():
    tanh, discrete = CODECS["tanh"], CODECS["discrete"]
    mu = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(tanh.greedy(NUMPY, mu), [[0.0, 1.0, 1.0]])  # tanh(0) is the middle of each range
    np.testing.assert_allclose(tanh.feedback(NUMPY, np.array([[0.0, 1.0, 1.0]], np.float32)), [[0.0, 0.0, 0.0]],
                               atol=1e-6)
    assert tanh.feedback(NUMPY, np.array([[1.0, 2.0, -3.0]], np.float32)).max() < 8  # bounds clipped before atanh
    np.testing.assert_array_equal(discrete.feedback(NUMPY, np.array([3, 0])), np.eye(5, dtype=np.float32)[[3, 0]])
    gaussian = CODECS["gaussian"]
    np.testing.assert_allclose(gaussian.feedback(NUMPY, np.array([[1.0, 7.0, 0.0]], np.float32)), [[1.0, 7.0, -1.0]])
    np.testing.assert_allclose(gaussian.greedy(NUMPY, np.array([[3.0, 9.0, 2.0, 0, 0, 0]], np.float32)),
                               [[1.0, 9.0, 2.0]])


def test_tanh_log_prob_stays_finite_where_the_action_saturates():
    """From the latent, the log-probability of a sample far in the tail is exact even when tanh rounds to 1."""
    codec = TanhBox.from_bounds([-1.0], [1.0])
    params = np.array([[6.0, 0.0]], np.float32)
    latent = np.array([[12.0]], np.float32)
    assert codec.action_of(NUMPY, latent)[0, 0] == 1.0
    exact = -0.5 * 36 - 0.5 * np.log(2 * np.pi) - (2 * (np.log(2) - 12 - np.log1p(np.exp(-24))))
    assert codec.latent_log_prob(NUMPY, params, latent)[0] == pytest.approx(exact, rel=1e-6)


def test_tokens_are_one_hot_and_out_of_range_values_are_refused():
    tokens = Tokens(3, 4)
    features = tokens.features(NUMPY, np.array([[0, 3, 1]]))
    np.testing.assert_array_equal(features, [[1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0]])
    assert tokens.check([[1, 2, 3], [0, 0, 0]], 2)[0].dtype == np.int64
    for bad, rows in (([[1, 2, 4], [0, 0, 0]], r"\[0\]"), ([[1, 2, 3], [0, -1, 0]], r"\[1\]")):
        with pytest.raises(ValueError, match=rf"observation holds values outside 0 <= token < 4 .* in rows {rows}"):
            tokens.check(bad, 2)
    with pytest.raises(ValueError, match="not whole numbers"):
        tokens.check([0.5, 1, 2], 1)
    assert Tokens(1, 16).check(np.int64(7), 1)[0].tolist() == [[7]]  # a Discrete observation is one token
    with pytest.raises(ValueError, match=r"action holds values outside 0 <= action < 5"):
        Discrete(5).check(np.array([1, 5]), 2)


def test_configs_of_every_type_round_trip_and_are_checked():
    config = make_config(observation=Tokens(2, 7), action=Discrete(3), env_id="X", d_model=16, num_layers=1,
                         num_heads=2, context_length=4)
    assert (config.observation, config.action) == (Tokens(2, 7), Discrete(3))
    data = config.to_dict()
    assert data["state_specs"] == [{"type": "tokens", "size": 2, "vocab_size": 7}]
    assert data["action_specs"] == [{"type": "discrete", "n": 3}]
    assert data["state_normalization"] == {"embedded": False, "legacy_sidecar": False}
    again = parse_config(json.loads(json.dumps(data)))
    assert again.to_dict() == data
    gaussian = make_config(state_dim=2, action=GaussianBox.from_bounds(-1.0, [1.0, 2.0]), d_model=16, num_layers=1,
                           num_heads=2)
    assert parse_config(gaussian.to_dict()).action == gaussian.action
    assert gaussian.observation == FloatVector.unbounded(2)
    for edit, message in (
        (lambda d: d["action_specs"][0].update(n=0), r"'action_specs\[0\].n' must be positive"),
        (lambda d: d.update(action_container={"type": "Discrete", "n": 4}), r"'action_container' must be Discrete"),
        (lambda d: d["state_specs"][0].pop("vocab_size"), r"missing required key 'state_specs\[0\].vocab_size'"),
        (lambda d: d["action_specs"].append({"type": "discrete", "n": 2}), r"'action_specs\[1\]': a discrete action"),
        (lambda d: d["action_specs"][0].update(type="multi"), r"'action_specs\[0\]' needs finite low/high"),
        (lambda d: d.update(state_normalization={"embedded": True}), "tokens observations have none"),
    ):
        broken = json.loads(json.dumps(data))
        edit(broken)
        with pytest.raises(BundleError, match=message):
            parse_config(broken, "config.json")


@pytest.mark.parametrize("kind", CODECS)
@pytest.mark.parametrize("variant", ["attention", "stateful"])
def test_every_action_type_exports_and_samples_as_the_torch_runner_does(tmp_path, kind, variant):
    """A fresh policy of each action type (float observations): the export's check compares the graph with the
    torch runner on greedy steps and on samples drawn from the same uniforms."""
    from gptrl.exporter import PolicyModel, export_bundle, export_onnx, init_weights
    from gptrl.runtime import load_policy

    config = make_config(state_dim=5, action=CODECS[kind], d_model=16, num_layers=2, num_heads=2, context_length=3)
    folder = export_bundle(init_weights(PolicyModel(config), seed=0), tmp_path / "b")
    policy = load_policy(export_onnx(folder, tmp_path / "p.onnx", variant=variant))  # verified, or it raises
    policy.seed(0)
    policy.reset(np.zeros(5, np.float32))
    action, info = policy.act_with_info(np.zeros(5, np.float32), deterministic=False)
    assert info["dist"].shape == (CODECS[kind].param_width,) and np.isfinite(info["log_prob"])
    assert action.shape == CODECS[kind].shape and action.dtype == CODECS[kind].dtype


def test_extension_types_are_marked_in_requires_capabilities(tmp_path, monkeypatch):
    """Each of gptrl's own types names a capability that every config gptrl writes lists, so a runtime that does not
    know the type refuses the bundle (naming the file and the key) instead of misreading it; the Causal GPT-RL
    format's own types need none."""
    import gptrl.bundle.parse as parse
    from gptrl.bundle import load_bundle
    from gptrl.exporter import PolicyModel, export_bundle, export_onnx, init_weights
    from gptrl.runtime import load_policy

    def written(observation, action) -> list[str]:
        config = make_config(observation=observation, action=action, d_model=16, num_layers=1, num_heads=2)
        return config.to_dict()["requires_capabilities"]

    float_obs = FloatVector.unbounded(5)
    assert written(float_obs, CODECS["tanh"]) == []
    assert written(float_obs, CODECS["gaussian"]) == ["gptrl.actions.gaussian"]
    assert written(float_obs, CODECS["discrete"]) == ["gptrl.actions.discrete"]
    assert written(Tokens(2, 7), CODECS["discrete"]) == ["gptrl.observations.tokens", "gptrl.actions.discrete"]
    # Bundles gptrl wrote before it marked the extension (bundles/cartpole-v1 lists none) are still read.
    config = make_config(state_dim=5, action=CODECS["discrete"], d_model=16, num_layers=2, num_heads=2,
                         context_length=3)
    unmarked = {**config.to_dict(), "requires_capabilities": []}
    assert parse_config(unmarked).action == CODECS["discrete"]
    assert parse_config(unmarked).to_dict()["requires_capabilities"] == ["gptrl.actions.discrete"]

    folder = export_bundle(init_weights(PolicyModel(config), seed=0), tmp_path / "b")
    graph = export_onnx(folder, tmp_path / "p.onnx", variant="stateful", verify=False)
    assert json.loads((folder / "config.json").read_text())["requires_capabilities"] == ["gptrl.actions.discrete"]
    monkeypatch.setattr(parse, "CAPABILITIES", frozenset())  # a reader that knows no extension
    with pytest.raises(BundleError) as refused:
        load_bundle(folder)
    assert str(folder / "config.json") in str(refused.value)
    assert "key 'requires_capabilities' lists ['gptrl.actions.discrete'], which gptrl does not provide" in str(
        refused.value)
    with pytest.raises(BundleError, match=r"p\.onnx metadata 'gptrl\.config'.*'requires_capabilities' lists "
                                          r"\['gptrl\.actions\.discrete'\]"):
        load_policy(graph)
    monkeypatch.undo()
    for listed, message in ((["gptrl.actions.discrete", "return_conditioning"], "lists ['return_conditioning']"),
                            ([{"name": "x"}], "must list strings")):
        with pytest.raises(BundleError, match="config.json: key 'requires_capabilities' " + re.escape(message)):
            parse_config({**config.to_dict(), "requires_capabilities": listed}, "config.json")
