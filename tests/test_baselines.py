"""gptrl.training.baselines: a same-budget SB3 run writes a complete result.json, refuses to overwrite it, and the
summary gathers it."""

import json

import pytest

from gptrl.errors import OutputExistsError
from gptrl.training import baselines


def test_every_env_of_the_issue_has_a_zoo_set_for_both_algorithms():
    for algo in baselines.ALGOS:
        assert set(baselines.ZOO[algo]) == set(baselines.BUDGETS)
        for env_id in baselines.BUDGETS:
            kwargs = baselines._model_kwargs(baselines.hyperparameters(env_id, algo))
            assert {"n_steps", "gamma", "gae_lambda", "n_epochs"} <= set(kwargs)
    lstm = baselines._model_kwargs(baselines.hyperparameters("CartPoleNoVel-v1", "recurrent-ppo"))
    assert lstm["policy_kwargs"]["lstm_hidden_size"] == 64 and lstm["learning_rate"](0.5) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="no RL Zoo hyperparameters"):
        baselines.hyperparameters("Pendulum-v1", "ppo")


@pytest.mark.parametrize("algo,env_id", [("ppo", "CartPole-v1"), ("recurrent-ppo", "CartPoleNoVel-v1")])
def test_a_tiny_run_writes_its_result_and_refuses_to_overwrite_it(tmp_path, algo, env_id):
    args = baselines.Args(algo=algo, total_timesteps=2048, seed=1)
    out = tmp_path / "run"
    result = baselines.train(env_id, args, out, eval_episodes=3)
    saved = json.loads((out / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["env"] == env_id and saved["algo"] == algo and saved["budget"] == 2048 and saved["seed"] == 1
    assert saved["env_steps"] >= 2048 and saved["seeds"] == [0, 2] and len(saved["returns"]) == 3
    assert saved["return_mean"] == pytest.approx(sum(saved["returns"]) / 3)
    assert saved["hyperparameters"] == baselines.ZOO[algo][env_id] and saved["max_steps"] == 500
    assert saved["curve"] and saved["curve"][-1]["step"] == saved["env_steps"] and saved["seconds"] > 0
    assert "stable-baselines3" in saved["provenance"]["packages"]
    assert (out / "model.zip").is_file()
    assert (out / "vecnormalize.pkl").is_file() == bool(saved["hyperparameters"].get("normalize"))
    before = (out / "result.json").read_bytes()
    with pytest.raises(OutputExistsError):
        baselines.train(env_id, args, out, eval_episodes=3)
    assert (out / "result.json").read_bytes() == before


def test_the_command_line_refuses_a_finished_run_and_the_summary_collects_it(tmp_path, capsys):
    from gptrl.cli import run_command

    root = tmp_path / "runs"
    out = root / "ppo" / "CartPole-v1" / "seed0"
    out.mkdir(parents=True)
    (out / "result.json").write_text("{}")
    code = run_command("baselines", lambda _: baselines.main(["CartPole-v1", "--out", str(out)]), None, False)
    assert code == 2 and "add --overwrite" in capsys.readouterr().err
    fake = {"env": "CartPole-v1", "algo": "ppo", "seed": 0, "budget": 100, "env_steps": 128, "return_mean": 9.5,
            "return_std": 0.5, "length_mean": 9.5, "num_episodes": 2, "seeds": [0, 1], "returns": [9.0, 10.0],
            "seconds": 1.0, "policy": "MlpPolicy", "command": "x", "hyperparameters": {"zoo": "ppo.yml CartPole-v1"},
            "provenance": {"commit": "abc"}}
    (out / "result.json").write_text(json.dumps(fake))
    (root / "ppo" / "CartPole-v1" / "seed3").mkdir()
    (root / "ppo" / "CartPole-v1" / "seed3" / "result.json").write_text(json.dumps({**fake, "seed": 3}))
    table = baselines.collect(root, tmp_path / "summary.json")
    assert [r["seed"] for r in table["CartPole-v1"]["ppo"]] == [0, 3]
    assert json.loads((tmp_path / "summary.json").read_text()) == table
    assert table["CartPole-v1"]["ppo"][0]["return_mean"] == 9.5 and table["CartPole-v1"]["ppo"][0]["commit"] == "abc"
