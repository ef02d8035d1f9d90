"""Character-grid observations (``{type: "grid", rows, cols, vocab_size, embed_dim, patch, features, pool}``): a
frame of rows x cols integer token ids in [0, vocab_size), such as ASCII Breakout's screen, turned into **one**
timestep token by a learned per-frame encoder, so the causal policy still reads one token per step and keeps its KV
cache.

The encoder (its weights are ``state_encoder.*`` in model.safetensors; shapes from the spec):

1. each cell's id looks up a character embedding, ``state_encoder.embedding`` [vocab_size, embed_dim] (a Gather on
   the ids);
2. the frame is cut into patches of ``patch = [ph, pw]`` cells (rows and cols must divide); a patch token is the
   concatenation of its ph x pw cell embeddings times ``state_encoder.patch_proj`` [ph x pw x embed_dim, features]
   plus ``state_encoder.patch_bias`` [features];
3. the patch's 2-D position is added: ``state_encoder.row_position`` [rows / ph, features] of its patch row plus
   ``state_encoder.col_position`` [cols / pw, features] of its patch column;
4. ReLU, then pooled over the frame's patches, ``pool`` "max" (the default) or "mean": the token's state features
   [features].

``patch = [1, cols]`` makes one token per screen row (row tokens, the default); ``[3, 9]`` square-ish patches.
Position enters before the ReLU, so the pooled features still say where each character is. Why max pooling: a
frame differs from the next in a few cells, which a mean over the tokens dilutes; cloning the paddle-follows-the-ball
heuristic from single ASCII Breakout frames, the mean-pooled encoders mostly stayed at the majority class and the
max-pooled ones always learned (benchmarks/grid_encoders.py; docs/format.md quotes the numbers). Rows and 3 x 9
patches did alike under the maximum; rows are the default as they fit any grid. No normaliser.
A value outside the vocabulary is refused, naming the input, the value and its cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gptrl.bundle.codecs.base import ObservationEncoder
from gptrl.bundle.codecs.ops import Array, Ops
from gptrl.bundle.codecs.tokens import MAX_VOCAB
from gptrl.bundle.schema import LIMITS

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

MAX_EMBED, MAX_FEATURES = 4096, 16_384


POOLS = ("max", "mean")


@dataclass(frozen=True)
class Grid(ObservationEncoder):
    rows: int
    cols: int
    vocab_size: int
    embed_dim: int = 8
    patch: tuple[int, int] | None = None  # None: one token per row, (1, cols)
    feature_dim: int = 64
    pool: str = "max"
    kind: ClassVar[str] = "grid"
    capability: ClassVar[str | None] = "gptrl.observations.grid"
    requirement: ClassVar[str] = "type 'grid' with rows, cols, vocab_size, embed_dim, patch and features"
    dtype: ClassVar[str] = "int64"
    prefix: ClassVar[str] = "state_encoder."

    def __post_init__(self) -> None:
        if self.patch is None:
            object.__setattr__(self, "patch", (1, self.cols))
        if self.pool not in POOLS:
            raise ValueError(f"grid observation: pool must be one of {list(POOLS)}, got {self.pool!r}")
        ph, pw = self.patch
        if ph < 1 or pw < 1 or self.rows % ph or self.cols % pw:
            raise ValueError(f"grid observation: patch {list(self.patch)} must divide the grid {self.rows} x "
                             f"{self.cols}")

    @classmethod
    def parse(cls, readers: list[JsonReader]) -> Grid:
        r = cls.one_entry(readers, "a grid observation is one entry")
        r.get("type", "str")
        rows, cols = r.positive("rows", limit=LIMITS["size"]), r.positive("cols", limit=LIMITS["size"])
        if rows * cols > LIMITS["size"]:
            raise r.error(f"rows x cols = {rows * cols:,} cells, past the limit of {LIMITS['size']:,}")
        vocab, embed = r.positive("vocab_size", limit=MAX_VOCAB), r.positive("embed_dim", limit=MAX_EMBED)
        features = r.positive("features", limit=MAX_FEATURES)
        patch = r.get("patch", "list")
        if len(patch) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch) \
                or rows % patch[0] or cols % patch[1]:
            raise r.error(f"key {r.key('patch')} must be [patch rows, patch cols] dividing the grid {rows} x {cols}, "
                          f"got {patch!r}")
        if patch[0] * patch[1] * embed * features > 1 << 26:
            raise r.error(f"the patch projection of {patch[0] * patch[1] * embed} x {features} is past gptrl's limit "
                          f"of 2^26 entries")
        pool = r.get("pool", "str", "max")
        if pool not in POOLS:
            raise r.error(f"key {r.key('pool')} must be one of {list(POOLS)}, got {pool!r}")
        return cls(rows, cols, vocab, embed, (patch[0], patch[1]), features, pool)

    @classmethod
    def from_space(cls, space: Any) -> Grid | None:
        if type(space).__name__ != "Box" or len(space.shape) != 2 or np.dtype(space.dtype).kind not in "iu":
            return None
        low, high = np.asarray(space.low), np.asarray(space.high)
        if (low != 0).any() or (high != high.flat[0]).any():
            return None
        rows, cols = (int(n) for n in space.shape)
        return cls(rows, cols, int(high.flat[0]) + 1)

    def specs(self) -> list[dict[str, Any]]:
        return [{"type": "grid", "rows": self.rows, "cols": self.cols, "vocab_size": self.vocab_size,
                 "embed_dim": self.embed_dim, "patch": list(self.patch), "features": self.feature_dim,
                 "pool": self.pool}]

    def container(self) -> dict[str, Any]:
        return {"type": "Box", "shape": [self.rows, self.cols], "dtype": "uint8" if self.vocab_size <= 256 else
                "int64", "low": 0, "high": self.vocab_size - 1}

    def check_container(self, container: dict[str, Any], key: str) -> str | None:
        if container["type"] == "Box" and list(container.get("shape", [])) == [self.rows, self.cols]:
            return None
        return (f"key '{key}' must be a Box of shape [{self.rows}, {self.cols}] like 'state_specs', got "
                f"{container.get('type')} {container.get('shape')}")

    @property
    def size(self) -> int:
        return self.rows * self.cols

    @property
    def width(self) -> int:
        return self.feature_dim

    @property
    def patches(self) -> tuple[int, int]:
        """Patch rows and patch columns."""
        return self.rows // self.patch[0], self.cols // self.patch[1]

    def tensors(self) -> dict[str, tuple[int, ...]]:
        pr, pc = self.patches
        cells = self.patch[0] * self.patch[1]
        return {"embedding": (self.vocab_size, self.embed_dim),
                "patch_proj": (cells * self.embed_dim, self.feature_dim),
                "patch_bias": (self.feature_dim,),
                "row_position": (pr, self.feature_dim),
                "col_position": (pc, self.feature_dim)}

    def cell_index(self) -> np.ndarray:
        """[patches, ph x pw]: the flat cell (row-major) of each patch's cells, patches row-major."""
        ph, pw = self.patch
        pr, pc = self.patches
        r = (np.arange(pr)[:, None, None, None] * ph + np.arange(ph)[None, None, :, None])
        c = (np.arange(pc)[None, :, None, None] * pw + np.arange(pw)[None, None, None, :])
        return (r * self.cols + c).reshape(pr * pc, ph * pw).astype(np.int64)

    def features(self, ops: Ops, obs: Array, mean: Array | None = None, std: Array | None = None,
                 params: dict[str, Array] | None = None) -> Array:
        if params is None:
            raise ValueError("a grid observation's features need its encoder weights (state_encoder.*)")
        pr, pc = self.patches
        ids = ops.gather_last(obs, self.cell_index())  # [..., patches, cells]
        cells = ops.merge_last2(ops.take(params["embedding"], ids))  # [..., patches, cells x embed]
        position = ops.add(ops.take(params["row_position"], np.repeat(np.arange(pr), pc)),
                           ops.take(params["col_position"], np.tile(np.arange(pc), pr)))  # [patches, features]
        tokens = ops.add(ops.add(ops.matmul(cells, params["patch_proj"]), params["patch_bias"]), position)
        pooled = ops.max_tokens if self.pool == "max" else ops.mean_tokens
        return pooled(ops.relu(tokens))

    def check(self, value: Any, num_envs: int, what: str = "observation") -> tuple[np.ndarray, bool]:
        try:
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise TypeError
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be an array of integer token ids, got {type(value).__name__}") from None
        grid, flat = (self.rows, self.cols), (self.size,)
        if num_envs == 1 and array.shape in (grid, flat):
            array, single = array.reshape(1, self.size), True
        elif array.shape in ((num_envs, *grid), (num_envs, *flat)):
            array, single = array.reshape(num_envs, self.size), False
        else:
            raise ValueError(f"{what} has shape {array.shape}, expected {(num_envs, *grid)} or {(num_envs, *flat)}"
                             + (f" (or {grid} for one env)" if num_envs == 1 else "") + f" for num_envs={num_envs}")
        if array.dtype.kind == "b":
            raise ValueError(f"{what} must hold integer token ids, got dtype bool")
        whole = np.isfinite(array) & (array == np.round(array)) if array.dtype.kind == "f" else np.ones(array.shape,
                                                                                                       bool)
        bad = ~whole | ~((array >= 0) & (array < self.vocab_size))
        if bad.any():
            row, cell = (int(i) for i in np.argwhere(bad)[0])
            rows = np.flatnonzero(bad.any(axis=1)).tolist()
            raise ValueError(f"{what} holds {array[row, cell].item()!r} at row {row}, cell ({cell // self.cols}, "
                             f"{cell % self.cols}), outside the vocabulary 0 <= token < {self.vocab_size} (or not a "
                             f"whole number); rows {rows} hold such values")
        return array.astype(np.int64), single

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        unit = np.asarray(unit, np.float64)
        cells = np.resize(unit, (*unit.shape[:-1], self.size)) if unit.shape[-1] != self.size else unit
        index = np.floor((cells + 1.0) / 2.0 * self.vocab_size)
        return np.clip(index, 0, self.vocab_size - 1).astype(np.int64)
