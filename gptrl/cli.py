"""The ``gptrl`` command line. Subcommands import only what they need (``inspect`` and ``eval`` need no torch).

Every error ends the command with one line on stderr and exit status 2 (1 for an interruption); ``--debug`` shows
the traceback instead. SIGTERM and SIGHUP unwind like an exception, so no temporary file is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gptrl.errors import BundleError, OutputExistsError


def inspect_dt_bundle(path: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """What ``gptrl inspect`` reports for a Decision Transformer bundle: the JSON and the table."""
    from gptrl.bundle.dt import load_dt_bundle

    b = load_dt_bundle(path)
    c, s = b.config, b.sidecar
    info = {
        "path": str(b.path), "family": "Decision Transformer (Hugging Face checkpoint + gptrl_dt.json)",
        "env_id": s.env_id, "state_dim": c.state_dim, "action_dim": c.act_dim,
        "architecture": {"network": "GPT2 trunk", "num_layers": c.n_layer, "d_model": c.hidden_size,
                         "num_heads": c.n_head, "inner": c.inner, "activation": c.activation_function,
                         "action_tanh": c.action_tanh, "max_ep_len": c.max_ep_len},
        "weights": b.weights_file.name, "context_length": s.context_length, "return_scale": s.scale,
        "default_target_return": s.target_return,
    }
    a = info["architecture"]
    rows = [("bundle", info["path"]), ("family", info["family"]), ("env id", info["env_id"] or "(not recorded)"),
            ("state / action size", f"{info['state_dim']} / {info['action_dim']}"),
            ("architecture", f"{a['network']}: {a['num_layers']} layers, d_model {a['d_model']}, "
                             f"{a['num_heads']} heads, MLP {a['inner']} {a['activation']}"),
            ("context", f"K = {info['context_length']} timesteps (3K tokens)"),
            ("returns", f"scale {info['return_scale']:g}, default target {info['default_target_return']}"),
            ("weights", info["weights"])]
    return info, rows


def inspect_causal_bundle(path: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """What ``gptrl inspect`` reports for a Causal GPT-RL bundle: the JSON and the table."""
    from gptrl.bundle import load_bundle
    from gptrl.bundle.spaces import describe_space
    from gptrl.rollout import resolve_serving

    bundle = load_bundle(path)
    c, m = bundle.config, bundle.config.model
    kv, bos = resolve_serving(c, None, None)
    info = {
        "path": str(bundle.path),
        "format_version": c.format_version,
        "written_by": f"{c.package or '?'} {c.package_version or ''}".strip(),
        "env_id": c.env_id,
        "observation_space": describe_space(c.state_container),
        "action_space": describe_space(c.action_container),
        "observation_type": c.observation.kind,
        "action_type": c.action.kind,
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
        "state_normalization": bundle.normalizer_source,
        "requires_capabilities": list(c.requires_capabilities),
    }
    a = info["architecture"]
    arch = (f"{a['network']}: {a['num_layers']} layers, d_model {a['d_model']}, {a['num_heads']} heads "
            f"(head_dim {a['head_dim']})")
    if "intermediate_size" in a:
        arch += f", MLP {a['intermediate_size']}, rope_theta {a['rope_theta']:g}"
    limit = info["kv_cache_max_len_limit"]
    rows = [
        ("bundle", info["path"]),
        ("format version", f"{info['format_version']} (written by {info['written_by']})"),
        ("env id", info["env_id"] or "(not recorded)"),
        ("observation space", f"{info['observation_space']} ({info['observation_type']})"),
        ("action space", f"{info['action_space']} ({info['action_type']})"),
        ("architecture", arch),
        ("parameters", f"{info['parameters']:,}"),
        ("context length", str(info["context_length"])),
        ("kv cache", f"default {info['kv_cache_max_len_default']}, max {limit if limit is not None else 'unbounded'}; "
                     f"max_position_embeddings {a['max_position_embeddings']}"),
        ("BOS cache mode", info["bos_cache_mode_default"]),
        ("state normalisation", info["state_normalization"]),
        ("termination head", "yes" if a["use_eos"] else "no"),
    ]
    return info, rows


def inspect_bundle(path: str) -> dict[str, Any]:
    """What ``gptrl inspect`` reports, as a dict (its family's ``inspect``, ``gptrl.families``)."""
    from gptrl.families import family_of_folder

    return family_of_folder(path).part("inspect")(path)[0]


def _cmd_inspect(args: argparse.Namespace) -> int:
    from gptrl.families import family_of_folder

    info, rows = family_of_folder(args.bundle).part("inspect")(args.bundle)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_convert_legacy(args: argparse.Namespace) -> int:
    from gptrl.exporter.legacy import convert_legacy_bundle_to_safetensors

    path = convert_legacy_bundle_to_safetensors(args.bundle, overwrite=args.overwrite)
    print(f"converted {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from gptrl.exporter.onnx_export import export_onnx

    if args.stateful:
        if args.opset is not None:
            raise ValueError("--stateful and --opset exclude each other (a stateful graph is opset 18)")
        variant = "stateful"
    else:
        if args.kv is not None:
            raise ValueError("--kv fixes the cache length of a stateful graph; add --stateful")
        variant = "portable" if args.opset == 18 else "attention"
    out = export_onnx(args.bundle, args.output, variant=variant, verify=not args.no_verify, kv=args.kv,
                      quantize=args.quantize, quantize_env=args.env, quantize_episodes=args.quantize_episodes,
                      allow_loss=args.allow_loss)
    verified = "" if args.no_verify else ", verified against the torch PolicyRunner"
    from gptrl.bundle.policy_graph import VARIANT_OPSETS

    print(f"wrote {out} ({variant} graph, opset {VARIANT_OPSETS[variant]}{verified})")
    if args.quantize:
        from gptrl.exporter.quantize import read_check

        check = read_check(out)
        print(f"{args.quantize} weights: return {check['quantized_return']:.1f} vs fp32 {check['fp32_return']:.1f} on "
              f"{check['env_id']} seeds {check['seeds'][0]}..{check['seeds'][-1]} "
              f"({100 * check['loss_fraction']:+.2f}% loss, limit {100 * check['max_loss']:.0f}%)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import logging

    from gptrl.evaluation import evaluate, make_env

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.env:
        make_env(args.env).close()  # an unknown id fails before the policy loads
    if args.backend == "torch":
        from gptrl.exporter.load import load_runner

        runner = load_runner(args.bundle, num_envs=args.num_envs, device="cuda" if args.provider == "cuda" else "cpu")
    else:
        from gptrl.runtime import load_policy

        runner = load_policy(args.bundle, num_envs=args.num_envs, providers=args.provider)
    env_id = args.env or getattr(runner, "env_id", None) or getattr(getattr(runner, "config", None), "env_id", None)
    if not env_id:
        raise BundleError(f"{args.bundle}: the bundle records no env_id; pass --env")
    seeds = range(args.seed, args.seed + args.episodes)
    executor = None
    if args.ray is not None or args.results is not None or args.workers is not None:
        if args.backend == "torch":
            raise ValueError("--ray, --workers and --results run the onnx backend's torch-free policy in each worker; "
                             "drop --backend torch")
        from gptrl.executor import executor_for

        executor = executor_for(args.ray, num_workers=args.workers, results=args.results)
    try:
        result = evaluate(env_id, runner, seeds=seeds, max_steps=args.max_steps, num_envs=args.num_envs,
                          progress=not args.json, target_return=args.target_return, sample_seed=args.sample_seed,
                          executor=executor)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    stats = {"env_id": env_id, "backend": args.backend, "seeds": [seeds.start, seeds.stop - 1], **result.to_dict()}
    if args.ray is not None:
        stats["ray"] = {"address": args.ray, "workers": executor.workers_used, "restarts": executor.restarts,
                        "start_seconds": executor.start_seconds}
    sampled = "" if args.sample_seed is None else f", actions sampled (generator seed {args.sample_seed})"
    if args.sample_seed is not None:
        stats["sample_seed"] = args.sample_seed
    if args.json:
        from gptrl.provenance import provenance

        stats["provenance"] = provenance(runner)
        print(json.dumps(stats, indent=2))
        return 0
    score = stats["normalized_score"]
    print(f"{env_id} ({args.backend}, {args.episodes} episodes, seeds {seeds.start}..{seeds.stop - 1}, "
          f"max {args.max_steps} steps{sampled})")
    print(f"  return  {stats['return_mean']:.2f} +- {stats['return_std']:.2f}")
    print(f"  length  {stats['length_mean']:.1f} +- {stats['length_std']:.1f}")
    print(f"  normalised score  {score:.1f}" if score is not None
          else "  normalised score  (no reference for this env)")
    if "ray" in stats:
        ray = stats["ray"]
        started = "" if ray["start_seconds"] is None else f", Ray started in {ray['start_seconds']:.1f} s"
        print(f"  ray  {ray['workers']} workers ({ray['address']}){started}, {ray['restarts']} restarted")
    return 0


def _numbers(text: str) -> list[float]:
    """argparse type: comma-separated numbers, or @FILE holding a JSON list."""
    try:
        if text.startswith("@"):
            values = json.loads(open(text[1:], encoding="utf-8").read())
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not comma-separated numbers or @FILE.json ({exc})") from None
    if not isinstance(values, list):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a list of numbers")
    return values


def _cmd_record(args: argparse.Namespace) -> int:
    from gptrl.record import record_episode

    rec = record_episode(args.bundle, args.output, seed=args.seed, backend=args.backend, env_id=args.env,
                         max_steps=args.max_steps, every=args.every, fps=args.fps, width=args.width,
                         height=args.height, target_return=args.target_return, progress=True)
    size = f"{rec.size[0]}x{rec.size[1]}"
    if not rec.sized:
        size += " (the env renders at its own size; --width and --height apply to envs that take them, e.g. MuJoCo)"
    print(f"wrote {rec.path}: {rec.frames} frames of {size} from a {rec.length}-step episode, return "
          f"{rec.episode_return:.1f}")
    return 0


def _cmd_web(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gptrl.web import SITE_FILE, build_site, serve

    path = Path(args.path)
    if args.output is None:
        if not (path / SITE_FILE).is_file():
            raise ValueError(f"{path}: give -o DIR to write a bundle's page (or a folder `gptrl web` wrote, with "
                             "--serve)")
        if not args.serve:
            raise ValueError(f"{path}: already a page; add --serve to serve it")
        site = path
    else:
        info = build_site(path, args.output, overwrite=args.overwrite, node_modules=args.node_modules)
        site = Path(args.output)
        print(f"wrote {site}/ ({info['env_id']}: {info['policy']}, kv {info['kv']}, within "
              f"{info['action_error']:.1e} of {path / 'policy.onnx'}'s actions; npm "
              + ", ".join(f"{k} {v}" for k, v in info["npm"].items()) + ")")
        if not args.serve:
            print(f"open it with: gptrl web {site} --serve")
    if args.serve:
        serve(site, args.port)
    return 0


def _cmd_dt_import(args: argparse.Namespace) -> int:
    from gptrl.exporter.dt.convert import import_decision_transformer

    out = import_decision_transformer(args.src, args.out, state_mean=args.state_mean, state_std=args.state_std,
                                      scale=args.scale, target_return=args.target_return, env_id=args.env,
                                      context_length=args.context_length, overwrite=args.overwrite,
                                      revision=args.revision, cache_dir=args.cache_dir, local_files_only=args.offline)
    print(f"wrote {out}")
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from gptrl import __version__

    parser = argparse.ArgumentParser(prog="gptrl", description="GPT-style transformer policies for RL.")
    parser.add_argument("--version", action="version", version=f"gptrl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="describe a policy bundle")
    p.add_argument("bundle", help="bundle folder (config.json + model.safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("export", help="export the single-step policy to ONNX (verified against the torch runner)")
    p.add_argument("bundle")
    p.add_argument("-o", "--output", help="output .onnx file (default BUNDLE/policy.onnx)")
    p.add_argument("--opset", type=int, choices=(18, 24), default=None,
                   help="24: Attention + in-place TensorScatter (default); 18: portable graph for older runtimes")
    p.add_argument("--stateful", action="store_true",
                   help="obs, reset, state_in.* -> action, state_out.*: one graph any ONNX runtime drives alone")
    p.add_argument("--kv", type=positive_int, help="stateful: the cache length fixed in the graph "
                                                   "(default: the bundle's context length)")
    p.add_argument("--quantize", choices=("int8", "int4"),
                   help="quantize the layer weights (onnxruntime MatMulNBits; onnxruntime only), kept only if the "
                        "return on held-out seeds stays within 2%% of fp32")
    p.add_argument("--quantize-episodes", type=positive_int, default=10,
                   help="held-out episodes (seeds 1000+) for the quantization check")
    p.add_argument("--env", help="env for the quantization check (default: the bundle's env_id)")
    p.add_argument("--allow-loss", action="store_true", help="keep a quantized graph that loses more than 2%%")
    p.add_argument("--no-verify", action="store_true", help="skip the closed-loop check against the torch runner")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("eval", help="evaluate a bundle: one episode per seed, returns and normalised score")
    p.add_argument("bundle", help="bundle folder (with policy.onnx for the onnx backend) or a .onnx file")
    p.add_argument("--env", help="gymnasium env id (default: the bundle's env_id)")
    p.add_argument("--episodes", type=positive_int, default=50)
    p.add_argument("--seed", type=int, default=0, help="first seed; episode i resets with seed+i")
    p.add_argument("--max-steps", type=positive_int, default=1000, help="cut each episode after this many steps")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    p.add_argument("--provider", choices=("cpu", "cuda"), default=None, help="default: CUDA when available, else CPU")
    p.add_argument("--num-envs", type=positive_int, default=1, help="step N envs together with one batched policy call")
    p.add_argument("--target-return", type=float,
                   help="return-conditioned policies (Decision Transformers): the target, in env units "
                        "(default: the bundle's)")
    p.add_argument("--sample-seed", type=int, default=None, metavar="N",
                   help="sample each action from the policy's distribution (act(..., deterministic=False)), its "
                        "generator seeded N; the same N gives the same episodes (default: greedy actions)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="play the seeds in Ray actors (pip install 'gptrl[ray]'), each holding the torch-free policy "
                        "and an env: no ADDRESS starts a local Ray instance and stops it after; 'auto' or HOST:PORT "
                        "joins that cluster. Per-seed returns are the local run's")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="with --ray: how many actors (default: one per CPU of the cluster)")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="keep each finished seed's return in FILE (JSON, rewritten atomically); running the same "
                        "command again resumes from it, playing only the seeds not yet in it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("record", help="render one episode to an MP4 or GIF (offscreen; MUJOCO_GL=egl headless)")
    p.add_argument("bundle")
    p.add_argument("-o", "--output", help="FILE.mp4 or FILE.gif (default BUNDLE/episode.mp4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    p.add_argument("--env", help="gymnasium env id (default: the bundle's)")
    p.add_argument("--max-steps", type=positive_int, default=1000)
    p.add_argument("--every", type=positive_int, default=1, help="keep every N-th frame (smaller files)")
    p.add_argument("--fps", type=float, help="default: the env's frame rate / --every (real time)")
    p.add_argument("--width", type=positive_int, help="frame width where the env takes one (MuJoCo; default: the "
                   "env's own, 480); classic control and Box2D envs render at their fixed size")
    p.add_argument("--height", type=positive_int, help="frame height, likewise (default: the env's own)")
    p.add_argument("--target-return", type=float, help="return-conditioned policies: the target")
    p.set_defaults(func=_cmd_record)
    p = sub.add_parser("web", help="a bundle's policy as a static web page (onnxruntime-web + MuJoCo wasm), "
                                   "and a server for it on 127.0.0.1")
    p.add_argument("path", help="a bundle folder (with -o), or a folder `gptrl web` wrote (with --serve)")
    p.add_argument("-o", "--output", help="the folder to write the page to")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--serve", action="store_true", help="serve the page on http://127.0.0.1:PORT/ (never another "
                                                         "interface) until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="0: a free port")
    p.add_argument("--node-modules", help="the npm folder the page's libraries are copied from (default: web/"
                                          "node_modules of this checkout, installed by `npm ci` in web/)")
    p.set_defaults(func=_cmd_web)
    p = sub.add_parser("dt-import", help="a Hugging Face Decision Transformer checkpoint -> a gptrl DT bundle")
    p.add_argument("src", help="checkpoint folder, or Hub repo id (owner/name)")
    p.add_argument("out", help="bundle folder to write")
    p.add_argument("--state-mean", type=_numbers, required=True,
                   help="comma-separated (write --state-mean=-1,2,... when it starts with a minus), or @FILE.json")
    p.add_argument("--state-std", type=_numbers, required=True, help="comma-separated, or @FILE.json")
    p.add_argument("--scale", type=float, default=1000.0, help="return scale (returns-to-go are divided by it)")
    p.add_argument("--target-return", type=float, help="default target return, env units")
    p.add_argument("--env", help="gymnasium env id the policy acts in")
    p.add_argument("--context-length", type=positive_int, default=20, help="K timesteps in the window")
    p.add_argument("--revision", help="Hub revision")
    p.add_argument("--cache-dir", help="huggingface_hub cache folder")
    p.add_argument("--offline", action="store_true", help="resolve from the cache only")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_dt_import)
    p = sub.add_parser("convert-legacy",
                       help="turn model.pt/state_normalizer.pt into safetensors (no unpickling of objects)")
    p.add_argument("bundle")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_convert_legacy)
    return parser


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line (the type where the message is empty)."""
    if isinstance(exc, OutputExistsError):  # the Python argument's name means nothing on the command line
        return f"{exc.path}: already exists (add --overwrite to replace it)"
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if isinstance(exc, (BundleError, ValueError, OSError)) else f"{type(exc).__name__}: {first}"


def run_command(name: str, func, args: Any, debug: bool) -> int:
    """Run a command function; turn any error into one line on stderr (a traceback with ``debug``)."""
    from gptrl.fileio import RECEIVED_SIGNALS, signals_raise

    try:
        with signals_raise():
            return func(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 1
    except SystemExit as exc:
        if RECEIVED_SIGNALS:
            print(f"{name}: stopped by signal {RECEIVED_SIGNALS[-1]}; nothing was left half-written", file=sys.stderr)
        raise exc from None
    except Exception as exc:
        if RECEIVED_SIGNALS:  # the signal's SystemExit surfaced as another exception
            print(f"{name}: stopped by signal {RECEIVED_SIGNALS[-1]}; nothing was left half-written", file=sys.stderr)
            return 128 + RECEIVED_SIGNALS[-1]
        if debug:
            raise
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        return 2


def run_script(name: str, main) -> int:
    """``python -m`` entry of a pipeline stage: ``main()`` with the same one-line errors (GPTRL_DEBUG=1: traceback)."""
    import os

    return run_command(name, lambda _: main() or 0, None, bool(os.environ.get("GPTRL_DEBUG")))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"gptrl {args.command}", args.func, args, args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
