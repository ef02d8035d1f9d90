"""Minari datasets from teacher actors, and reading them back as episodes for behaviour cloning.

A dataset is collected by a *behaviour* actor, either sampling from its own Gaussian policy or adding Gaussian
noise of a fixed size to its deterministic action (``noise_std``, as in DART: the states then stay close to the
path the policy itself will take), while an *expert* actor labels every visited state:
``infos["expert_action"][t]`` is the
expert's deterministic action at ``observations[t]``. Behaviour cloning can then learn the expert's action even
on states a weaker behaviour visited. Collection uses numpy only; the episodes go to Minari through
``minari.create_dataset_from_buffers``, so the files are ordinary Minari datasets (``minari.load_dataset``).

Every episode ``i`` is seeded (env reset ``seed + i``, action noise ``default_rng([seed, i])``) and labelled one row
at a time (``expert_labels``): the same actors and seeds rebuild the same dataset, in this process or spread over
Ray actors (``--ray``, ``gptrl.executor``). Datasets built before the labels were computed row by row hold labels
up to about 2e-6 away from these (a batched product's rounding depends on BLAS's thread count).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptrl.training.teacher_actor import TeacherActor

DEFAULT_DATASETS_PATH = Path("data/minari")


def use_datasets_path(path: str | Path | None) -> Path:
    """Point Minari at ``path`` (default ``data/minari``, or ``$MINARI_DATASETS_PATH`` if set)."""
    resolved = Path(path or os.environ.get("MINARI_DATASETS_PATH") or DEFAULT_DATASETS_PATH).resolve()
    resolved.mkdir(parents=True, exist_ok=True)
    os.environ["MINARI_DATASETS_PATH"] = str(resolved)
    return resolved


def behaviour_action(actor: TeacherActor, obs: np.ndarray, rng: np.random.Generator,
                     noise_std: float | None) -> np.ndarray:
    """The actor's own Gaussian sample (``noise_std`` None), or its mean action plus N(0, noise_std) noise."""
    if noise_std is None:
        return actor.act(obs, rng)
    noisy = actor.act(obs) + noise_std * rng.standard_normal(actor.action_low.shape).astype(np.float32)
    return np.clip(noisy, actor.action_low, actor.action_high).astype(np.float32)


def expert_labels(expert: TeacherActor, observations: np.ndarray) -> np.ndarray:
    """The expert's deterministic action at each observation, computed one row at a time: a batched matrix product
    rounds differently with the number of BLAS threads (OpenBLAS, 1 thread as in a Ray worker against 2 here:
    labels 1.8e-6 apart), one row does not, so an episode's labels are the same in any worker."""
    obs = np.asarray(observations, dtype=np.float32)
    return np.stack([expert.act(row) for row in obs]).astype(np.float32)


