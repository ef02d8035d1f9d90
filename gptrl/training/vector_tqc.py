"""TQC for many CPU envs and one GPU: a teacher that trades gradient steps for cheap env steps.

``gptrl.training.teacher`` runs Stable-Baselines3 with one env and one batch-256 gradient step per env step: on
two CPU cores Humanoid needs 30+ hours for the 2M steps the RL Zoo's TQC takes. Here ``num_envs`` envs step in
their own processes while the GPU takes ``updates_per_step`` large-batch gradient steps (the replay buffer lives
on the device), and the critics are one batched ensemble (a few kernels per layer, not one per critic).

The algorithm is TQC (Kuznetsov et al. 2020): ``n_critics`` distributional critics of ``n_quantiles`` atoms,
the top ``drop_per_net`` atoms per critic dropped from the pooled target, SAC's squashed-Gaussian actor with
automatic entropy. Snapshots use ``gptrl.training.teacher``'s format (``actors/step_*.safetensors`` with the
quick evaluation in their metadata, ``progress.csv``), so ``teacher ENV --publish-only --publish --out DIR``
picks the expert and medium actors from them.

Resumable: every ``--snapshot-every`` env steps the networks, optimisers and counters go to ``state.pt``. The
replay buffer is not saved (a few GB on Humanoid): a resumed run refills it with ``learning_starts`` steps of
its current policy before updating again.

    python -m gptrl.training.vector_tqc Humanoid-v5 --out runs/teachers/Humanoid-v5-vector --num-envs 16
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from gptrl.fileio import atomic_path, read_json, write_json
from gptrl.training.snapshots import log_snapshot, save_snapshot
from gptrl.training.teacher_actor import LOG_STD_MAX, LOG_STD_MIN, TeacherActor


@dataclass
class Args:
    """Hyper-parameters; the defaults are the TQC paper's (5 critics of 25 atoms, 2 dropped per critic,
    512-wide 3-layer critics, 256-wide 2-layer actor, lr 3e-4, gamma 0.99, tau 0.005)."""

    env_id: str
    out: Path
    steps: int = 3_000_000  # total env steps over all envs
    num_envs: int = 16  # envs stepped together, one process each
    updates_per_step: int = 8  # gradient steps per vector step: updates per env step = this / num_envs
    batch_size: int = 1024  # transitions per gradient step
    learning_starts: int = 10_000  # env steps of uniform random actions before the first update
    buffer_size: int = 2_000_000  # replay capacity in transitions (held on the device)
    lr: float = 3e-4  # Adam, all three optimisers
    gamma: float = 0.99  # discount
    tau: float = 0.005  # target critics' Polyak step
    n_critics: int = 5  # distributional critics, one batched ensemble
    n_quantiles: int = 25  # atoms per critic
    drop_per_net: int = 2  # top atoms dropped per critic from the pooled target
    actor_hidden: tuple[int, ...] = (256, 256)  # ReLU widths of the actor (the committed teacher)
    critic_hidden: tuple[int, ...] = (512, 512, 512)  # ReLU widths of each critic
    snapshot_every: int = 50_000  # env steps between actor snapshots (evaluated in a side process) and state.pt
    eval_episodes: int = 5  # episodes of each snapshot's quick evaluation
    max_minutes: float | None = None  # stop (after a snapshot) once this much wall time has passed
    device: str = "auto"  # "auto": cuda when available
    cuda_graph: int = 1  # on CUDA, replay each update as a CUDA graph (0: eager, for comparison)
    seed: int = 0  # networks, warm-up actions and env resets

    # What must match for a run folder to be resumed (the rest may change between invocations).
    RUN_KEYS = ("env_id", "num_envs", "n_critics", "n_quantiles", "drop_per_net", "actor_hidden", "critic_hidden",
                "seed")


def _torch():
    import torch

    return torch


def _ensemble_linear(n: int, fan_in: int, fan_out: int):
    """Weights ``(n, fan_in, fan_out)`` and biases ``(n, 1, fan_out)`` initialised like ``nn.Linear``."""
    torch = _torch()
    bound = 1.0 / math.sqrt(fan_in)
    w = torch.nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound))
    b = torch.nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound))
    return w, b


def make_critics(obs_dim: int, act_dim: int, a: Args):
    """``n_critics`` quantile critics as one module: ``(obs, act) -> (n_critics, batch, n_quantiles)``."""
    torch = _torch()

    class Critics(torch.nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [obs_dim + act_dim, *a.critic_hidden, a.n_quantiles]
            self.weights = torch.nn.ParameterList()
            self.biases = torch.nn.ParameterList()
            for fan_in, fan_out in itertools.pairwise(sizes):
                w, b = _ensemble_linear(a.n_critics, fan_in, fan_out)
                self.weights.append(w)
                self.biases.append(b)

        def forward(self, obs, act):
            h = torch.cat([obs, act], dim=-1).expand(a.n_critics, -1, -1)
            last = len(self.weights) - 1
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = torch.baddbmm(b, h, w)
                if i < last:
                    h = torch.relu(h)
            return h

    return Critics()


def make_actor(obs_dim: int, act_dim: int, a: Args):
    """SAC's actor: ReLU MLP, mean and log-std heads; ``sample`` returns a tanh-squashed action and its log-prob."""
    torch = _torch()
    nn = torch.nn

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            layers, fan_in = [], obs_dim
            for width in a.actor_hidden:
                layers += [nn.Linear(fan_in, width), nn.ReLU()]
                fan_in = width
            self.latent = nn.Sequential(*layers)
            self.mu = nn.Linear(fan_in, act_dim)
            self.log_std = nn.Linear(fan_in, act_dim)

        def sample(self, obs):
            h = self.latent(obs)
            mean = self.mu(h)
            log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
            std = log_std.exp()
            u = mean + std * torch.randn_like(mean)
            act = torch.tanh(u)
            # log N(u; mean, std) minus log|d tanh/du|, summed over action dims (SB3's epsilon 1e-6).
            logp = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            logp = logp - torch.log(1.0 - act.pow(2) + 1e-6).sum(-1)
            return act, logp

        def to_teacher(self, low: np.ndarray, high: np.ndarray, info: dict) -> TeacherActor:
            as_np = lambda t: t.detach().cpu().numpy().astype(np.float32)
            linears = [m for m in self.latent if isinstance(m, nn.Linear)]
            return TeacherActor(hidden=[(as_np(m.weight), as_np(m.bias)) for m in linears],
                                mean=(as_np(self.mu.weight), as_np(self.mu.bias)),
                                log_std=(as_np(self.log_std.weight), as_np(self.log_std.bias)),
                                action_low=np.asarray(low, np.float32), action_high=np.asarray(high, np.float32),
                                info=info)

    return Actor()


