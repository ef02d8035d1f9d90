"""The driving loops of docs/stateful.md, run: the Python block as written, and the Node.js script on
onnxruntime-node (installed by `make test` through `npm ci` in examples/node), greedy on a shipped bundle and
sampling from given uniforms on a Discrete and a Gaussian policy."""

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


def _node() -> str:
    node = shutil.which("node")
    if not node:
        pytest.skip("Node.js is not installed: the docs' Node driver cannot run here")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("examples/node/node_modules is missing: `make test` installs it (npm ci) where npm exists")
    return node


def _drive(graph: Path, batch: int, steps: list[dict], folder: Path) -> list[dict]:
    """The Node driver's outputs for the recorded steps."""
    node = _node()
    episode = folder / "episode.json"
    episode.write_text(json.dumps({"batch": batch, "steps": steps}))
    done = subprocess.run([node, str(NODE_DIR / "drive.mjs"), str(graph), str(episode)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["steps"]


def test_node_driver_matches_the_runtime(graph, tmp_path):
    _node()
    envs = [gym.make("HalfCheetah-v5") for _ in range(2)]
    obs = np.stack([env.reset(seed=s)[0] for s, env in enumerate(envs)]).astype(np.float32)
    policy = load_policy(graph, num_envs=2)
    policy.reset(obs)
    steps, expected, reset = [], [], [True, True]
    for t in range(80):
        steps.append({"obs": obs.tolist(), "reset": reset})  # no uniform nor sample: greedy actions
        action = policy.act(obs)
        expected.append(action)
        obs = np.stack([env.step(a)[0] for env, a in zip(envs, action)]).astype(np.float32)
        reset = [False, t == 40]
        if reset[1]:
            obs[1] = envs[1].reset(seed=9)[0]
            policy.reset_rows(np.array(reset))
    got = np.array([s["action"] for s in _drive(graph, 2, steps, tmp_path)], np.float32).reshape(80, 2, -1)
    assert float(np.abs(got - np.array(expected)).max()) < 1e-4


def _tiny(kind: str, folder: Path) -> tuple[Path, object]:
    """A small stateful graph of a Discrete policy reading tokens (FrozenLake's spaces) or a character grid (ASCII
    Breakout's small screen), or of a clipped Gaussian Box policy reading floats, and the world its closed loop runs
    in."""
    from sampling_loop import GymRows, SyntheticRows, spread_bundle

    from gptrl.bundle import make_config
    from gptrl.bundle.codecs import Discrete, GaussianBox, Grid, Tokens

    tiny = dict(context_length=4, d_model=32, num_layers=2, num_heads=2)
    if kind == "discrete":
        config, world = make_config(observation=Tokens(1, 16), action=Discrete(4), **tiny), GymRows("FrozenLake-v1")
    elif kind == "grid":  # ASCII Breakout's small screen, 324 int64 token ids a row, rows restarting every 17 steps
        config = make_config(observation=Grid(12, 27, 128, 4, feature_dim=16), action=Discrete(3), **tiny)
        world = GymRows("gptrl/AsciiBreakoutSmall-v0", max_episode_steps=17)
    else:
        action = GaussianBox.from_bounds([-1.0, -np.inf], [1.0, np.inf])
        config, world = make_config(state_dim=3, action=action, network="gpt2", **tiny), SyntheticRows(3, 2)
    return export_onnx(spread_bundle(config, folder / "bundle"), folder / "policy.stateful.onnx",
                       variant="stateful"), world


@pytest.mark.parametrize("kind", ["discrete", "grid", "gaussian"])
def test_node_driver_samples_as_the_runtime_does(kind, tmp_path):
    """The driver fed the uniforms gptrl's runtime drew from its seeded generator (int64 observations and actions
    for the Discrete token policy) gives the runtime's sampled actions, log-probabilities, distributions and
    values, rows restarting as their episodes end."""
    _node()
    graph, world = _tiny(kind, tmp_path)
    policy = load_policy(graph, num_envs=2)
    codec = policy.config.action
    noise = np.random.default_rng(7)  # the same stream as policy.seed(7)
    policy.seed(7)
    obs = world.reset()
    policy.reset(obs)
    steps, expected, reset, restarts = [], [], np.ones(2, bool), 0
    for _ in range(40):
        action, info = policy.act_with_info(obs, deterministic=False)
        uniform = noise.random((2, codec.noise_width), dtype=np.float32)
        steps.append({"obs": np.asarray(obs).reshape(2, -1).tolist(), "reset": reset.tolist(),
                      "uniform": uniform.tolist(), "sample": [True, True]})
        expected.append({"action": action, **info})
        obs, reset = world.step(action)
        policy.reset_rows(reset)
        restarts += int(reset.sum())
    assert restarts > 0
    got = _drive(graph, 2, steps, tmp_path)
    actions = np.array([s["action"] for s in got]).reshape(np.shape([e["action"] for e in expected]))
    want = np.array([e["action"] for e in expected])
    if kind in ("discrete", "grid"):
        assert np.array_equal(actions, want)
        assert len(np.unique(want)) > 1
    else:
        np.testing.assert_allclose(actions, want, rtol=1e-5, atol=1e-5)
        assert (np.abs(want[..., 0]) == 1).any() and (np.abs(want[..., 0]) < 1).any()  # clipped and not
    for name in ("log_prob", "dist", "value"):
        np.testing.assert_allclose(np.array([s[name] for s in got]).reshape(np.shape([e[name] for e in expected])),
                                   [e[name] for e in expected], rtol=1e-5, atol=1e-5, err_msg=name)
