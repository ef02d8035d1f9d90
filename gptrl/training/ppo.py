"""PPO for the causal transformer policy, acting one token per step through its KV cache (CleanRL's ``ppo.py``
structure: one file, an ``Args`` dataclass whose comments are ``--help``).

Rollout. A gymnasium vector env (same-step autoreset) is driven by gptrl's torch runner (``PolicyRunner``, per-row
positions, ``reset_rows`` when an episode ends), so the policy acts exactly as it will when shipped: slot 0 of an
episode is the BOS token (s_0, 0, 1), slot i >= 1 the completed token (s_{i-1}, a_{i-1}, 0); the head on slot i
chooses a_i and its value is V_i. Each row's tokens, the sampled latents, their log-probabilities, the values,
rewards and episode ends are stored as one sequence per row.

Training windows. The log-probabilities and values are recomputed on windows of each row's sequence whose positions
and attention masks are those of the cache (``gptrl.training.windows.cache_window``: slot i at position min(i - 1, kv),
attending to slots max(1, i - kv) .. i of its own episode), with ``num_layers * kv`` slots of context before the
counted ones, so every counted slot sees its whole receptive field.

Cache refresh. An episode that runs on across updates would keep keys and values computed by the old weights. At the
start of each rollout the runner's cache is rebuilt from the row's last ``num_layers * kv`` tokens under the current
weights (``refresh_cache``), and those tokens open the row's training sequence; so before the first gradient step the
recomputed log-probabilities and values equal the rollout's (``logp_error`` and ``value_error`` in history.json; the
tests assert < 1e-5).

Bootstrap values come from the slot after an episode's last step, the token (s_{T-1}, a_{T-1}, 0), which needs no
final observation: the value of a truncated episode's next slot is computed in the pre-update pass.

Resuming continues the updates from runs/ppo/ENV/checkpoint.pt (weights, optimiser, sampler and torch generators);
the envs start fresh episodes (their state is not saved).

    python -m gptrl.training.ppo CartPole-v1 --total-timesteps 100000 --publish

Each env starts from its ``PRESETS`` entry (the settings its shipped bundle was trained with); flags override them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptrl.bundle import make_config
from gptrl.bundle.codecs import action_for_space, observation_for_space
from gptrl.envs import breakout, register
from gptrl.exporter.causal.model import PolicyModel
from gptrl.exporter.causal.runner import PolicyRunner
from gptrl.exporter.init import init_weights
from gptrl.rollout import StepInputs, StepOutputs
from gptrl.training import loop
from gptrl.training.cliargs import add_arguments, from_namespace
from gptrl.training.windows import cache_window

__all__ = ["PRESETS", "TEACHERS", "Args", "Rollout", "main", "ppo_losses", "refresh_cache", "train"]


@dataclass
class Args:
    total_timesteps: int = 100_000  # env steps over the whole run (all envs together)
    num_envs: int = 8  # envs stepped together, one batched policy call per step
    num_steps: int = 128  # steps per env per rollout (an update learns from num_envs * num_steps steps)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE's lambda
    reward_scale: float = 0.1  # rewards are multiplied by this for the value head and GAE (the trunk is shared)
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # minibatches per pass (of training windows)
    chunk: int = 32  # counted slots per training window (each window adds num_layers * kv slots of context)
    clip_coef: float = 0.2  # the surrogate's clipping
    clip_vloss: bool = True  # clip the value loss around the rollout's values too
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    norm_adv: bool = True  # normalise advantages per minibatch
    max_grad_norm: float = 0.5  # gradient clipping
    target_kl: float = 0.0  # stop an update's passes once the approximate KL exceeds this (0: never)
    lr: float = 1e-3  # Adam's learning rate at the start
    encoder_lr: float = 0.0  # the observation encoder's (a grid's embedding and patch weights) own rate at the start,
    # annealed alike (0: lr). Its unit-scale lookups move slowly at the trunk's rate: cloning ASCII Breakout's
    # heuristic from frames stayed near 0.6 accuracy for 800 Adam steps at 1e-3, and passed 0.9 by step 600 at 1e-2
    anneal_lr: bool = True  # anneal it to 0 over the run (the loop's cosine schedule)
    action_type: str = "gaussian"  # for a Box action space: "gaussian" (clipped to the bounds) or "tanh"
    critic: str = "shared"  # "shared": one trunk, a policy head and a value head (the shipped graph's value is the
    # critic's); "separate": a second transformer of the same shape learns the value (training only)
    network: str = "gpt2"  # backbone: "gpt2" or "llama"
    d_model: int = 64  # transformer width
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads
    context_length: int = 16  # kv: cached tokens each step attends to
    max_episode_steps: int = 0  # the env's time limit (0: its registered one)
    life_loss_terminal: bool = False  # a lost life (info["lives"] falls) is terminal for GAE; the episode goes on
    teacher: str = ""  # kickstarting: a scripted teacher (TEACHERS) whose action at every visited state the policy
    # is also trained to take, a cross-entropy term added to PPO's loss ("": none)
    teacher_coef: float = 1.0  # the cross-entropy's weight at the start; it falls linearly to 0 ...
    teacher_fraction: float = 0.5  # ... over this fraction of the run, which ends as plain PPO
    eval_every: int = 5  # updates between held-out evaluations of the candidate
    eval_episodes: int = 10  # held-out episodes per evaluation, seeds eval_seed onwards
    eval_seed: int = 1000  # first held-out seed (never 0..49: the model card's)
    seed: int = 0  # seeds the weights, the envs and the sampler
    threads: int = 1  # torch threads
    device: str = "cpu"  # only "cpu" is supported for now (the runner and windows share the model)


# Each env's settings where they differ from ``Args``'s (CartPole's): the ones its shipped bundle was trained with.
# ``make ppo ENV=...`` starts from these; any flag given overrides them.
PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {},
    "CartPoleNoVel-v1": {"eval_episodes": 50},  # 10 held-out episodes let lucky candidates through
    "Acrobot-v1": {"total_timesteps": 1_000_000, "num_envs": 16, "num_steps": 256, "num_minibatches": 8,
                   "gae_lambda": 0.94, "lr": 3e-4, "eval_episodes": 50},
    "LunarLander-v3": {"total_timesteps": 1_000_000, "ent_coef": 0.01, "eval_every": 10, "eval_episodes": 20},
    "LunarLanderNoVel-v3": {"total_timesteps": 1_000_000, "ent_coef": 0.01, "eval_every": 10, "eval_episodes": 20},
    "BipedalWalker-v3": {"total_timesteps": 5_000_000, "num_envs": 16, "num_steps": 256, "num_minibatches": 8,
                         "lr": 3e-4, "eval_every": 20, "eval_episodes": 5},
    # gptrl's ASCII Breakout (gptrl/envs/breakout.py): a frame of character ids, one token a step (the grid encoder)
    "gptrl/AsciiBreakoutSmall-v0": {"total_timesteps": 2_000_000, "ent_coef": 0.01, "lr": 3e-4, "eval_every": 10,
                                    "life_loss_terminal": True},
    # the full board: the same settings, the encoder at its own rate, kickstarted by the planner over the first half
    # of the run, then plain PPO
    "gptrl/AsciiBreakout-v0": {"total_timesteps": 1_200_000, "ent_coef": 0.01, "lr": 3e-4, "encoder_lr": 1e-2,
                               "eval_every": 20, "life_loss_terminal": True, "teacher": "breakout-planner"},
}


# Scripted teachers for kickstarting (Schmitt et al. 2018, "Kickstarting Deep Reinforcement Learning"): each reads
# one row's env (unwrapped) and returns the action it would take there.
TEACHERS: dict[str, Any] = {"breakout-planner": breakout.planner_action}


# ----------------------------------------------------------------------------- the model and the envs


def model_kwargs(args: Args) -> dict[str, Any]:
    return {"network": args.network, "d_model": args.d_model, "num_layers": args.num_layers,
            "num_heads": args.num_heads, "context_length": args.context_length}


def env_kwargs(args: Args) -> dict[str, Any]:
    return {"max_episode_steps": args.max_episode_steps} if args.max_episode_steps else {}


def make_envs(env_id: str, args: Args):
    """A synchronous vector env whose rows reset in the step that ends them (the runner then restarts the row)."""
    import gymnasium as gym

    register()
    return gym.make_vec(env_id, num_envs=args.num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **env_kwargs(args))


def build_model(env_id: str, args: Args) -> PolicyModel:
    """A fresh policy for the env's spaces (a Box action as ``args.action_type``; no state normaliser)."""
    import gymnasium as gym

    register()
    env = gym.make(env_id)
    observation = observation_for_space(env.observation_space)
    box = type(env.action_space).__name__ == "Box"
    action = action_for_space(env.action_space, args.action_type if box else None)
    env.close()
    config = make_config(observation=observation, action=action, env_id=env_id, **model_kwargs(args))
    return init_weights(PolicyModel(config), seed=args.seed)


