"""Per-step latency of the torch PolicyRunner, the ONNX step graphs and a full-window ONNX
recompute (the way the reference exports), on random-weight policies of the package's
default shape. Closed loop (``gptrl.synthetic.ClosedLoopEnv``): each observation depends on
the previous actions.

A development tool, not part of the package: it needs torch (for the PolicyRunner, random
weights and the full-window export). ``make bench`` runs it through ``step_latency.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

STATE_DIM, ACTION_DIM = 17, 6  # HalfCheetah-sized
BACKENDS = ("torch", "onnx-attention", "onnx-portable", "onnx-window")


@dataclass
class Result:
    d_model: int
    batch: int
    backend: str
    steps: int
    median_ms: float
    p90_ms: float
    actions_per_s: float
    gflops: float  # matmul+attention FLOP rate of the step
    matmul_gflops: float | None = None  # plain MatMul of the same shapes, same run (ONNX step rows)


def random_bundle(folder: Path, d_model: int, *, num_layers: int = 4, num_heads: int = 8, context: int = 32,
                  seed: int = 0) -> Path:
    import torch

    from gptrl.bundle import make_config
    from gptrl.exporter import PolicyModel, export_bundle, init_weights

    config = make_config(state_dim=STATE_DIM, action_low=-1.0, action_high=[1.0] * ACTION_DIM, d_model=d_model,
                         num_layers=num_layers, num_heads=num_heads, context_length=context)
    model = init_weights(PolicyModel(config), seed)
    with torch.no_grad():
        model.state_normalization_enabled.fill_(1.0)
    return export_bundle(model, folder / f"d{d_model}", overwrite=True)


class WindowPolicy:
    """The reference's deployment style: re-encode the last ``context`` tokens every step."""

    def __init__(self, onnx_path: Path, batch: int, context: int):
        from gptrl.runtime.session import make_session

        self.session = make_session(onnx_path, "cpu", 1)
        self.states = np.zeros((batch, context, STATE_DIM), np.float32)
        self.actions = np.zeros((batch, context, ACTION_DIM), np.float32)
        self.is_bos = np.zeros((batch, context), bool)
        self.filled = 0

    def reset(self, obs):
        self.states[:] = 0
        self.actions[:] = 0
        self.is_bos[:] = False
        self.states[:, -1], self.is_bos[:, -1], self.filled = obs, True, 1

    def act(self, obs):
        n = min(self.filled, self.states.shape[1])
        feeds = {"states": self.states[:, -n:], "actions": self.actions[:, -n:], "is_bos": self.is_bos[:, -n:]}
        action = self.session.run(None, feeds)[0]
        for buf in (self.states, self.actions, self.is_bos):
            buf[:, :-1] = buf[:, 1:]
        self.states[:, -1], self.actions[:, -1], self.is_bos[:, -1] = obs, action, False
        self.filled += 1
        return action


def export_window_graph(bundle_dir: Path, out: Path) -> Path:
    import torch

    from gptrl.bundle import load_bundle
    from gptrl.exporter.causal.convert import model_from_bundle

    model = model_from_bundle(load_bundle(bundle_dir))

    class Window(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, states, actions, is_bos):
            return self.model.squash_actions(self.model(states, actions, is_bos).mu[:, -1])

    c = model.config.context_length
    args = (torch.zeros(2, c, STATE_DIM), torch.zeros(2, c, ACTION_DIM), torch.zeros(2, c, dtype=torch.bool))
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=1, max=c)
    torch.onnx.export(Window(), args, str(out), input_names=["states", "actions", "is_bos"], output_names=["action"],
                      dynamic_shapes=({0: batch, 1: length},) * 3, opset_version=18, dynamo=True, verbose=False)
    return out


def step_flops(d: int, inter: int, layers: int, batch: int, cache: int) -> tuple[float, float]:
    """(matmul FLOPs, attention FLOPs) of one step for ``batch`` rows."""
    per_token = d * (STATE_DIM + ACTION_DIM + 1) + layers * (4 * d * d + 3 * d * inter) + d * (ACTION_DIM + 2)
    return 2.0 * batch * per_token, 4.0 * batch * layers * d * (cache + 1)


