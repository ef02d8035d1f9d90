"""benchmarks/ppo_throughput.py on a tiny run: its wrappers still reach the code they time (every rollout step goes
through the wrapped env step and policy forward), and the parts it reports account for the training time."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "ppo_throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("ppo_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_breakdown_accounts_for_the_training_time(tmp_path):
    bench = _load()
    out = tmp_path / "t.json"
    bench.main(["--total-steps", "512", "--num-envs", "4", "--num-steps", "64", "--repeats", "1", "--no-warmup",
                "--json", str(out)])
    record = json.loads(out.read_text())
    assert "| gptrl PPO (transformer) |" in out.with_suffix(".md").read_text()
    assert record["provenance"]["packages"]["stable-baselines3"]
    for system, (run,) in record["runs"].items():
        assert run["steps"] == 512, system
        for clock in ("wall", "cpu"):
            parts, total = run[clock]["parts_s"], run[clock]["train_s"]
            assert all(v > -1e-3 for v in parts.values()), (system, clock, parts)
            assert sum(parts.values()) == pytest.approx(total, rel=1e-6)
            if clock == "cpu":  # the wrapped functions hold nearly all of it
                assert parts["loop other"] < 0.1 * total, (system, parts, total)
    gptrl = record["runs"]["gptrl"][0]
    assert gptrl["calls"]["env step"] == gptrl["calls"]["policy forward"] == 512 // 4
    assert gptrl["calls"]["update"] == 2 and gptrl["gradient_steps_per_update"] == 16
    assert gptrl["max_logp_error"] < 1e-5  # the timed run is the real trainer: ratio 1 before each update
