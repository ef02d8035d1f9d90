"""Edge latency (``make bench-edge``): one env, batch 1, one thread, closed loop, the per-step cost of each graph.

Cases: the shipped ``bundles/hopper-v5`` (Llama d128, 3 layers, context 6) and a random-weight policy of the
package's default shape (Llama d256, 4 layers, 8 heads, context 32, HalfCheetah-sized). For each: the torch
PolicyRunner, the attention step graph on gptrl's runtime (``OnnxPolicy``), the stateful graph (``StatefulPolicy``)
in fp32 and with int8 / int4 weights (``gptrl export --quantize``), and the stateful graph's run alone
(``run_with_iobinding``, no Python around it). "MatMul floor" is the same step's weight matrix products alone, as
one onnxruntime graph. "bytes/step" is what a step streams: the graph's initializers plus the key/value cache it
reads. Medians over 3000 steps after 300 warm-up steps; the whole table comes from one run. Results:
benchmarks/edge.json and edge.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from latency import matmul_seconds, random_bundle, run_provenance

HERE = Path(__file__).parent
ROOT = HERE.parent


def median_step_ms(policy, state_dim: int, action_dim: int, steps: int = 3000, warmup: int = 300) -> float:
    from gptrl.synthetic import ClosedLoopEnv

    env = ClosedLoopEnv(state_dim, action_dim, 1, seed=0)
    obs = env.reset()
    policy.reset(obs)
    times = []
    for t in range(warmup + steps):
        start = time.perf_counter()
        action = policy.act(obs)
        if t >= warmup:
            times.append(time.perf_counter() - start)
        obs = env.step(np.reshape(action, (1, -1)))
    return float(np.median(times)) * 1e3


def graph_only_ms(policy, steps: int = 3000) -> float:
    policy.reset(np.zeros((1, policy.config.state_dim), np.float32))
    io = policy.buffers._bindings[0]
    for _ in range(300):
        policy.session.run_with_iobinding(io)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        policy.session.run_with_iobinding(io)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def streamed_bytes(path: Path, cache_bytes: int) -> int:
    model = onnx.load(path)
    return sum(len(i.raw_data) or onnx.numpy_helper.to_array(i).nbytes for i in model.graph.initializer) + cache_bytes


def bench_bundle(name: str, bundle: Path, tmp: Path) -> list[dict]:
    import torch

    from gptrl.bundle import load_bundle
    from gptrl.exporter import export_onnx, load_runner
    from gptrl.runtime import load_policy

    torch.set_num_threads(1)
    b = load_bundle(bundle)
    c, m = b.config, b.config.model
    kv = c.context_length
    S, A = c.state_dim, c.action_dim
    cache = 2 * m.num_layers * kv * m.d_model * 4
    graphs = {"attention": export_onnx(bundle, tmp / f"{name}-attention.onnx"),
              "stateful": export_onnx(bundle, tmp / f"{name}-stateful.onnx", variant="stateful")}
    for scheme in ("int8", "int4"):
        graphs[f"stateful-{scheme}"] = export_onnx(bundle, tmp / f"{name}-{scheme}.onnx", variant="stateful",
                                                   quantize=scheme, quantize_episodes=2, allow_loss=True)
    rows = [{"case": name, "backend": "torch PolicyRunner", "ms": median_step_ms(load_runner(bundle), S, A),
             "bytes": None}]
    for key, path in graphs.items():
        policy = load_policy(path, providers="cpu")
        rows.append({"case": name, "backend": f"onnx {key}", "ms": median_step_ms(policy, S, A),
                     "bytes": streamed_bytes(path, cache)})
        if key.startswith("stateful"):
            rows.append({"case": name, "backend": f"onnx {key}, graph only", "ms": graph_only_ms(policy),
                         "bytes": rows[-1]["bytes"]})
    weights = 4 * (m.d_model * (S + A + 1) + m.num_layers * (4 * m.d_model ** 2 + 3 * m.d_model * m.intermediate_size)
                   + m.d_model * (A + 2))
    rows.append({"case": name, "backend": "MatMul floor (fp32)", "bytes": weights,
                 "ms": 1e3 * matmul_seconds(m.d_model, m.intermediate_size, m.num_layers, 1)})
    torch_ms = rows[0]["ms"]
    for row in rows:
        row["speedup_vs_torch"] = torch_ms / row["ms"]
    for row in rows:
        print(f"{row['case']:<10} {row['backend']:<32} {row['ms']:8.4f} ms  x{row['speedup_vs_torch']:5.1f}",
              flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| case | backend | median ms/step | vs torch | bytes/step |", "|---|---|---:|---:|---:|"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:.2f} MB" if r["bytes"] else ""
        out.append(f"| {r['case']} | {r['backend']} | {r['ms']:.4f} | {r['speedup_vs_torch']:.1f}x | {size} |")
    return "\n".join(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = bench_bundle("hopper-v5", ROOT / "bundles" / "hopper-v5", tmp)
        random_d256 = random_bundle(tmp, 256)
        cfg = json.loads((random_d256 / "config.json").read_text())
        cfg["env_id"] = "HalfCheetah-v5"  # the quantization check needs an env of this state/action size
        (random_d256 / "config.json").write_text(json.dumps(cfg))
        rows += bench_bundle("d256", random_d256, tmp)
    from gptrl.provenance import summary

    record = run_provenance()
    (HERE / "edge.json").write_text(json.dumps({"provenance": record, "results": rows}, indent=1) + "\n")
    table = markdown(rows)
    (HERE / "edge.md").write_text(f"Measured by `make bench-edge` on: {summary(record)}.\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