def matmul_seconds(d: int, inter: int, layers: int, batch: int, repeats: int = 200) -> float:
    """Median time of the step's matrix products alone, as one onnxruntime graph (1 thread)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from gptrl.runtime.session import make_session

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    per_layer = [(d, 3 * d), (d, d), (d, 2 * inter), (inter, d)]
    shapes = [(STATE_DIM + ACTION_DIM + 1, d), *per_layer * layers, (d, ACTION_DIM + 2)]
    for i, (n_in, n_out) in enumerate(shapes):
        inits.append(numpy_helper.from_array((rng.normal(size=(n_in, n_out)) * 0.02).astype(np.float32), f"w{i}"))
        src = x if i == 0 else f"y{i - 1}"
        if i > 0 and shapes[i - 1][1] != n_in:  # feed a slice of the right width (as Split does)
            nodes.append(helper.make_node("Slice", [src, "zero", f"n{i}", "one"], [f"s{i}"]))
            inits.append(numpy_helper.from_array(np.array([n_in], np.int64), f"n{i}"))
            src = f"s{i}"
        nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"y{i}"]))
    inits += [numpy_helper.from_array(np.array([k], np.int64), name) for k, name in ((0, "zero"), (1, "one"))]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, shapes[0][0]])
    graph = helper.make_graph(nodes, "matmuls", [x_info],
                              [helper.make_tensor_value_info(f"y{len(shapes) - 1}", TensorProto.FLOAT, None)], inits)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matmuls.onnx"
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)
        session = make_session(path, "cpu", 1)
    feed = {"x": rng.normal(size=(batch, shapes[0][0])).astype(np.float32)}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_policy(policy, batch: int, steps: int, warmup: int, seed: int = 0) -> np.ndarray:
    """Seconds per act() over ``steps`` closed-loop steps after ``warmup`` steps."""
    from gptrl.synthetic import ClosedLoopEnv

    env = ClosedLoopEnv(STATE_DIM, ACTION_DIM, batch, seed=seed)
    obs = env.reset()
    policy.reset(obs)
    times = np.empty(steps)
    for t in range(warmup + steps):
        start = time.perf_counter()
        action = policy.act(obs)
        if t >= warmup:
            times[t - warmup] = time.perf_counter() - start
        obs = env.step(action)
    return times


def run(d_models=(256, 128), batches=(1, 16, 256), steps: int = 1000, warmup: int = 100,
        backends=BACKENDS, max_seconds_per_case: float = 60.0, log=print) -> list[Result]:
    import torch

    from gptrl.exporter import load_runner
    from gptrl.exporter.onnx_export import export_onnx
    from gptrl.runtime import load_policy

    torch.set_num_threads(1)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for d in d_models:
            bundle = random_bundle(tmp, d)
            graphs = {
                "onnx-attention": export_onnx(bundle, tmp / f"d{d}-attention.onnx", variant="attention"),
                "onnx-portable": export_onnx(bundle, tmp / f"d{d}-portable.onnx", variant="portable"),
            }
            if "onnx-window" in backends:
                graphs["onnx-window"] = export_window_graph(bundle, tmp / f"d{d}-window.onnx")
            context, layers, inter = 32, 4, 4 * d
            for batch in batches:
                mm_s = matmul_seconds(d, inter, layers, batch)
                mm_flops, attn_flops = step_flops(d, inter, layers, batch, context)
                for backend in backends:
                    if backend == "torch":
                        policy = load_runner(bundle, num_envs=batch)
                    elif backend == "onnx-window":
                        policy = WindowPolicy(graphs[backend], batch, context)
                    else:
                        policy = load_policy(graphs[backend], num_envs=batch, providers="cpu")
                    probe = time_policy(policy, batch, 20, 5)
                    n = int(min(steps, max(50, max_seconds_per_case / max(np.median(probe), 1e-9))))
                    times = time_policy(policy, batch, n, warmup)
                    median = float(np.median(times))
                    results.append(Result(
                        d, batch, backend, n, median * 1e3, float(np.percentile(times, 90)) * 1e3, batch / median,
                        (mm_flops + attn_flops) / median / 1e9,
                        mm_flops / mm_s / 1e9 if backend.startswith("onnx-") and backend != "onnx-window" else None,
                    ))
                    log(_line(results[-1]))
    return results


def _line(r: Result) -> str:
    mm = f"  matmul-only {r.matmul_gflops:6.1f} GFLOP/s" if r.matmul_gflops else ""
    return (f"d{r.d_model:<4} B={r.batch:<4} {r.backend:<15} median {r.median_ms:8.3f} ms  p90 {r.p90_ms:8.3f} ms  "
            f"{r.actions_per_s:10.0f} actions/s  {r.gflops:6.1f} GFLOP/s{mm}  ({r.steps} steps)")


def markdown(results: list[Result]) -> str:
    rows = ["| d_model | batch | backend | steps | median ms/step | p90 ms | actions/s | GFLOP/s | vs plain matmul |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{100 * r.gflops / r.matmul_gflops:.0f}%" if r.matmul_gflops else ""
        rows.append(f"| {r.d_model} | {r.batch} | {r.backend} | {r.steps} | {r.median_ms:.3f} | {r.p90_ms:.3f} | "
                    f"{r.actions_per_s:,.0f} | {r.gflops:.1f} | {ratio} |")
    return "\n".join(rows)


def run_provenance() -> dict:
    """What produced a benchmark: the record of a policy loaded the way the benchmarks load theirs (CPU, one
    onnxruntime intra-op thread; torch is imported, so its version and threads are in it too)."""
    from gptrl.provenance import provenance
    from gptrl.runtime import load_policy

    return provenance(load_policy(Path(__file__).parents[1] / "bundles" / "hopper-v5", providers="cpu"))


def save(results: list[Result], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"provenance": run_provenance(), "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(record, indent=2) + "\n")
