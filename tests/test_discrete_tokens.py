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
from test_cross_runtime import RUNTIMES, zero_state

import gptrl
from gptrl.bundle import load_bundle
from gptrl.bundle.codecs import Discrete, Tokens
from gptrl.exporter import export_onnx
from gptrl.rollout import CachedPolicy, RolloutState, StepOutputs
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


class StepDriver(CachedPolicy):
    """gptrl's rollout bookkeeping around a portable step graph run by any runtime (``run(feeds) -> outputs``):
    the driver keeps the key/value ring and writes each step's new keys into it."""

    def __init__(self, run, config, num_envs: int):
        m, kv = config.model, config.context_length
        self.config, self.run = config, run
        self.state = RolloutState(num_envs, config.observation, config.action, kv, "discard", positions="per_row")
        self.keys = [np.zeros((num_envs, m.num_heads, m.head_dim, kv), np.float32) for _ in range(m.num_layers)]
        self.values = [np.zeros((num_envs, m.num_heads, kv, m.head_dim), np.float32) for _ in range(m.num_layers)]

    def _forward(self, step) -> StepOutputs:
        feeds = {"state": step.states, "action": step.actions, "is_bos": step.is_bos.astype(np.float32),
                 "position": self.state.position_ids(), "past_valid": self.state.valid.copy(),
                 "uniform": step.uniform, "sample": step.sample}
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = k.copy(), v.copy()
        out = self.run(feeds)
        slot = self.state.slot
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            k[:, :, :, slot], v[:, :, slot, :] = out[f"new_key.{i}"], out[f"new_value.{i}"]
        return StepOutputs(*(np.asarray(out[n]) for n in ("action_out", "value", "termination_prob", "dist",
                                                           "log_prob")))


def relative(want, got) -> float:
    return float((np.abs(np.asarray(got) - want) / (1.0 + np.abs(want))).max())


def closed_loop(policy, other, seed: int, steps: int = 40) -> tuple[float, int]:
    """Two FrozenLake envs follow ``policy``'s sampled actions (restarted when they end); ``other`` sees the same
    observations and draws from a generator seeded alike. Returns the largest difference of the distributions and
    log-probabilities (relative to 1 + their size), and how many actions differ."""
    envs = [gym.make(ENV) for _ in range(2)]
    obs = np.array([env.reset(seed=s)[0] for s, env in enumerate(envs)])
    for p in (policy, other):
        p.seed(seed)
        p.reset(obs)
    worst, differ = 0.0, 0
    for _ in range(steps):
        action, info = policy.act_with_info(obs, deterministic=False)
        got, got_info = other.act_with_info(obs, deterministic=False)
        differ += int((action != got).sum())
        worst = max(worst, relative(info["dist"], got_info["dist"]), relative(info["log_prob"], got_info["log_prob"]))
        results = [env.step(int(a)) for env, a in zip(envs, action)]
        obs = np.array([r[0] for r in results])
        done = np.array([r[2] or r[3] for r in results])
        for row in np.flatnonzero(done):
            obs[row] = envs[row].reset()[0]
        for p in (policy, other):
            p.reset_rows(done)
    return worst, differ


@pytest.fixture(scope="module")
def graphs(trained, tmp_path_factory) -> dict[str, Path]:
    """The step graphs and the stateful graph, each verified against the torch runner (greedy and sampled)."""
    folder = tmp_path_factory.mktemp("graphs")
    return {variant: export_onnx(trained, folder / f"{variant}.onnx", variant=variant)
            for variant in ("attention", "portable", "stateful")}


def test_the_torch_runner_and_the_runtime_sample_alike(trained, graphs):
    for variant in ("attention", "stateful"):
        worst, differ = closed_loop(load_policy(graphs[variant], num_envs=2, positions="per_row"),
                                    gptrl.load_runner(trained, num_envs=2, positions="per_row"), seed=5)
        assert differ == 0 and worst < 1e-5, (variant, worst, differ)
    sampled = [load_policy(graphs["attention"]) for _ in range(2)]
    for p, seed in zip(sampled, (1, 2)):
        p.seed(seed)
        p.reset(np.array([0]))
    draws = [[int(p.act(np.array([0]), deterministic=False)) for _ in range(30)] for p in sampled]
    assert draws[0] != draws[1] and len(set(draws[0])) > 1  # samples vary with the seed and across steps


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_step_graph_samples_identically_on_each_runtime(trained, graphs, runtime):
    config = load_bundle(trained).config
    reference = load_policy(graphs["portable"], num_envs=2, positions="per_row")
    worst, differ = closed_loop(reference, StepDriver(RUNTIMES[runtime](graphs["portable"]), config, 2), seed=3,
                                steps=20 if runtime == "onnx.reference" else 40)
    assert differ == 0 and worst < 1e-5, (runtime, worst, differ)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_stateful_graph_samples_identically_on_each_runtime(graphs, runtime):
    """Each runtime keeps its own state (zeros to begin, each state_out fed back as state_in) and is given the
    uniforms gptrl's policy draws from its seeded generator."""
    path = graphs["stateful"]
    policy, run = load_policy(path, num_envs=2), RUNTIMES[runtime](path)
    noise = np.random.default_rng(11)  # the same stream as policy.seed(11)
    policy.seed(11)
    envs = [gym.make(ENV) for _ in range(2)]
    obs = np.array([env.reset(seed=s)[0] for s, env in enumerate(envs)])
    policy.reset(obs)
    state, reset = zero_state(path, 2), np.array([True, True])
    differ, worst = 0, 0.0
    for _ in range(20 if runtime == "onnx.reference" else 40):
        action, info = policy.act_with_info(obs, deterministic=False)
        uniform = noise.random((2, 1), dtype=np.float32)
        out = run({"obs": obs[:, None].astype(np.int64), "reset": reset, "uniform": uniform,
                   "sample": np.ones(2, bool), **state})
        differ += int((np.asarray(out["action"]) != action).sum())
        worst = max(worst, relative(info["log_prob"], out["log_prob"]), relative(info["dist"], out["dist"]))
        state = {k.replace("state_out.", "state_in."): np.asarray(v) for k, v in out.items()
                 if k.startswith("state_out.")}
        results = [env.step(int(a)) for env, a in zip(envs, action)]
        obs = np.array([r[0] for r in results])
        reset = np.array([r[2] or r[3] for r in results])
        for row in np.flatnonzero(reset):
            obs[row] = envs[row].reset()[0]
        policy.reset_rows(reset)
    assert differ == 0 and worst < 1e-5, (runtime, worst, differ)