class CollectJob:
    """Dataset collection as an executor job (``gptrl.executor``): ``setup`` makes the env, ``run`` plays episode
    ``i`` (reset seed ``seed + i``, noise from ``default_rng([seed, i])``) and labels it with the expert, so every
    episode is the same whichever worker plays it. The actors travel with the job (numpy arrays; no torch)."""

    def __init__(self, env_id: str, behaviour: TeacherActor, expert: TeacherActor, seed: int,
                 noise_std: float | None = None):
        self.env_id, self.behaviour, self.expert, self.seed, self.noise_std = env_id, behaviour, expert, seed, noise_std

    def describe(self) -> dict:
        return {"job": "collect", "env_id": self.env_id, "seed": self.seed, "noise_std": self.noise_std,
                "behaviour": self.behaviour.info, "expert": self.expert.info}

    def setup(self):
        import gymnasium as gym

        return gym.make(self.env_id)

    def run(self, env, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        obs, _ = env.reset(seed=self.seed + i)
        return {"id": i, "seed": self.seed + i,
                **play_episode(env, obs, lambda o: behaviour_action(self.behaviour, o, rng, self.noise_std),
                               self.expert)}

    def close(self, env) -> None:
        env.close()


def play_episode(env, obs: np.ndarray, act, expert: TeacherActor) -> dict:
    """One episode from the reset observation ``obs``, each action ``act(obs)``, as a Minari episode's arrays with
    every visited state labelled by ``expert`` (``infos["expert_action"]``)."""
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    done = False
    while not done:
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        done = terminated or truncated
    observations = np.asarray(observations, dtype=np.float64)
    return {"observations": observations, "actions": np.asarray(actions, dtype=np.float32), "rewards": rewards,
            "terminations": terminations, "truncations": truncations,
            "infos": {"expert_action": expert_labels(expert, observations)}}


def collect_episode_buffers(env_id: str, behaviour: TeacherActor, expert: TeacherActor, num_episodes: int,
                            seed: int, noise_std: float | None = None, progress: bool = True,
                            executor=None) -> list:
    """Roll the behaviour actor for ``num_episodes`` seeded episodes; returns Minari ``EpisodeBuffer``s in episode
    order. ``executor`` (``gptrl.executor``; default: this process) plays them: the same buffers either way."""
    from minari.data_collector import EpisodeBuffer

    from gptrl.executor import LocalExecutor

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_episodes, desc=f"collect {env_id}", unit="ep")
    try:
        episodes = (executor or LocalExecutor()).map(
            CollectJob(env_id, behaviour, expert, seed, noise_std), range(num_episodes),
            on_result=None if bar is None else lambda i, r: bar.update(1))
    finally:
        if bar is not None:
            bar.close()
    return [EpisodeBuffer(**episode) for episode in episodes]


def create_dataset(dataset_id: str, env_id: str, behaviour: TeacherActor, expert: TeacherActor, *,
                   num_episodes: int, seed: int, ref_min_score: float, ref_max_score: float,
                   description: str, noise_std: float | None = None, overwrite: bool = False, progress: bool = True,
                   executor=None):
    """Collect and store one Minari dataset; returns the ``MinariDataset``.

    ``ref_min_score`` / ``ref_max_score`` go into the metadata so ``dataset.get_normalized_score`` works.
    ``executor`` (``gptrl.executor``, e.g. a ``RayExecutor``) plays the episodes; the dataset is the same.
    An existing dataset with this id is an error unless ``overwrite``; it is replaced only after the new
    episodes are collected, so a failed collection leaves it in place.
    """
    refuse_existing(dataset_id, overwrite)
    buffers = collect_episode_buffers(env_id, behaviour, expert, num_episodes, seed, noise_std, progress, executor)
    return store_dataset(
        dataset_id, env_id, buffers,
        algorithm_name=f"gptrl teacher ({behaviour.info.get('algo', '?')}, {behaviour.info.get('steps', '?')} steps)"
                       + (", own Gaussian policy" if noise_std is None
                          else f", mean action + N(0, {noise_std:g}) noise"),
        ref_min_score=ref_min_score, ref_max_score=ref_max_score, description=description,
    )


def refuse_existing(dataset_id: str, overwrite: bool) -> None:
    """An existing local dataset is kept unless ``overwrite`` (checked before any episode is collected)."""
    import minari

    if dataset_id in minari.list_local_datasets() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id!r} exists in {os.environ.get('MINARI_DATASETS_PATH')}; "
                              "pass overwrite=True (--overwrite) to rebuild it")


def store_dataset(dataset_id: str, env_id: str, buffers: list, *, algorithm_name: str, ref_min_score: float,
                  ref_max_score: float, description: str, code: str = "datasets.py"):
    """Write collected ``EpisodeBuffer``s as the Minari dataset ``dataset_id``, replacing one that exists (the
    caller checked ``refuse_existing`` before collecting, so the old one goes only once the new one is in memory)."""
    import minari

    if dataset_id in minari.list_local_datasets():
        minari.delete_dataset(dataset_id)
    return minari.create_dataset_from_buffers(
        dataset_id=dataset_id, buffer=buffers, env=env_id, eval_env=env_id, algorithm_name=algorithm_name,
        author="gptrl", author_email="gptrl@users.noreply.github.com",
        code_permalink=f"https://github.com/gptrl/gptrl/blob/main/gptrl/training/{code}",
        ref_min_score=float(ref_min_score), ref_max_score=float(ref_max_score), description=description,
    )


