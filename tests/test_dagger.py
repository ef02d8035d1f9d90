"""DAgger rounds on a tiny env: the student's own states, labelled by the expert, resumable per round."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from test_training import TINY, random_actor

from gptrl.training.dagger import Args, best_round, beta_at, dataset_id, run
from gptrl.training.datasets import create_dataset, load_episodes, use_datasets_path
from gptrl.training.recipes import DataLevel, Recipe
from gptrl.training.train import TrainConfig, publish, train

ENV = "InvertedPendulum-v5"  # short episodes under a random policy: a round costs seconds


@pytest.fixture
def tiny_recipe(tmp_path, monkeypatch):
    """A recipe with one expert dataset, its teacher in teachers/, and a briefly trained student bundle."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    use_datasets_path(None)
    recipe = Recipe(env_id=ENV, slug="tinypend", levels=(DataLevel("expert", "expert", 3, seed=0, noise_std=0.1),),
                    model=TINY, train=dict(batch_size=8, window=12))
    expert = random_actor(4, 1, seed=0)
    recipe.teacher_dir.mkdir(parents=True)
    expert.save(recipe.teacher_dir / "expert.safetensors")
    level = recipe.levels[0]
    create_dataset(recipe.dataset_id(level), ENV, expert, expert, num_episodes=level.episodes, seed=level.seed,
                   noise_std=level.noise_std, ref_min_score=0.0, ref_max_score=1000.0, description="tiny",
                   progress=False)
    cfg = TrainConfig(steps=2, batch_size=8, window=12, warmup=1, eval_every=2, eval_episodes=2)
    train(ENV, tmp_path / "bc", load_episodes(recipe.dataset_ids), TINY, cfg, progress=False)
    return recipe, expert, publish(tmp_path / "bc" / "best", tmp_path / "student")


ARGS = dict(rounds=1, episodes=3, num_envs=2, steps=2, eval_every=2, warmup=1, select_episodes=2, rampdown_rounds=1,
            confirm_episodes=3)


def test_beta_schedule_is_imitations_linear_one():
    assert [beta_at(k, 2) for k in range(4)] == [1.0, 0.5, 0.0, 0.0]
    assert beta_at(1, 0) == 0.0


def test_best_round_prefers_return_then_fewer_falls_on_the_confirmation_seeds():
    rounds = [{"round": k, "selection": {"return_mean": r, "falls": f}}
              for k, (r, f) in enumerate([(10.0, 0), (12.0, 3), (12.0, 1), (11.0, 0)])]
    assert best_round(rounds)["round"] == 2
    for r, confirmed in zip(rounds, [9.0, 8.0, 8.5, 9.5]):
        r["confirmation"] = {"return_mean": confirmed, "falls": 0}
    assert best_round(rounds)["round"] == 3
    del rounds[0]["confirmation"]  # until every round is confirmed, the selection seeds decide
    assert best_round(rounds)["round"] == 2


def test_one_round_labels_the_students_own_states_and_resumes(tiny_recipe, tmp_path):
    from gptrl.runtime import load_policy

    recipe, expert, student = tiny_recipe
    out = tmp_path / "run"
    summary = run(recipe, Args(**ARGS), init=student, out=out, progress=False)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    first = summary["rounds"][1]
    assert first["beta"] == 0.0 and first["rollout"]["expert_step_fraction"] == 0.0
    assert first["datasets"] == [*recipe.dataset_ids, dataset_id(recipe, 1)]
    assert set(first["selection"]) == {"return_mean", "return_std", "length_mean", "falls"}
    # Every round's student, the starting one too, is measured again on the confirmation seeds, which choose.
    assert all(r["confirmation"]["seeds"] == [3000, 3002] for r in summary["rounds"])
    assert summary["best_round"] == best_round(summary["rounds"])["round"]
    assert (out / "rounds.png").stat().st_size > 0 and (out / "round-1" / "train" / "best" / "policy.onnx").exists()

    # The round's dataset is what the round-0 student did on its own, seeded, every state labelled by the expert.
    import minari

    dataset = minari.load_dataset(dataset_id(recipe, 1))
    episodes = list(dataset.iterate_episodes())
    assert len(episodes) == 3
    env = gym.make(ENV)
    falls = 0
    for i, ep in enumerate(episodes):
        obs0, _ = env.reset(seed=Args.rollout_seed + 1000 + i)
        np.testing.assert_array_equal(ep.observations[0], obs0)
        np.testing.assert_allclose(ep.infos["expert_action"], expert.act(ep.observations.astype(np.float32)),
                                   atol=1e-6)
        # Teacher-forced replay through a one-env policy: the actions are the student's, acting through its cache.
        policy = load_policy(out / "round-0" / "student")
        policy.reset(ep.observations[0])
        replayed = np.stack([policy.act(o) for o in ep.observations[:-1]])
        np.testing.assert_allclose(replayed, ep.actions, atol=1e-5)
        falls += int(ep.terminations[-1])
    assert first["rollout"]["falls"] == falls and first["rollout"]["steps"] == sum(len(e.actions) for e in episodes)

    # Finished rounds are not redone; more rounds continue from the last round's student.
    marker = out / "round-1" / "rollout.json"
    before = marker.stat().st_mtime_ns
    again = run(recipe, Args(**{**ARGS, "rounds": 2}), init=student, out=out, progress=False)
    assert marker.stat().st_mtime_ns == before
    assert [r["round"] for r in again["rounds"]] == [0, 1, 2]
    assert json.loads((out / "round-2" / "rollout.json").read_text())["student"] == first["student"]
    assert all(r["confirmation"]["seeds"] == [3000, 3002] for r in again["rounds"])
    moved = run(recipe, Args(**{**ARGS, "rounds": 2, "confirm_seed": 4000}), init=student, out=out, progress=False)
    assert all(r["confirmation"]["seeds"] == [4000, 4002] for r in moved["rounds"])
    with pytest.raises(FileExistsError, match="other settings"):
        run(recipe, Args(**{**ARGS, "episodes": 4}), init=student, out=out, progress=False)


def test_spread_report_summarises_the_finished_seeds(tmp_path):
    from gptrl.training.spread import report

    with pytest.raises(FileNotFoundError, match="no finished seed"):
        report(tmp_path)
    for seed, (bc, dagger, falls) in enumerate([(3000.0, 3200.0, 1), (3400.0, 3300.0, 0)]):
        (tmp_path / f"seed-{seed}").mkdir()
        (tmp_path / f"seed-{seed}" / "result.json").write_text(json.dumps(
            {"seed": seed, "bc": {"card": {"return_mean": bc, "falls": falls}},
             "dagger": {"card": {"return_mean": dagger, "falls": 0}}}))
    out = report(tmp_path)
    assert out["seeds"] == [0, 1]
    assert out["bc"] == {"per_seed": [3000.0, 3400.0], "mean": 3200.0, "std": 200.0, "min": 3000.0, "falls": [1, 0]}
    assert out["dagger"]["mean"] == 3250.0 and out["dagger"]["falls"] == [0, 0]
    assert json.loads((tmp_path / "spread.json").read_text()) == out
