"""Action codecs and observation encoders: what a policy's actions and observations are, defined once and used by
the format, the torch model, the graph builders, the runtimes and training (docs/architecture.md).

The registry below is the one place that names them. A new type is one file here plus one line in its tuple; the
first whose ``matches`` accepts a config's first spec entry reads them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptrl.bundle.codecs.base import ActionCodec, ObservationEncoder
from gptrl.bundle.codecs.discrete import Discrete
from gptrl.bundle.codecs.float_vector import FloatVector
from gptrl.bundle.codecs.gaussian_box import GaussianBox
from gptrl.bundle.codecs.grid import Grid
from gptrl.bundle.codecs.ops import NUMPY, NumpyOps, Ops
from gptrl.bundle.codecs.tanh_box import TanhBox
from gptrl.bundle.codecs.tokens import Tokens

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.jsonreader import JsonReader

ACTION_CODECS: tuple[type[ActionCodec], ...] = (
    TanhBox,  # {type: continuous, squash: tanh}: the Causal GPT-RL format
    GaussianBox,  # {type: continuous, squash: clip}
    Discrete,  # {type: discrete, n}
)
OBSERVATION_ENCODERS: tuple[type[ObservationEncoder], ...] = (
    FloatVector,  # {type: continuous}: float vectors with the normaliser
    Tokens,  # {type: tokens, size, vocab_size}
    Grid,  # {type: grid, rows, cols, vocab_size, embed_dim, patch, features}: a frame of token ids -> one token
)

# The capabilities gptrl provides: those its extension types name (a config lists them in `requires_capabilities`).
CAPABILITIES: frozenset[str] = frozenset(
    kind.capability for kind in (*ACTION_CODECS, *OBSERVATION_ENCODERS) if kind.capability is not None)


def _pick(registry: tuple, readers: list[JsonReader], key: str):
    first = readers[0]
    for kind in registry:
        if kind.matches(first.data):
            return kind.parse(readers)
    needs = ", or ".join(kind.requirement for kind in registry)
    raise first.error(f"key '{key}[0]' needs {needs} (got type {first.data.get('type', 'continuous')!r}, squash "
                      f"{first.data.get('squash')!r}); other {key.split('_')[0]} types are not supported")


def _for_space(registry: tuple, space, kind: str | None, what: str):
    for codec in registry:
        if kind in (None, codec.kind):
            found = codec.from_space(space)
            if found is not None:
                return found
    raise ValueError(f"no {what} type{'' if kind is None else ' ' + repr(kind)} describes the space {space} "
                     f"(gptrl knows {[c.kind for c in registry]})")


def action_for_space(space, kind: str | None = None) -> ActionCodec:
    """The codec for a gymnasium action space (a Box: ``kind`` "tanh", the default, or "gaussian")."""
    return _for_space(ACTION_CODECS, space, kind, "action")


def observation_for_space(space) -> ObservationEncoder:
    """The encoder for a gymnasium observation space (a float Box; Discrete or MultiDiscrete as tokens; a 2-D
    integer Box as a grid of token ids)."""
    return _for_space(OBSERVATION_ENCODERS, space, None, "observation")


def parse_action(readers: list[JsonReader]) -> ActionCodec:
    """The action codec of a config's ``action_specs`` (one reader per entry)."""
    return _pick(ACTION_CODECS, readers, "action_specs")


def parse_observation(readers: list[JsonReader]) -> ObservationEncoder:
    """The observation encoder of a config's ``state_specs`` (one reader per entry)."""
    return _pick(OBSERVATION_ENCODERS, readers, "state_specs")


__all__ = ["ACTION_CODECS", "CAPABILITIES", "NUMPY", "OBSERVATION_ENCODERS", "ActionCodec", "Discrete", "FloatVector",
           "GaussianBox", "Grid", "NumpyOps", "ObservationEncoder", "Ops", "TanhBox", "Tokens", "action_for_space",
           "observation_for_space", "parse_action", "parse_observation"]
