"""Which per-frame encoder for character-grid observations (issue 23, item 2): one frame of ASCII Breakout's full
24 x 81 screen becomes one timestep token. Compared on the same task and budget:

- **rows**: ``patch = [1, 81]``, one token per screen row (24 tokens);
- **patches**: ``patch = [3, 9]``, 8 x 9 = 72 patch tokens;

each pooled by the mean or the maximum over its tokens, with a character embedding of 8 and 64 pooled features,
under the same policy (Llama, d_model 64, 2 layers).
The task: behaviour cloning of the scripted heuristic (move the paddle towards the ball's column), which needs the
ball's and the paddle's columns to within one column from a single frame, so it measures whether the pooled
features keep where the characters are. Frames come from the heuristic playing with 30% random actions (training
seeds 0..7, held-out seeds 100..103). Printed per design: the encoder's and the whole policy's parameters, held-out
accuracy and cross-entropy after the same steps, training time per step, and the exported stateful graph's latency
per step at batch 1 on onnxruntime (one thread). Usage: ``python benchmarks/grid_encoders.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from gptrl.bundle import make_config
from gptrl.bundle.codecs import Discrete, Grid
from gptrl.envs import register
from gptrl.envs.breakout import heuristic_action

ENV = "gptrl/AsciiBreakout-v0"
DESIGNS = {"rows, mean": ((1, 81), "mean"), "patches, mean": ((3, 9), "mean"), "rows, max": ((1, 81), "max"),
           "patches, max": ((3, 9), "max")}
MODEL = dict(network="llama", context_length=8, d_model=64, num_layers=2, num_heads=4, intermediate_size=128)


def frames(seeds, per_seed: int, explore: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    register()
    env, rng = gym.make(ENV), np.random.default_rng(0)
    obs_all, labels = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        for _ in range(per_seed):
            label = heuristic_action(obs)
            obs_all.append(obs.reshape(-1))
            labels.append(label)
            act = int(rng.integers(3)) if rng.random() < explore else label
            obs, _, terminated, truncated, _ = env.step(act)
            if terminated or truncated:
                obs, _ = env.reset()
    return np.array(obs_all, np.int64), np.array(labels, np.int64)


def run(name: str, patch: tuple[int, int], pool: str, data, steps: int, batch: int, lr: float, seed: int = 0) -> dict:
    from gptrl.exporter import PolicyModel, export_bundle, export_onnx, init_weights
    from gptrl.runtime import load_policy

    torch.manual_seed(seed)
    grid = Grid(24, 81, 128, embed_dim=8, patch=patch, feature_dim=64, pool=pool)
    model = init_weights(PolicyModel(make_config(observation=grid, action=Discrete(3), env_id=ENV, **MODEL)), seed)
    (xs, ys), (xt, yt) = data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = np.random.default_rng(seed)

    def forward(x, y):
        n = len(y)
        out = model(torch.from_numpy(x)[:, None], torch.zeros(n, 1, dtype=torch.int64), torch.ones(n, 1))
        logits = out.params[:, 0]
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)), logits

    start = time.perf_counter()
    for _ in range(steps):
        idx = gen.integers(0, len(ys), batch)
        opt.zero_grad()
        forward(xs[idx], ys[idx])[0].backward()
        opt.step()
    train_ms = (time.perf_counter() - start) / steps * 1e3
    with torch.no_grad():
        loss, logits = forward(xt, yt)
    accuracy = float((logits.argmax(-1).numpy() == yt).mean())
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("state_encoder."))
    total = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_bundle(model.eval(), Path(tmp) / "b")
        graph = export_onnx(folder, Path(tmp) / "p.onnx", variant="stateful")
        policy = load_policy(graph, providers="cpu", intra_op_threads=1)
        frame = xt[0]
        policy.reset(frame)
        for _ in range(20):
            policy.act(frame)
        times = []
        for k in range(300):
            t = time.perf_counter()
            policy.act(xt[k % len(xt)])
            times.append(time.perf_counter() - t)
    return {"design": name, "patch": list(patch), "pool": pool, "steps": steps, "lr": lr,
            "tokens_per_frame": grid.patches[0] * grid.patches[1],
            "encoder_params": encoder, "policy_params": total, "heldout_accuracy": round(accuracy, 4),
            "heldout_cross_entropy": round(float(loss), 4), "train_ms_per_step": round(train_ms, 1),
            "onnx_step_ms_p50": round(float(np.median(times)) * 1e3, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--per-seed", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="weight and batch seeds, one run each")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = frames(range(8), args.per_seed), frames(range(100, 104), args.per_seed // 2)
    print(f"frames: {len(data[0][1])} training, {len(data[1][1])} held out; heuristic labels "
          f"{np.bincount(data[0][1], minlength=3).tolist()} (stay, left, right)")
    rows = []
    for seed in args.seeds:
        for name in args.designs:
            patch, pool = DESIGNS[name]
            rows.append({"seed": seed, **run(name, patch, pool, data, args.steps, args.batch, args.lr, seed)})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
