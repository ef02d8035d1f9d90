"""Memory soak (``make soak``): 1M closed-loop steps of the torch-free runtime, RSS at the start and the end.

A random-weight Llama policy of the package's default shape (d_model 256, 4 layers, 8 heads, context 32) is
exported once; then ``load_policy`` runs 1,000,000 steps at batch 1 and at batch 64 against
``gptrl.synthetic.ClosedLoopEnv``. In the batched run every row restarts (``reset_rows``) with probability 1/1000
per step, so episodes of all lengths and the ring's wrap-around are exercised. RSS (resident memory, from
/proc/self/status) is sampled after the warm-up and every 100k steps; a leak of even 100 bytes per step would show
as 100 MB. Results: benchmarks/soak.json, rewritten at every sample (a run cut short keeps what it measured, with
``steps_done`` below ``steps``), merged by batch size so each size can run in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from latency import ACTION_DIM, STATE_DIM, random_bundle

HERE = Path(__file__).parent


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def save(out: Path, result: dict) -> None:
    """Merge ``result`` into ``out`` by batch size (re-read just before the write: other sizes may be running)."""
    from gptrl.fileio import atomic_path

    results = {r["batch"]: r for r in (json.loads(out.read_text()) if out.exists() else [])}
    results[result["batch"]] = result
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps([results[k] for k in sorted(results)], indent=1) + "\n")


def soak(onnx_path: Path, batch: int, steps: int, out: Path, every: int = 100_000, warmup: int = 1000,
         seed: int = 0) -> dict:
    from gptrl.provenance import provenance
    from gptrl.runtime import load_policy
    from gptrl.synthetic import ClosedLoopEnv

    policy = load_policy(onnx_path, num_envs=batch, providers="cpu")
    record = provenance(policy)
    env = ClosedLoopEnv(STATE_DIM, ACTION_DIM, batch, seed=seed)
    rng = np.random.default_rng(seed)
    obs = env.reset()
    policy.reset(obs)
    for _ in range(warmup):
        obs = env.step(policy.act(obs))
    samples = [(0, rss_mib())]
    started = time.perf_counter()

    def result(done: int) -> dict:
        return {"batch": batch, "steps": steps, "steps_done": done, "rss_start_mib": samples[0][1],
                "rss_end_mib": samples[-1][1], "rss_max_mib": max(s[1] for s in samples), "samples": samples,
                "ms_per_step": (time.perf_counter() - started) / max(done, 1) * 1e3, "provenance": record}

    for t in range(1, steps + 1):
        obs = env.step(policy.act(obs))
        if batch > 1:
            done = rng.random(batch) < 1e-3
            if done.any():
                policy.reset_rows(done)
        if t % every == 0:
            samples.append((t, rss_mib()))
            save(out, result(t))
            print(f"batch {batch}: step {t:,}: RSS {samples[-1][1]:.1f} MiB "
                  f"({(time.perf_counter() - started) / t * 1e3:.3f} ms/step)", flush=True)
    final = result(steps)
    save(out, final)
    return final


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--out", type=Path, default=HERE / "soak.json")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from gptrl.exporter import export_onnx

    # Sizes can also run side by side, one process each: `python benchmarks/soak.py --batch 64 &` and `--batch 1`.
    with tempfile.TemporaryDirectory() as tmp:
        bundle = random_bundle(Path(tmp), 256)
        onnx_path = export_onnx(bundle, Path(tmp) / "policy.onnx")
        for b in a.batch:
            soak(onnx_path, b, a.steps, a.out)
    print("| batch | steps | RSS start (MiB) | RSS end (MiB) | max (MiB) | ms/step |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in json.loads(a.out.read_text()):
        print(f"| {r['batch']} | {r['steps_done']:,} of {r['steps']:,} | {r['rss_start_mib']:.1f} | "
              f"{r['rss_end_mib']:.1f} | {r['rss_max_mib']:.1f} | {r['ms_per_step']:.3f} |")


if __name__ == "__main__":
    main()
