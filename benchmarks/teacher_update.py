"""Milliseconds per vector-TQC gradient step, eager against a replayed CUDA graph (Humanoid-v5 sizes).

The replay buffer holds random transitions: the cost of an update does not depend on what they are.

    python benchmarks/teacher_update.py --batch-size 1024 --updates 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from gptrl.training.vector_tqc import TQC, Args, ReplayBuffer


def time_updates(agent: TQC, buffer: ReplayBuffer, n: int) -> float:
    float(agent.update(buffer)["critic_loss"])  # one untimed update, finished before the clock starts
    t = time.perf_counter()
    for _ in range(n):
        stats = agent.update(buffer)
    float(stats["critic_loss"])  # waits for the device
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--obs-dim", type=int, default=348)
    p.add_argument("--act-dim", type=int, default=17)
    p.add_argument("--batch-size", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--updates", type=int, default=300)
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(0)
    n = 100_000
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), "
          f"obs {a.obs_dim}, act {a.act_dim}")
    for batch in a.batch_size:
        args = Args(env_id="bench", out=Path("."), batch_size=batch)
        buffer = ReplayBuffer(n, a.obs_dim, a.act_dim, device)
        buffer.add(rng.standard_normal((n, a.obs_dim)), rng.uniform(-1, 1, (n, a.act_dim)), rng.standard_normal(n),
                   rng.standard_normal((n, a.obs_dim)), np.zeros(n))
        agent = TQC(a.obs_dim, a.act_dim, args, device)
        eager = time_updates(agent, buffer, a.updates)
        line = f"batch {batch}: eager {eager:.2f} ms/update"
        if device == "cuda":
            agent.capture(buffer)
            graphed = time_updates(agent, buffer, a.updates)
            line += f", CUDA graph {graphed:.2f} ms/update ({eager / graphed:.1f}x)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
