"""Evaluation on a local Ray instance against this process (issue 25): wall time for the same seeds played by
``gptrl.evaluation.evaluate`` here, and by ``RayExecutor`` with 1 and 2 workers, and what Ray's start costs.

Each repeat runs the three in turn (here, 1 worker, 2 workers), each Ray run on a fresh local instance, so drift on a
shared machine touches all of them. For each Ray run: ``ray.init`` (start), the map (creating the actors, each loading
the policy from its bytes and making its env, then the episodes), and the shutdown, timed apart; every run's per-seed
returns must equal this process's or the benchmark stops. The machine's load average is recorded before and after
each repeat (other jobs on the same cores slow every column).

Ray binds to the machine's external interface; run it where only loopback exists (``make bench-ray`` does, with
Ray's /tmp/ray on a tmpfs of the namespace's own so no other process finds its cluster):

    unshare -n -p -f --mount-proc --kill-child sh -c 'ip link set lo up && mkdir -p /tmp/ray &&
      mount -t tmpfs ray /tmp/ray && .venv/bin/python benchmarks/ray_scaling.py'

Results: benchmarks/ray_scaling.json (with provenance) and ray_scaling.md beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from gptrl.evaluation import EpisodeJob, evaluate
from gptrl.executor import RayExecutor
from gptrl.fileio import write_json, write_text
from gptrl.provenance import provenance
from gptrl.runtime import load_policy

HERE = Path(__file__).resolve().parent


class TimedJob:
    """``evaluate``'s job, each item also reporting the CPU seconds its worker spent on it (``time.process_time``):
    on a shared machine the wall clock counts other jobs' turns, the CPU clock does not."""

    def __init__(self, inner: EpisodeJob):
        self.inner = inner

    def describe(self):
        return self.inner.describe()

    def setup(self):
        return self.inner.setup()

    def run(self, state, item):
        t = time.process_time()
        out = self.inner.run(state, item)
        return out, time.process_time() - t

    def close(self, state):
        self.inner.close(state)


def one_ray_run(env_id: str, policy, seeds: range, workers: int, want: list[float]) -> dict:
    t0 = time.perf_counter()
    ex = RayExecutor(num_workers=workers)
    try:
        ex.start()
        t1 = time.perf_counter()
        done = ex.map(TimedJob(EpisodeJob(env_id, policy.source, num_envs=1, max_steps=1000)), [[s] for s in seeds])
        t2 = time.perf_counter()
    finally:
        ex.shutdown()
    t3 = time.perf_counter()
    returns = [r for (wave, _) in done for r, _ in wave]
    if returns != want:
        raise SystemExit(f"{workers} Ray workers gave other returns than this process: {returns} vs {want}")
    return {"start_s": t1 - t0, "map_s": t2 - t1, "shutdown_s": t3 - t2, "total_s": t3 - t0,
            "episodes_cpu_s": sum(cpu for _, cpu in done), "workers": ex.workers_used}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="bundles/hopper-v5")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "ray_scaling.json")
    a = p.parse_args(argv)
    policy = load_policy(a.bundle)
    env_id = getattr(policy, "env_id", None) or policy.config.env_id
    seeds = range(a.episodes)
    repeats = []
    for r in range(a.repeats):
        load_before = os.getloadavg()
        t, c = time.perf_counter(), time.process_time()
        local = evaluate(env_id, policy, seeds=seeds)
        row = {"local_s": time.perf_counter() - t, "local_cpu_s": time.process_time() - c}
        for workers in (1, 2):
            row[f"ray{workers}"] = one_ray_run(env_id, policy, seeds, workers, local.returns)
        row["loadavg_before"], row["loadavg_after"] = load_before, os.getloadavg()
        repeats.append(row)
        print(f"repeat {r}: {row}", flush=True)
    steps = sum(local.lengths)

    def med(key, sub=None):
        return statistics.median(x[key] if sub is None else x[key][sub] for x in repeats)

    summary = {"bundle": a.bundle, "env_id": env_id, "episodes": a.episodes, "steps": steps,
               "cpus": os.cpu_count(), "repeats": repeats, "median": {
                   "local_s": med("local_s"), "local_cpu_s": med("local_cpu_s"),
                   **{f"ray{w}_{k}": med(f"ray{w}", k) for w in (1, 2)
                      for k in ("start_s", "map_s", "shutdown_s", "total_s", "episodes_cpu_s")}},
               "provenance": provenance(policy)}
    write_json(a.out, summary)
    m = summary["median"]
    lines = [f"# {env_id}: {a.episodes} episodes ({steps:,} steps), median of {a.repeats} repeats",
             "",
             "| how | Ray start | actors + episodes (wall) | shutdown | total (wall) | steps/s (episodes, wall) | "
             "speed-up vs here (total) | episodes' CPU time (all workers) |",
             "|---|---|---|---|---|---|---|---|",
             f"| this process | | {m['local_s']:.1f} s | | {m['local_s']:.1f} s | {steps / m['local_s']:,.0f} | 1.00 | "
             f"{m['local_cpu_s']:.1f} s |"]
    for w in (1, 2):
        lines.append(f"| Ray, {w} worker{'s' if w > 1 else ''} | {m[f'ray{w}_start_s']:.1f} s | "
                     f"{m[f'ray{w}_map_s']:.1f} s | {m[f'ray{w}_shutdown_s']:.1f} s | {m[f'ray{w}_total_s']:.1f} s | "
                     f"{steps / m[f'ray{w}_map_s']:,.0f} | {m['local_s'] / m[f'ray{w}_total_s']:.2f} | "
                     f"{m[f'ray{w}_episodes_cpu_s']:.1f} s |")
    loads = [x["loadavg_before"][0] for x in repeats] + [x["loadavg_after"][0] for x in repeats]
    lines += ["", f"{os.cpu_count()} CPUs; 1-minute load average between {min(loads):.1f} and {max(loads):.1f} during "
              "the runs (other jobs shared the cores when it is above the number of CPUs)."]
    write_text(a.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
