"""Per-step latency benchmark (``make bench``): writes benchmarks/results.json and results.md.

Median per-step latency over closed-loop steps that cross the 32-token context, for the
torch PolicyRunner, the ONNX step graphs (opset 24 Attention/TensorScatter and the portable
opset 18 graph) and a full-window ONNX recompute, at batch 1, 16 and 256, for the
package-default policy (Llama d256, 4 layers, 8 heads, context 32, random weights) and d128.
One torch thread and one onnxruntime intra-op thread throughout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import latency as bench  # benchmarks/latency.py, beside this file

HERE = Path(__file__).parent

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap on one case's timed loop")
    args = parser.parse_args()
    results = bench.run(steps=args.steps, max_seconds_per_case=args.max_seconds)
    bench.save(results, HERE / "results.json")
    table = bench.markdown(results)
    from gptrl.provenance import summary

    header = f"Measured by `make bench` on: {summary(bench.run_provenance())}.\n\n"
    (HERE / "results.md").write_text(header + table + "\n")
    print(table)
