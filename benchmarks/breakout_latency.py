"""Per-step latency at batch 1 on the torch-free runtime (onnxruntime, CPU, one thread): gptrl's grid policy for
ASCII Breakout's full 24 x 81 screen (the stateful graph: one frame -> one token through the row encoder, then the
causal policy against its KV cache) against the seed's design, the RL-driven nanoGPT system (issue 23, item 4): a
nanoGPT of 6 layers, 6 heads, d 96 that reads the frame's 1944 characters as its sequence every step, the last
token's state feeding the policy and value heads. The seed's network (``gptrl.training.seed_design.SeedPolicy``,
written from its description) is exported by torch's ONNX exporter and run by the same onnxruntime; its weights are
random (latency does not depend on them). Both are timed in one process, alternating, on the same frames. Usage:
``python benchmarks/breakout_latency.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import torch

from gptrl.bundle import make_config
from gptrl.bundle.codecs import Discrete, observation_for_space
from gptrl.envs import register
from gptrl.envs.breakout import heuristic_action
from gptrl.training.seed_design import SeedPolicy

ENV = "gptrl/AsciiBreakout-v0"
OURS = dict(network="gpt2", context_length=16, d_model=64, num_layers=2, num_heads=2)  # PPO's defaults


def frames(count: int) -> np.ndarray:
    register()
    env = gym.make(ENV)
    obs, _ = env.reset(seed=0)
    out = []
    for _ in range(count):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(heuristic_action(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from gptrl.exporter import PolicyModel, export_bundle, export_onnx, init_weights
    from gptrl.runtime import load_policy

    screens = frames(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        register()
        grid = observation_for_space(gym.make(ENV).observation_space)
        config = make_config(observation=grid, action=Discrete(3), env_id=ENV, **OURS)
        folder = export_bundle(init_weights(PolicyModel(config), seed=0), Path(tmp) / "ours")
        ours = load_policy(export_onnx(folder, Path(tmp) / "ours.onnx", variant="stateful"), providers="cpu",
                           intra_op_threads=1)
        seed_path = Path(tmp) / "seed.onnx"
        with torch.no_grad():
            torch.onnx.export(SeedPolicy().eval(), (torch.zeros(1, 1944, dtype=torch.int64),), str(seed_path),
                              input_names=["ids"], output_names=["logits", "value"], dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        seed = ort.InferenceSession(str(seed_path), options, providers=["CPUExecutionProvider"])
        ids = screens.reshape(len(screens), 1, -1).astype(np.int64)
        results: dict[str, list[float]] = {"ours_act_ms": [], "seed_run_ms": []}
        for _ in range(args.repeats):
            ours.reset(screens[0])
            start = time.perf_counter()
            for frame in screens:
                ours.act(frame)
            results["ours_act_ms"].append((time.perf_counter() - start) / len(screens) * 1e3)
            start = time.perf_counter()
            for k in range(min(len(ids), 20)):
                seed.run(None, {"ids": ids[k]})
            results["seed_run_ms"].append((time.perf_counter() - start) / min(len(ids), 20) * 1e3)
    row = {"ours_ms_per_step": round(min(results["ours_act_ms"]), 3),
           "seed_ms_per_step": round(min(results["seed_run_ms"]), 2),
           "speedup": round(min(results["seed_run_ms"]) / min(results["ours_act_ms"]), 1),
           "ours": {"config": OURS, "observation": grid.specs()[0], "path": "load_policy(...).act, stateful graph"},
           "seed": {"layers": 6, "heads": 6, "d": 96, "tokens": 1944, "path": "InferenceSession.run"},
           "threads": 1, "best_of": args.repeats}
    print(json.dumps(row, indent=1))
    if args.out:
        args.out.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
