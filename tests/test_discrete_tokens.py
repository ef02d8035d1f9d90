"""A policy with a Discrete action space and integer token observations, end to end: built from FrozenLake's spaces,
trained a few steps by the behaviour-cloning loop, exported (step and stateful graphs, each verified against the
torch runner, samples included), and run on onnxruntime, OpenVINO, tract and onnx.reference, which draw the same
sampled actions from the same uniforms."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from sampling_loop import (
    GymRows,
    assert_stateful_graph_samples_alike,
    assert_step_graph_samples_alike,
    closed_loop,
    seeded_draws,
)
from test_cross_runtime import RUNTIMES

import gptrl
from gptrl.bundle import load_bundle
from gptrl.bundle.codecs import Discrete, Tokens
from gptrl.exporter import export_onnx
from gptrl.runtime import load_policy
from gptrl.training.datasets import Episode
from gptrl.training.train import TrainConfig, as_tensors, bc_losses, build_model, train
from gptrl.training.windows import WindowSampler

ENV = "FrozenLake-v1"  # observations Discrete(16): one token of a vocabulary of 16; actions Discrete(4)
TINY = dict(network="llama", context_length=4, d_model=32, num_layers=2, num_heads=2, intermediate_size=64)


def expert(obs: np.ndarray) -> np.ndarray:
    """A fixed map from cell to move, so the labels depend on the observation."""
    return (np.asarray(obs) * 5 + 1) % 4


def episodes(count: int = 6) -> list[Episode]:
    env, rng, out = gym.make(ENV), np.random.default_rng(0), []
    for i in range(count):
        obs, _ = env.reset(seed=i)
        observations, actions, rewards = [obs], [], []
        for _ in range(30):
            action = int(rng.integers(4))
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            if terminated or truncated:
                break
        tokens = np.asarray(observations, np.int64)[:, None]  # [T + 1, 1]
        out.append(Episode(tokens, np.asarray(actions, np.int64), expert(tokens[:-1, 0]).astype(np.int64),
                           np.asarray(rewards, np.float32)))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Four steps of the behaviour-cloning loop, a candidate exported and evaluated on the ONNX runtime at 2 and 4."""
    out = tmp_path_factory.mktemp("frozenlake") / "run"
    cfg = TrainConfig(steps=4, batch_size=8, window=12, warmup=2, eval_every=2, eval_episodes=2)
    state = train(ENV, out, episodes(), TINY, cfg, progress=False)
    assert [r["step"] for r in state["history"]] == [2, 4]
    assert all(0 < r["length_mean"] <= 100 for r in state["history"])  # FrozenLake's episodes, played by the graph
    return out / "best"


def test_the_loop_builds_and_trains_a_discrete_token_policy(trained):
    config = load_bundle(trained).config
    assert (config.observation, config.action) == (Tokens(1, 16), Discrete(4))
    assert config.to_dict()["action_specs"] == [{"type": "discrete", "n": 4}]
    model = build_model(ENV, episodes(), TINY, seed=0).train()
    sampler = WindowSampler(episodes(), kv=4, window=12, num_layers=2, seed=0)
    batch = as_tensors(sampler.sample(16))
    assert batch["states"].dtype == torch.int64 and batch["actions"].dtype == torch.int64
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = bc_losses(model, batch, value_scale=1.0)
    assert first["action"].item() == pytest.approx(np.log(4), abs=0.1)  # a fresh policy: cross-entropy near log 4
    for _ in range(5):
        opt.zero_grad()
        sum(bc_losses(model, batch, value_scale=1.0).values()).backward()
        opt.step()
    assert bc_losses(model, batch, value_scale=1.0)["action"].item() < first["action"].item() - 0.1


def test_tokens_outside_the_vocabulary_are_refused(trained):
    for policy in (load_policy(trained), gptrl.load_runner(trained)):
        policy.reset(np.array([0]))
        assert policy.act(np.array([3])).dtype == np.int64
        with pytest.raises(ValueError, match=r"observation holds values outside 0 <= token < 16 .* in rows \[0\]"):
            policy.act(np.array([16]))


@pytest.fixture(scope="module")
def graphs(trained, tmp_path_factory) -> dict[str, Path]:
    """The step graphs and the stateful graph, each verified against the torch runner (greedy and sampled)."""
    folder = tmp_path_factory.mktemp("graphs")
    return {variant: export_onnx(trained, folder / f"{variant}.onnx", variant=variant)
            for variant in ("attention", "portable", "stateful")}


def test_the_torch_runner_and_the_runtime_sample_alike(trained, graphs):
    for variant in ("attention", "stateful"):
        worst, differ = closed_loop(load_policy(graphs[variant], num_envs=2, positions="per_row"),
                                    gptrl.load_runner(trained, num_envs=2, positions="per_row"), GymRows(ENV), seed=5)
        assert differ == 0 and worst < 1e-5, (variant, worst, differ)
    # predict(deterministic=False): the same seed draws the same actions, on the runtime and the torch runner alike;
    # another seed draws others, and the draws vary across steps
    obs = np.array([0])
    runtime = seeded_draws(lambda: load_policy(graphs["attention"]), obs, seed=1, steps=30)
    assert np.array_equal(runtime, seeded_draws(lambda: load_policy(graphs["attention"]), obs, seed=1, steps=30))
    assert np.array_equal(runtime, seeded_draws(lambda: gptrl.load_runner(trained), obs, seed=1, steps=30))
    other = seeded_draws(lambda: load_policy(graphs["attention"]), obs, seed=2, steps=30)
    assert not np.array_equal(runtime, other) and len(set(runtime.tolist())) > 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_step_graph_samples_identically_on_each_runtime(trained, graphs, runtime):
    assert_step_graph_samples_alike(graphs, load_bundle(trained).config, runtime, GymRows(ENV))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_stateful_graph_samples_identically_on_each_runtime(graphs, runtime):
    """Each runtime keeps its own state (zeros to begin, each state_out fed back as state_in) and is given the
    uniforms gptrl's policy draws from its seeded generator."""
    assert_stateful_graph_samples_alike(graphs["stateful"], runtime, GymRows(ENV))
