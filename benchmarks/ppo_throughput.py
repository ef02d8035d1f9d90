"""PPO throughput (issue 22, item 5): env steps per second end to end (rollout + update) on CartPole-v1, gptrl's
transformer PPO (``gptrl.training.ppo.train``, its default policy: GPT-2 d64, 2 layers, 2 heads, context 16) against
SB3 PPO (MlpPolicy) with the same number of envs, steps per env per rollout and total steps, in one process on one
thread.

SB3 runs in two configurations: "same schedule" (gptrl's update: its epochs, minibatches, clipping and learning rate:
16 gradient steps per rollout) and "RL Zoo" (the Zoo's CartPole hyperparameters: 20 epochs of batch 256, gamma 0.98,
lambda 0.8, linear schedules: 80 gradient steps per 1024-step rollout; issue 22's 4,600 steps/s is this
configuration with 32 steps per env). SB3 steps a DummyVecEnv, gptrl a gymnasium SyncVectorEnv: both step their
envs one after another in this process.

The systems alternate within each repeat (gptrl, SB3 same schedule, SB3 Zoo, then again), after one untimed warm-up
run of each, so drift on a shared machine touches all of them; every repeat trains from the same seed (the same
work). Each rate is steps / training time, on two clocks: wall time (what the issue's goal is stated in) and the
process's CPU time (``time.process_time``; everything runs on one thread, so on an idle machine the two agree, and
on a shared one the CPU clock does not count the time the scheduler gave to other jobs). Training time excludes
building the model and the envs (SB3's constructor; in gptrl's ``train``, everything before the first rollout) and
gptrl's held-out evaluation, checkpoint and plot, which are timed separately and reported beside it (``eval_every``
is set so the one evaluation is the run's last, which ``train`` always makes).

Where the time goes comes from wrapping functions from here (nothing in gptrl is edited): the envs' ``step``, the
runner's ``_forward`` (the policy's batched step through its KV cache, with sampling), ``act_with_info`` and
``reset_rows`` (the runner's per-step Python around it), ``refresh_cache``, ``Collector.collect``, ``update``,
``make_batch``, ``windows``, ``ppo_losses``, ``Tensor.backward``; and on SB3's side ``env.step``,
``policy.forward``, ``collect_rollouts`` and ``train``. A part whose wrapper was never called stops the run (the
code it timed has moved); the wrappers cost about a microsecond per call, a few thousand calls per run.

    python benchmarks/ppo_throughput.py                  # default: 16384 steps x 5 repeats, about 2-3 minutes
    python benchmarks/ppo_throughput.py --set chunk=96   # a gptrl ppo.Args override, timed the same way

Results: benchmarks/ppo_throughput.json (with provenance, every repeat's parts) and ppo_throughput.md beside it.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy and torch start their thread pools
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).parent
ENV_ID = "CartPole-v1"
SYSTEMS = ("gptrl", "sb3-same", "sb3-zoo")
LABELS = {"gptrl": "gptrl PPO (transformer)", "sb3-same": "SB3 PPO MLP, same schedule",
          "sb3-zoo": "SB3 PPO MLP, RL Zoo settings"}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_MISSING = object()


# ----------------------------------------------------------------------------- timing by wrapping


class Clock:
    """Seconds (wall and CPU) and calls per named part, from wrappers around the functions that do the work."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {c: defaultdict(float) for c in CLOCKS}
        self.calls: dict[str, int] = defaultdict(int)

    def now(self) -> dict[str, float]:
        return {c: read() for c, read in CLOCKS.items()}

    def add(self, name: str, since: dict[str, float]) -> None:
        for c, read in CLOCKS.items():
            self.seconds[c][name] += read() - since[c]
        self.calls[name] += 1

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*a, **k):
            since = self.now()
            try:
                return fn(*a, **k)
            finally:
                self.add(name, since)

        return timed


