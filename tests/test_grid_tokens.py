"""Character-grid observations (``{type: "grid"}``, gptrl/bundle/codecs/grid.py) end to end on ASCII Breakout's small
grid: a character embedding looked up by a Gather on the ids, 2-D patch positions, one timestep token per frame, then
the causal policy with its KV cache. Exported (step and stateful graphs, each verified against the torch runner,
samples included) and run on onnxruntime, OpenVINO, tract and onnx.reference, which draw the same sampled actions
from the same uniforms; token ids outside the vocabulary are refused by every runner."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnx
import pytest
import torch
from sampling_loop import (
    GymRows,
    assert_stateful_graph_samples_alike,
    assert_step_graph_samples_alike,
    closed_loop,
    spread_bundle,
)
from test_cross_runtime import RUNTIMES

import gptrl
from gptrl.bundle import BundleError, load_bundle, make_config, parse_config
from gptrl.bundle.codecs import NUMPY, Discrete, Grid, observation_for_space
from gptrl.envs import register
from gptrl.envs.breakout import heuristic_action
from gptrl.exporter import PolicyModel, export_onnx, init_weights
from gptrl.exporter.torch_ops import TorchOps
from gptrl.runtime import load_policy

ENV = "gptrl/AsciiBreakoutSmall-v0"  # 12 x 27 characters, Discrete(3)
GRID = Grid(12, 27, 128, embed_dim=4, feature_dim=16)  # the default design: a token per row, max-pooled
TINY = dict(network="llama", context_length=4, d_model=16, num_layers=2, num_heads=2, intermediate_size=32)


def world() -> GymRows:
    return GymRows(ENV, max_episode_steps=17)  # rows restart within the loops below


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    config = make_config(observation=GRID, action=Discrete(3), env_id=ENV, **TINY)
    return spread_bundle(config, tmp_path_factory.mktemp("grid") / "bundle", spread=0.3)


@pytest.fixture(scope="module")
def graphs(bundle, tmp_path_factory) -> dict[str, Path]:
    """The step graphs and the stateful graph, each verified against the torch runner (greedy and sampled)."""
    folder = tmp_path_factory.mktemp("graphs")
    return {variant: export_onnx(bundle, folder / f"{variant}.onnx", variant=variant)
            for variant in ("attention", "portable", "stateful")}


def test_the_env_space_reads_as_a_grid_and_the_config_round_trips(bundle):
    register()
    assert observation_for_space(gym.make(ENV).observation_space) == Grid(12, 27, 128, 8, (1, 27), 64, "max")
    assert observation_for_space(gym.spaces.Box(0, 127, (24, 81), np.uint8)).patch == (1, 81)
    assert observation_for_space(gym.spaces.Box(0, 9, (4, 5), np.int64)) == Grid(4, 5, 10)
    with pytest.raises(ValueError, match="no observation type describes"):  # a float image is no grid of ids
        observation_for_space(gym.spaces.Box(0, 1, (4, 5), np.float32))
    data = json.loads((bundle / "config.json").read_text())
    assert data["state_specs"] == [{"type": "grid", "rows": 12, "cols": 27, "vocab_size": 128, "embed_dim": 4,
                                    "patch": [1, 27], "features": 16, "pool": "max"}]
    assert data["requires_capabilities"] == ["gptrl.observations.grid", "gptrl.actions.discrete"]
    assert parse_config(data).observation == GRID
    shapes = {k: v.shape for k, v in load_bundle(bundle).tensors.items() if k.startswith("state_encoder.")}
    assert shapes == {"state_encoder.embedding": (128, 4), "state_encoder.patch_proj": (108, 16),
                      "state_encoder.patch_bias": (16,), "state_encoder.row_position": (12, 16),
                      "state_encoder.col_position": (1, 16)}
    for edit, message in (
        (lambda d: d["state_specs"][0].update(patch=[5, 9]), r"'state_specs\[0\]\.patch' must be \[patch rows"),
        (lambda d: d["state_specs"][0].update(patch=[3]), r"'state_specs\[0\]\.patch' must be"),
        (lambda d: d["state_specs"][0].pop("embed_dim"), r"missing required key 'state_specs\[0\]\.embed_dim'"),
        (lambda d: d["state_specs"][0].update(vocab_size=0), r"'state_specs\[0\]\.vocab_size' must be positive"),
        (lambda d: d["state_specs"][0].update(pool="sum"), r"'state_specs\[0\]\.pool' must be one of \['max', 'mean'\]"),
        (lambda d: d["state_container"].update(shape=[27, 12]), r"'state_container' must be a Box of shape \[12, 27\]"),
    ):
        broken = json.loads(json.dumps(data))
        edit(broken)
        with pytest.raises(BundleError, match=message):
            parse_config(broken, "config.json")


@pytest.mark.parametrize("grid", [GRID, Grid(12, 27, 128, 4, (3, 9), 16, "mean"), Grid(12, 27, 128, 4, (3, 9), 16)],
                         ids=["rows-max", "patches-mean", "patches-max"])
def test_numpy_torch_and_onnx_compute_the_same_features(grid):
    """The encoder is written once (codecs/grid.py) in the codecs' ops; the three backends agree, and the pooled
    features depend on where a character is, not only on which characters the frame holds."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    from gptrl.graph.builder import GraphBuilder
    from gptrl.graph.ops import GraphOps

    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in grid.tensors().items()}
    frames = rng.integers(0, 128, (3, grid.size))
    frames[2] = frames[1]
    frames[2, [0, 100]] = frames[1, [100, 0]]  # the same characters, two of them swapped
    want = grid.features(NUMPY, frames, params=params)
    assert want.shape == (3, 16)
    assert np.abs(want[1] - want[2]).max() > 1e-3
    torch_params = {k: torch.from_numpy(v) for k, v in params.items()}
    got = grid.features(TorchOps(), torch.from_numpy(frames), params=torch_params).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    g = GraphBuilder()
    g.op("Identity", grid.features(GraphOps(g), "obs", params={k: g.weight(k, v) for k, v in params.items()}),
         outputs=["features"])
    model = helper.make_model(helper.make_graph(
        g.nodes, "grid", [helper.make_tensor_value_info("obs", TensorProto.INT64, [None, grid.size])],
        [helper.make_empty_tensor_value_info("features")], g.initializers),
        opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    np.testing.assert_allclose(ReferenceEvaluator(model).run(None, {"obs": frames})[0], want, rtol=1e-5, atol=1e-5)
    # the math itself, written out once more in plain numpy
    ph, pw = grid.patch
    cells = frames.reshape(3, 12 // ph, ph, 27 // pw, pw).transpose(0, 1, 3, 2, 4).reshape(3, -1, ph * pw)
    tokens = params["embedding"][cells].reshape(3, cells.shape[1], -1) @ params["patch_proj"] + params["patch_bias"]
    tokens += (params["row_position"][:, None] + params["col_position"][None]).reshape(-1, 16)
    pooled = np.maximum(tokens, 0).max(axis=1) if grid.pool == "max" else np.maximum(tokens, 0).mean(axis=1)
    np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-5)


def test_the_graph_looks_up_the_ids_with_a_gather(graphs):
    for variant, path in graphs.items():
        model = onnx.load(str(path))
        source = "obs" if variant == "stateful" else "state"
        inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
        assert inputs[source] == onnx.TensorProto.INT64
        gathers = [n for n in model.graph.node if n.op_type == "Gather"]
        assert any(n.input[0].endswith("state_encoder.embedding") for n in gathers), variant


def test_token_ids_outside_the_vocabulary_are_refused(bundle, graphs):
    register()
    frame, _ = gym.make(ENV).reset(seed=0)
    for policy in (load_policy(graphs["attention"]), load_policy(graphs["stateful"]), gptrl.load_runner(bundle)):
        policy.reset(frame)
        assert policy.act(frame).dtype == np.int64
        for value, shown in ((128, "128"), (-1, "-1"), (2.5, "2.5")):
            bad = frame.astype(np.float64 if isinstance(value, float) else np.int64)
            bad[4, 7] = value
            with pytest.raises(ValueError, match=rf"observation holds {shown} at row 0, cell \(4, 7\), outside the "
                                                 r"vocabulary 0 <= token < 128"):
                policy.act(bad)
        with pytest.raises(ValueError, match=r"observation has shape \(27, 12\)"):
            policy.act(frame.T)


def test_the_torch_runner_and_the_runtime_sample_alike(bundle, graphs):
    for variant in ("attention", "stateful"):
        worst, differ = closed_loop(load_policy(graphs[variant], num_envs=2, positions="per_row"),
                                    gptrl.load_runner(bundle, num_envs=2, positions="per_row"), world(), seed=5)
        assert differ == 0 and worst < 1e-5, (variant, worst, differ)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_step_graph_samples_identically_on_each_runtime(bundle, graphs, runtime):
    assert_step_graph_samples_alike(graphs, load_bundle(bundle).config, runtime, world())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_stateful_graph_samples_identically_on_each_runtime(graphs, runtime):
    """Each runtime keeps its own state (zeros to begin, each state_out fed back as state_in) and is given the
    uniforms gptrl's policy draws from its seeded generator; rows restart as their episodes end."""
    assert_stateful_graph_samples_alike(graphs["stateful"], runtime, world())


def test_behaviour_cloning_learns_the_heuristic_from_frames():
    """The encoder trains: a few Adam steps on frames labelled by the scripted heuristic lower the cross-entropy."""
    register()
    env = gym.make(ENV)
    frames, labels = [], []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        for _ in range(60):
            frames.append(obs.reshape(-1))
            labels.append(heuristic_action(obs))
            obs, _, terminated, truncated, _ = env.step(labels[-1] if len(labels) % 3 else 0)
            if terminated or truncated:
                break
    states = torch.as_tensor(np.array(frames), dtype=torch.int64)[:, None]  # one-step windows [N, 1, S]
    target = torch.as_tensor(labels)
    model = init_weights(PolicyModel(make_config(observation=GRID, action=Discrete(3), **TINY)), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        out = model(states, torch.zeros(len(target), 1, dtype=torch.int64), torch.ones(len(target), 1))
        return torch.nn.functional.cross_entropy(out.params[:, 0], target)

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < first - 0.1, (first, loss().item())
    assert model.state_encoder.embedding.grad is not None and model.state_encoder.embedding.grad.abs().sum() > 0
