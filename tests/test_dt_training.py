"""Decision Transformer training: windows, a short run that resumes, and a bundle transformers loads."""

import numpy as np
import pytest

from gptrl.training.datasets import Episode
from gptrl.training.dt_train import DTTrainConfig, DTWindows, returns_to_go, train


def _episodes(n=4, length=30, seed=0):
    rng = np.random.default_rng(seed)
    return [Episode(observations=rng.normal(size=(length + 1, 11)).astype(np.float32),
                    actions=rng.uniform(-1, 1, size=(length, 3)).astype(np.float32),
                    expert_actions=np.zeros((length, 3), np.float32),
                    rewards=rng.uniform(0, 2, size=length).astype(np.float32)) for _ in range(n)]


def test_windows_are_left_padded_with_returns_to_go_and_timesteps():
    eps = _episodes(1, length=8)
    cfg = DTTrainConfig(context=5, scale=10.0)
    w = DTWindows(eps, cfg, np.zeros(11, np.float32), np.ones(11, np.float32))
    batch = w.sample(64)
    rtg = returns_to_go(eps[0].rewards)
    for row in range(64):
        real = batch["mask"][row] > 0
        t = batch["timesteps"][row][real]
        assert real[-1] and np.all(np.diff(t) == 1)  # real steps are contiguous and end the window
        assert np.all(batch["mask"][row][: (~real).sum()] == 0)  # padding only on the left
        np.testing.assert_allclose(batch["returns_to_go"][row, real, 0], rtg[t] / 10.0, rtol=1e-6)
        np.testing.assert_array_equal(batch["actions"][row, real], eps[0].actions[t])


def test_a_short_run_resumes_and_publishes_a_loadable_bundle(tmp_path):
    transformers = pytest.importorskip("transformers")
    import gptrl

    cfg = DTTrainConfig(steps=6, eval_every=3, batch_size=4, context=5, hidden=16, layers=1, heads=1,
                        eval_episodes=2, target_return=100.0)
    state = train("Hopper-v5", tmp_path / "run", _episodes(), cfg, progress=False)
    assert [r["step"] for r in state["history"]] == [3, 6]
    cfg.steps = 9  # continues from the checkpoint at step 6
    state = train("Hopper-v5", tmp_path / "run", _episodes(), cfg, progress=False)
    assert [r["step"] for r in state["history"]] == [3, 6, 9]
    best = tmp_path / "run" / "best"
    # transformers loads the published folder as the model gptrl trained: the post's loop acts as gptrl's runner.
    from dt_blog import BlogLoop

    from gptrl.bundle.dt import load_dt_bundle

    hf = transformers.DecisionTransformerModel.from_pretrained(best).eval()
    assert (hf.config.hidden_size, hf.config.n_layer, hf.config.state_dim, hf.config.act_dim) == (16, 1, 11, 3)
    side = load_dt_bundle(best).sidecar
    blog = BlogLoop(hf, np.array(side.state_mean, np.float32), np.array(side.state_std, np.float32), side.scale,
                    side.target_return, side.context_length)
    runner = gptrl.load_runner(best)
    rng = np.random.default_rng(3)
    states = rng.normal(size=(8, 11)).astype(np.float32)
    runner.reset(states[0])
    for t, state in enumerate(states):  # past the K = 5 window
        reward = None if t == 0 else float(t % 3)
        np.testing.assert_allclose(runner.act(state, reward=reward), blog.act(state, reward), atol=1e-5)
    cfg.hidden = 32
    with pytest.raises(FileExistsError, match="other settings"):
        train("Hopper-v5", tmp_path / "run", _episodes(), cfg, progress=False)


def test_republishing_replaces_the_policy_files_and_keeps_the_card(tmp_path):
    """dt_train --publish over a shipped bundle: new weights and policy.onnx, the card's files untouched, no stale
    weights left beside the new ones."""
    transformers = pytest.importorskip("transformers")
    import torch

    from gptrl.bundle.dt import DTSidecar
    from gptrl.fileio import sha256_file
    from gptrl.runtime import load_policy
    from gptrl.training.dt_train import publish

    config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=16, n_layer=1, n_head=1,
                                                    max_ep_len=100)
    torch.manual_seed(0)
    best = tmp_path / "run" / "best"
    transformers.DecisionTransformerModel(config).save_pretrained(best)
    (best / "gptrl_dt.json").write_text(DTSidecar([0.0] * 11, [1.0] * 11, 100.0, 300.0, "Hopper-v5", 5).to_json())
    dest = tmp_path / "bundles" / "dt-hopper-v5"
    dest.mkdir(parents=True)
    card = {"README.md": "# the card\n", "eval.json": "{}\n", "conditioning.json": "[]\n", "episode.gif": "GIF89a"}
    for name, text in card.items():
        (dest / name).write_text(text)
    (dest / "pytorch_model.bin").write_bytes(b"stale weights of the last run")
    (dest / "policy.onnx").write_bytes(b"stale graph")
    out = publish(best, dest)
    assert out == dest / "policy.onnx"
    assert {name: (dest / name).read_text() for name in card} == card
    assert not (dest / "pytorch_model.bin").exists()
    assert sha256_file(dest / "model.safetensors") == sha256_file(best / "model.safetensors")
    policy = load_policy(dest)  # the new graph, of the new weights (a mismatch would be refused)
    policy.reset(np.zeros(11, np.float32))
    assert policy.act(np.zeros(11, np.float32)).shape == (3,)