@dataclass
class Episode:
    """One episode as behaviour cloning reads it (T steps)."""

    observations: np.ndarray  # [T + 1, S]
    actions: np.ndarray  # [T, A], what the behaviour actor did
    expert_actions: np.ndarray  # [T, A], the label: the expert's action at observations[t]
    rewards: np.ndarray  # [T]


def load_episodes(dataset_ids: list[str]) -> list[Episode]:
    """All episodes of the given local Minari datasets."""
    import minari

    episodes = []
    for dataset_id in dataset_ids:
        dataset = minari.load_dataset(dataset_id)
        for ep in dataset.iterate_episodes():
            if "expert_action" not in ep.infos:
                raise ValueError(f"{dataset_id}: episode {ep.id} has no infos['expert_action'] labels")
            steps = len(ep.actions)
            episodes.append(Episode(
                observations=np.asarray(ep.observations, dtype=np.float32),
                actions=np.asarray(ep.actions, dtype=np.float32),
                expert_actions=np.asarray(ep.infos["expert_action"][:steps], dtype=np.float32),
                rewards=np.asarray(ep.rewards, dtype=np.float32),
            ))
    return episodes


def build_datasets(env_id: str, overwrite: bool = False, executor=None) -> list[str]:
    """Collect every dataset level of ``env_id``'s recipe from its committed teacher actors."""
    from gptrl.evaluation import REFERENCE_RETURNS
    from gptrl.training.recipes import get_recipe
    from gptrl.training.teacher_actor import load_teacher_actor

    recipe = get_recipe(env_id)
    expert = load_teacher_actor(recipe.teacher_dir / "expert.safetensors")
    random_score, expert_score = REFERENCE_RETURNS[env_id]
    made = []
    for level in recipe.levels:
        behaviour = load_teacher_actor(recipe.teacher_dir / f"{level.behaviour}.safetensors")
        acting = ("sampling from its Gaussian policy" if level.noise_std is None
                  else f"adding N(0, {level.noise_std:g}) noise to its deterministic action")
        description = (
            f"{env_id}, {level.episodes} episodes of the {level.behaviour} teacher "
            f"({behaviour.info.get('algo')} after {behaviour.info.get('steps')} steps, evaluation return "
            f"{behaviour.info.get('eval_return_mean', float('nan')):.0f}) {acting}. "
            "infos['expert_action'] holds the expert teacher's deterministic action at each observation."
        )
        dataset = create_dataset(recipe.dataset_id(level), env_id, behaviour, expert, num_episodes=level.episodes,
                                 seed=level.seed, ref_min_score=random_score, ref_max_score=expert_score,
                                 description=description, noise_std=level.noise_std, overwrite=overwrite,
                                 executor=executor)
        returns = [float(np.sum(ep.rewards)) for ep in dataset.iterate_episodes()]
        print(f"{recipe.dataset_id(level)}: {dataset.total_episodes} episodes, {dataset.total_steps} steps, "
              f"return {np.mean(returns):.1f} +- {np.std(returns):.1f}", flush=True)
        made.append(recipe.dataset_id(level))
    return made


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build the Minari datasets of one env's recipe from its teachers.")
    p.add_argument("env_id")
    p.add_argument("--datasets-path", type=Path, help="Minari datasets folder (default data/minari)")
    p.add_argument("--overwrite", action="store_true", help="rebuild datasets that already exist")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="play the episodes in Ray actors: no ADDRESS starts a local Ray instance, 'auto' or HOST:PORT "
                        "joins a cluster (the datasets are the same)")
    p.add_argument("--workers", type=int, default=None, help="with --ray: how many actors (default: one per CPU)")
    a = p.parse_args(argv)
    print(f"datasets in {use_datasets_path(a.datasets_path)}")
    from gptrl.executor import executor_for

    executor = executor_for(a.ray, num_workers=a.workers)
    try:
        build_datasets(a.env_id, a.overwrite, executor)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.datasets", main))