class RecordingRunner(PolicyRunner):
    """gptrl's torch runner, keeping each step's tokens and outputs and the latent it drew (the clipped Gaussian
    action or the Discrete index feeds the cache; the log-probability is the latent's)."""

    last: tuple[StepInputs, StepOutputs, np.ndarray]

    def _forward(self, step: StepInputs) -> StepOutputs:
        out, latent = self._forward_latent(step)
        self.last = (step, out, latent.cpu().numpy())
        return out


# ----------------------------------------------------------------------------- the rollout


@dataclass
class Rollout:
    """One sequence of tokens per row: the context kept from before the rollout, each step's token, and after an
    episode's last step (and at the rollout's end) the next slot's token, whose value is the bootstrap."""

    states: list[list[np.ndarray]]
    actions: list[list[np.ndarray]]  # env units, as the token feeds them
    is_bos: list[list[bool]]
    slot: list[list[int]]  # the slot within its episode
    episode: list[list[int]]  # a run-wide episode number (windows never attend across episodes)
    step: list[list[int]]  # the rollout step this token chose an action at, -1 for context and bootstrap tokens
    latent: np.ndarray  # [T, B, *latent]
    logp: np.ndarray  # [T, B]
    value: np.ndarray  # [T, B]
    reward: np.ndarray  # [T, B]
    terminated: np.ndarray  # [T, B]
    ended: np.ndarray  # [T, B] terminated or truncated
    cut: np.ndarray | None = None  # [T, B] a life lost (``life_loss_terminal``): terminal for GAE, the episode goes on
    teacher: np.ndarray | None = None  # [T, B] the scripted teacher's action at each step (``--teacher``)

    @property
    def num_envs(self) -> int:
        return len(self.states)


