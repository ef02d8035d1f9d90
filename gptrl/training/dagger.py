"""DAgger for the causal transformer student: it drives, the teacher labels, the data grows where it goes wrong.

Behaviour cloning only ever sees the teacher's states; where the student drifts off them (a Humanoid starting
to fall) it has no data, so it falls. Each round here:

1. rolls the current student out on the ONNX runtime exactly as it is evaluated (one token per step through its
   KV cache, each episode from an empty cache). At each step the expert acts instead with probability beta (the
   ``imitation`` library's linear schedule; the recipe's datasets are round 0, beta 1), drawn from the episode's
   own generator, so an episode is the same in this process or in a Ray worker (``--ray``, ``gptrl.executor``);
   the cache then records the action really taken (``Policy.observe``). (Rounds collected before the draws were
   per episode shared one draw per step across a wave of 25 envs; their ``rollout.json`` lacks
   ``expert_draws``.)
2. labels every visited state with the expert's deterministic action and stores the round's episodes as a Minari
   dataset, ``gptrl/<slug>/dagger-r<k>-v0``;
3. trains the student further on the recipe's datasets plus every round's (the shared loop of
   ``gptrl.training.train``), exporting a candidate every ``eval_every`` steps and evaluating it on
   ``select_episodes`` held-out seeds (never the card's 0..49) with its falls counted.

The best of the starting student and every round's best candidate, on those seeds, is the result.

    python -m gptrl.training.dagger Humanoid-v5 --publish        (make dagger ENV=Humanoid-v5)

Resumable per round: ``runs/dagger/ENV/dagger.json`` lists finished rounds, a round's rollout stage ends with its
``rollout.json`` (written after its dataset), and its training resumes from its own checkpoint. Each round's
student stays in ``round-<k>/best``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from gptrl.fileio import atomic_dir, read_json, sha256_file, write_json
from gptrl.training.datasets import (
    load_episodes,
    play_episode,
    refuse_existing,
    store_dataset,
    use_datasets_path,
)
from gptrl.training.recipes import Recipe, get_recipe
from gptrl.training.teacher_actor import TeacherActor, load_teacher_actor
from gptrl.training.train import TrainConfig, falls, publish, train


@dataclass
class Args:
    rounds: int = field(default=3, metadata={"help": "DAgger rounds after the recipe's datasets (round 0)"})
    episodes: int = field(default=50, metadata={"help": "student episodes rolled out and labelled per round"})
    rampdown_rounds: int = field(default=2, metadata={
        "help": "beta, the chance that the expert acts at a step, is max(0, 1 - round / rampdown_rounds)"})
    num_envs: int = field(default=25, metadata={"help": "envs stepped together in selection and confirmation "
                                                         "(rollouts play one episode per worker at a time)"})
    rollout_seed: int = field(default=500_000, metadata={
        "help": "round k's episode i resets with seed rollout_seed + 1000 k + i (disjoint from every eval seed)"})
    steps: int = field(default=4000, metadata={"help": "training steps per round (continuing the student)"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate of each round (cosine to 0.1x)"})
    warmup: int = field(default=100, metadata={"help": "learning-rate warmup steps of each round"})
    eval_every: int = field(default=1000, metadata={"help": "export and evaluate a candidate every this many steps"})
    select_episodes: int = field(default=30, metadata={"help": "held-out selection episodes per candidate"})
    select_seed: int = field(default=2000, metadata={"help": "first held-out selection seed (never 0..49)"})
    confirm_episodes: int = field(default=100, metadata={
        "help": "the starting student and each round's best are measured again on this many other held-out seeds, "
                "and the final choice uses these (30 seeds reward a lucky candidate; 0: choose on the selection)"})
    confirm_seed: int = field(default=3000, metadata={"help": "first confirmation seed (never 0..49)"})
    device: str = field(default="cpu", metadata={"help": "torch device of the training steps (cpu, cuda)"})


# A run can be given more rounds, move to a GPU, or be confirmed on other seeds; any other change is another run.
RESUMABLE = {"rounds", "device", "confirm_episodes", "confirm_seed"}


def beta_at(round_: int, rampdown_rounds: int) -> float:
    """``imitation``'s LinearBetaSchedule: 1 at round 0 (the teacher's own data), 0 from ``rampdown_rounds`` on."""
    return min(1.0, max(0.0, 1.0 - round_ / rampdown_rounds)) if rampdown_rounds > 0 else 0.0


COIN_SALT = 0xDA66E2  # mixed into each episode's generator of expert-or-student draws


class DaggerRolloutJob:
    """One DAgger rollout episode as an executor job (``gptrl.executor``): ``setup`` loads the student on the ONNX
    runtime (from its ``PolicySource``: no torch, no bundle folder needed in the worker) and makes one env; ``run``
    plays episode ``i`` (reset seed ``seed + i``), the expert acting at a step with probability ``beta`` drawn from
    the episode's own generator ``default_rng([seed, i, COIN_SALT])``, the student's cache recording the action
    taken (``Policy.observe``), and labels every observation with the expert's action. An episode is therefore
    the same whichever worker plays it, and in whatever order."""

    def __init__(self, env_id: str, student, expert: TeacherActor, *, beta: float, seed: int):
        self.env_id, self.student, self.expert, self.beta, self.seed = env_id, student, expert, beta, seed

    def describe(self) -> dict:
        return {"job": "dagger-rollout", "env_id": self.env_id, "student": self.student.describe(),
                "expert": self.expert.info, "beta": self.beta, "seed": self.seed}

    def setup(self):
        from gptrl.evaluation import make_env

        return make_env(self.env_id), self.student.load()

    def run(self, state, i: int) -> dict:
        env, policy = state
        coins = np.random.default_rng([self.seed, i, COIN_SALT])
        obs, _ = env.reset(seed=self.seed + i)
        policy.reset(obs)
        expert_steps = 0

        def act(o: np.ndarray) -> np.ndarray:
            nonlocal expert_steps
            if coins.random() < self.beta:  # the expert acts, and the student's cache records its action
                expert_steps += 1
                action = self.expert.act(o)
                policy.observe(o, action)
                return action
            return policy.act(o)

        episode = play_episode(env, obs, act, self.expert)
        return {"id": i, "seed": self.seed + i, **episode, "expert_steps": expert_steps}

    def close(self, state) -> None:
        state[0].close()


def rollout(env_id: str, student: Path, expert: TeacherActor, *, episodes: int, beta: float, seed: int,
            progress: bool = True, executor=None) -> tuple[list, dict]:
    """Seeded episodes of the student (the expert acting at a step with probability ``beta``), every observation
    labelled with the expert's action; Minari ``EpisodeBuffer``s (in episode order) and their statistics.

    ``executor`` (``gptrl.executor``; default: this process, one episode after another) plays them: a
    ``RayExecutor`` gives the same buffers."""
    from minari.data_collector import EpisodeBuffer
    from tqdm import tqdm

    from gptrl.executor import LocalExecutor
    from gptrl.runtime import load_policy

    job = DaggerRolloutJob(env_id, load_policy(student).source, expert, beta=beta, seed=seed)
    bar = tqdm(total=episodes, desc=f"dagger rollout {env_id}", unit="ep", disable=not progress)
    try:
        played = (executor or LocalExecutor()).map(job, range(episodes), on_result=lambda i, r: bar.update(1))
    finally:
        bar.close()
    expert_steps = sum(e.pop("expert_steps") for e in played)
    buffers = [EpisodeBuffer(**e) for e in played]
    steps = sum(len(b.actions) for b in buffers)
    returns = [float(np.sum(b.rewards)) for b in buffers]
    stats = {"episodes": episodes, "steps": steps, "return_mean": round(float(np.mean(returns)), 2),
             "return_std": round(float(np.std(returns)), 2), "falls": sum(int(b.terminations[-1]) for b in buffers),
             "expert_step_fraction": round(expert_steps / max(1, steps), 4), "beta": beta,
             "seeds": [seed, seed + episodes - 1], "expert_draws": "per episode and step"}
    return buffers, stats


def select(env_id: str, bundle: Path, args: Args, seed: int | None = None, episodes: int | None = None) -> dict:
    """The held-out measurement every candidate gets (the training loop's protocol: ``select_episodes`` seeds from
    ``select_seed``, or the given ones), for ``bundle``."""
    from gptrl.evaluation import evaluate
    from gptrl.runtime import load_policy

    seed = args.select_seed if seed is None else seed
    episodes = args.select_episodes if episodes is None else episodes
    n = min(args.num_envs, episodes)
    result = evaluate(env_id, load_policy(bundle, num_envs=n), seeds=range(seed, seed + episodes), num_envs=n)
    return {"return_mean": round(result.return_mean, 2), "return_std": round(result.return_std, 2),
            "length_mean": result.length_mean, "falls": falls(result)}


def confirm(summary: dict, args: Args, summary_path: Path) -> None:
    """Measure every round's student on the confirmation seeds (once per seed range; saved as it goes)."""
    if args.confirm_episodes < 1:
        return
    seeds = [args.confirm_seed, args.confirm_seed + args.confirm_episodes - 1]
    for r in summary["rounds"]:
        if r.get("confirmation", {}).get("seeds") != seeds:
            r["confirmation"] = {**select(summary["env_id"], Path(r["student"]), args, args.confirm_seed,
                                          args.confirm_episodes), "seeds": seeds}
            write_json(summary_path, summary)


