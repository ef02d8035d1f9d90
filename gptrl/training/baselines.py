"""Same-budget Stable-Baselines3 baselines for gptrl's PPO (CleanRL style: one file, an ``Args`` dataclass whose
comments are ``--help``).

``--algo ppo`` trains SB3 PPO with an MLP (``MlpPolicy``, no memory); ``--algo recurrent-ppo`` trains sb3-contrib's
RecurrentPPO (``MlpLstmPolicy``). Both use the RL Baselines3 Zoo's tuned hyperparameters (``ZOO`` below, copied
from rl-baselines3-zoo hyperparams/ppo.yml and hyperparams/ppo_lstm.yml, with where each entry comes from) and
train for the issue's budget of the env (``BUDGETS``), so a card can put gptrl's PPO beside them at equal env steps.
Where the Zoo normalises (``normalize: true``) the envs are wrapped in VecNormalize with the algorithm's gamma, as
the Zoo does; its statistics are saved (``vecnormalize.pkl``) and the evaluation normalises observations with them.

The learning curve is the mean return of the last 20 training episodes (Monitor, raw rewards) at the end of every
rollout. The evaluation is the protocol of ``gptrl eval`` and the model cards: 50 episodes, episode i reset with
seed i (0..49), deterministic actions, each episode run to the env's own time limit. Everything lands in
``OUT/result.json`` (written atomically; an existing one is replaced only with ``--overwrite``) beside the model.

    python -m gptrl.training.baselines CartPole-v1 --algo ppo --seed 0
    python -m gptrl.training.baselines --collect  # runs/baselines/*/*/seed*/ -> docs/results/ppo-baselines.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptrl.envs import register
from gptrl.fileio import atomic_path, read_json, refuse_existing, write_json
from gptrl.training.cliargs import add_arguments, from_namespace

__all__ = ["ALGOS", "BUDGETS", "ZOO", "Args", "collect", "evaluate_model", "hyperparameters", "main", "train"]

ALGOS = ("ppo", "recurrent-ppo")

# The env steps gptrl's PPO is given for each env (issue 22's table; the masked envs at their base env's budget).
BUDGETS = {"CartPole-v1": 100_000, "Acrobot-v1": 1_000_000, "LunarLander-v3": 1_000_000,
           "BipedalWalker-v3": 5_000_000, "CartPoleNoVel-v1": 100_000, "LunarLanderNoVel-v3": 1_000_000}

# The RL Baselines3 Zoo's tuned hyperparameters, verbatim: DLR-RM/rl-baselines3-zoo hyperparams/ppo.yml (commit
# 208b6fdf3a9aa24de44b2e068c6e5f6a07d97fcc) and hyperparams/ppo_lstm.yml (commit
# c94924e5b31bce36920f29d3eb18b975231bdec4). "lin_X" is the Zoo's linear schedule from X to 0; policy_kwargs are the
# Zoo's strings (evaluated with torch.nn as nn). The Zoo's n_timesteps is not used (the budget is BUDGETS'); "zoo"
# says which entry each set is.
_LSTM64 = ("dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, enable_critic_lstm=True, "
           "net_arch=dict(pi=[64], vf=[64]))")
_MLP64 = "dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))"  # _LSTM64 without the LSTM
_CARTPOLE = {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
             "ent_coef": 0.0, "learning_rate": "lin_0.001", "clip_range": "lin_0.2"}
_LUNAR = {"n_envs": 16, "n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98, "gamma": 0.999, "n_epochs": 4,
          "ent_coef": 0.01}
_LUNAR_NOVEL = {"normalize": True, "n_envs": 32, "n_steps": 512, "batch_size": 128, "gae_lambda": 0.98,
                "gamma": 0.999, "n_epochs": 4, "ent_coef": 0.01}
_ACROBOT = {"normalize": True, "n_envs": 16, "n_steps": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4,
            "ent_coef": 0.0}
ZOO: dict[str, dict[str, dict[str, Any]]] = {
    "ppo": {
        "CartPole-v1": {"zoo": "ppo.yml CartPole-v1", **_CARTPOLE},
        "Acrobot-v1": {"zoo": "ppo.yml Acrobot-v1", **_ACROBOT},
        "LunarLander-v3": {"zoo": "ppo.yml LunarLander-v2 (the Zoo has no v3 entry)", **_LUNAR},
        "BipedalWalker-v3": {"zoo": "ppo.yml BipedalWalker-v3", "normalize": True, "n_envs": 32, "n_steps": 2048,
                             "batch_size": 64, "gae_lambda": 0.95, "gamma": 0.999, "n_epochs": 10, "ent_coef": 0.0,
                             "learning_rate": 3e-4, "clip_range": 0.18},
        # ppo.yml has no masked-velocity entries: the MLP baseline is the Zoo's RecurrentPPO set without the LSTM,
        # so the two baselines differ only in memory.
        "CartPoleNoVel-v1": {"zoo": "ppo_lstm.yml CartPoleNoVel-v1 without the LSTM (ppo.yml has no entry)",
                             "normalize": True, **_CARTPOLE, "policy_kwargs": _MLP64},
        "LunarLanderNoVel-v3": {"zoo": "ppo_lstm.yml LunarLanderNoVel-v2 without the LSTM (ppo.yml has no entry)",
                                **_LUNAR_NOVEL, "policy_kwargs": _MLP64},
    },
    "recurrent-ppo": {
        "CartPoleNoVel-v1": {"zoo": "ppo_lstm.yml CartPoleNoVel-v1", "normalize": True, **_CARTPOLE,
                             "policy_kwargs": _LSTM64},
        "LunarLanderNoVel-v3": {"zoo": "ppo_lstm.yml LunarLanderNoVel-v2 (the Zoo has no v3 entry)",
                                **_LUNAR_NOVEL, "policy_kwargs": _LSTM64},
        "Acrobot-v1": {"zoo": "ppo_lstm.yml Acrobot-v1", **_ACROBOT},
        "BipedalWalker-v3": {"zoo": "ppo_lstm.yml BipedalWalker-v3", "normalize": True, "n_envs": 32,
                             "n_steps": 256, "batch_size": 256, "gae_lambda": 0.95, "gamma": 0.999, "n_epochs": 10,
                             "ent_coef": 0.0, "learning_rate": 3e-4, "clip_range": 0.18, "policy_kwargs": _LSTM64},
        # ppo_lstm.yml has no entries for the envs with velocities: their masked twins' sets.
        "CartPole-v1": {"zoo": "ppo_lstm.yml CartPoleNoVel-v1 (ppo_lstm.yml has no CartPole-v1 entry)",
                        "normalize": True, **_CARTPOLE, "policy_kwargs": _LSTM64},
        "LunarLander-v3": {"zoo": "ppo_lstm.yml LunarLanderNoVel-v2 (ppo_lstm.yml has no LunarLander entry)",
                           **_LUNAR_NOVEL, "policy_kwargs": _LSTM64},
    },
}
CURVE_EPISODES = 20  # the learning curve's point: the mean return of this many last training episodes


@dataclass
class Args:
    algo: str = "ppo"  # "ppo" (SB3 PPO, MlpPolicy) or "recurrent-ppo" (sb3-contrib RecurrentPPO, MlpLstmPolicy)
    total_timesteps: int = 0  # env steps over the run, all envs together (0: the env's budget in BUDGETS)
    seed: int = 0  # seeds the weights and the training envs (the evaluation always uses seeds 0..49)
    threads: int = 1  # torch threads
    device: str = "cpu"  # torch device for SB3 ("cpu" keeps runs comparable to gptrl's)


def hyperparameters(env_id: str, algo: str) -> dict[str, Any]:
    """The Zoo's set for ``algo`` on ``env_id`` (a copy, JSON-able, with the ``zoo`` entry it comes from)."""
    if algo not in ZOO:
        raise ValueError(f"--algo {algo!r}: expected one of {', '.join(ALGOS)}")
    if env_id not in ZOO[algo]:
        raise ValueError(f"{env_id}: no RL Zoo hyperparameters for {algo} here (known: {', '.join(ZOO[algo])})")
    return copy.deepcopy(ZOO[algo][env_id])