class Collector:
    """Drives the envs with the runner across updates; keeps each row's episode and its last tokens."""

    def __init__(self, env_id: str, model: PolicyModel, args: Args, seed: int):
        self.args, self.model = args, model
        self.envs = make_envs(env_id, args)
        self.runner = RecordingRunner(model, num_envs=args.num_envs, positions="per_row")
        self.runner.seed(seed)
        self.context = args.num_layers * args.context_length  # slots of history the refresh and windows use
        obs, _ = self.envs.reset(seed=seed)
        self.obs = obs
        self.runner.reset(obs)
        B = args.num_envs
        self.history: list[list[tuple]] = [[] for _ in range(B)]  # the row's fed tokens (s, a, bos, slot, ep)
        self.next_slot = np.zeros(B, np.int64)
        self.episode = np.arange(B, dtype=np.int64)
        self.episodes_begun = B
        self.returns_now = np.zeros(B)
        self.finished: list[float] = []  # returns of episodes that ended (for the progress line)
        self.lives: np.ndarray | None = None  # each row's lives after the last step (life_loss_terminal)
        if args.teacher and args.teacher not in TEACHERS:
            raise ValueError(f"--teacher {args.teacher!r}: one of {sorted(TEACHERS)}")
        self.teacher = TEACHERS.get(args.teacher)

    def collect(self) -> Rollout:
        args, runner, B, T = self.args, self.runner, self.args.num_envs, self.args.num_steps
        refresh_cache(runner, self.history, self.next_slot)
        seq = {k: [[] for _ in range(B)] for k in ("states", "actions", "is_bos", "slot", "episode", "step")}
        for r in range(B):
            for token in self.history[r]:
                _append(seq, r, *token, -1)
        codec = runner.config.action
        latent = np.zeros((T, B, *codec.shape), np.int64 if codec.dtype == "int64" else np.float32)
        logp, value, reward = (np.zeros((T, B), np.float32) for _ in range(3))
        terminated, ended, cut = np.zeros((T, B), bool), np.zeros((T, B), bool), np.zeros((T, B), bool)
        teacher = np.zeros((T, B), np.int64) if self.teacher else None
        for t in range(T):
            given = self.obs
            if teacher is not None:
                teacher[t] = [self.teacher(env.unwrapped) for env in self.envs.envs]
            actions, info = runner.act_with_info(given, deterministic=False)
            step, _, latent[t] = runner.last
            logp[t], value[t] = info["log_prob"], info["value"]
            for r in range(B):
                token = (step.states[r], step.actions[r], bool(step.is_bos[r]), int(self.next_slot[r]),
                         int(self.episode[r]))
                _append(seq, r, *token, t)
                self.history[r].append(token)
            self.next_slot += 1
            self.obs, rew, term, trunc, info = self.envs.step(actions)
            reward[t], terminated[t], ended[t] = rew * args.reward_scale, term, term | trunc
            if args.life_loss_terminal and "lives" in info:
                lives = np.asarray(info["lives"])
                if self.lives is not None:
                    cut[t] = ~ended[t] & (lives < self.lives)
                self.lives = lives
            self.returns_now += rew
            for r in np.flatnonzero(ended[t] | (t == T - 1)):  # the next slot's token: the bootstrap value
                _append(seq, r, np.reshape(given[r], step.states[r].shape), actions[r], False,
                        int(self.next_slot[r]), int(self.episode[r]), -1)  # the token's layout (a grid is flat)
            for r in np.flatnonzero(ended[t]):
                self.finished.append(float(self.returns_now[r]))
                self.returns_now[r], self.next_slot[r] = 0.0, 0
                self.history[r] = []
                self.episode[r] = self.episodes_begun
                self.episodes_begun += 1
            if ended[t].any():
                runner.reset_rows(ended[t])  # the reset observation becomes the row's s0
            for r in range(B):
                self.history[r] = self.history[r][-self.context:]
        return Rollout(**seq, latent=latent, logp=logp, value=value, reward=reward, terminated=terminated,
                       ended=ended, cut=cut, teacher=teacher)