def dataset_id(recipe: Recipe, round_: int) -> str:
    return f"gptrl/{recipe.slug}/dagger-r{round_}-v0"


def collect_round(recipe: Recipe, round_: int, student: Path, expert: TeacherActor, args: Args, folder: Path,
                  progress: bool, executor=None) -> dict:
    """Round ``round_``'s rollouts as a Minari dataset; ``folder/rollout.json`` marks the stage done."""
    from gptrl.evaluation import REFERENCE_RETURNS

    marker = folder / "rollout.json"
    if marker.exists():
        return read_json(marker)
    beta = beta_at(round_, args.rampdown_rounds)
    seed = args.rollout_seed + 1000 * round_
    refuse_existing(dataset_id(recipe, round_), overwrite=True)  # a dataset without its marker is a crashed round
    buffers, stats = rollout(recipe.env_id, student, expert, episodes=args.episodes, beta=beta, seed=seed,
                             progress=progress, executor=executor)
    low, high = REFERENCE_RETURNS.get(recipe.env_id, (0.0, 1.0))
    store_dataset(
        dataset_id(recipe, round_), recipe.env_id, buffers,
        algorithm_name=f"gptrl DAgger round {round_} (student {student}, beta {beta:g})", code="dagger.py",
        ref_min_score=low, ref_max_score=high,
        description=(f"{recipe.env_id}, {args.episodes} episodes of the DAgger round-{round_} student acting through "
                     f"its KV cache (the expert acting at a step with probability {beta:g}); infos['expert_action'] "
                     "holds the expert teacher's deterministic action at each observation."))
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"dataset": dataset_id(recipe, round_), "student": str(student), **stats})
    return read_json(marker)


