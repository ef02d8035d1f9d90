from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (gptrl record); set before gymnasium's renderer loads

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "data" / "causal-gpt-rl"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "trace.json").is_file())


@dataclass
class Trace:
    name: str
    bundle: Path
    env_id: str
    env_kwargs: dict
    load_kwargs: dict
    calls: list[dict]
    observations: np.ndarray  # [N, B, S]
    actions: np.ndarray  # [M, B, A]
    termination_prob: np.ndarray  # [M, B]

    @property
    def num_envs(self) -> int:
        return self.observations.shape[1]


def load_trace(name: str) -> Trace:
    folder = FIXTURES / name
    meta = json.loads((folder / "trace.json").read_text())
    arrays = np.load(folder / "trace.npz")
    return Trace(
        name, folder / "bundle", meta["env_id"], meta["env_kwargs"], meta["load_kwargs"], meta["calls"],
        arrays["observations"], arrays["actions"], arrays["termination_prob"],
    )


def replay(trace: Trace, runner) -> tuple[float, float]:
    """Replay the recorded calls; returns the max |action error| and |termination_prob error|."""
    single = trace.num_envs == 1
    action_err = term_err = 0.0
    for call in trace.calls:
        obs = trace.observations[call["obs"]] if "obs" in call else None
        if single and obs is not None:
            obs = obs[0]
        if call["op"] == "reset":
            runner.reset(obs)
        elif call["op"] == "reset_rows":
            runner.reset_rows(np.array(call["mask"], dtype=bool))
        else:
            action, info = runner.act_with_info(obs)
            expected = trace.actions[call["action"]]
            assert action.dtype == np.float32
            assert action.shape == (expected[0].shape if single else expected.shape)
            action_err = max(action_err, float(np.abs(action - (expected[0] if single else expected)).max()))
            term = trace.termination_prob[call["action"]]
            term_err = max(term_err, float(np.abs(info["termination_prob"] - (term[0] if single else term)).max()))
    return action_err, term_err


@pytest.fixture(params=CASES)
def trace(request) -> Trace:
    return load_trace(request.param)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)