def _append(seq: dict, r: int, state, action, is_bos: bool, slot: int, episode: int, step: int) -> None:
    for key, value in zip(("states", "actions", "is_bos", "slot", "episode", "step"),
                          (state, action, is_bos, slot, episode, step)):
        seq[key][r].append(value)


@torch.no_grad()
def refresh_cache(runner: PolicyRunner, history: list[list[tuple]], next_slot: np.ndarray) -> None:
    """Rebuild each row's cached keys and values under the current weights from its last tokens (the window they open
    in training), so the rollout acts as the windows will recompute it."""
    rows = [r for r in range(len(history)) if history[r]]
    if not rows:
        return
    L = max(len(history[r]) for r in rows)
    model, state = runner.model, runner.state
    obs_shape, act = history[rows[0]][0][0].shape, history[rows[0]][0][1]
    states = np.zeros((len(rows), L, *obs_shape), history[rows[0]][0][0].dtype)
    actions = np.zeros((len(rows), L, *act.shape), act.dtype)
    is_bos, valid = np.zeros((len(rows), L), bool), np.zeros((len(rows), L), bool)
    slot = np.zeros((len(rows), L), np.int64)  # the history is one episode's
    for k, r in enumerate(rows):
        n = len(history[r])
        for j, (s, a, b, i, _) in enumerate(history[r]):
            states[k, L - n + j], actions[k, L - n + j], is_bos[k, L - n + j], slot[k, L - n + j] = s, a, b, i
        valid[k, L - n:] = True
    positions, attn = cache_window(slot, valid, runner.kv_cache_max_len)
    kv: list = []
    model.features(*(torch.from_numpy(x) for x in (states, actions, is_bos)), positions=torch.from_numpy(positions),
                   attn_mask=torch.from_numpy(attn), kv_out=kv)
    ring = state.ring_size
    for k, r in enumerate(rows):
        for back in range(1, min(int(next_slot[r]) - 1, runner.kv_cache_max_len) + 1):  # slot next - back, >= 1
            index = (state.written - back) % ring
            if not state.valid[r, index]:
                raise RuntimeError(f"row {r}: ring slot {index} (episode slot {int(next_slot[r]) - back}) is not "
                                   "one the row attends to; the history and the runner's cache disagree")
            for (cache_k, cache_v), (key, value) in zip(runner._cache, kv):
                cache_k[r, :, index] = key[k, :, L - back]
                cache_v[r, :, index] = value[k, :, L - back]