def round_config(recipe: Recipe, round_: int, args: Args) -> TrainConfig:
    """The recipe's behaviour-cloning settings, continued at DAgger's rate, cadence and selection seeds."""
    return TrainConfig(**{**recipe.train, "steps": args.steps, "lr": args.lr, "warmup": args.warmup,
                          "eval_every": args.eval_every, "eval_episodes": args.select_episodes,
                          "eval_seed": args.select_seed, "seed": round_, "device": args.device})


def best_round(rounds: list[dict]) -> dict:
    """The highest held-out return (on the confirmation seeds once every round has them, else on the selection
    seeds); on a tie, fewer falls, then the earlier round."""
    key = "confirmation" if all("confirmation" in r for r in rounds) else "selection"
    return max(rounds, key=lambda r: (r[key]["return_mean"], -r[key]["falls"], -r["round"]))


def run(recipe: Recipe, args: Args, *, init: Path, out: Path, progress: bool = True, executor=None) -> dict:
    """Run (or resume) the DAgger rounds from the student bundle ``init``; returns the summary (``dagger.json``).
    ``executor`` (``gptrl.executor``) plays each round's rollouts (default: this process; the same episodes)."""
    expert = load_teacher_actor(recipe.teacher_dir / "expert.safetensors")
    summary_path = out / "dagger.json"
    wanted = {k: v for k, v in asdict(args).items() if k not in RESUMABLE}
    if summary_path.exists():
        summary = read_json(summary_path)
        if summary["args"] != wanted or summary["init"] != str(init):
            raise FileExistsError(f"{summary_path} was made with other settings ({summary['args']}, init "
                                  f"{summary['init']}); remove {out} or pick another --out")
    else:
        start = out / "round-0" / "student"  # a copy: publishing replaces the bundle the run started from
        with atomic_dir(start, overwrite=True) as tmp:
            publish(init, tmp)
        summary = {"env_id": recipe.env_id, "args": wanted, "init": str(init),
                   "init_sha256": sha256_file(init / "model.safetensors"), "teacher": expert.info,
                   "rounds": [{"round": 0, "beta": 1.0, "student": str(start),
                               "datasets": list(recipe.dataset_ids), "selection": select(recipe.env_id, start, args)}]}
        write_json(summary_path, summary)
    student = Path(summary["rounds"][-1]["student"])
    base = load_episodes(list(recipe.dataset_ids))
    for k in range(len(summary["rounds"]), args.rounds + 1):
        folder = out / f"round-{k}"
        rollout_stats = collect_round(recipe, k, student, expert, args, folder, progress, executor)
        ids = [dataset_id(recipe, j) for j in range(1, k + 1)]
        episodes = base + load_episodes(ids)
        cfg = round_config(recipe, k, args)
        state = train(recipe.env_id, folder / "train", episodes, recipe.model, cfg, progress=progress, init=student,
                      notes={"dagger_round": k, "init": str(student), "datasets": [*recipe.dataset_ids, *ids]})
        student = folder / "train" / "best"
        best = state["best"]
        summary["rounds"].append({
            "round": k, "beta": rollout_stats["beta"], "student": str(student), "rollout": rollout_stats,
            "datasets": [*recipe.dataset_ids, *ids], "dataset_steps": int(sum(len(e.actions) for e in episodes)),
            "train": {"steps": cfg.steps, "lr": cfg.lr, "best_step": best["step"],
                      "seconds": state["history"][-1]["seconds"]},
            "selection": {key: best[key] for key in ("return_mean", "return_std", "length_mean", "falls")}})
        summary["best_round"] = best_round(summary["rounds"])["round"]
        write_json(summary_path, summary)
        plot_rounds(summary, out / "rounds.png")
        if progress:
            print(json.dumps(summary["rounds"][-1]["selection"] | {"round": k}), flush=True)
    confirm(summary, args, summary_path)
    summary["best_round"] = best_round(summary["rounds"])["round"]
    write_json(summary_path, summary)
    plot_rounds(summary, out / "rounds.png")
    return summary


