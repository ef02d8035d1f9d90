"""A policy with a Gaussian Box action clipped to its bounds (``squash: "clip"``; one bounded, one unbounded and one
half-range dimension), end to end like the Discrete policy of tests/test_discrete_tokens.py: written as a bundle,
exported (step and stateful graphs, each verified against the torch runner, samples included), and run on
onnxruntime, OpenVINO, tract and onnx.reference, which draw the same sampled actions from the same uniforms as
gptrl's runtime and the torch runner. The closed loops are tests/sampling_loop.py's, shared with the Discrete tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sampling_loop import (
    SyntheticRows,
    assert_stateful_graph_samples_alike,
    assert_step_graph_samples_alike,
    closed_loop,
    seeded_draws,
    spread_bundle,
)
from test_cross_runtime import RUNTIMES

import gptrl
from gptrl.bundle import load_bundle, make_config
from gptrl.bundle.codecs import GaussianBox
from gptrl.exporter import export_onnx
from gptrl.runtime import load_policy

ACTION = GaussianBox.from_bounds([-1.0, -np.inf, 0.0], [1.0, np.inf, 4.0])
STATE_DIM = 5
TINY = dict(network="gpt2", context_length=4, d_model=32, num_layers=2, num_heads=2)


def world() -> SyntheticRows:
    return SyntheticRows(STATE_DIM, ACTION.size)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A fresh GPT2 policy whose weights are spread wider than the initialisation's, so its mean and log-std move
    with the observations and its samples fall inside and outside the bounds."""
    config = make_config(state_dim=STATE_DIM, action=ACTION, **TINY)
    return spread_bundle(config, tmp_path_factory.mktemp("gaussian") / "bundle")


@pytest.fixture(scope="module")
def graphs(bundle, tmp_path_factory) -> dict[str, Path]:
    """The step graphs and the stateful graph, each verified against the torch runner (greedy and sampled)."""
    folder = tmp_path_factory.mktemp("graphs")
    return {variant: export_onnx(bundle, folder / f"{variant}.onnx", variant=variant)
            for variant in ("attention", "portable", "stateful")}


def test_the_bundle_is_a_clipped_gaussian_marked_as_gptrl_s_extension(bundle):
    config = load_bundle(bundle).config
    assert config.action == ACTION and config.action.kind == "gaussian"
    assert config.to_dict()["action_specs"][0]["squash"] == "clip"
    assert config.requires_capabilities == ("gptrl.actions.gaussian",)


def test_samples_are_clipped_gaussians_and_the_greedy_action_is_the_clipped_mean(graphs):
    """From the runtime's own outputs: each sample is clip(mean + std z) for the z its uniforms give (Box-Muller),
    its log-probability the density of the unclipped draw mean + std z, samples land on the bounds and inside them,
    and the greedy action is the clipped mean."""
    policy = load_policy(graphs["attention"], num_envs=2, positions="per_row")
    rows, noise = world(), np.random.default_rng(4)  # the same stream as policy.seed(4)
    policy.seed(4)
    obs = rows.reset()
    policy.reset(obs)
    actions = []
    for _ in range(30):
        action, info = policy.act_with_info(obs, deterministic=False)
        u = noise.random((2, 2 * ACTION.size), dtype=np.float32).astype(np.float64)
        z = np.sqrt(-2 * np.log(1 - u[:, :3])) * np.cos(2 * np.pi * u[:, 3:])
        mean, log_std = info["dist"][:, :3], info["dist"][:, 3:]
        want = np.clip(mean + np.exp(log_std) * z, ACTION.low, ACTION.high)
        np.testing.assert_allclose(action, want, rtol=1e-5, atol=1e-5)
        gaussian = -0.5 * z ** 2 - log_std - 0.5 * np.log(2 * np.pi)  # at the draw, not at the clipped action
        np.testing.assert_allclose(info["log_prob"], gaussian.sum(1), rtol=1e-4, atol=1e-4)
        actions.append(action)
        obs, done = rows.step(action)
        policy.reset_rows(done)
    actions = np.concatenate(actions)
    for dim, (low, high) in enumerate([(-1.0, 1.0), (None, None), (0.0, 4.0)]):
        if low is not None:  # both on a bound and strictly inside, at least 5 times each
            on_bound = (actions[:, dim] == low) | (actions[:, dim] == high)
            assert 5 <= on_bound.sum() <= len(actions) - 5, (dim, on_bound.sum())
    assert np.abs(actions[:, 1]).max() > 1.0  # the unbounded dimension is not clipped
    one = load_policy(graphs["attention"])
    one.reset(obs[0])
    greedy, info = one.act_with_info(obs[0])
    np.testing.assert_array_equal(greedy, np.clip(info["dist"][:3], ACTION.low, ACTION.high))


def test_the_torch_runner_and_the_runtime_sample_alike(bundle, graphs):
    for variant in ("attention", "stateful"):
        worst, differ = closed_loop(load_policy(graphs[variant], num_envs=2, positions="per_row"),
                                    gptrl.load_runner(bundle, num_envs=2, positions="per_row"), world(), seed=5)
        assert differ == 0 and worst < 1e-5, (variant, worst, differ)
    # predict(deterministic=False): the same seed draws the same actions, on the runtime and the torch runner alike;
    # another seed draws others
    obs = np.linspace(-1, 1, STATE_DIM, dtype=np.float32)
    runtime = seeded_draws(lambda: load_policy(graphs["attention"]), obs, seed=1)
    np.testing.assert_array_equal(runtime, seeded_draws(lambda: load_policy(graphs["attention"]), obs, seed=1))
    np.testing.assert_allclose(seeded_draws(lambda: gptrl.load_runner(bundle), obs, seed=1), runtime, atol=1e-5)
    assert np.abs(runtime - seeded_draws(lambda: load_policy(graphs["attention"]), obs, seed=2)).max() > 0.1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_step_graph_samples_identically_on_each_runtime(bundle, graphs, runtime):
    assert_step_graph_samples_alike(graphs, load_bundle(bundle).config, runtime, world())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_stateful_graph_samples_identically_on_each_runtime(graphs, runtime):
    """Each runtime keeps its own state (zeros to begin, each state_out fed back as state_in) and is given the
    uniforms gptrl's policy draws from its seeded generator."""
    assert_stateful_graph_samples_alike(graphs["stateful"], runtime, world())