class ReplayBuffer:
    """A ring of transitions held as tensors on the training device (actions in the [-1, 1] squashed scale)."""

    def __init__(self, size: int, obs_dim: int, act_dim: int, device):
        torch = _torch()
        self.size, self.device, self.ptr, self.full = size, device, 0, False
        self.obs = torch.zeros(size, obs_dim, device=device)
        self.next_obs = torch.zeros(size, obs_dim, device=device)
        self.act = torch.zeros(size, act_dim, device=device)
        self.rew = torch.zeros(size, device=device)
        self.term = torch.zeros(size, device=device)
        self.count = torch.zeros((), device=device)  # len(self) on the device, so a CUDA graph can sample too

    def __len__(self) -> int:
        return self.size if self.full else self.ptr

    def add(self, obs, act, rew, next_obs, term) -> None:
        torch = _torch()
        n = len(obs)
        idx = torch.arange(self.ptr, self.ptr + n, device=self.device) % self.size
        for buf, x in ((self.obs, obs), (self.act, act), (self.rew, rew), (self.next_obs, next_obs),
                       (self.term, term)):
            buf[idx] = torch.as_tensor(np.asarray(x, np.float32), device=self.device)
        self.full = self.full or self.ptr + n >= self.size
        self.ptr = (self.ptr + n) % self.size
        self.count.fill_(len(self))

    def sample(self, batch: int):
        torch = _torch()
        idx = (torch.rand(batch, device=self.device) * self.count).long().clamp_(max=self.size - 1)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.term[idx]


def quantile_huber_loss(current, target):
    """TQC's loss: ``current`` (n_critics, batch, n_quantiles) regressed on every atom of ``target`` (batch, k)."""
    torch = _torch()
    n_quantiles = current.shape[-1]
    delta = target[None, :, None, :] - current[..., None]  # (critics, batch, quantiles, k)
    abs_delta = delta.abs()
    huber = torch.where(abs_delta > 1.0, abs_delta - 0.5, 0.5 * delta**2)
    tau = (torch.arange(n_quantiles, device=current.device, dtype=current.dtype) + 0.5) / n_quantiles
    return ((tau[None, None, :, None] - (delta.detach() < 0).to(current.dtype)).abs() * huber).mean()


