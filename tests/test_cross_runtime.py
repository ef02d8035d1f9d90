"""The stateful graph of a shipped bundle on four ONNX runtimes, each driven only by its own API: feed obs and
reset, feed every state_out.X back as state_in.X. Each must stay within 1e-4 of gptrl's own runtime.

The other graphs' portability is checked too: the portable (opset 18) step graph loads in OpenVINO and in tract
with a symbolic batch.
"""

from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest

from gptrl.exporter import export_onnx
from gptrl.runtime import load_policy

ROOT = Path(__file__).parent.parent
HALFCHEETAH = ROOT / "bundles" / "halfcheetah-v5"


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    return export_onnx(HALFCHEETAH, tmp_path_factory.mktemp("x") / "stateful.onnx", variant="stateful")


class Onnxruntime:
    def __init__(self, path: Path):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict) -> dict:
        return dict(zip(self.outputs, self.session.run(None, feeds)))


class OpenVino:
    def __init__(self, path: Path):
        import openvino as ov

        # The CPU plugin computes in bf16 on AMX machines unless asked for f32.
        self.request = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()

    def __call__(self, feeds: dict) -> dict:
        out = {}
        for port, value in self.request.infer(feeds).items():
            for name in port.get_names():
                out[name] = value
        return out


class Tract:
    def __init__(self, path: Path):
        import tract

        model = tract.onnx().load(str(path)).into_model()  # the batch dimension stays symbolic
        self.inputs = [model.input_name(i) for i in range(model.input_count())]
        # tract names outputs after the nodes that make them; their order is the graph's.
        self.outputs = Onnxruntime(path).outputs
        self.runnable = model.into_runnable()

    def __call__(self, feeds: dict) -> dict:
        values = self.runnable.run([feeds[name] for name in self.inputs])
        return {name: v.to_numpy() for name, v in zip(self.outputs, values)}


class Reference:
    def __init__(self, path: Path):
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(str(path))
        self.outputs = list(self.evaluator.output_names)

    def __call__(self, feeds: dict) -> dict:
        return dict(zip(self.outputs, self.evaluator.run(None, feeds)))


RUNTIMES = {"onnxruntime": Onnxruntime, "openvino": OpenVino, "tract": Tract, "onnx.reference": Reference}


def zero_state(path: Path, batch: int) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {i.name: np.zeros([batch if d == "batch" else d for d in i.shape], DTYPES[i.type])
            for i in session.get_inputs() if i.name.startswith("state_in.")}


DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": bool}