# ----------------------------------------------------------------------------- the update


@dataclass
class Batch:
    """Training windows [W, L, ...] over the rollout; ``counted`` marks the slots that chose an action."""

    states: torch.Tensor
    actions: torch.Tensor
    is_bos: torch.Tensor
    positions: torch.Tensor
    attn_mask: torch.Tensor
    counted: torch.Tensor
    latent: torch.Tensor
    logp: torch.Tensor
    value: torch.Tensor
    advantage: torch.Tensor
    returns: torch.Tensor
    teacher: torch.Tensor  # the scripted teacher's action (zeros without one)

    def take(self, index: torch.Tensor) -> Batch:
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def windows(ro: Rollout, context: int, chunk: int) -> dict[str, np.ndarray]:
    """Every row's sequence cut into windows of up to ``context`` slots of context and ``chunk`` new slots: [W, L]
    arrays; ``step`` is the rollout step each new slot chose an action at (-1: none, and for context slots), ``new``
    marks the new slots (each token is new in exactly one window), ``row`` and ``index`` place a slot in its row."""
    L = context + chunk
    out: dict[str, list] = {k: [] for k in ("states", "actions", "is_bos", "slot", "episode", "step", "valid", "new",
                                              "row", "index")}
    for r in range(ro.num_envs):
        n = len(ro.slot[r])
        first = next(k for k, s in enumerate(ro.step[r]) if s >= 0)  # the context tokens come first
        for c0 in range(first, n, chunk):
            lo = max(0, c0 - context)
            idx = np.arange(lo, lo + L)
            ok = idx < min(n, c0 + chunk)
            take = np.minimum(idx, n - 1)
            for key in ("states", "actions", "is_bos", "slot", "episode", "step"):
                out[key].append(np.asarray(ro.__dict__[key][r])[take])
            new = ok & (idx >= c0)
            out["step"][-1] = np.where(new, out["step"][-1], -1)  # context slots are counted in their own window
            out["valid"].append(ok), out["new"].append(new), out["row"].append(np.full(L, r)), out["index"].append(take)
    return {k: np.stack(v) for k, v in out.items()}