class TQC:
    """Networks, optimisers and one gradient step."""

    def __init__(self, obs_dim: int, act_dim: int, a: Args, device):
        torch = _torch()
        self.a, self.device = a, device
        self.actor = make_actor(obs_dim, act_dim, a).to(device)
        self.critics = make_critics(obs_dim, act_dim, a).to(device)
        self.critics_target = make_critics(obs_dim, act_dim, a).to(device)
        self.critics_target.load_state_dict(self.critics.state_dict())
        self.critics_target.requires_grad_(False)
        self.log_alpha = torch.zeros(1, device=device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        # On CUDA the optimiser state stays on the device (capturable) so a whole update can be a CUDA graph.
        fused = {"fused": True, "capturable": True} if torch.device(device).type == "cuda" else {}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=a.lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=a.lr, **fused)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=a.lr, **fused)
        self.keep = a.n_critics * (a.n_quantiles - a.drop_per_net)  # pooled atoms kept in the target
        self.updates = 0
        self.graph = None

    def capture(self, buffer: ReplayBuffer, warmup: int = 3) -> None:
        """Record one update (sampling included) as a CUDA graph: replaying it skips ~300 kernel launches from
        Python, which bound an eager update of these small networks. Warm-up updates run on a side stream first,
        as CUDA graph capture requires; they are real updates."""
        torch = _torch()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._update(buffer)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.graph_stats = self._update(buffer)
        self.updates += warmup

    def update(self, buffer: ReplayBuffer) -> dict:
        """One gradient step (a graph replay once ``capture`` has run); the stats are device tensors."""
        self.updates += 1
        if self.graph is None:
            return self._update(buffer)
        self.graph.replay()
        return self.graph_stats

    def _update(self, buffer: ReplayBuffer) -> dict:
        torch = _torch()
        a = self.a
        obs, act, rew, next_obs, term = buffer.sample(a.batch_size)

        # Entropy temperature first (SB3's order), then the critics and the actor at that temperature.
        new_act, logp = self.actor.sample(obs)
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)
            z = self.critics_target(next_obs, next_act)  # (critics, batch, quantiles)
            z = z.permute(1, 0, 2).reshape(a.batch_size, -1).sort(dim=1).values[:, : self.keep]
            target = rew[:, None] + (1.0 - term[:, None]) * a.gamma * (z - alpha * next_logp[:, None])
        critic_loss = quantile_huber_loss(self.critics(obs, act), target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        self.critics.requires_grad_(False)
        q = self.critics(obs, new_act).mean(dim=(0, 2))
        actor_loss = (alpha * logp - q).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critics.requires_grad_(True)

        with torch.no_grad():
            torch._foreach_lerp_(list(self.critics_target.parameters()), list(self.critics.parameters()), a.tau)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha.detach()}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critics": self.critics.state_dict(),
                "critics_target": self.critics_target.state_dict(), "log_alpha": self.log_alpha.detach().cpu(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, s: dict) -> None:
        torch = _torch()
        self.actor.load_state_dict(s["actor"])
        self.critics.load_state_dict(s["critics"])
        self.critics_target.load_state_dict(s["critics_target"])
        with torch.no_grad():
            self.log_alpha.copy_(s["log_alpha"])
        self.actor_opt.load_state_dict(s["actor_opt"])
        self.critic_opt.load_state_dict(s["critic_opt"])
        self.alpha_opt.load_state_dict(s["alpha_opt"])
        self.updates = s["updates"]


def _run_info(a: Args) -> dict:
    d = {k: v for k, v in asdict(a).items() if k in Args.RUN_KEYS}
    return {**d, "algo": "tqc", "trainer": "vector_tqc", "actor_hidden": list(a.actor_hidden),
            "critic_hidden": list(a.critic_hidden)}