def greedy(batch: int, noise: int) -> dict:
    """A causal stateful graph's sampling inputs, set for greedy actions."""
    return {"uniform": np.zeros((batch, noise), np.float32), "sample": np.zeros(batch, bool)}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stateful_graph_in_closed_loop_on_each_runtime(graph, runtime):
    """Two HalfCheetah-v5 envs, row 1 restarted halfway; the envs follow gptrl's runtime, the runtime under test
    keeps its own state and must give the same actions."""
    steps = 60 if runtime == "onnx.reference" else 150
    run = RUNTIMES[runtime](graph)
    envs = [gym.make("HalfCheetah-v5") for _ in range(2)]
    obs = np.stack([env.reset(seed=s)[0] for s, env in enumerate(envs)]).astype(np.float32)
    policy = load_policy(graph, num_envs=2)
    policy.reset(obs)
    state, reset = zero_state(graph, 2), np.array([True, True])
    worst = 0.0
    for t in range(steps):
        expected = policy.act(obs)
        out = run({"obs": obs, "reset": reset, **greedy(2, 12), **state})
        worst = max(worst, float(np.abs(out["action"] - expected).max()))
        state = {name.replace("state_out.", "state_in."): np.asarray(v) for name, v in out.items()
                 if name.startswith("state_out.")}
        obs = np.stack([env.step(a)[0] for env, a in zip(envs, expected)]).astype(np.float32)
        reset = np.array([False, t == steps // 2])
        if reset[1]:
            obs[1] = envs[1].reset(seed=7)[0]
            policy.reset_rows(reset)
    assert worst < 1e-4, f"{runtime}: max action difference {worst:.2e}"


@pytest.mark.parametrize("runtime", ["openvino", "tract"])
def test_portable_step_graph_loads_and_runs(tmp_path, runtime):
    """The opset-18 step graph (dynamic batch and cache) on runtimes without the opset-24 ops: one step from an
    empty cache gives the same action as onnxruntime."""
    path = export_onnx(HALFCHEETAH, tmp_path / "portable.onnx", variant="portable", verify=False)
    rng = np.random.default_rng(0)
    feeds = {"state": rng.normal(size=(2, 17)).astype(np.float32), "action": np.zeros((2, 6), np.float32),
             "is_bos": np.ones(2, np.float32), "position": np.zeros(2, np.int64),
             "past_valid": np.zeros((2, 6), bool), **greedy(2, 12)}
    for i in range(3):
        feeds[f"past_key.{i}"] = np.zeros((2, 4, 32, 6), np.float32)
        feeds[f"past_value.{i}"] = np.zeros((2, 4, 6, 32), np.float32)
    expected = Onnxruntime(path)(feeds)["action_out"]
    got = RUNTIMES[runtime](path)(feeds)["action_out"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.fixture(scope="module")
def dt_stateful(tmp_path_factory) -> tuple[Path, Path]:
    """A Decision Transformer bundle (random weights) and its stateful graph."""
    import torch
    import transformers

    from gptrl.bundle.dt import DTSidecar

    folder = tmp_path_factory.mktemp("dt") / "bundle"
    config = transformers.DecisionTransformerConfig(state_dim=17, act_dim=6, hidden_size=32, n_layer=2, n_head=2,
                                                    max_ep_len=1000)
    torch.manual_seed(0)
    transformers.DecisionTransformerModel(config).save_pretrained(folder)
    (folder / "gptrl_dt.json").write_text(DTSidecar([0.0] * 17, [1.0] * 17, 1000.0, 5000.0, "HalfCheetah-v5",
                                                    10).to_json())
    return folder, export_onnx(folder, folder.parent / "dt-stateful.onnx", variant="stateful")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_dt_stateful_graph_on_each_runtime(dt_stateful, runtime):
    """The Decision Transformer's stateful graph (plus reward and target_return inputs) against the torch runner,
    two HalfCheetah envs, row 1 restarted with another target halfway."""
    import gptrl

    bundle, graph = dt_stateful
    run = RUNTIMES[runtime](graph)
    envs = [gym.make("HalfCheetah-v5") for _ in range(2)]
    obs = np.stack([env.reset(seed=s)[0] for s, env in enumerate(envs)]).astype(np.float32)
    runner = gptrl.load_runner(bundle, num_envs=2)
    target = np.array([5000.0, 5000.0], np.float32)
    runner.reset(obs, target_return=target)
    state, reset, reward = zero_state(graph, 2), np.array([True, True]), np.zeros(2, np.float32)
    steps, worst = (16 if runtime == "onnx.reference" else 30), 0.0
    for t in range(steps):
        expected = runner.act(obs, reward=None if t == 0 else reward)
        out = run({"obs": obs, "reset": reset, "reward": reward, "target_return": target, **state})
        worst = max(worst, float(np.abs(out["action"] - expected).max()))
        state = {name.replace("state_out.", "state_in."): np.asarray(v) for name, v in out.items()
                 if name.startswith("state_out.")}
        results = [env.step(a) for env, a in zip(envs, expected)]
        obs = np.stack([r[0] for r in results]).astype(np.float32)
        reward = np.array([r[1] for r in results], np.float32)
        reset = np.array([False, t == steps // 2])
        if reset[1]:
            obs[1] = envs[1].reset(seed=7)[0]
            target = np.array([5000.0, 2000.0], np.float32)
            runner.reset_rows(reset, target_return=target)
    assert worst < 1e-4, f"{runtime}: max action difference {worst:.2e}"
