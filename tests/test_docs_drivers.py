"""The driving loops of docs/stateful.md, run: the Python block as written, and the Node.js script on
onnxruntime-node (installed by `make test` through `npm ci` in examples/node)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from gptrl.exporter import export_onnx
from gptrl.runtime import load_policy

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "stateful.md"
NODE_DIR = ROOT / "examples" / "node"
HALFCHEETAH = ROOT / "bundles" / "halfcheetah-v5"


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    return export_onnx(HALFCHEETAH, tmp_path_factory.mktemp("doc") / "policy.stateful.onnx", variant="stateful")


def _block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, f"docs/stateful.md should hold one {language} block"
    return blocks[0]


def test_the_node_script_in_the_docs_is_the_one_we_run():
    assert _block("js") == (NODE_DIR / "drive.mjs").read_text()


class _Recorder(gym.Wrapper):
    """Keeps every observation the env hands out and every action it is given."""

    def __init__(self, env):
        super().__init__(env)
        self.observations, self.actions = [], []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.observations.append(obs)
        return obs, info

    def step(self, action):
        self.actions.append(np.array(action, np.float32))
        obs, *rest = self.env.step(action)
        self.observations.append(obs)
        return (obs, *rest)


def test_python_loop_of_the_docs(graph, monkeypatch):
    """The loop as written (only the file name and the episode length changed), on onnxruntime's default threads,
    takes at every step the action gptrl's one-thread policy takes on the same observation and history."""
    code = _block("python").replace('"policy.stateful.onnx"', repr(str(graph))).replace("range(1000)", "range(200)")
    made = []
    real_make = gym.make
    monkeypatch.setattr(gym, "make", lambda *a, **k: made.append(_Recorder(real_make(*a, **k))) or made[-1])
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    [env] = made
    assert len(env.actions) == 200 and np.isfinite(namespace["total_reward"])
    policy = load_policy(graph)
    policy.reset(env.observations[0])
    worst = max(float(np.abs(policy.observe(obs, action) - action).max())
                for obs, action in zip(env.observations, env.actions))
    assert worst < 1e-4, worst


def test_node_driver_matches_the_runtime(graph, tmp_path):
    node = shutil.which("node")
    if not node:
        pytest.skip("Node.js is not installed: the docs' Node driver cannot run here")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("examples/node/node_modules is missing: `make test` installs it (npm ci) where npm exists")
    envs = [gym.make("HalfCheetah-v5") for _ in range(2)]
    obs = np.stack([env.reset(seed=s)[0] for s, env in enumerate(envs)]).astype(np.float32)
    policy = load_policy(graph, num_envs=2)
    policy.reset(obs)
    steps, expected, reset = [], [], [True, True]
    for t in range(80):
        steps.append({"obs": obs.tolist(), "reset": reset})
        action = policy.act(obs)
        expected.append(action)
        obs = np.stack([env.step(a)[0] for env, a in zip(envs, action)]).astype(np.float32)
        reset = [False, t == 40]
        if reset[1]:
            obs[1] = envs[1].reset(seed=9)[0]
            policy.reset_rows(np.array(reset))
    episode = tmp_path / "episode.json"
    episode.write_text(json.dumps({"batch": 2, "steps": steps}))
    done = subprocess.run([node, str(NODE_DIR / "drive.mjs"), str(graph), str(episode)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = np.array(json.loads(done.stdout)["actions"], np.float32).reshape(80, 2, -1)
    assert float(np.abs(got - np.array(expected)).max()) < 1e-4