def advantages(ro: Rollout, value: np.ndarray, next_value: np.ndarray, gamma: float,
               lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE [T, B] and the returns it implies; ``value`` [T, B] is each step's value, ``next_value`` [T, B] the
    value of its next slot."""
    T = len(ro.reward)
    adv = np.zeros_like(ro.reward)
    last = np.zeros(ro.num_envs, np.float32)
    cut = ro.cut if ro.cut is not None else np.zeros_like(ro.ended)
    for t in range(T - 1, -1, -1):
        delta = ro.reward[t] + gamma * next_value[t] * (1.0 - (ro.terminated[t] | cut[t])) - value[t]
        continues = (t < T - 1) & ~ro.ended[t] & ~cut[t]
        last = delta + gamma * lam * continues * last
        adv[t] = last
    return adv, adv + value


def ppo_losses(model: PolicyModel, b: Batch, args: Args, critic: PolicyModel | None = None,
               teacher_coef: float = 0.0) -> dict[str, torch.Tensor]:
    """The clipped surrogate, the (clipped) value loss and the entropy over the counted slots (the codec's
    log-probability and entropy); the value is ``critic``'s where there is one. With ``teacher_coef`` > 0 the
    teacher's cross-entropy (minus the log-probability of its action) is added with that weight."""
    out = model(b.states, b.actions, b.is_bos, positions=b.positions, attn_mask=b.attn_mask)
    values = out.value if critic is None else critic(b.states, b.actions, b.is_bos, positions=b.positions,
                                                       attn_mask=b.attn_mask).value
    codec, ops, m = model.codec, model.ops, b.counted
    logp = codec.latent_log_prob(ops, out.params, b.latent)[m]
    entropy = codec.entropy(ops, out.params)[m].mean()
    log_ratio = logp - b.logp[m]
    ratio = log_ratio.exp()
    adv = b.advantage[m]
    if args.norm_adv and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
    value, old, ret = values[m], b.value[m], b.returns[m]
    if args.clip_vloss:
        clipped = old + (value - old).clamp(-args.clip_coef, args.clip_coef)
        v_loss = 0.5 * torch.max((value - ret) ** 2, (clipped - ret) ** 2).mean()
    else:
        v_loss = 0.5 * ((value - ret) ** 2).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
    loss = pg - args.ent_coef * entropy + args.vf_coef * v_loss
    stats = {"pg": pg, "value": v_loss, "entropy": entropy, "approx_kl": approx_kl, "clipfrac": clipfrac}
    if teacher_coef > 0:
        stats["teacher_ce"] = -codec.latent_log_prob(ops, out.params, b.teacher)[m].mean()
        loss = loss + teacher_coef * stats["teacher_ce"]
    return {"loss": loss, **stats}


def make_batch(model: PolicyModel, ro: Rollout, args: Args,
               critic: PolicyModel | None = None) -> tuple[Batch, dict[str, float]]:
    """The rollout's training windows with advantages and returns; the pre-update pass gives the values (``critic``'s
    where there is one), the bootstrap values and the largest differences from the rollout's log-probabilities and
    values (both should be float noise)."""
    w = windows(ro, args.num_layers * args.context_length, args.chunk)
    positions, attn = cache_window(w["slot"], w["valid"], args.context_length, w["episode"])
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))
    states, actions, is_bos = t(w["states"]), t(w["actions"]), t(w["is_bos"])
    counted = w["step"] >= 0
    step, row = np.where(counted, w["step"], 0), w["row"]
    latent = ro.latent[step, row]
    with torch.no_grad():
        out = model(states, actions, is_bos, positions=t(positions), attn_mask=t(attn))
        logp = model.codec.latent_log_prob(model.ops, out.params, t(latent)).numpy()
        values = (out if critic is None else critic(states, actions, is_bos, positions=t(positions),
                                                    attn_mask=t(attn))).value.numpy()
    # The value of each step's next slot: the next token of the row's sequence (same episode by construction), as
    # computed in the window where it is new (with its whole receptive field).
    seq_value: dict[tuple[int, int], float] = {}
    for k in zip(*np.nonzero(w["new"])):
        seq_value[(int(row[k]), int(w["index"][k]))] = float(values[k])
    value, next_value = np.zeros_like(ro.value), np.zeros_like(ro.value)
    for r in range(ro.num_envs):
        for n, s in enumerate(ro.step[r]):
            if s >= 0:
                value[s, r], next_value[s, r] = seq_value[(r, n)], seq_value[(r, n + 1)]
    adv, ret = advantages(ro, value, next_value, args.gamma, args.gae_lambda)
    check = {"logp_error": float(np.abs(logp[counted] - ro.logp[step, row][counted]).max())}
    if critic is None:  # the rollout's values are the shared trunk's
        check["value_error"] = float(np.abs(values[counted] - ro.value[step, row][counted]).max())
    teacher = ro.teacher[step, row] if ro.teacher is not None else np.zeros(counted.shape, np.int64)
    batch = Batch(states, actions, is_bos, t(positions), t(attn), t(counted), t(latent), t(ro.logp[step, row]),
                  t(value[step, row]), t(adv[step, row]), t(ret[step, row]), t(teacher))
    return batch, check


