"""The ``gptrl`` command line. Subcommands import only what they need (``inspect`` needs no torch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gptrl.bundle import BundleError


def _space_text(space: dict[str, Any]) -> str:
    if space.get("type") == "Box":
        low, high = space.get("low", []), space.get("high", [])
        bounds = "unbounded" if all(str(v).endswith("inf") for v in low + high) else f"[{min(map(float, low)):g}, {max(map(float, high)):g}]"
        return f"Box{tuple(space['shape'])} {space.get('dtype', 'float32')} {bounds}"
    return json.dumps(space)


def inspect_bundle(path: str | Path) -> dict[str, Any]:
    """What ``gptrl inspect`` reports, as a dict."""
    from gptrl.bundle import load_bundle
    from gptrl.rollout import resolve_serving

    bundle = load_bundle(path)
    c, m = bundle.config, bundle.config.model
    kv, bos = resolve_serving(c, None, None)
    return {
        "path": str(bundle.path),
        "format_version": c.format_version,
        "written_by": f"{c.package or '?'} {c.package_version or ''}".strip(),
        "env_id": c.env_id,
        "observation_space": _space_text(c.state_container),
        "action_space": _space_text(c.action_container),
        "state_dim": c.state_dim,
        "action_dim": c.action_dim,
        "architecture": {
            "network": m.network_name,
            "num_layers": m.num_layers,
            "d_model": m.d_model,
            "num_heads": m.num_heads,
            "head_dim": m.head_dim,
            **({"intermediate_size": m.intermediate_size, "rope_theta": m.rope_theta} if m.network == "llama" else {}),
            "max_position_embeddings": m.max_position_embeddings,
            "use_eos": m.use_eos,
        },
        "parameters": bundle.parameter_count,
        "context_length": c.context_length,
        "kv_cache_max_len_default": kv,
        "kv_cache_max_len_limit": m.max_kv_cache_len(),
        "bos_cache_mode_default": bos,
        "state_normalization": "sidecar" if c.normalization_sidecar else ("embedded" if bundle.normalizer.enabled else "off"),
        "requires_capabilities": list(c.requires_capabilities),
    }


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_bundle(args.bundle)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    a = info["architecture"]
    arch = f"{a['network']}: {a['num_layers']} layers, d_model {a['d_model']}, {a['num_heads']} heads (head_dim {a['head_dim']})"
    if "intermediate_size" in a:
        arch += f", MLP {a['intermediate_size']}, rope_theta {a['rope_theta']:g}"
    limit = info["kv_cache_max_len_limit"]
    rows = [
        ("bundle", info["path"]),
        ("format version", f"{info['format_version']} (written by {info['written_by']})"),
        ("env id", info["env_id"] or "(not recorded)"),
        ("observation space", info["observation_space"]),
        ("action space", info["action_space"]),
        ("architecture", arch),
        ("parameters", f"{info['parameters']:,}"),
        ("context length", str(info["context_length"])),
        ("kv cache", f"default {info['kv_cache_max_len_default']}, max {limit if limit is not None else 'unbounded'}; "
                     f"max_position_embeddings {a['max_position_embeddings']}"),
        ("BOS cache mode", info["bos_cache_mode_default"]),
        ("state normalisation", info["state_normalization"]),
        ("termination head", "yes" if a["use_eos"] else "no"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_convert_legacy(args: argparse.Namespace) -> int:
    from gptrl.exporter.legacy import convert_legacy_bundle_to_safetensors

    path = convert_legacy_bundle_to_safetensors(args.bundle, overwrite=args.overwrite)
    print(f"converted {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gptrl import __version__

    parser = argparse.ArgumentParser(prog="gptrl", description="GPT-style transformer policies for RL.")
    parser.add_argument("--version", action="version", version=f"gptrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="describe a policy bundle")
    p.add_argument("bundle", help="bundle folder (config.json + model.safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("convert-legacy", help="turn model.pt/state_normalizer.pt into safetensors (no unpickling of objects)")
    p.add_argument("bundle")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_convert_legacy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, FileExistsError) as exc:
        print(f"gptrl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
