"""PPO of the KV-cache transformer policy (gptrl.training.ppo): the recomputed log-probabilities and values equal the
rollout's before every update's first gradient step, a tiny CartPole run improves, a run resumes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from gptrl.training import ppo

SMALL = dict(num_envs=3, num_steps=40, d_model=32, num_layers=2, num_heads=2, context_length=4, chunk=8,
             update_epochs=2, num_minibatches=2, seed=3)
# A Discrete policy on CartPole (random episodes end after ~20 steps) and a clipped Gaussian one on Pendulum cut to
# 30 steps (truncations): in both, episodes end and reset inside rollouts and run on across updates.
CASES = [("CartPole-v1", {}), ("Pendulum-v1", {"max_episode_steps": 30, "action_type": "gaussian"})]


def _updates(env_id: str, extra: dict, count: int) -> list[tuple[ppo.Rollout, dict]]:
    args = ppo.Args(**SMALL, **extra)
    torch.manual_seed(args.seed)
    model = ppo.build_model(env_id, args)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    collector = ppo.Collector(env_id, model, args, seed=args.seed)
    out = []
    for _ in range(count):
        carried = sum(bool(h) for h in collector.history)
        rollout = collector.collect()
        out.append((rollout, {**ppo.update(model, opt, rollout, args), "carried": carried}))
    collector.envs.close()
    return out


@pytest.mark.parametrize("env_id,extra", CASES, ids=["discrete", "gaussian"])
def test_recomputed_log_probs_and_values_equal_the_rollouts_before_each_update(env_id, extra):
    updates = _updates(env_id, extra, 3)
    for k, (rollout, stats) in enumerate(updates):
        assert rollout.ended[:-1].any(), "an episode should end inside the rollout"
        assert stats["logp_error"] < 1e-5, (k, stats)  # every ratio is 1 (|log ratio| < 1e-5)
        assert stats["value_error"] < 1e-5, (k, stats)
        assert np.isfinite(stats["loss"]) and stats["approx_kl"] > 0  # the update did move the policy
    assert all(stats["carried"] > 0 for _, stats in updates[1:]), "episodes should run on across updates"


def test_a_stale_cache_is_what_the_check_catches(monkeypatch):
    """Without rebuilding the cache under the new weights, episodes that run on across updates break the equality."""
    monkeypatch.setattr(ppo, "refresh_cache", lambda *a: None)
    updates = _updates(*CASES[1], 2)
    assert updates[0][1]["logp_error"] < 1e-5
    assert updates[1][1]["logp_error"] > 1e-3


def test_windows_count_every_step_once_and_keep_the_receptive_field():
    rollout, _ = _updates("CartPole-v1", {}, 1)[0]
    context, chunk = SMALL["num_layers"] * SMALL["context_length"], SMALL["chunk"]
    w = ppo.windows(rollout, context, chunk)
    counted = w["step"] >= 0
    pairs = sorted(zip(w["step"][counted].tolist(), w["row"][counted].tolist()))
    assert pairs == sorted((t, r) for t in range(SMALL["num_steps"]) for r in range(SMALL["num_envs"]))
    for k, j in zip(*np.nonzero(counted)):  # the slots a counted one depends on are in its window
        slot, episode = w["slot"][k, j], w["episode"][k, j]
        seen = w["slot"][k][(w["episode"][k] == episode) & w["valid"][k]]
        assert set(range(max(1, slot - context), slot + 1)) <= set(seen.tolist()) | {0}


def test_gae_bootstraps_a_truncation_but_not_a_termination():
    ro = ppo.Rollout(states=[[]], actions=[[]], is_bos=[[]], slot=[[]], episode=[[]], step=[[]],
                     latent=np.zeros((2, 1)), logp=np.zeros((2, 1), np.float32),
                     value=np.array([[1.0], [1.0]], np.float32), reward=np.array([[1.0], [1.0]], np.float32),
                     terminated=np.array([[True], [False]]), ended=np.array([[True], [True]]))
    adv, ret = ppo.advantages(ro, ro.value, np.full((2, 1), 5.0, np.float32), gamma=0.5, lam=0.9)
    assert adv[0, 0] == pytest.approx(0.0)  # terminated: 1 - 1, no bootstrap, nothing from the next episode
    assert adv[1, 0] == pytest.approx(1.0 + 0.5 * 5.0 - 1.0)  # truncated: bootstrapped from the next slot's value
    assert ret[1, 0] == pytest.approx(3.5)


def test_a_lost_life_is_terminal_for_gae_only_where_asked():
    ro = ppo.Rollout(states=[[]], actions=[[]], is_bos=[[]], slot=[[]], episode=[[]], step=[[]],
                     latent=np.zeros((2, 1)), logp=np.zeros((2, 1), np.float32),
                     value=np.array([[1.0], [1.0]], np.float32), reward=np.array([[1.0], [1.0]], np.float32),
                     terminated=np.array([[False], [False]]), ended=np.array([[False], [False]]),
                     cut=np.array([[True], [False]]))
    adv, _ = ppo.advantages(ro, ro.value, np.full((2, 1), 5.0, np.float32), gamma=0.5, lam=0.9)
    assert adv[0, 0] == pytest.approx(0.0)  # the life lost: no bootstrap and nothing from the steps after it
    ro.cut = None
    adv, _ = ppo.advantages(ro, ro.value, np.full((2, 1), 5.0, np.float32), gamma=0.5, lam=0.9)
    assert adv[0, 0] == pytest.approx(2.5 + 0.5 * 0.9 * 2.5)


def test_a_separate_critic_trains_its_own_weights(tmp_path):
    args = ppo.Args(total_timesteps=2048, num_envs=4, num_steps=128, eval_every=4, eval_episodes=2, seed=0,
                    critic="separate", **{k: SMALL[k] for k in ("d_model", "num_layers", "num_heads", "context_length")
                                          if k in SMALL})
    state = ppo.train("CartPole-v1", tmp_path / "run", args, progress=False)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert {k.split(".")[0] for k in saved["model"]} == {"actor", "critic"}
    assert "value_error" not in state["updates"][-1] and state["updates"][-1]["logp_error"] < 1e-5
    with pytest.raises(ValueError, match="--critic"):
        ppo.train("CartPole-v1", tmp_path / "bad", ppo.Args(critic="both"), progress=False)


def test_a_tiny_cartpole_run_improves(tmp_path):
    args = ppo.Args(total_timesteps=6144, num_envs=8, num_steps=128, eval_every=6, eval_episodes=5, seed=0)
    state = ppo.train("CartPole-v1", tmp_path / "run", args, progress=False)
    returns = [u["train_return"] for u in state["updates"] if "train_return" in u]
    assert returns[-1] > 2 * returns[0], returns  # training episodes: about 22 (random) at first
    assert state["best"]["return_mean"] > 60, state["best"]  # greedy, held-out seeds, ONNX runtime
    assert (tmp_path / "run" / "best" / "policy.onnx").is_file()
    assert (tmp_path / "run" / "learning_curve.png").is_file()


def test_a_run_resumes_from_its_checkpoint_and_refuses_other_settings(tmp_path, monkeypatch):
    args = ppo.Args(**{**SMALL, "num_steps": 32}, total_timesteps=3 * 96, eval_every=1, eval_episodes=2)
    out = tmp_path / "run"
    real_update, calls = ppo.update, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_update(*a, **k)

    monkeypatch.setattr(ppo, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ppo.train("CartPole-v1", out, args, progress=False)
    saved = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in saved["history"]] == [96, 192]
    monkeypatch.setattr(ppo, "update", real_update)
    state = ppo.train("CartPole-v1", out, args, progress=False)
    assert state["update"] == 3 and [r["step"] for r in state["history"]] == [96, 192, 288]
    assert state["history"][:2] == saved["history"]
    assert state["updates"][2]["logp_error"] < 1e-5
    with pytest.raises(FileExistsError, match="checkpoint.pt"):
        ppo.train("CartPole-v1", out, ppo.Args(**{**SMALL, "num_steps": 32}, total_timesteps=3 * 96, lr=1e-2),
                  progress=False)
    # a checkpoint made before a setting existed resumes under that setting's default, and only under it
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    del checkpoint["config"]["life_loss_terminal"]
    torch.save(checkpoint, out / "checkpoint.pt")
    assert ppo.train("CartPole-v1", out, args, progress=False)["update"] == 3  # finished: nothing more to do
    with pytest.raises(FileExistsError, match="checkpoint.pt"):
        ppo.train("CartPole-v1", out, replace(args, life_loss_terminal=True), progress=False)


def test_an_env_preset_sits_under_the_flags_given(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(ppo, "train", lambda env_id, out, args, **_: seen.update(args=args) or {"best": None})
    ppo.main(["Acrobot-v1", "--out", str(tmp_path), "--lr", "0.002"])
    preset = ppo.PRESETS["Acrobot-v1"]
    assert seen["args"].num_envs == preset["num_envs"] and seen["args"].lr == 0.002
    ppo.main(["--out", str(tmp_path), "CartPole-v1"])
    assert seen["args"] == ppo.Args()


def test_a_grid_observation_trains_and_its_bundle_drops_the_namespace(tmp_path):
    args = ppo.Args(total_timesteps=1024, num_envs=4, num_steps=64, eval_every=4, eval_episodes=1, d_model=16,
                    num_layers=1, num_heads=1, context_length=4, chunk=8)
    state = ppo.train("gptrl/AsciiBreakoutSmall-v0", tmp_path / "run", args, progress=False)
    assert state["updates"][-1]["logp_error"] < 1e-5  # episode-end tokens hold the flat grid, as every token does
    assert ppo.bundle_name("gptrl/AsciiBreakout-v0") == "asciibreakout-v0"


def test_the_rollout_marks_lost_lives_on_breakout():
    args = ppo.Args(num_envs=4, num_steps=128, d_model=16, num_layers=1, num_heads=1, context_length=4, chunk=8,
                    life_loss_terminal=True)
    collector = ppo.Collector("gptrl/AsciiBreakoutSmall-v0", ppo.build_model("gptrl/AsciiBreakoutSmall-v0", args),
                              args, seed=0)
    ro = collector.collect()
    assert ro.cut.sum() > ro.ended.sum() > 0  # five lives an episode: more lives lost than episodes ended
    assert not (ro.cut & ro.ended).any()  # the episode's end is its own terminal


def test_the_rollout_records_the_teachers_action_at_each_state():
    args = ppo.Args(num_envs=2, num_steps=64, d_model=16, num_layers=1, num_heads=1, context_length=4, chunk=8,
                    teacher="breakout-planner")
    env_id = "gptrl/AsciiBreakoutSmall-v0"
    collector = ppo.Collector(env_id, ppo.build_model(env_id, args), args, seed=0)
    seen = []
    teacher = ppo.TEACHERS["breakout-planner"]
    ppo.TEACHERS["breakout-planner"] = lambda env: seen.append(teacher(env)) or seen[-1]
    try:
        collector.teacher = ppo.TEACHERS["breakout-planner"]
        ro = collector.collect()
    finally:
        ppo.TEACHERS["breakout-planner"] = teacher
    assert ro.teacher.shape == (64, 2) and ro.teacher.ravel().tolist() == seen  # step-major, one call per row
    assert set(seen) == {0, 1, 2}
    with pytest.raises(ValueError, match="--teacher 'nobody'"):
        ppo.Collector(env_id, ppo.build_model(env_id, args), replace(args, teacher="nobody"), seed=0)


def test_the_teachers_weight_falls_to_zero_and_kickstarting_moves_the_policy_to_it():
    args = ppo.Args(num_envs=4, num_steps=64, d_model=16, num_layers=1, num_heads=1, context_length=4, chunk=8,
                    teacher="breakout-planner", teacher_coef=2.0, teacher_fraction=0.5, lr=3e-3, seed=1)
    assert [ppo.teacher_weight(args, u, 10) for u in (0, 2, 5, 9)] == [2.0, 1.2, 0.0, 0.0]
    assert ppo.teacher_weight(replace(args, teacher=""), 0, 10) == 0.0
    env_id = "gptrl/AsciiBreakoutSmall-v0"
    torch.manual_seed(1)
    model = ppo.build_model(env_id, args)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    collector = ppo.Collector(env_id, model, args, seed=1)
    held = collector.collect()  # fixed states and the teacher's actions at them

    def cross_entropy() -> float:
        with torch.no_grad():
            return float(ppo.ppo_losses(model, ppo.make_batch(model, held, args)[0], args, teacher_coef=1.0)
                         ["teacher_ce"])

    before = cross_entropy()
    for _ in range(6):
        ppo.update(model, opt, collector.collect(), args, teacher_coef=2.0)
    assert cross_entropy() < before - 0.1, (before, cross_entropy())  # it takes the teacher's actions more often
    stats = ppo.update(model, opt, collector.collect(), args, teacher_coef=0.0)
    assert "teacher_ce" not in stats  # plain PPO once the weight is 0