def update(model: PolicyModel, opt: torch.optim.Optimizer, ro: Rollout, args: Args,
           critic: PolicyModel | None = None, teacher_coef: float = 0.0) -> dict[str, float]:
    """PPO's passes over one rollout; returns the last minibatch's statistics and the pre-update check."""
    model.train()
    batch, check = make_batch(model, ro, args, critic)
    W = batch.states.shape[0]
    size = max(1, W // args.num_minibatches)
    stats: dict[str, torch.Tensor] = {}
    epochs = 0
    for _ in range(args.update_epochs):
        epochs += 1
        order = torch.randperm(W)
        for start in range(0, W, size):
            mb = batch.take(order[start:start + size])
            if not mb.counted.any():
                continue
            stats = ppo_losses(model, mb, args, critic, teacher_coef)
            opt.zero_grad(set_to_none=True)
            stats["loss"].backward()
            for module in (model, critic):
                if module is not None:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), args.max_grad_norm)
            opt.step()
        if args.target_kl and stats and stats["approx_kl"] > args.target_kl:
            break
    model.eval()
    return {**{k: round(float(v.detach()), 6) for k, v in stats.items()}, "epochs": epochs, **check}


# ----------------------------------------------------------------------------- the run


def _no_step_loss():
    raise RuntimeError("PPO steps in ppo.update, not in loop.run")


def train(env_id: str, out: Path, args: Args, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) under ``args``; the best held-out candidate ends in ``out/best``. Returns the run's state."""
    from tqdm import tqdm

    if args.device != "cpu":
        raise ValueError(f"--device {args.device!r}: PPO runs on the CPU for now")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    if args.critic not in ("shared", "separate"):
        raise ValueError(f"--critic {args.critic!r}: 'shared' or 'separate'")
    model = build_model(env_id, args)
    critic = build_model(env_id, replace(args, seed=args.seed + 1)) if args.critic == "separate" else None
    trained = model if critic is None else torch.nn.ModuleDict({"actor": model, "critic": critic})
    opt = torch.optim.Adam(param_groups(trained, args), lr=args.lr, eps=1e-5)
    sampler = np.random.default_rng(args.seed)
    learner = loop.Learner(trained, opt, _no_step_loss, lambda f: _write_candidate(model, f),
                           lambda f: _measure(env_id, f, args), sampler, identity={"env_id": env_id},
                           loss_name="train_return")
    state = loop.resume(learner, args, out / "checkpoint.pt")
    state.setdefault("update", 0)
    per_update = args.num_envs * args.num_steps
    updates = args.total_timesteps // per_update
    collector = Collector(env_id, model, args, seed=args.seed + 7919 * state["update"])
    collector.runner._rng = sampler  # the sampler's state is saved and restored with the checkpoint
    started = time.time() - (state["history"][-1]["seconds"] if state["history"] else 0.0)
    bar = tqdm(total=updates * per_update, initial=state["update"] * per_update, desc=f"ppo {env_id}", unit="step",
               disable=not progress)
    while state["update"] < updates:
        for group in opt.param_groups:
            group["lr"] = loop.lr_at(state["update"], group.get("initial_lr", args.lr), 0, updates, 0.0) \
                if args.anneal_lr else group.get("initial_lr", args.lr)
        rollout = collector.collect()
        stats = update(model, opt, rollout, args, critic, teacher_weight(args, state["update"], updates))
        state["update"] += 1
        state["step"] = state["update"] * per_update
        recent = collector.finished[-20:]
        running = round(float(np.mean(recent)), 2) if recent else 0.0  # no episode has ended yet
        state.setdefault("updates", []).append({"step": state["step"], "train_return": running, **stats})
        bar.update(per_update)
        bar.set_postfix({"return": f"{running:.1f}", "kl": f"{stats.get('approx_kl', 0):.4f}"})
        if state["update"] % args.eval_every == 0 or state["update"] == updates:
            record = loop.evaluate_candidate(learner, out, state, running, started)
            record.update({k: stats[k] for k in ("logp_error", "value_error") if k in stats})
            bar.write(json.dumps(record))
            loop.save_checkpoint(learner, args, state, out, {"env_id": env_id, "algorithm": "ppo"})
            plot_curve(state["history"], out / "learning_curve.png", title=f"PPO {env_id}")
    bar.close()
    collector.envs.close()
    return state