@contextlib.contextmanager
def patched(targets: list[tuple[Any, str, str]], clock: Clock) -> Iterator[None]:
    """Wrap ``owner.attr`` (a module, class or instance) as part ``name`` for the block; restore it after."""
    saved = []
    try:
        for owner, attr, name in targets:
            saved.append((owner, attr, vars(owner).get(attr, _MISSING)))
            setattr(owner, attr, clock.wrap(name, getattr(owner, attr)))
        yield
    finally:
        for owner, attr, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


# ----------------------------------------------------------------------------- gptrl


def gptrl_args(total: int, num_envs: int, num_steps: int, overrides: dict[str, Any]):
    from gptrl.training import ppo

    args = ppo.Args(total_timesteps=total, num_envs=num_envs, num_steps=num_steps, threads=1, seed=0)
    for key, value in overrides.items():
        setattr(args, key, type(getattr(args, key))(value))
    args.eval_every = max(1, total // (num_envs * num_steps))  # one evaluation: the last update's
    return args


def gptrl_parts(s: dict[str, float], total: float) -> dict[str, float]:
    """The training time ``total`` split into parts (the wrapped functions nest: collect holds the env step, ...)."""
    grad = s["update"] - s["make_batch"]
    return {
        "env step": s["env step"],
        "policy forward (rollout)": s["policy forward"],
        "runner per-step Python, row resets": s["act_with_info"] - s["policy forward"] + s["row resets"],
        "cache refresh": s["cache refresh"],
        "collect bookkeeping": s["rollout"] - s["env step"] - s["act_with_info"] - s["cache refresh"]
        - s["row resets"],
        "update: make_batch windows": s["windows"],
        "update: make_batch pre-pass (forward, GAE)": s["make_batch"] - s["windows"],
        "update: loss forward": s["loss forward"],
        "update: backward": s["backward"],
        "update: clip, Adam, minibatch slicing": grad - s["loss forward"] - s["backward"],
        "loop other": total - s["rollout"] - s["update"],
    }


def run_gptrl(total: int, num_envs: int, num_steps: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """One ``ppo.train`` run, timed by parts."""
    from gptrl.training import loop, ppo

    args = gptrl_args(total, num_envs, num_steps, overrides)
    clock = Clock()
    make_envs = ppo.make_envs

    def timed_envs(*a, **k):
        envs = make_envs(*a, **k)
        envs.step = clock.wrap("env step", envs.step)  # this instance only
        return envs

    targets = [
        (ppo.Collector, "collect", "rollout"), (ppo.RecordingRunner, "_forward", "policy forward"),
        (ppo.RecordingRunner, "act_with_info", "act_with_info"), (ppo.RecordingRunner, "reset_rows", "row resets"),
        (ppo, "refresh_cache", "cache refresh"),
        (ppo, "update", "update"), (ppo, "make_batch", "make_batch"), (ppo, "windows", "windows"),
        (ppo, "ppo_losses", "loss forward"), (torch.Tensor, "backward", "backward"),
        (loop, "evaluate_candidate", "eval"), (loop, "save_checkpoint", "checkpoint"), (ppo, "plot_curve", "plot"),
    ]
    collect = ppo.Collector.collect
    started: list[dict[str, float]] = []  # the clocks at the first rollout's start

    def first_marked(self, *a, **k):
        if not started:
            started.append(clock.now())
        return collect(self, *a, **k)

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        ppo.make_envs, ppo.Collector.collect = timed_envs, first_marked
        try:
            with patched(targets, clock):
                since = clock.now()
                state = ppo.train(ENV_ID, Path(tmp) / "run", args, progress=False)
                clock.add("run", since)
        finally:
            ppo.make_envs, ppo.Collector.collect = make_envs, collect
    for c in CLOCKS:  # everything before the first rollout: imports, the model, the optimiser, the envs
        clock.seconds[c]["setup"] = started[0][c] - since[c]
    silent = {name for _, _, name in targets if clock.calls[name] == 0 and name != "row resets"}
    silent |= {"env step"} - set(clock.calls)
    if silent:
        raise RuntimeError(f"these wrapped parts were never called (ppo.py changed?): {sorted(silent)}")
    steps = state["update"] * args.num_envs * args.num_steps
    out: dict[str, Any] = {"steps": steps, "calls": dict(clock.calls),
                           "gradient_steps_per_update": clock.calls["loss forward"] // clock.calls["update"]}
    for c, s in clock.seconds.items():
        set_aside = s["eval"] + s["checkpoint"] + s["plot"]
        train_s = s["run"] - s["setup"] - set_aside
        out[c] = {"train_s": train_s, "steps_per_s": steps / train_s, "rollout_s": s["rollout"],
                  "update_s": s["update"], "setup_s": s["setup"], "eval_s": s["eval"],
                  "checkpoint_plot_s": s["checkpoint"] + s["plot"],
                  "steps_per_s_with_eval": steps / (train_s + set_aside), "parts_s": gptrl_parts(s, train_s)}
    updates = state.get("updates", [])
    out["train_return"] = updates[-1]["train_return"] if updates else None
    out["final_eval_return"] = state["history"][-1].get("return_mean") if state["history"] else None
    out["max_logp_error"] = max((u.get("logp_error", 0.0) for u in updates), default=None)
    return out


# ----------------------------------------------------------------------------- SB3


def sb3_kwargs(kind: str, num_envs: int, num_steps: int, gargs) -> dict[str, Any]:
    if kind == "sb3-same":  # gptrl's update schedule and its losses' settings
        return {"n_steps": num_steps, "batch_size": max(1, num_envs * num_steps // gargs.num_minibatches),
                "n_epochs": gargs.update_epochs, "gamma": gargs.gamma, "gae_lambda": gargs.gae_lambda,
                "learning_rate": gargs.lr, "clip_range": gargs.clip_coef, "ent_coef": gargs.ent_coef,
                "vf_coef": gargs.vf_coef, "max_grad_norm": gargs.max_grad_norm}
    lin = lambda v: (lambda progress: progress * v)
    return {"n_steps": num_steps, "batch_size": 256, "n_epochs": 20, "gamma": 0.98, "gae_lambda": 0.8,
            "ent_coef": 0.0, "learning_rate": lin(1e-3), "clip_range": lin(0.2)}  # rl-zoo3 ppo.yml, CartPole-v1


def run_sb3(kind: str, total: int, num_envs: int, num_steps: int, gargs) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    kwargs = sb3_kwargs(kind, num_envs, num_steps, gargs)
    env = make_vec_env(ENV_ID, n_envs=num_envs, seed=0)
    model = PPO("MlpPolicy", env, seed=0, device="cpu", verbose=0, **kwargs)
    clock = Clock()
    targets = [(model.env, "step", "env step"), (model.policy, "forward", "policy forward"),
               (model, "collect_rollouts", "rollout"), (model, "train", "update")]
    with patched(targets, clock):
        since = clock.now()
        model.learn(total)
        clock.add("run", since)
    env.close()
    steps = int(model.num_timesteps)
    minibatches = -(-num_envs * num_steps // kwargs["batch_size"])
    out: dict[str, Any] = {"steps": steps, "calls": dict(clock.calls),
                           "gradient_steps_per_update": kwargs["n_epochs"] * minibatches}
    for c, s in clock.seconds.items():
        parts = {"env step": s["env step"], "policy forward (rollout)": s["policy forward"],
                 "collect bookkeeping": s["rollout"] - s["env step"] - s["policy forward"],
                 "update (all passes)": s["update"], "loop other": s["run"] - s["rollout"] - s["update"]}
        out[c] = {"train_s": s["run"], "steps_per_s": steps / s["run"], "rollout_s": s["rollout"],
                  "update_s": s["update"], "parts_s": parts}
    return out


# ----------------------------------------------------------------------------- the run and the report


def run_one(system: str, total: int, num_envs: int, num_steps: int, overrides: dict[str, Any]) -> dict[str, Any]:
    if system == "gptrl":
        return run_gptrl(total, num_envs, num_steps, overrides)
    return run_sb3(system, total, num_envs, num_steps, gptrl_args(total, num_envs, num_steps, overrides))


def summarise(runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Per system and clock: the median, min and max rate, the median parts in ms per 1000 steps, and gptrl's rate
    over each SB3 configuration's (the ratio of medians, and the median of the repeats' paired ratios)."""
    out: dict[str, Any] = {}
    for system, rs in runs.items():
        out[system] = {}
        for c in CLOCKS:
            rates = [r[c]["steps_per_s"] for r in rs]
            per_k = 1e6 / rs[0]["steps"]
            parts = {k: per_k * statistics.median(r[c]["parts_s"][k] for r in rs) for k in rs[0][c]["parts_s"]}
            entry = {"steps_per_s_median": statistics.median(rates), "steps_per_s_min": min(rates),
                     "steps_per_s_max": max(rates), "parts_ms_per_1k_steps": parts}
            if system == "gptrl":
                for key in ("steps_per_s_with_eval", "eval_s", "checkpoint_plot_s"):
                    entry[f"{key}_median"] = statistics.median(r[c][key] for r in rs)
            out[system][c] = entry
    if "gptrl" in runs:
        for system in runs:
            if system == "gptrl":
                continue
            for c in CLOCKS:
                paired = [g[c]["steps_per_s"] / b[c]["steps_per_s"] for g, b in zip(runs["gptrl"], runs[system])]
                out[system][c]["gptrl_ratio_of_medians"] = out["gptrl"][c]["steps_per_s_median"] / \
                    out[system][c]["steps_per_s_median"]
                out[system][c]["gptrl_ratio_paired"] = {"median": statistics.median(paired), "min": min(paired),
                                                        "max": max(paired)}
    return out


def markdown(record: dict[str, Any]) -> str:
    from gptrl.provenance import summary as provenance_summary

    cfg, summ, systems = record["config"], record["summary"], record["systems"]
    lines = [f"Measured by `python benchmarks/ppo_throughput.py` on: {provenance_summary(record['provenance'])}; "
             f"load average {record['load_average']['start']} at the start, {record['load_average']['end']} at "
             "the end (on a shared machine the wall clock counts other jobs' turns: compare rows of one run, and "
             "the CPU clock).", "",
             f"{cfg['env_id']}, {cfg['num_envs']} envs x {cfg['num_steps']} steps per rollout, {cfg['steps']} steps "
             f"per run, {cfg['repeats']} repeats alternating, one thread"
             + (f", gptrl overrides {cfg['overrides']}" if cfg["overrides"] else "") + ". Steps per second of "
             "training time (rollout + update); gptrl's held-out evaluation, checkpoint and plot are excluded and "
             "shown below.", "",
             "| system | gradient steps per update | clock | steps/s median | min | max | gptrl / it (median of "
             "paired repeats, range) |", "|---|---:|---|---:|---:|---:|---:|"]
    for system in systems:
        for c in CLOCKS:
            s = summ[system][c]
            ratio = s.get("gptrl_ratio_paired")
            ratio_text = f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else ""
            lines.append(f"| {LABELS[system]} | {record['gradient_steps_per_update'][system]} | {c} | "
                         f"{s['steps_per_s_median']:.0f} | {s['steps_per_s_min']:.0f} | {s['steps_per_s_max']:.0f} | "
                         f"{ratio_text} |")
    if "gptrl" in summ:
        g = summ["gptrl"]["wall"]
        lines += ["", "gptrl with its evaluation, checkpoint and plot counted: "
                  f"{g['steps_per_s_with_eval_median']:.0f} steps/s (wall); the one held-out evaluation (ONNX export, "
                  f"{record['gptrl_args']['eval_episodes']} greedy episodes) took {g['eval_s_median']:.2f} s, the "
                  f"checkpoint and plot {g['checkpoint_plot_s_median']:.2f} s (medians)."]
    names = list(dict.fromkeys(k for s in systems for k in summ[s]["cpu"]["parts_ms_per_1k_steps"]))
    lines += ["", "Where the time goes: CPU ms per 1000 env steps, median over repeats (share of the system's "
              "training time):", "", "| part | " + " | ".join(LABELS[s] for s in systems) + " |",
              "|---|" + "---:|" * len(systems)]
    for name in names:
        cells = []
        for system in systems:
            ms = summ[system]["cpu"]["parts_ms_per_1k_steps"].get(name)
            total = 1e6 / summ[system]["cpu"]["steps_per_s_median"]
            cells.append("" if ms is None else f"{ms:.1f} ({100 * ms / total:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| total (1e6 / median CPU steps/s) | " + " | ".join(
        f"{1e6 / summ[s]['cpu']['steps_per_s_median']:.1f}" for s in systems) + " |")
    return "\n".join(lines) + "\n"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    from gptrl.training import ppo

    kinds = {f.name: type(f.default) for f in fields(ppo.Args)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        key = key.replace("-", "_")
        if key not in kinds or not value:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, KEY one of {sorted(kinds)}")
        out[key] = value.lower() in ("1", "true", "yes") if kinds[key] is bool else kinds[key](value)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--total-steps", type=int, default=16384, help="env steps per run, all envs together, rounded "
                   "down to whole rollouts of num-envs x num-steps (default 16384)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each system, alternating (default 5)")
    p.add_argument("--num-envs", type=int, default=8, help="envs stepped together by every system (default 8)")
    p.add_argument("--num-steps", type=int, default=128, help="steps per env per rollout (default 128)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a gptrl ppo.Args field (e.g. chunk=96); repeatable")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of each system")
    p.add_argument("--json", type=Path, default=HERE / "ppo_throughput.json",
                   help="where the results go; the .md is written beside it (default benchmarks/ppo_throughput.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    systems = [s for s in a.systems.split(",") if s]
    if not systems or any(s not in SYSTEMS for s in systems):
        raise SystemExit(f"--systems: pick from {SYSTEMS}")
    per_update = a.num_envs * a.num_steps
    total = (a.total_steps // per_update) * per_update
    if total < per_update:
        raise SystemExit(f"--total-steps must be at least num-envs x num-steps = {per_update}")
    overrides = parse_overrides(a.set)
    load_start = [round(x, 2) for x in os.getloadavg()]
    if not a.no_warmup:
        for system in systems:
            print(f"warm-up {system}", flush=True)
            run_one(system, per_update * 2, a.num_envs, a.num_steps, overrides)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for rep in range(a.repeats):
        for system in systems:
            r = run_one(system, total, a.num_envs, a.num_steps, overrides)
            runs[system].append(r)
            w, c = r["wall"], r["cpu"]
            extra = f", eval {w['eval_s']:.2f} s" if system == "gptrl" else ""
            print(f"repeat {rep + 1}/{a.repeats} {system:<9} {w['steps_per_s']:6.0f} steps/s wall, "
                  f"{c['steps_per_s']:6.0f} CPU (rollout {w['rollout_s']:.2f} s, update {w['update_s']:.2f} s"
                  f"{extra})", flush=True)
    from gptrl.provenance import PACKAGES, package_versions, provenance

    gargs = gptrl_args(total, a.num_envs, a.num_steps, overrides)
    record = {"provenance": {**provenance(), "packages": package_versions((*PACKAGES, "stable-baselines3"))},
              "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
              "config": {"env_id": ENV_ID, "num_envs": a.num_envs, "num_steps": a.num_steps, "steps": total,
                         "repeats": a.repeats, "warmup": not a.no_warmup, "overrides": overrides},
              "systems": systems, "gptrl_args": asdict(gargs),
              "sb3_kwargs": {s: {k: "linear" if callable(v) else v
                                 for k, v in sb3_kwargs(s, a.num_envs, a.num_steps, gargs).items()}
                             for s in systems if s != "gptrl"},
              "gradient_steps_per_update": {s: runs[s][0]["gradient_steps_per_update"] for s in systems},
              "summary": summarise(runs), "runs": runs}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(record, indent=1) + "\n")
    text = markdown(record)
    a.json.with_suffix(".md").write_text(text)
    print("\n" + text)
    return record


if __name__ == "__main__":
    main()