def plot_rounds(summary: dict, out: Path) -> Path:
    """Held-out return (mean +- std) and falls of the starting student and each round's best candidate, on the
    confirmation seeds once every round has them, else on the selection seeds."""
    from gptrl.training.plots import plot_rounds as draw

    rounds = summary["rounds"]
    if all("confirmation" in r for r in rounds):
        measured = [r["confirmation"] for r in rounds]
        first, last = rounds[0]["confirmation"]["seeds"]
    else:
        measured = [r["selection"] for r in rounds]
        first = summary["args"]["select_seed"]
        last = first + summary["args"]["select_episodes"] - 1
    return draw([r["round"] for r in rounds], [m["return_mean"] for m in measured],
                [m["return_std"] for m in measured], [m["falls"] for m in measured], out,
                episodes=last - first + 1, title=f"{summary['env_id']}: DAgger rounds (seeds {first}..{last})")


def publish_best(summary: dict, dest: Path, out: Path) -> Path:
    """Copy the chosen round's student into ``dest`` (keeping its card and media) and the summary beside the run."""
    best = best_round(summary["rounds"])
    if best["round"] == 0:
        raise ValueError(f"no DAgger round beat the starting student {summary['init']} on the selection seeds "
                         f"({best['selection']}); nothing to publish")
    with atomic_dir(out / "published", overwrite=True) as tmp:
        write_json(tmp / "dagger.json", summary)
    return publish(Path(best["student"]), dest)


DAGGER_START, DAGGER_END = "<!-- dagger -->", "<!-- /dagger -->"


def published_summary(bundle_dir: Path, out: Path) -> dict | None:
    """The DAgger run whose choice ``bundle_dir`` holds (compared by sha256): a round's student that was published,
    or the starting student itself when no round beat it. None when the bundle is neither."""
    path = out / "dagger.json"
    if not path.exists():
        return None
    summary = read_json(path)
    best = best_round(summary["rounds"])
    weights = Path(best["student"]) / "model.safetensors"
    if not weights.exists() or sha256_file(weights) != sha256_file(bundle_dir / "model.safetensors"):
        return None
    return summary


def _measured(m: dict | None) -> str:
    return "" if m is None else f"{m['return_mean']:.1f} +- {m['return_std']:.1f} | {m['falls']}"


