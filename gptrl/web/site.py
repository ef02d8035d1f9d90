"""The static folder ``gptrl web BUNDLE -o DIR`` writes, and ``gptrl web DIR --serve``.

The folder holds everything the page loads, nothing fetched from elsewhere:

- ``index.html``, ``app.mjs`` (the page) and ``gptrl-web.mjs`` (the envs and the stateful-v1 loop), from
  ``gptrl/web/static/``;
- ``policy.stateful.onnx``: built from the bundle's weights by ``gptrl.graph``, checked against its policy.onnx;
- the env's MJCF (``hopper.xml``, ...): gymnasium's asset, with ``<compiler usethread="false"/>``;
- ``site.json``: the env, the files, the versions, the camera;
- onnxruntime-web's wasm build, MuJoCo's (``mujoco.js``, ``mujoco.wasm``) and three.js, with their licences: from
  ``web/node_modules`` (``npm ci`` in ``web/``, pinned by its package-lock.json).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from gptrl import __version__
from gptrl.bundle import Bundle, load_bundle
from gptrl.bundle.codecs import NUMPY
from gptrl.bundle.files import CONFIG_FILE, POLICY_FILE, source_files
from gptrl.errors import BundleError
from gptrl.families import family_of_folder
from gptrl.fileio import atomic_dir, check_output
from gptrl.graph import serialize
from gptrl.graph.policy import build_policy_graph
from gptrl.rollout import resolve_serving
from gptrl.synthetic import ClosedLoopEnv

STATIC = Path(__file__).parent / "static"
PAGE_FILES = ("index.html", "app.mjs", "gptrl-web.mjs")
POLICY = "policy.stateful.onnx"
SITE_FILE = "site.json"
# The npm folder of a gptrl checkout (web/package.json, web/package-lock.json).
NODE_MODULES = Path(__file__).resolve().parent.parent.parent / "web" / "node_modules"

# The envs gptrl-web.mjs computes (its ENVS), each with gymnasium's MJCF asset and where the page's camera looks:
# the v5 envs with gymnasium's default arguments (a bundle's config.json names only the env id).
ENV_XML = {
    "Hopper-v5": "hopper.xml",
    "Walker2d-v5": "walker2d_v5.xml",
    "HalfCheetah-v5": "half_cheetah.xml",
    "Ant-v5": "ant.xml",
    "Humanoid-v5": "humanoid.xml",
}
VIEWS = {
    "Hopper-v5": {"distance": 3.2, "height": 1.4, "lookZ": 0.9},
    "Walker2d-v5": {"distance": 3.6, "height": 1.5, "lookZ": 1.0},
    "HalfCheetah-v5": {"distance": 3.6, "height": 1.2, "lookZ": 0.4},
    "Ant-v5": {"distance": 4.0, "height": 2.6, "lookZ": 0.4},
    "Humanoid-v5": {"distance": 4.0, "height": 2.0, "lookZ": 1.1},
}
MAX_EPISODE_STEPS = 1000  # gymnasium's TimeLimit of the five envs
# npm package -> (file in its folder, name in the page); the versions are web/package.json's pins.
NPM_FILES = {
    "onnxruntime-web": [("dist/ort.wasm.min.mjs", "ort.wasm.min.mjs"),
                        ("dist/ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.mjs"),
                        ("dist/ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.wasm")],
    "mujoco": [("mujoco.js", "mujoco.js"), ("mujoco.wasm", "mujoco.wasm")],
    "three": [("build/three.module.js", "three.module.js"), ("build/three.core.js", "three.core.js"),
              ("LICENSE", "licenses/three.LICENSE")],
}
# The largest action difference allowed from the bundle's policy.onnx (itself within 1e-4 of the torch runner).
GRAPH_TOLERANCE = 1e-4


def without_compiler_threads(xml: str, name: str) -> str:
    """The MJCF with ``usethread="false"`` on its compiler: in a page without cross-origin isolation MuJoCo's
    compiler thread pool fails to start ("thread constructor failed")."""
    if re.search(r"<compiler\b[^>]*\busethread=", xml):
        return xml
    if re.search(r"<compiler\b", xml):
        return re.sub(r"<compiler\b", '<compiler usethread="false"', xml, count=1)
    if not re.search(r"<mujoco\b[^>]*>", xml):
        raise BundleError(f"{name}: no <mujoco> element; not an MJCF model")
    return re.sub(r"(<mujoco\b[^>]*>)", r'\1\n  <compiler usethread="false"/>', xml, count=1)


def env_model(env_id: str, bundle_dir: Path) -> tuple[str, str, int, int]:
    """gymnasium's MJCF of ``env_id`` (file name, text for the page), its observation size and actuator count,
    checked: the text
    compiles in this MuJoCo to the model gymnasium runs (the same nq, nv, nu)."""
    import gymnasium as gym
    import mujoco

    if env_id not in ENV_XML:
        raise BundleError(f"{bundle_dir / CONFIG_FILE}: env_id {env_id!r} is not one gptrl web computes in "
                          f"JavaScript (gptrl/web/static/gptrl-web.mjs): {', '.join(ENV_XML)}")
    env = gym.make(env_id)
    try:
        base = env.unwrapped
        path = Path(base.fullpath)
        if path.name != ENV_XML[env_id]:
            raise BundleError(f"{env_id}: gymnasium loads {path.name}, gptrl web expects {ENV_XML[env_id]}")
        xml = without_compiler_threads(path.read_text(), str(path))
        compiled = mujoco.MjModel.from_xml_string(xml)
        if (compiled.nq, compiled.nv, compiled.nu) != (base.model.nq, base.model.nv, base.model.nu):
            raise BundleError(f"{path}: with usethread=\"false\" it compiles to another model")
        return path.name, xml, int(np.prod(env.observation_space.shape)), int(base.model.nu)
    finally:
        env.close()


def check_graph(graph: Path, bundle: Bundle, kv: int, mode: str, *, steps: int | None = None) -> float:
    """The stateful graph takes the bundle's policy.onnx actions (that graph was verified against the torch runner
    when exported; tests check it is the export of the folder's weights) over 3x the cache + 8 closed-loop steps
    of ``gptrl.synthetic.ClosedLoopEnv``, restarted halfway. Returns the largest action difference."""
    from gptrl.runtime import load_policy

    shipped = bundle.path / POLICY_FILE
    if not shipped.is_file():
        raise BundleError(f"{shipped}: missing; gptrl web checks its graph against the bundle's policy.onnx "
                          f"(write it with `gptrl export {bundle.path}`)")
    reference = load_policy(bundle.path, kv_cache_max_len=kv, bos_cache_mode=mode)  # type: ignore[arg-type]
    policy = load_policy(graph)
    c, norm = bundle.config, bundle.normalizer
    env = ClosedLoopEnv(c.state_dim, c.action.width, 1, mean=norm.mean if norm.enabled else None,
                        std=norm.std if norm.enabled else None, seed=0)
    obs = c.observation.from_unit(env.reset())
    reference.reset(obs)
    policy.reset(obs)
    steps = steps or 3 * kv + 8
    worst = 0.0
    for t in range(steps):
        expected, got = reference.act(obs), policy.act(obs)
        worst = max(worst, float(np.abs(np.asarray(got) - np.asarray(expected)).max()))
        obs = c.observation.from_unit(env.step(c.action.feedback(NUMPY, expected)))
        if t == steps // 2:
            reference.reset_rows(np.array([True]))
            policy.reset_rows(np.array([True]))
    if not worst <= GRAPH_TOLERANCE:
        raise BundleError(f"{graph.name}: the stateful graph built from {bundle.path} differs from its {POLICY_FILE} "
                          f"by {worst:.3e} in the action over {steps} closed-loop steps (tolerance "
                          f"{GRAPH_TOLERANCE:g}); nothing was written")
    return worst


def npm_packages(node_modules: Path) -> dict[str, dict]:
    """The installed package.json of each package the page copies, its version checked against web/package.json's
    pins."""
    manifest = node_modules.parent / "package.json"
    pins = json.loads(manifest.read_text())["dependencies"] if manifest.is_file() else {}
    versions = {}
    for package in NPM_FILES:
        installed = node_modules / package / "package.json"
        if not installed.is_file():
            raise FileNotFoundError(f"{installed}: missing; install the page's npm packages with `npm ci` in "
                                    f"{node_modules.parent} (`make test` does where npm exists), or pass "
                                    "--node-modules DIR")
        versions[package] = json.loads(installed.read_text())
        if package in pins and pins[package] != versions[package]["version"]:
            raise BundleError(f"{installed}: version {versions[package]['version']}, {manifest} pins {pins[package]}; "
                              f"run `npm ci` in {node_modules.parent}, or pass --node-modules DIR")
    return versions


def build_site(bundle_dir: str | Path, out: str | Path, *, overwrite: bool = False,
               node_modules: str | Path | None = None) -> dict:
    """Write the page of the Causal GPT-RL bundle ``bundle_dir`` to the folder ``out`` (atomically: on any error
    nothing is left there). Returns what site.json holds, plus ``action_error`` (the graph's check)."""
    bundle_dir, out = Path(bundle_dir), Path(out)
    node_modules = Path(node_modules) if node_modules is not None else NODE_MODULES
    reads = source_files(bundle_dir)
    check_output(out, reads, folder=True)
    family = family_of_folder(bundle_dir)
    if family.name != "causal":
        raise BundleError(f"{bundle_dir}: a {family.title} bundle; gptrl web runs Causal GPT-RL policies (the "
                          "page drives the stateful-v1 graph without a target return)")
    packages = npm_packages(node_modules)
    versions = {name: p["version"] for name, p in packages.items()}
    bundle = load_bundle(bundle_dir)
    config = bundle.config
    if config.action.dtype != "float32" or config.observation.dtype != "float32":
        raise BundleError(f"{bundle_dir / CONFIG_FILE}: {config.action.dtype} actions and {config.observation.dtype} "
                          "observations; the MuJoCo page feeds float32 observations and takes float32 actions")
    xml_name, xml, obs_size, nu = env_model(config.env_id, bundle_dir)
    if (config.state_dim, config.action.size) != (obs_size, nu):
        raise BundleError(f"{bundle_dir / CONFIG_FILE}: state_dim {config.state_dim} and {config.action.size} "
                          f"actions, but {config.env_id} observes {obs_size} numbers and takes {nu}")
    kv, mode = resolve_serving(config, None, None)
    data = serialize(build_policy_graph(bundle, "stateful", kv=kv, bos_cache_mode=mode, version=__version__))
    site = {"bundle": bundle_dir.resolve().name, "env_id": config.env_id, "xml": xml_name, "policy": POLICY,
            "kv": kv, "bos_cache_mode": mode, "max_episode_steps": MAX_EPISODE_STEPS, "gptrl_version": __version__,
            "npm": versions, "view": VIEWS[config.env_id],
            "reset_noise": "the page's own seeded generator (mulberry32), not numpy's: seed N in the page is not "
                           "gymnasium's reset(seed=N)"}
    with atomic_dir(out, overwrite=overwrite, reads=reads) as tmp:
        (tmp / POLICY).write_bytes(data)
        error = check_graph(tmp / POLICY, bundle, kv, mode)
        (tmp / xml_name).write_text(xml)
        for name in PAGE_FILES:
            (tmp / name).write_bytes((STATIC / name).read_bytes())
        for package, files in NPM_FILES.items():
            for source, name in files:
                path = node_modules / package / source
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing from the installed {package} {versions[package]}; "
                                            f"run `npm ci` in {node_modules.parent}, or pass --node-modules DIR")
                (tmp / name).parent.mkdir(exist_ok=True)
                (tmp / name).write_bytes(path.read_bytes())
        notice = {name: {key: p.get(key) for key in ("version", "license", "homepage")} for name, p in packages.items()}
        (tmp / "licenses" / "packages.json").write_text(json.dumps(notice, indent=2) + "\n")
        (tmp / SITE_FILE).write_text(json.dumps(site, indent=2) + "\n")
    return {**site, "action_error": error}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript",
        ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".xml": "text/xml",
        ".json": "application/json"}

    def log_message(self, format, *args):
        pass


def make_server(site_dir: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server of the folder ``gptrl web`` wrote, listening on 127.0.0.1:``port`` only (0: a free port)."""
    site_dir = Path(site_dir)
    if not (site_dir / SITE_FILE).is_file():
        raise FileNotFoundError(f"{site_dir / SITE_FILE}: missing; {site_dir} is not a folder `gptrl web BUNDLE -o "
                                "DIR` wrote")
    handler = functools.partial(_Handler, directory=str(site_dir))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(site_dir: str | Path, port: int = 8000) -> None:
    """Serve a folder ``gptrl web`` wrote on http://127.0.0.1:PORT/ (never another interface) until interrupted."""
    with make_server(site_dir, port) as server:
        print(f"serving {site_dir} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
        server.serve_forever()