def train(a: Args) -> Path:
    """Train (or continue) until ``a.steps`` env steps or ``a.max_minutes``; returns the run folder."""
    import multiprocessing as mp

    import gymnasium as gym

    out = a.out
    (out / "actors").mkdir(parents=True, exist_ok=True)
    info_path, state_path = out / "run.json", out / "state.pt"
    run_info = _run_info(a)
    if info_path.exists() and read_json(info_path) != run_info:
        raise FileExistsError(f"{info_path} holds a different run ({info_path.read_text().strip()}); "
                              "pick another --out")
    write_json(info_path, run_info, indent=None)

    # Env worker processes first, before CUDA is initialised in this one.
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make(a.env_id)] * a.num_envs,
                                     autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    evaluator = mp.get_context("spawn").Pool(1)
    torch = _torch()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(a.seed)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    low, high = envs.single_action_space.low, envs.single_action_space.high
    agent = TQC(obs_dim, act_dim, a, device)
    steps = 0
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        agent.load_state_dict(state["agent"])
        steps = state["steps"]
        print(f"resuming {a.env_id} vector TQC at {steps} env steps ({agent.updates} updates); "
              f"refilling the replay buffer first", flush=True)
    warmup_until = steps + a.learning_starts
    buffer = ReplayBuffer(min(a.buffer_size, max(a.steps, a.num_envs)), obs_dim, act_dim, device)
    rng = np.random.default_rng(a.seed + steps)
    obs, _ = envs.reset(seed=a.seed + steps)
    started, updates_at_start, steps_at_start = time.time(), agent.updates, steps
    next_snapshot = (steps // a.snapshot_every + 1) * a.snapshot_every
    episode_returns, running = [], np.zeros(a.num_envs)
    pending, stats = [], {}

    def log_eval(result):  # runs in this process when the side process is done
        n, mean, std = result
        log_snapshot(out, a.env_id, n, time.time() - started, mean, std)

    try:
        while steps < a.steps:
            learning = steps >= warmup_until
            if not learning and agent.updates == 0:  # a fresh run explores uniformly; a resumed one with its policy
                act = rng.uniform(-1.0, 1.0, (a.num_envs, act_dim)).astype(np.float32)
            else:
                with torch.no_grad():
                    act = agent.actor.sample(torch.as_tensor(obs, dtype=torch.float32, device=device))[0]
                act = act.cpu().numpy()
            envs.step_async(low + 0.5 * (act + 1.0) * (high - low))
            if learning and len(buffer) >= a.batch_size:
                if a.cuda_graph and agent.graph is None and device == "cuda":
                    agent.capture(buffer)
                    print(f"captured the update as a CUDA graph after {agent.updates} updates", flush=True)
                for _ in range(a.updates_per_step):
                    stats = agent.update(buffer)
            next_obs, rew, term, trunc, info = envs.step_wait()
            real_next = next_obs.copy()
            done = term | trunc
            for i in np.flatnonzero(done):
                real_next[i] = info["final_obs"][i]
            buffer.add(obs, act, rew, real_next, term)
            running += rew
            episode_returns += running[done].tolist()
            running[done] = 0.0
            obs = next_obs
            steps += a.num_envs
            minutes = (time.time() - started) / 60
            out_of_time = a.max_minutes is not None and minutes >= a.max_minutes
            if steps >= next_snapshot or steps >= a.steps or out_of_time:
                next_snapshot += a.snapshot_every
                teacher = agent.actor.to_teacher(low, high, {**run_info, "steps": steps, "updates": agent.updates})
                path = out / "actors" / f"step_{steps:09d}.safetensors"
                pending.append(evaluator.apply_async(save_snapshot,
                                                     (teacher, a.env_id, a.eval_episodes, str(path)),
                                                     callback=log_eval))
                with atomic_path(state_path) as tmp:
                    torch.save({"agent": agent.state_dict(), "steps": steps, "args": asdict(a)}, tmp)
                recent, nan = episode_returns[-20:], float("nan")
                seconds = max(time.time() - started, 1e-9)
                print(f"{a.env_id} step {steps}: {agent.updates} updates; this run "
                      f"{(steps - steps_at_start) / seconds:.0f} env steps/s, "
                      f"{(agent.updates - updates_at_start) / seconds:.0f} updates/s; train return "
                      f"{np.mean(recent) if recent else float('nan'):.1f} (last {len(recent)}), alpha "
                      f"{float(stats.get('alpha', nan)):.4f}, critic loss {float(stats.get('critic_loss', nan)):.3f}",
                      flush=True)
                if out_of_time:
                    break
    finally:
        envs.close()
        for job in pending:
            job.wait()
        evaluator.close()
        evaluator.join()
    return out


def _field_help() -> dict[str, str]:
    """Each ``Args`` field's trailing comment, so ``--help`` explains the flags from the one place they are written."""
    import inspect
    import re

    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.+)$", inspect.getsource(Args), re.M)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--out", type=Path, help="run folder (default runs/teachers/ENV-vector)")
    helps = _field_help()
    for f in fields(Args):
        if f.name in ("env_id", "out"):
            continue
        flag, help_ = "--" + f.name.replace("_", "-"), helps.get(f.name, "") + " (default: %(default)s)"
        if f.name.endswith("_hidden"):
            p.add_argument(flag, type=int, nargs="+", default=list(f.default), help=help_)
        elif f.name == "max_minutes":
            p.add_argument(flag, type=float, default=None, help=help_)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=help_)
    ns = vars(p.parse_args(argv))
    ns["out"] = ns["out"] or Path("runs/teachers") / f"{ns['env_id']}-vector"
    ns["actor_hidden"], ns["critic_hidden"] = tuple(ns["actor_hidden"]), tuple(ns["critic_hidden"])
    a = Args(**ns)
    if a.drop_per_net >= a.n_quantiles:
        raise ValueError(f"--drop-per-net {a.drop_per_net} leaves no atoms of {a.n_quantiles}")
    print(f"run folder: {train(a)}")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.vector_tqc", main))
