"""The README's PPO tables come from the cards and the baselines' summary, and say what is missing."""

import json

from gptrl.training import ppo_report


def test_tables_show_measured_numbers_and_what_is_missing(tmp_path):
    bundle = tmp_path / "bundles" / "cartpolenovel-v1"
    bundle.mkdir(parents=True)
    (bundle / "eval.json").write_text(json.dumps({"return_mean": 487.5, "return_std": 12.25}))
    run = tmp_path / "runs" / "CartPoleNoVel-v1"
    run.mkdir(parents=True)
    (run / "history.json").write_text(json.dumps({"step": 99328, "best": {"step": 40960}, "history": [
        {"step": 40960, "train_return": 200.0, "return_mean": 480.0, "seconds": 60.0}]}))
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps({"CartPoleNoVel-v1": {"ppo": [
        {"seed": 0, "env_steps": 100000, "return_mean": 61.5, "return_std": 20.0, "seconds": 30.0}]}}))
    run_dir = tmp_path / "baseline-runs" / "ppo" / "CartPoleNoVel-v1" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"curve": [{"step": 256, "train_return": 18.7, "episodes": 7},
                                                               {"step": 512, "train_return": None, "episodes": 0}]}))
    data = ppo_report.summary(tmp_path / "bundles", tmp_path / "runs", baselines, tmp_path / "baseline-runs")
    assert data["CartPoleNoVel-v1"]["ppo"][0]["curve"] == [{"step": 256, "train_return": 18.7}]
    text = ppo_report.tables(data)
    row = next(line for line in text.splitlines() if line.startswith("| CartPoleNoVel-v1"))
    assert "487.50 +- 12.25 (99k, 1.0 min)" in row and "61.50 +- 20.00 (100k, 0.5 min)" in row
    assert row.endswith("| not run |")  # no RecurrentPPO run
    assert "| LunarLander-v3 | no bundle yet |" in text
    assert ppo_report.plot_masked(data, tmp_path / "plot.png").stat().st_size > 1000
