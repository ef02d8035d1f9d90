"""What a validated Causal GPT-RL config is: small frozen dataclasses, the format's constants and gptrl's limits.

``gptrl.bundle.parse`` builds these from config.json; nothing else in gptrl reads raw JSON. The facts behind each
field are in ``docs/format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:  # pragma: no cover
    from gptrl.bundle.codecs import ActionCodec, ObservationEncoder

SUPPORTED_FORMAT_VERSIONS = (1, 2)

BosCacheMode = Literal["discard", "retain"]
BOS_CACHE_MODES: tuple[str, ...] = get_args(BosCacheMode)
Network = Literal["llama", "gpt2"]

# -- the format's numerical constants (docs/format.md, "Model math"; the action encoding's are its codec's) -------
LLAMA_NORM_EPS = 1e-6  # RMSNorm
GPT2_NORM_EPS = 1e-5  # LayerNorm
SIDECAR_STD_EPS = 1e-8  # v1 sidecar: std = sqrt(var) + eps

# -- gptrl's limits (docs/format.md, "Limits"): a config past them is refused before anything is allocated --------
LIMITS: dict[str, int] = {
    "num_layers": 256,
    "d_model": 16_384,
    "num_heads": 1_024,
    "intermediate_size": 131_072,
    "context_length": 65_536,
    "max_position_embeddings": 1 << 20,
    "size": 65_536,  # one state or action spec block, and the total state / action size
}
MAX_PARAMETERS = 1 << 31  # 8 GiB of float32 weights


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the policy network."""

    network: Network = "llama"
    num_layers: int = 4
    d_model: int = 256
    num_heads: int = 8
    dropout: float = 0.0
    use_eos: bool = True
    use_bos_action_gate: bool = False
    rope_theta: float = 1000.0
    intermediate_size: int = 1024
    max_position_embeddings: int = 256
    context_length: int = 32

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def network_name(self) -> str:
        """The spelling bundles use in config.json."""
        return "Llama" if self.network == "llama" else "GPT2"

    def max_kv_cache_len(self) -> int | None:
        """Largest kv_cache_max_len this architecture can serve (None: unbounded).

        Once the cache is full every new token is written at position kv_cache_max_len, so GPT2's learned position
        table must have a row for it.
        """
        return self.max_position_embeddings - 1 if self.network == "gpt2" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "network_name": self.network_name,
            "num_layers": self.num_layers,
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "use_eos": self.use_eos,
            "use_bos_action_gate": self.use_bos_action_gate,
            "rope_theta": self.rope_theta,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "context_length": self.context_length,
        }


def default_max_position_embeddings(network: str, context_length: int) -> int:
    if network == "gpt2":
        return max(2 * context_length, 8)
    return max(8 * context_length, 32)


@dataclass(frozen=True)
class BundleConfig:
    """Everything config.json says, validated and with defaults filled in."""

    format_version: int
    model: ModelConfig
    observation: ObservationEncoder  # what the state specs say (gptrl.bundle.codecs)
    action: ActionCodec  # what the action specs say
    state_container: dict[str, Any]
    action_container: dict[str, Any]
    # What config.json says about the normaliser; None where it is silent (the loader then reads the weights).
    normalization_embedded: bool | None = True
    normalization_sidecar: bool | None = False
    requires_capabilities: tuple[str, ...] = ()
    env_id: str | None = None
    bos_cache_mode: BosCacheMode | None = None  # from `serving`; None means the runner default
    package: str | None = None
    package_version: str | None = None
    # Keys we carry through unchanged when rewriting a bundle.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What config.json's ``requires_capabilities`` must list: those the file lists, then those gptrl's
        extension types in it need (docs/format.md, "gptrl's extension"). Every config gptrl writes lists them."""
        needed = [c.capability for c in (self.observation, self.action) if c.capability is not None]
        return (*self.requires_capabilities, *(c for c in needed if c not in self.requires_capabilities))

    @property
    def state_dim(self) -> int:
        """Entries of one observation."""
        return self.observation.size

    @property
    def action_dim(self) -> int:
        """Entries of one action (1 for a Discrete action)."""
        return self.action.size

    @property
    def observation_space(self):
        """The gymnasium observation space (needs gymnasium)."""
        from gptrl.bundle.spaces import space_from_dict

        return space_from_dict(self.state_container)

    @property
    def action_space(self):
        """The gymnasium action space (needs gymnasium)."""
        from gptrl.bundle.spaces import space_from_dict

        return space_from_dict(self.action_container)

    def with_model(self, **changes: Any) -> BundleConfig:
        return replace(self, model=replace(self.model, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The config.json of a format-2 bundle written by gptrl (normaliser embedded)."""
        from gptrl import __version__

        out: dict[str, Any] = {
            "bundle_format_version": 2,
            "package": "gptrl",
            "package_version": __version__,
            "model_config": self.model.to_dict(),
            "state_specs": self.observation.specs(),
            "action_specs": self.action.specs(),
            "context_length": self.context_length,
            "requires_capabilities": list(self.capabilities),
            "state_container": self.state_container,
            "action_container": self.action_container,
            "state_normalization": {"embedded": self.observation.normalized, "legacy_sidecar": False},
        }
        if self.env_id is not None:
            out["env_id"] = self.env_id
        if self.bos_cache_mode is not None:
            out["serving"] = {"bos_cache_mode": self.bos_cache_mode}
        out.update(self.extra)
        return out
