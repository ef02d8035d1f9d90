"""The vector-env TQC teacher on CPU: its pieces against plain formulas, and a tiny run that resumes and publishes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gptrl.training.teacher import publish_teachers
from gptrl.training.teacher_actor import load_teacher_actor
from gptrl.training.vector_tqc import TQC, Args, ReplayBuffer, quantile_huber_loss, train

TINY = dict(num_envs=2, updates_per_step=2, batch_size=32, learning_starts=40, snapshot_every=50, eval_episodes=1,
            actor_hidden=(16, 16), critic_hidden=(16, 16), n_critics=2, n_quantiles=5, drop_per_net=1,
            device="cpu")


def test_quantile_huber_loss_is_the_pairwise_formula():
    g = torch.Generator().manual_seed(0)
    current, target = torch.randn(2, 3, 4, generator=g) * 2, torch.randn(3, 6, generator=g) * 2
    expected = []
    for c in range(2):
        for b in range(3):
            for q in range(4):
                for k in range(6):
                    d = float(target[b, k] - current[c, b, q])
                    huber = abs(d) - 0.5 if abs(d) > 1 else 0.5 * d * d
                    expected.append(abs((q + 0.5) / 4 - (d < 0)) * huber)
    assert float(quantile_huber_loss(current, target)) == pytest.approx(np.mean(expected), rel=1e-5)


def test_exported_teacher_actor_is_the_torch_actor(tmp_path):
    a = Args(env_id="x", out=tmp_path, **TINY)
    agent = TQC(5, 3, a, "cpu")
    low, high = np.full(3, -0.4, np.float32), np.full(3, 0.4, np.float32)
    teacher = agent.actor.to_teacher(low, high, {"steps": 0})
    teacher.save(tmp_path / "a.safetensors")
    obs = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    with torch.no_grad():
        mean = agent.actor.mu(agent.actor.latent(torch.as_tensor(obs)))
    np.testing.assert_allclose(load_teacher_actor(tmp_path / "a.safetensors").act(obs),
                               0.4 * torch.tanh(mean).numpy(), atol=1e-6)


def test_replay_buffer_wraps_and_samples_only_filled_rows():
    buf = ReplayBuffer(5, 2, 1, "cpu")
    buf.add(np.ones((3, 2)), np.zeros((3, 1)), np.arange(3), np.ones((3, 2)), np.zeros(3))
    assert len(buf) == 3 and set(buf.sample(200)[2].tolist()) == {0.0, 1.0, 2.0}
    buf.add(np.ones((4, 2)), np.zeros((4, 1)), np.arange(10, 14), np.ones((4, 2)), np.zeros(4))
    assert len(buf) == 5 and buf.rew.tolist() == [12.0, 13.0, 2.0, 10.0, 11.0]


def test_vector_teacher_resumes_and_publishes(tmp_path):
    out = tmp_path / "run"
    train(Args(env_id="Hopper-v5", out=out, steps=100, **TINY))
    train(Args(env_id="Hopper-v5", out=out, steps=150, **TINY))  # resumes from state.pt
    progress = (out / "progress.csv").read_text().splitlines()
    assert sorted(int(line.split(",")[0]) for line in progress[1:]) == [50, 100, 150]
    snaps = sorted((out / "actors").glob("step_*.safetensors"))
    infos = [load_teacher_actor(p).info for p in snaps]
    assert [i["steps"] for i in infos] == [50, 100, 150] and all("eval_return_mean" in i for i in infos)
    assert infos[-1]["trainer"] == "vector_tqc" and infos[-1]["updates"] > infos[1]["updates"] > 0
    with pytest.raises(FileExistsError, match="different run"):
        train(Args(env_id="Hopper-v5", out=out, steps=200, **{**TINY, "n_critics": 3}))
    summary = publish_teachers(out, tmp_path / "teachers", "Hopper-v5", finalists=2, episodes=2)
    assert summary["expert"]["trainer"] == "vector_tqc"
    assert load_teacher_actor(Path(tmp_path / "teachers" / "expert.safetensors")).action_low.shape == (3,)
