"""gptrl.training.ppo_card: the generated card of a PPO bundle, from a tiny fake run, has every section, says when a
baseline is missing, is verifiable by make verify-cards, and refuses a run of another env."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from gptrl.training import ppo_card, verify_cards
from gptrl.training.ppo import Args

CARTPOLE = Path(__file__).parents[1] / "bundles" / "cartpole-v1"


def _run(tmp_path: Path, env_id: str = "CartPole-v1") -> Path:
    """A run folder as gptrl.training.ppo writes it: two updates of 8 x 128 steps, one evaluation each."""
    args = Args(total_timesteps=2048, eval_every=1)
    history = [{"step": 1024 * k, "train_return": 20.0 * k, "return_mean": 100.0 * k, "return_std": 5.0,
                "length_mean": 100.0 * k, "seconds": 3.0 * k} for k in (1, 2)]
    updates = [{"step": 1024 * k, "train_return": 20.0 * k, "logp_error": 2e-7 * k, "value_error": 1e-6}
               for k in (1, 2)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps({"config": asdict(args), "env_id": env_id, "algorithm": "ppo",
                                                  "step": 2048, "best": history[1], "history": history,
                                                  "update": 2, "updates": updates}))
    return run


def _baselines(tmp_path: Path) -> Path:
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"curve": [{"step": 256, "train_return": 15.0}, {"step": 2048, "train_return": 40.0}]}))
    runs = [{"seed": 0, "budget": 2048, "env_steps": 2048, "return_mean": 123.25, "return_std": 4.5,
             "length_mean": 123.25, "num_episodes": 3, "seeds": [0, 2], "returns": [120.0, 125.0, 124.75],
             "seconds": 2.0, "policy": "MlpPolicy", "command": "x", "zoo": "ppo.yml CartPole-v1", "commit": None,
             "result": str(result)}]
    path = tmp_path / "ppo-baselines.json"
    path.write_text(json.dumps({"CartPole-v1": {"ppo": runs}, "Acrobot-v1": {"ppo": []}}))
    return path


def test_the_card_of_a_fake_run_has_every_section_and_verifies(tmp_path):
    bundle = shutil.copytree(CARTPOLE, tmp_path / "cartpole-v1")
    for name in ("README.md", "eval.json", "episode.gif", "returns.png", "training.png", "ppo_history.json"):
        (bundle / name).unlink(missing_ok=True)
    result = ppo_card.write_card(bundle, _run(tmp_path), _baselines(tmp_path), episodes=3)
    card = (bundle / "README.md").read_text()
    for section in ("## Results", "### Beside the baselines", "## Architecture", "## Training", "## Reproduce",
                    "![one episode, seed 0](episode.gif)", "![returns per seed](returns.png)",
                    "![learning curve](training.png)", "Measured on: ", "| chunk | 32 |"):
        assert section in card, section
    assert f"Measured with `gptrl eval {bundle} --episodes 3 --seed 0`" in card
    assert f"| {result['return_mean']:.2f} +- {result['return_std']:.2f} |" in card
    assert "| SB3 PPO (MLP, no memory), RL Zoo hyperparameters | 2,048 | 123.25 +- 4.50 | seed 0 |" in card
    assert "| RL Zoo PPO (MLP), published | 100k | 500.0 +- 0.0" in card
    assert "2 updates = 2,048 env steps (budget 2,048)" in card and "within 4e-07" in card
    assert "**this bundle's weights are not that candidate's**" in card  # the fake run has no best/ weights
    assert "--total-timesteps 2048 --eval-every 1 --publish" in card
    saved = json.loads((bundle / "eval.json").read_text())
    assert saved["num_episodes"] == 3 and saved["returns"] == result["returns"]
    assert json.loads((bundle / "ppo_history.json").read_text())["step"] == 2048
    for name in ("episode.gif", "returns.png", "training.png"):
        assert (bundle / name).stat().st_size > 1000, name
    [check] = verify_cards.verify(bundle)  # make verify-cards re-runs the card's own command
    assert check.setup == [] and check.differing == [] and check.seeds == [0, 1, 2]


def test_a_missing_baseline_is_said_to_be_missing(tmp_path):
    bundle = shutil.copytree(CARTPOLE, tmp_path / "cartpole-v1")
    ppo_card.write_card(bundle, _run(tmp_path), tmp_path / "absent.json", episodes=2)
    card = (bundle / "README.md").read_text()
    assert "| SB3 PPO (MLP, no memory), RL Zoo hyperparameters | - | not run yet | - |" in card
    assert "`docs/results/ppo-baselines.json` is missing" in card
    assert "`make baseline ENV=CartPole-v1 ALGO=ppo SEED=0`" in card


def test_a_run_of_another_env_is_refused(tmp_path):
    import torch

    bundle = shutil.copytree(CARTPOLE, tmp_path / "cartpole-v1")
    before = (bundle / "README.md").read_bytes()
    with pytest.raises(ValueError, match="the run trained Acrobot-v1, but .* is a CartPole-v1 policy"):
        ppo_card.write_card(bundle, _run(tmp_path, "Acrobot-v1"), episodes=2)
    checkpoint_only = tmp_path / "checkpoint-only"
    checkpoint_only.mkdir()
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    state = {k: saved[k] for k in ("step", "best", "history", "update", "updates")}
    torch.save({"config": saved["config"], "env_id": "Acrobot-v1", "state": state}, checkpoint_only / "checkpoint.pt")
    assert ppo_card.load_run(checkpoint_only)["history"] == saved["history"]
    with pytest.raises(ValueError, match="the run trained Acrobot-v1"):
        ppo_card.write_card(bundle, checkpoint_only, episodes=2)
    assert (bundle / "README.md").read_bytes() == before and sorted(p.name for p in bundle.iterdir()) == sorted(
        p.name for p in CARTPOLE.iterdir())


def test_the_breakout_card_sits_beside_its_anchors_and_says_the_goal(tmp_path):
    """A tiny grid policy standing in for the ASCII Breakout bundle: the card shows the anchors' rows (the seed
    design's cost, not a score), bricks cleared, and the issue's goal against the heuristic."""
    from gptrl.exporter import export_bundle, export_onnx
    from gptrl.training import ppo

    env_id = "gptrl/AsciiBreakout-v0"
    args = ppo.Args(d_model=16, num_layers=1, num_heads=1, context_length=4)
    bundle = export_bundle(ppo.build_model(env_id, args), tmp_path / "asciibreakout-v0")
    export_onnx(bundle)
    run = _run(tmp_path, env_id)
    row = {"return_mean": 838.8, "return_std": 227.8, "bricks_mean": 80.5, "cleared_boards": 34, "length_mean": 1.0,
           "returns": [838.8] * 50}
    anchors = {"env_id": env_id, "anchors": [
        {"policy": "random", **row, "return_mean": 4.8}, {"policy": "heuristic", **row},
        {"policy": "context-1", **row, "return_mean": 300.0, "command": "gptrl eval x", "run": "r", "best_step": 10,
         "env_steps": 20},
        {"policy": "seed design", "forward_s": 0.17, "minibatch_s": 50.0, "update_s": 8000.0, "budget": 1_200_000,
         "days_for_budget": 108.5}]}
    path = tmp_path / "anchors.json"
    path.write_text(json.dumps(anchors))
    ppo_card.write_card(bundle, run, tmp_path / "absent.json", episodes=2, anchors_json=path)
    card = (bundle / "README.md").read_text()
    assert "### Beside the anchors" in card and "### Beside the baselines" not in card and "SB3" not in card
    assert "| scripted heuristic: the paddle follows the ball | none (one frame) | - | 838.80 +- 227.80 | 80.5 | " \
           "34 of 50 |" in card
    assert "| ablation: gptrl PPO, same preset, `--context-length 1` | none (one frame) | 20 | 300.00 +- " in card
    assert "would take 108 days" in card and "make breakout-anchors" in card
    assert "Goal (issue 23): a mean of at least 768 (80% of the ceiling) and above the heuristic (838.80): " \
           "**not met**" in card
    ppo_card.write_card(bundle, run, tmp_path / "absent.json", episodes=2, anchors_json=tmp_path / "none.json")
    assert "The anchors were not measured yet" in (bundle / "README.md").read_text()


def test_the_seed_designs_cost_adds_up_its_updates_parts():
    """gptrl.training.seed_design.ppo_cost on the small board's frames (324 tokens, so it runs in seconds): an update
    is the rollout's 1024 forwards and 10 epochs of 16 minibatches."""
    import gymnasium as gym
    import numpy as np
    import torch

    from gptrl.envs import register
    from gptrl.training.seed_design import SEED_PPO, SeedPolicy, ppo_cost

    register()
    env = gym.make("gptrl/AsciiBreakoutSmall-v0")
    obs, _ = env.reset(seed=0)
    frames = []
    for k in range(SEED_PPO["minibatch"]):
        frames.append(obs)
        obs, _, terminated, truncated, _ = env.step(k % 3)
        if terminated or truncated:
            obs, _ = env.reset()
    cost = ppo_cost(np.array(frames), repeats=1)
    assert cost.forward_s > 0 and cost.minibatch_s > cost.forward_s
    assert cost.update_s == pytest.approx(1024 * cost.forward_s + 10 * 16 * cost.minibatch_s)
    assert cost.seconds_for(2048) == pytest.approx(2 * cost.update_s)
    logits, value = SeedPolicy(length=324)(torch.zeros(2, 324, dtype=torch.int64))  # the last token's heads
    assert logits.shape == (2, 3) and value.shape == (2,)
