"""What each shipped bundle is made from: teacher, dataset levels, architecture and training budget.

One recipe per env keeps ``make teacher/data/train ENV=...`` reproducible: the Makefile passes only the env id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DataLevel:
    """One Minari dataset: ``episodes`` episodes of the ``behaviour`` teacher, labelled by the expert teacher."""

    name: str  # "expert", "medium": the dataset id is gptrl/<slug>/<name>-v0
    behaviour: str  # which committed teacher actor acts: "expert" or "medium"
    episodes: int
    seed: int


@dataclass(frozen=True)
class Recipe:
    env_id: str
    slug: str
    teacher_algo: str = "sac"
    teacher_steps: int = 1_000_000
    levels: tuple[DataLevel, ...] = ()
    # The bundle architecture (gptrl.bundle.make_config keywords).
    model: dict = field(default_factory=dict)
    # Behaviour cloning (gptrl.training.train.TrainConfig fields).
    train: dict = field(default_factory=dict)

    @property
    def teacher_dir(self) -> Path:
        """Committed actor-only teacher weights: expert.safetensors, medium.safetensors."""
        return Path("teachers") / self.slug

    @property
    def bundle_dir(self) -> Path:
        return Path("bundles") / f"{self.slug}-v5"

    def dataset_id(self, level: DataLevel) -> str:
        return f"gptrl/{self.slug}/{level.name}-v0"

    @property
    def dataset_ids(self) -> list[str]:
        return [self.dataset_id(level) for level in self.levels]


_MODEL = dict(network="llama", context_length=8, d_model=128, num_layers=3, num_heads=4, intermediate_size=256)

RECIPES: dict[str, Recipe] = {
    "Hopper-v5": Recipe(
        env_id="Hopper-v5", slug="hopper",
        levels=(DataLevel("expert", "expert", 300, seed=100_000), DataLevel("medium", "medium", 100, seed=200_000)),
        model=_MODEL,
        train=dict(steps=6000, batch_size=128, window=24, lr=1e-3),
    ),
    "HalfCheetah-v5": Recipe(
        env_id="HalfCheetah-v5", slug="halfcheetah",
        levels=(DataLevel("expert", "expert", 300, seed=100_000), DataLevel("medium", "medium", 100, seed=200_000)),
        model=_MODEL,
        train=dict(steps=6000, batch_size=128, window=24, lr=1e-3),
    ),
}


def get_recipe(env_id: str) -> Recipe:
    try:
        return RECIPES[env_id]
    except KeyError:
        raise SystemExit(f"no recipe for {env_id!r}; known: {', '.join(RECIPES)}") from None