def _schedule(value: Any) -> Any:
    """The Zoo's "lin_X" as SB3's linear schedule (progress_remaining 1 -> 0 gives X -> 0); numbers as they are."""
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


def _model_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    """The constructor's keyword arguments from a Zoo set (what is not about the envs)."""
    import torch.nn as nn

    kwargs = {k: _schedule(v) for k, v in hp.items() if k not in ("zoo", "normalize", "n_envs")}
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"dict": dict, "nn": nn})  # the Zoo's own notation
    return kwargs


class _Curve:
    """SB3 callback state: at the end of every rollout, (env steps, mean return of the last training episodes)."""

    def __init__(self, started: float):
        self.started, self.returns, self.points = started, [], []

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback

        curve = self

        class Callback(BaseCallback):
            def _on_step(self) -> bool:
                for info in self.locals.get("infos", []):
                    if "episode" in info:  # Monitor's record of an ended episode (raw rewards)
                        curve.returns.append(float(info["episode"]["r"]))
                return True

            def _on_rollout_end(self) -> None:
                recent = curve.returns[-CURVE_EPISODES:]
                curve.points.append({"step": int(self.num_timesteps),
                                     "train_return": round(float(np.mean(recent)), 2) if recent else None,
                                     "episodes": len(curve.returns), "seconds": round(time.time() - curve.started, 1)})

        return Callback()