def param_groups(module: torch.nn.Module, args: Args) -> list[dict[str, Any]]:
    """Adam's groups: the observation encoder's weights (``state_encoder.*``, in the actor and any critic) at
    ``encoder_lr`` when it is set, everything else at ``lr``; each group's ``initial_lr`` is what the schedule
    anneals."""
    encoder, rest = [], []
    for name, p in module.named_parameters():
        (encoder if args.encoder_lr and "state_encoder." in name else rest).append(p)
    groups = [{"params": rest, "lr": args.lr, "initial_lr": args.lr}]
    if encoder:
        groups.append({"params": encoder, "lr": args.encoder_lr, "initial_lr": args.encoder_lr})
    return groups


def teacher_weight(args: Args, update: int, updates: int) -> float:
    """The teacher's cross-entropy weight at an update: ``teacher_coef`` falling linearly to 0 at
    ``teacher_fraction`` of the run (0 without a teacher)."""
    if not args.teacher or args.teacher_fraction <= 0:
        return 0.0
    return args.teacher_coef * max(0.0, 1.0 - update / (args.teacher_fraction * updates))


def _write_candidate(model: PolicyModel, folder: Path) -> None:
    from gptrl.exporter import export_bundle

    export_bundle(model, folder, overwrite=True)


def _measure(env_id: str, folder: Path, args: Args) -> dict[str, Any]:
    """The candidate's greedy return on the ONNX runtime over held-out seeds, each episode to the env's time limit."""
    import gymnasium as gym

    from gptrl.evaluation import evaluate
    from gptrl.exporter import export_onnx
    from gptrl.runtime import load_policy

    export_onnx(folder)
    n = args.eval_episodes
    result = evaluate(env_id, load_policy(folder, num_envs=n), seeds=range(args.eval_seed, args.eval_seed + n),
                      num_envs=n, env_kwargs=env_kwargs(args) or None,
                      max_steps=args.max_episode_steps or gym.spec(env_id).max_episode_steps or 1000)
    return {"return_mean": round(result["return_mean"], 2), "return_std": round(result["return_std"], 2),
            "length_mean": result["length_mean"]}


def plot_curve(history: list[dict], path: Path, title: str) -> Path:
    from gptrl.training.plots import plot_learning_curve

    return plot_learning_curve(history, path, title=title)


def bundle_name(env_id: str) -> str:
    """A bundle folder's name for an env: its id without the namespace, lowercased (gptrl/AsciiBreakout-v0 ->
    asciibreakout-v0)."""
    return env_id.split("/")[-1].lower()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--out", type=Path, help="run folder (default runs/ppo/ENV)")
    p.add_argument("--publish", type=Path, nargs="?", const=True, default=None,
                   help="copy the best candidate into a bundle folder (default bundles/BUNDLE_NAME, see bundle_name)")
    add_arguments(p, Args)
    p.set_defaults(**PRESETS.get(p.parse_known_args(argv)[0].env_id, {}))  # the env's preset, under any flag given
    a = p.parse_args(argv)
    args = from_namespace(Args, a)
    out = a.out or Path("runs/ppo") / a.env_id
    state = train(a.env_id, out, args)
    print(f"best: {json.dumps(state['best'])}")
    if a.publish is not None:
        dest = Path("bundles") / bundle_name(a.env_id) if a.publish is True else a.publish
        print(f"published {loop.publish(out / 'best', dest)}; its card: python -m gptrl.training.ppo_card {dest}")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.ppo", main))
