"""run_episodes / evaluate on real MuJoCo envs."""

import gymnasium as gym
import numpy as np
import pytest

import gptrl
from conftest import FIXTURES
from gptrl.evaluation import REFERENCE_RETURNS, normalized_score

HOPPER = FIXTURES / "llama-hopper-single" / "bundle"
KEYS = {"num_episodes", "returns", "lengths", "return_mean", "return_std", "length_mean", "length_std"}


def _manual_episode(env, runner, seed, max_steps):
    obs, _ = env.reset(seed=seed)
    runner.reset(obs)
    total, steps, done = 0.0, 0, False
    while not done and steps < max_steps:
        obs, reward, terminated, truncated, _ = env.step(runner.act(obs))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    return total, steps


def test_run_episodes_statistics():
    env = gym.make("Hopper-v5")
    stats = gptrl.run_episodes(env, gptrl.load_runner(HOPPER), num_episodes=4, seed=0)
    assert set(stats) == KEYS
    assert stats["num_episodes"] == 4 and len(stats["returns"]) == len(stats["lengths"]) == 4
    assert stats["return_mean"] == pytest.approx(np.mean(stats["returns"]))
    assert stats["return_std"] == pytest.approx(np.std(stats["returns"], ddof=0))  # population std
    assert stats["length_std"] == pytest.approx(np.std(stats["lengths"], ddof=0))
    assert all(n >= 1 for n in stats["lengths"])
    # Seeding only the first reset makes the whole sequence reproducible.
    assert gptrl.run_episodes(env, gptrl.load_runner(HOPPER), num_episodes=4, seed=0) == stats
    # ... and the first episode is the one a hand-written loop gets.
    assert stats["returns"][0] == pytest.approx(_manual_episode(env, gptrl.load_runner(HOPPER), 0, 10_000)[0])


def test_run_episodes_respects_max_steps():
    env = gym.make("Hopper-v5", terminate_when_unhealthy=False)
    stats = gptrl.run_episodes(env, gptrl.load_runner(HOPPER), num_episodes=2, seed=1, max_steps=25)
    assert stats["lengths"] == [25, 25]


def test_evaluate_one_episode_per_seed_with_normalised_score():
    runner = gptrl.load_runner(HOPPER)
    stats = gptrl.evaluate("Hopper-v5", runner, seeds=[3, 5, 3], max_steps=1000)
    assert set(stats) == KEYS | {"normalized_score"}
    env = gym.make("Hopper-v5")
    for i, seed in enumerate([3, 5, 3]):
        assert stats["returns"][i] == pytest.approx(_manual_episode(env, runner, seed, 1000)[0])
    assert stats["returns"][0] == stats["returns"][2]
    random, expert = REFERENCE_RETURNS["Hopper-v5"]
    assert stats["normalized_score"] == pytest.approx(100 * (stats["return_mean"] - random) / (expert - random))


def test_normalised_score_references():
    assert normalized_score("Hopper-v5", 3857.7) == pytest.approx(100.0)
    assert normalized_score("HalfCheetah-v5", -257.1) == pytest.approx(0.0)
    assert normalized_score("Walker2d-v5", 6847.1) == pytest.approx(100.0)
    assert normalized_score("Ant-v5", (6673.6 - 70.1) / 2) == pytest.approx(50.0)
    assert normalized_score("Humanoid-v5", 8603.3) == pytest.approx(100.0)
    assert normalized_score("CartPole-v1", 500.0) is None


def test_evaluate_passes_an_env_through_and_refuses_batched_runners():
    env = gym.make("Hopper-v5")
    stats = gptrl.evaluate(env, gptrl.load_runner(HOPPER), seeds=range(2))
    assert stats["num_episodes"] == 2 and stats["normalized_score"] is not None
    with pytest.raises(ValueError, match="num_envs=2"):
        gptrl.evaluate(env, gptrl.load_runner(HOPPER, num_envs=2), seeds=range(2))
    with pytest.raises(ValueError, match="seeds is empty"):
        gptrl.evaluate(env, gptrl.load_runner(HOPPER), seeds=[])


def test_batched_evaluate_is_the_one_env_loop_when_episodes_end_apart():
    """A noisy reset topples some Hopper starts early: with episodes of different lengths the batched evaluation
    still returns, seed by seed, exactly what the one-env loop does (the shipped policy on onnxruntime)."""
    from gptrl.runtime import load_policy

    shipped = FIXTURES.parents[2] / "bundles" / "hopper-v5"
    kwargs = dict(seeds=range(9), max_steps=200, env_kwargs={"reset_noise_scale": 0.2})
    one = gptrl.evaluate("Hopper-v5", load_policy(shipped), **kwargs)
    three = gptrl.evaluate("Hopper-v5", load_policy(shipped, num_envs=3), num_envs=3, **kwargs)
    assert len(set(one["lengths"])) >= 3  # the rows do finish apart
    assert three["lengths"] == one["lengths"]
    assert three["returns"] == one["returns"]


def test_evaluate_samples_reproducibly_from_a_seed(tmp_path):
    """sample_seed: actions drawn from the policy's distribution, the same seed playing the same episodes again (one
    env or a batch), another seed others; a policy without a distribution refuses."""
    from test_cli import _tiny_bundle

    from gptrl.exporter import export_onnx
    from gptrl.runtime import load_policy

    bundle = _tiny_bundle("gaussian", tmp_path / "b")
    graph = export_onnx(bundle, tmp_path / "p.onnx", verify=False)
    kwargs = dict(seeds=range(4), max_steps=30)

    def run(sample_seed, num_envs=1):
        return gptrl.evaluate("Pendulum-v1", load_policy(graph, num_envs=num_envs), num_envs=num_envs,
                              sample_seed=sample_seed, **kwargs)["returns"]

    greedy, sampled = run(None), run(3)
    assert sampled == run(3) and sampled != run(4) and sampled != greedy
    assert run(3, num_envs=2) == run(3, num_envs=2) != run(None, num_envs=2)
    with pytest.raises(ValueError, match="cannot sample actions"):  # a gptrl-policy-step/1 graph: no distribution
        gptrl.evaluate("Hopper-v5", load_policy(FIXTURES.parents[2] / "bundles" / "hopper-v5"), sample_seed=0,
                       seeds=[0], max_steps=2)