def card_section(summary: dict) -> str:
    """The model card's DAgger section: the rounds, what each one's student did, and which seeds chose it."""
    a, env_id = summary["args"], summary["env_id"]
    rounds = summary["rounds"]
    best = best_round(rounds)
    sel = f"seeds {a['select_seed']}..{a['select_seed'] + a['select_episodes'] - 1}"
    confirmed = all("confirmation" in r for r in rounds)
    conf = f"seeds {rounds[0]['confirmation']['seeds'][0]}..{rounds[0]['confirmation']['seeds'][1]}" \
        if confirmed else ""
    rows = []
    for r in rounds:
        tail = f"{_measured(r['selection'])} |" + (f" {_measured(r['confirmation'])} |" if confirmed else "")
        if r["round"] == 0:
            rows.append(f"| 0 | 1 | the recipe's datasets | | | {tail}")
            continue
        ro, t = r["rollout"], r["train"]
        rows.append(f"| {r['round']} | {r['beta']:g} | {ro['episodes']} episodes ({ro['steps']:,} steps), return "
                    f"{ro['return_mean']:.1f} +- {ro['return_std']:.1f}, {ro['falls']} falls | "
                    f"{r['dataset_steps']:,} | "
                    f"{t['steps']:,} at lr {t['lr']:g}, best at {t['best_step']:,} ({t['seconds'] / 60:.0f} min) | "
                    f"{tail}")
    teacher = summary["teacher"]
    verdict = (f"round {best['round']} gave this bundle" if best["round"]
               else "no round beat the starting student, so this bundle is still the behaviour-cloned one")
    chosen_by = (f"then the starting student and every round's best were measured again on {conf} and compared "
                 f"there (the best of several candidates on 30 seeds is partly luck): {verdict}" if confirmed
                 else verdict)
    lines = [
        DAGGER_START,
        "## DAgger",
        "",
        f"Behaviour cloning only shows the student the teacher's states, so it had no data where it drifts off "
        f"them. `make dagger ENV={env_id}` (`gptrl.training.dagger`) started from the behaviour-cloned bundle "
        f"(model.safetensors sha256 `{summary['init_sha256'][:16]}`) and ran {len(rounds) - 1} rounds. "
        f"Each round rolled the current student out on the ONNX runtime through its KV cache, exactly as it is "
        f"evaluated, on {a['episodes']} fresh seeds (from {a['rollout_seed']:,} + 1000 x round), the expert "
        f"({teacher.get('steps', '?'):,}-step teacher) acting instead at a step with probability beta "
        f"(linear schedule over {a['rampdown_rounds']} rounds); every visited state was labelled with the "
        "expert's action and stored as a Minari dataset (`gptrl/<env>/dagger-r<k>-v0`), and the student was "
        f"trained further on all datasets for {a['steps']:,} steps (lr {a['lr']:g}, warmup {a['warmup']}, cosine "
        f"to 0.1x). A candidate was exported every {a['eval_every']:,} steps and evaluated on "
        f"{a['select_episodes']} held-out {sel} (disjoint from the 0..49 above), falls counted, and each round kept "
        f"its best; {chosen_by}.",
        "",
        f"| round | beta | student's rollouts | training data (steps) | training | selection ({sel}) | falls |"
        + (f" confirmation ({conf}) | falls |" if confirmed else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if confirmed else ""),
        *rows,
        "",
        "![return and falls per round](rounds.png)",
        "",
        DAGGER_END,
        "",
    ]
    return "\n".join(lines)


def with_card_section(card: str, section: str) -> str:
    """``card`` with its DAgger section replaced (or added before the Reproduce section)."""
    if DAGGER_START in card:
        head, rest = card.split(DAGGER_START, 1)
        return head + section + rest.split(DAGGER_END, 1)[1].lstrip("\n")
    return card.replace("## Reproduce", section + "\n## Reproduce", 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id", help="a gymnasium id with a recipe in gptrl.training.recipes")
    p.add_argument("--init", type=Path, help="student bundle to start from (default: the recipe's bundles/ folder)")
    p.add_argument("--out", type=Path, help="run folder (default runs/dagger/ENV)")
    p.add_argument("--datasets-path", type=Path, help="Minari datasets folder (default data/minari)")
    p.add_argument("--publish", action="store_true", help="copy the best round's student into the recipe's bundle")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="play each round's rollouts in Ray actors: no ADDRESS starts a local Ray instance, 'auto' or "
                        "HOST:PORT joins a cluster (the same episodes; training stays here)")
    p.add_argument("--workers", type=int, default=None, help="with --ray: how many actors (default: one per CPU)")
    for f in fields(Args):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"{f.metadata['help']} (default {f.default})")
    return p


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    recipe = get_recipe(a.env_id)
    args = Args(**{f.name: getattr(a, f.name) for f in fields(Args)})
    for name in ("rounds", "episodes", "num_envs", "steps", "eval_every", "select_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    use_datasets_path(a.datasets_path)
    out = a.out or Path("runs/dagger") / a.env_id
    from gptrl.executor import executor_for

    executor = executor_for(a.ray, num_workers=a.workers)
    try:
        summary = run(recipe, args, init=(a.init or recipe.bundle_dir).resolve(), out=out, executor=executor)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    best = best_round(summary["rounds"])
    print(f"best: round {best['round']}: {json.dumps(best['selection'])}")
    if a.publish:
        print(f"published {publish_best(summary, recipe.bundle_dir, out)}")


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.dagger", main))
