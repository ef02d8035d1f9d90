"""Each shipped bundle replays its recorded trajectory (tests/data/trajectories/) teacher-forced, step by step, within
1e-4 on every path: the torch-free runtime, the torch runner, both batched, and the stateful graph. These hold on any
x86-64 CPU; the closed-loop reproduction of a card's 50 episodes, which does not, is `make verify-cards`."""

from pathlib import Path

import pytest

import gptrl
from gptrl.fileio import sha256_file
from gptrl.runtime import load_policy
from trajectory import load, names, worst_error

ROOT = Path(__file__).parents[1] / "bundles"
CARDED = sorted(p.name for p in ROOT.iterdir() if (p / "eval.json").is_file())
TOLERANCE = 1e-4


def test_every_carded_bundle_has_a_trajectory_of_its_shipped_weights():
    assert names() == CARDED
    for name in CARDED:
        traj = load(name)
        assert traj.meta["weights_sha256"] == sha256_file(ROOT / name / "model.safetensors"), \
            f"{name}: weights changed since its trajectory was recorded; run tests/record_trajectories.py {name}"
        # past twice the longest context a shipped policy has (kv 16, a DT window of 20): the cache's ring wraps
        assert traj.obs.shape[0] == 2 and traj.lengths.min() >= 50, (name, traj.lengths)


@pytest.mark.parametrize("name", CARDED)
def test_the_runtime_replays_each_recorded_episode(name):
    traj = load(name)
    policy = load_policy(ROOT / name)
    for episode in range(len(traj.lengths)):
        assert worst_error(policy, traj, [episode]) <= TOLERANCE


@pytest.mark.parametrize("name", CARDED)
def test_the_torch_runner_replays_each_recorded_episode(name):
    traj = load(name)
    runner = gptrl.load_runner(ROOT / name)
    for episode in range(len(traj.lengths)):
        assert worst_error(runner, traj, [episode]) <= TOLERANCE


@pytest.mark.parametrize("name", CARDED)
def test_batched_runtime_and_runner_replay_the_episodes_as_rows(name):
    traj = load(name)
    assert worst_error(load_policy(ROOT / name, num_envs=2), traj, [0, 1]) <= TOLERANCE
    assert worst_error(gptrl.load_runner(ROOT / name, num_envs=2), traj, [0, 1]) <= TOLERANCE


@pytest.mark.parametrize("name", ["hopper-v5", "dt-hopper-v5"])
def test_the_stateful_graph_replays_the_episodes_alone_and_as_rows(name, tmp_path):
    traj = load(name)
    graph = gptrl.export_onnx(ROOT / name, tmp_path / "stateful.onnx", variant="stateful")
    assert worst_error(load_policy(graph), traj, [0]) <= TOLERANCE
    assert worst_error(load_policy(graph, num_envs=2), traj, [0, 1]) <= TOLERANCE


def test_a_replay_notices_a_wrong_action():
    """The comparison can fail: one recorded action moved by 1e-3 is found."""
    traj = load("hopper-v5")
    traj.actions[0, 50, 1] += 1e-3
    assert worst_error(load_policy(ROOT / "hopper-v5"), traj, [0]) > TOLERANCE


def test_observe_returns_what_act_would_have_returned():
    traj = load("hopper-v5")
    acting, observing = load_policy(ROOT / "hopper-v5"), load_policy(ROOT / "hopper-v5")
    acting.reset(traj.obs[0, 0])
    observing.reset(traj.obs[0, 0])
    for t in range(20):
        own = acting.act(traj.obs[0, t])
        assert (observing.observe(traj.obs[0, t], own) == own).all()