def _max_steps(env) -> int | None:
    spec = getattr(env, "spec", None)
    return getattr(spec, "max_episode_steps", None)


def evaluate_model(model, env_id: str, vecnormalize=None, episodes: int = 50) -> dict[str, Any]:
    """``episodes`` greedy episodes, episode i reset with seed i, each to the env's own time limit; observations are
    normalised with the training statistics where there are any. RecurrentPPO's LSTM state starts fresh per episode."""
    import gymnasium as gym

    register()
    returns, lengths = [], []
    recurrent = type(model).__name__ == "RecurrentPPO"
    env = gym.make(env_id)
    limit = _max_steps(env)
    try:
        for seed in range(episodes):
            obs, _ = env.reset(seed=seed)
            state, start, total, length, done = None, np.ones(1, bool), 0.0, 0, False
            while not done:
                x = vecnormalize.normalize_obs(obs) if vecnormalize is not None else obs
                if recurrent:
                    action, state = model.predict(x, state=state, episode_start=start, deterministic=True)
                    start = np.zeros(1, bool)
                else:
                    action, _ = model.predict(x, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return {"seeds": [0, episodes - 1], "num_episodes": episodes, "max_steps": limit, "deterministic": True,
            "returns": returns, "lengths": lengths, "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "length_mean": float(np.mean(lengths)),
            "length_std": float(np.std(lengths))}


def _provenance() -> dict[str, Any]:
    """gptrl's provenance record with the SB3 packages' versions added."""
    from gptrl.provenance import package_versions, provenance

    record = provenance(None)
    record["packages"].update(package_versions(("stable-baselines3", "sb3-contrib", "torch")))
    return record


def default_out(env_id: str, args: Args) -> Path:
    return Path("runs/baselines") / args.algo / env_id / f"seed{args.seed}"


def train(env_id: str, args: Args, out: Path | None = None, *, overwrite: bool = False, eval_episodes: int = 50,
          progress: bool = False) -> dict[str, Any]:
    """Train one baseline and evaluate it; writes ``out/model.zip``, ``out/vecnormalize.pkl`` (where the Zoo
    normalises) and ``out/result.json``, and returns the result. A finished run (its result.json) is replaced only
    with ``overwrite``; ``eval_episodes`` below 50 is for tests (the card protocol is 50)."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    hp = hyperparameters(env_id, args.algo)
    budget = args.total_timesteps or BUDGETS.get(env_id, 0)
    if budget < 1:
        raise ValueError(f"{env_id}: no default budget; pass --total-timesteps")
    out = Path(out) if out is not None else default_out(env_id, args)
    refuse_existing(out / "result.json", overwrite)  # before any work
    torch.set_num_threads(args.threads)
    register()
    envs = make_vec_env(env_id, n_envs=hp["n_envs"], seed=args.seed)
    normalize = hp.get("normalize", False)
    if normalize:
        envs = VecNormalize(envs, gamma=hp["gamma"])
    if args.algo == "ppo":
        from stable_baselines3 import PPO as Algo

        policy = "MlpPolicy"
    else:
        from sb3_contrib import RecurrentPPO as Algo

        policy = "MlpLstmPolicy"
    model = Algo(policy, envs, seed=args.seed, device=args.device, verbose=0, **_model_kwargs(hp))
    started = time.time()
    curve = _Curve(started)
    model.learn(budget, callback=curve.callback(), progress_bar=progress)
    seconds = time.time() - started
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.zip") as tmp:
        model.save(tmp)
    stats = None
    if normalize:
        with atomic_path(out / "vecnormalize.pkl") as tmp:
            envs.save(str(tmp))
        stats = VecNormalize.load(str(out / "vecnormalize.pkl"), make_vec_env(env_id, n_envs=1))  # as saved
        stats.training, stats.norm_reward = False, False
    envs.close()
    try:
        evaluation = evaluate_model(model, env_id, stats, episodes=eval_episodes)
    finally:
        if stats is not None:
            stats.close()
    result = {"env": env_id, "algo": args.algo, "policy": policy, "budget": budget,
              "env_steps": int(model.num_timesteps), "seed": args.seed, "args": asdict(args),
              "hyperparameters": hp,
              "zoo_source": "DLR-RM/rl-baselines3-zoo hyperparams/" + hp["zoo"].split(" ", 1)[0],
              **evaluation, "curve": curve.points, "seconds": round(seconds, 1),
              "command": f"python -m gptrl.training.baselines {env_id} --algo {args.algo} --seed {args.seed}"
                         + (f" --total-timesteps {args.total_timesteps}" if args.total_timesteps else ""),
              "provenance": _provenance()}
    refuse_existing(out / "result.json", overwrite)  # another run may have finished meanwhile
    write_json(out / "result.json", result)
    return result


# ----------------------------------------------------------------------------- the summary


def collect(root: Path = Path("runs/baselines"), out: Path | None = Path("docs/results/ppo-baselines.json")
            ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every ``root/ALGO/ENV/seedS/result.json`` as one table, env -> algo -> runs (by seed), each run its numbers
    without the per-step curve; written to ``out`` (atomically) unless ``out`` is None."""
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in sorted(Path(root).glob("*/*/*/result.json")):
        r = read_json(path)
        run = {k: r[k] for k in ("seed", "budget", "env_steps", "return_mean", "return_std", "length_mean",
                                 "num_episodes", "seeds", "returns", "seconds", "policy", "command")}
        run["zoo"] = r["hyperparameters"]["zoo"]
        run["commit"] = (r.get("provenance") or {}).get("commit")
        run["result"] = str(path)
        table.setdefault(r["env"], {}).setdefault(r["algo"], []).append(run)
    for algos in table.values():
        for runs in algos.values():
            runs.sort(key=lambda run: run["seed"])
    if out is not None:
        write_json(out, table)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id", nargs="?", help=f"one of {', '.join(BUDGETS)}")
    p.add_argument("--out", type=Path, help="run folder (default runs/baselines/ALGO/ENV/seedS)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run's result.json")
    p.add_argument("--progress", action="store_true", help="show SB3's progress bar")
    p.add_argument("--collect", type=Path, nargs="?", const=Path("docs/results/ppo-baselines.json"),
                   help="instead of training: gather runs/baselines/*/*/seed*/result.json into this summary "
                        "(default docs/results/ppo-baselines.json)")
    add_arguments(p, Args)
    a = p.parse_args(argv)
    if a.collect is not None:
        table = collect(out=a.collect)
        for env_id, algos in table.items():
            for algo, runs in algos.items():
                print(f"{env_id} {algo}: " + ", ".join(f"seed {r['seed']} {r['return_mean']:.1f} +- "
                                                       f"{r['return_std']:.1f}" for r in runs))
        print(f"wrote {a.collect}")
        return
    if not a.env_id:
        p.error("give an env id (or --collect)")
    args = from_namespace(Args, a)
    if args.algo not in ALGOS:
        p.error(f"--algo: expected one of {', '.join(ALGOS)}")
    result = train(a.env_id, args, a.out, overwrite=a.overwrite, progress=a.progress)
    print(json.dumps({k: result[k] for k in ("env", "algo", "budget", "seed", "return_mean", "return_std",
                                             "seconds")}))


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.baselines", main))
