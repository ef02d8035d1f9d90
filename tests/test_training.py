"""The training pipeline on tiny data: teacher actors, Minari round trip, windows, one BC run end to end."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from gptrl.bundle import make_config
from gptrl.exporter import PolicyModel, PolicyRunner, init_weights
from gptrl.training.datasets import Episode, create_dataset, load_episodes, use_datasets_path
from gptrl.training.teacher_actor import TeacherActor, actor_from_sb3, load_teacher_actor
from gptrl.training.train import TrainConfig, as_tensors, bc_losses, build_model, publish, train
from gptrl.training.windows import WindowSampler

TINY = dict(network="llama", context_length=4, d_model=32, num_layers=2, num_heads=2, intermediate_size=64)


def random_actor(state_dim: int, action_dim: int, seed: int, hidden: int = 16) -> TeacherActor:
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)
    return TeacherActor(
        hidden=[(w(hidden, state_dim), w(hidden)), (w(hidden, hidden), w(hidden))],
        mean=(w(action_dim, hidden), w(action_dim)), log_std=(w(action_dim, hidden), w(action_dim) - 1.0),
        action_low=-np.ones(action_dim, np.float32), action_high=np.ones(action_dim, np.float32),
        info={"algo": "random", "steps": 0},
    )


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    use_datasets_path(None)
    return tmp_path / "minari"


def test_teacher_actor_matches_sb3_and_round_trips(tmp_path):
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", "Hopper-v5", device="cpu", seed=3)
    actor = actor_from_sb3(model, {"algo": "sac", "steps": 0})
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actor.act(obs), expected, atol=1e-5)
    actor.save(tmp_path / "a.safetensors")
    again = load_teacher_actor(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(again.act(obs), actor.act(obs))
    assert again.info == {"algo": "sac", "steps": 0}
    # Sampling is reproducible from the generator and differs from the mean.
    a1 = again.act(obs, np.random.default_rng(7))
    np.testing.assert_array_equal(a1, actor.act(obs, np.random.default_rng(7)))
    assert np.abs(a1 - again.act(obs)).max() > 1e-3


@pytest.mark.parametrize("noise_std", [None, 0.3])
def test_minari_dataset_round_trip(datasets, noise_std):
    import minari

    from gptrl.training.datasets import behaviour_action

    behaviour, expert = random_actor(11, 3, 0), random_actor(11, 3, 1)
    kwargs = dict(num_episodes=3, seed=5, ref_min_score=17.6, ref_max_score=3857.7, description="test",
                  progress=False, noise_std=noise_std)
    ds = create_dataset("gptrl/hopper/test-v0", "Hopper-v5", behaviour, expert, **kwargs)
    assert ds.total_episodes == 3
    loaded = minari.load_dataset("gptrl/hopper/test-v0")
    assert loaded.spec.env_spec.id == "Hopper-v5"
    assert loaded.storage.metadata["ref_max_score"] == pytest.approx(3857.7)
    assert float(minari.get_normalized_score(loaded, np.array([17.6]))[0]) == pytest.approx(0.0)
    episodes = load_episodes(["gptrl/hopper/test-v0"])
    for ep in episodes:
        assert ep.observations.shape == (len(ep.actions) + 1, 11)
        np.testing.assert_allclose(ep.expert_actions, expert.act(ep.observations[:-1]), atol=1e-6)
    # The first episode replays exactly from its seed with the behaviour actor's seeded noise.
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng([5, 0])
    for t in range(len(episodes[0].actions)):
        action = behaviour_action(behaviour, obs, rng, noise_std)
        np.testing.assert_allclose(action, episodes[0].actions[t], atol=1e-6)
        obs, *_ = env.step(action)
    if noise_std is not None:  # mean action plus noise of that size, within the bounds
        noise = episodes[0].actions - behaviour.act(episodes[0].observations[:-1])
        assert 0.1 < noise.std() < 0.5 and np.abs(episodes[0].actions).max() <= 1.0
    with pytest.raises(FileExistsError, match="overwrite"):
        create_dataset("gptrl/hopper/test-v0", "Hopper-v5", behaviour, expert, **kwargs)
    create_dataset("gptrl/hopper/test-v0", "Hopper-v5", behaviour, expert, **{**kwargs, "num_episodes": 2}, overwrite=True)
    assert minari.load_dataset("gptrl/hopper/test-v0").total_episodes == 2


def closed_loop_episode(model: PolicyModel, steps: int) -> Episode:
    """Run the torch PolicyRunner on HalfCheetah (never terminates) and record what it did."""
    runner = PolicyRunner(model)
    env = gym.make("HalfCheetah-v5")
    obs, _ = env.reset(seed=0)
    runner.reset(obs)
    observations, actions = [obs], []
    for _ in range(steps):
        action = runner.act(obs)
        obs, *_ = env.step(action)
        observations.append(obs)
        actions.append(action)
    actions = np.asarray(actions, dtype=np.float32)
    return Episode(np.asarray(observations, np.float32), actions, actions, np.zeros(steps, np.float32))


def tiny_model(seed: int = 0) -> PolicyModel:
    config = make_config(state_dim=17, action_low=-1.0, action_high=[1.0] * 6, env_id="HalfCheetah-v5", **TINY)
    model = init_weights(PolicyModel(config), seed=seed)
    with torch.no_grad():  # a non-trivial normaliser so the test sees it
        model.state_normalization_enabled.fill_(1.0)
        model.state_normalization_std.fill_(2.0)
        for p in model.output_head[0].parameters():
            p.mul_(20.0)  # actions away from zero
    return model.eval()


@pytest.mark.parametrize("window", [9, 14])
def test_training_windows_reproduce_the_rollout(window):
    """Every counted prediction of a window equals the action the cached rollout produced at that step."""
    model = tiny_model()
    episode = closed_loop_episode(model, steps=25)
    sampler = WindowSampler([episode], kv=4, window=window, num_layers=2)
    assert np.abs(episode.actions).max() > 0.3
    starts = np.arange(len(sampler.start))
    batch = sampler.windows(sampler.episode[starts], sampler.start[starts])
    t = as_tensors(batch)
    with torch.no_grad():
        out = model(t["states"], t["actions"], t["is_bos"], positions=t["positions"], attn_mask=t["attn_mask"])
        predicted = model.squash_actions(out.mu).numpy()
    mask = batch.loss_mask
    np.testing.assert_allclose(predicted[mask], batch.targets[mask], atol=2e-5)
    counted = {int(s) + j for k, s in enumerate(sampler.start) for j in range(window) if mask[k, j]}
    assert counted == set(range(25))  # every step is covered by some window
    # Plain positions 0..L-1 and a plain causal mask do not reproduce it.
    with torch.no_grad():
        plain = model.squash_actions(model(t["states"], t["actions"], t["is_bos"]).mu).numpy()
    assert np.abs(plain[mask] - batch.targets[mask]).max() > 1e-3


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    model = tiny_model(seed=1).train()
    episode = closed_loop_episode(tiny_model(seed=2), steps=30)
    batch = as_tensors(WindowSampler([episode], kv=4, window=12, num_layers=2, seed=0).sample(16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = bc_losses(model, batch, value_scale=1.0)
    sum(before.values()).backward()
    opt.step()
    after = bc_losses(model, batch, value_scale=1.0)
    assert after["action"].item() < before["action"].item()
    assert all(torch.isfinite(v) for v in after.values())


def test_a_trained_tiny_policy_exports_and_loads(datasets, tmp_path):
    from gptrl.runtime import load_policy

    teacher = random_actor(17, 6, 0)
    create_dataset("gptrl/halfcheetah/tiny-v0", "HalfCheetah-v5", teacher, teacher, num_episodes=1, seed=0,
                   ref_min_score=-257.1, ref_max_score=16241.0, description="tiny", progress=False)
    episodes = load_episodes(["gptrl/halfcheetah/tiny-v0"])
    cfg = TrainConfig(steps=4, batch_size=8, window=12, warmup=2, eval_every=2, eval_episodes=2)
    state = train("HalfCheetah-v5", tmp_path / "run", episodes, TINY, cfg, progress=False)
    assert [r["step"] for r in state["history"]] == [2, 4]
    assert all(r["length_mean"] == 1000 for r in state["history"])
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["dataset_episodes"] == 1 and history["best"] == state["best"]
    dest = publish(tmp_path / "run" / "best", tmp_path / "bundle")
    policy = load_policy(dest)
    obs, _ = gym.make("HalfCheetah-v5").reset(seed=0)
    policy.reset(obs)
    assert policy.act(obs).shape == (6,)
    # The run resumes from its checkpoint: asking for more steps continues at step 4.
    more = train("HalfCheetah-v5", tmp_path / "run", episodes, TINY, TrainConfig(**{**cfg.__dict__, "steps": 6}),
                 progress=False)
    assert [r["step"] for r in more["history"]] == [2, 4, 6]


def test_build_model_fits_the_normaliser_to_the_data():
    rng = np.random.default_rng(0)
    obs = rng.normal(3.0, 2.0, size=(201, 17)).astype(np.float32)
    ep = Episode(obs, np.zeros((200, 6), np.float32), np.zeros((200, 6), np.float32), np.zeros(200, np.float32))
    model = build_model("HalfCheetah-v5", [ep], TINY, seed=0)
    assert model.config.env_id == "HalfCheetah-v5" and model.config.context_length == 4
    np.testing.assert_allclose(model.state_normalization_mean.numpy(), obs.mean(0), atol=1e-4)
    np.testing.assert_allclose(model.state_normalization_std.numpy(), obs.std(0), rtol=1e-3)


def test_teacher_training_resumes_and_publishes(tmp_path):
    from gptrl.training.teacher import publish_teachers, train_teacher

    out = tmp_path / "run"
    small = {"buffer_size": 2000, "learning_starts": 150}
    train_teacher("Hopper-v5", out, steps=200, checkpoint_every=100, eval_episodes=2, algo_kwargs=small)
    train_teacher("Hopper-v5", out, steps=300, checkpoint_every=100, eval_episodes=2, algo_kwargs=small)
    progress = (out / "progress.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in progress[1:]] == ["100", "200", "300"]
    snaps = sorted((out / "actors").glob("*.safetensors"))
    assert [load_teacher_actor(p).info["steps"] for p in snaps] == [100, 200, 300]
    with pytest.raises(FileExistsError, match="different run"):
        train_teacher("Hopper-v5", out, steps=400, algo="tqc", checkpoint_every=100)
    summary = publish_teachers(out, tmp_path / "teachers", "Hopper-v5", finalists=2, episodes=3)
    expert = load_teacher_actor(tmp_path / "teachers" / "expert.safetensors")
    medium = load_teacher_actor(tmp_path / "teachers" / "medium.safetensors")
    assert expert.info["steps"] != medium.info["steps"]
    assert expert.info["selection_episodes"] == 3 and summary["expert"] == expert.info
    assert json.loads((tmp_path / "teachers" / "teachers.json").read_text())["medium"]["steps"] == medium.info["steps"]
