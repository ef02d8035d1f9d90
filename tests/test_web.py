"""`gptrl web`: the page's folder (torch-free, atomic, refusals that name the file), its env module against
gymnasium in Node.js (MuJoCo's wasm build; onnxruntime-web for a closed-loop Hopper episode), and the five MuJoCo
bundles' pages in headless Chromium (playwright-core driving the system's browser).

The Node and browser parts need `npm ci` in web/ (`make test` runs it where npm exists); the browser part needs a
Chromium (`.ci/run` installs Debian's; GPTRL_CHROMIUM names another) and is skipped, saying so, where none is found.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from gptrl.bundle import load_bundle
from gptrl.cli import main
from gptrl.errors import BundleError
from gptrl.fileio import OutputExistsError
from gptrl.web import ENV_XML, NODE_MODULES, NPM_FILES, build_site, make_server
from gptrl.web import site as web_site

ROOT = Path(__file__).parent.parent
WEB = ROOT / "web"
BUNDLES = {env_id: ROOT / "bundles" / env_id.lower() for env_id in ENV_XML}
# The generalised coordinate of the root's height: a slide joint (planar robots) or the free joint's z.
ROOT_Z = {"Hopper-v5": 1, "Walker2d-v5": 1, "HalfCheetah-v5": 1, "Ant-v5": 2, "Humanoid-v5": 2}


def fake_node_modules(folder: Path) -> Path:
    """A web/node_modules stand-in holding the files the page copies (for the Python-only tests)."""
    pins = json.loads((WEB / "package.json").read_text())["dependencies"]
    for package, files in NPM_FILES.items():
        (folder / package).mkdir(parents=True)
        (folder / package / "package.json").write_text(json.dumps({"version": pins[package], "license": "test"}))
        for source, _ in files:
            (folder / package / source).parent.mkdir(parents=True, exist_ok=True)
            (folder / package / source).write_text(f"// {package} {source}\n")
    (folder.parent / "package.json").write_text((WEB / "package.json").read_text())
    return folder


@pytest.fixture
def npm(tmp_path) -> Path:
    return fake_node_modules(tmp_path / "web" / "node_modules")


# -- the folder (Python only) --------------------------------------------------------------------------------------


def test_the_folder_holds_the_page_the_graph_and_the_model(tmp_path, npm):
    info = build_site(BUNDLES["Hopper-v5"], tmp_path / "site", node_modules=npm)
    site = tmp_path / "site"
    meta = json.loads((site / "site.json").read_text())
    assert meta["env_id"] == "Hopper-v5" and meta["xml"] == "hopper.xml" and meta["kv"] == 6
    assert info["action_error"] <= web_site.GRAPH_TOLERANCE
    names = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    copied = {name for files in NPM_FILES.values() for _, name in files}
    assert names == {"index.html", "app.mjs", "gptrl-web.mjs", "policy.stateful.onnx", "hopper.xml", "site.json",
                     "licenses/packages.json", *copied}
    assert '<compiler usethread="false"' in (site / "hopper.xml").read_text()
    from gptrl.runtime import load_policy

    policy = load_policy(site / "policy.stateful.onnx")  # the stateful-v1 graph of the bundle's weights
    assert policy.kv_cache_max_len == 6


def test_without_compiler_threads_compiles_in_mujoco():
    import mujoco

    for env_id, name in ENV_XML.items():
        env = gym.make(env_id)
        xml = web_site.without_compiler_threads(Path(env.unwrapped.fullpath).read_text(), name)
        assert xml.count('usethread="false"') == 1
        assert mujoco.MjModel.from_xml_string(xml).nq == env.unwrapped.model.nq
        env.close()
    bare = web_site.without_compiler_threads("<mujoco model='m'><worldbody/></mujoco>", "m.xml")
    assert mujoco.MjModel.from_xml_string(bare).nbody == 1 and 'usethread="false"' in bare


def test_refusals_name_the_file_and_leave_nothing(tmp_path, npm, monkeypatch):
    out = tmp_path / "site"
    with pytest.raises(BundleError, match="dt-hopper-v5: a Decision Transformer bundle"):
        build_site(ROOT / "bundles" / "dt-hopper-v5", out, node_modules=npm)
    with pytest.raises(BundleError, match=r"cartpole-v1/config\.json: int64 actions"):
        build_site(ROOT / "bundles" / "cartpole-v1", out, node_modules=npm)
    with pytest.raises(FileNotFoundError, match=r"nowhere/onnxruntime-web/package\.json: missing; .*npm ci"):
        build_site(BUNDLES["Hopper-v5"], out, node_modules=tmp_path / "nowhere")
    pinned = npm / "three" / "package.json"
    pinned.write_text(json.dumps({"version": "0.0.1"}))
    with pytest.raises(BundleError, match=r"three/package\.json: version 0\.0\.1, .*package\.json pins"):
        build_site(BUNDLES["Hopper-v5"], out, node_modules=npm)
    pinned.unlink()
    fake_node_modules(tmp_path / "ok" / "node_modules")
    npm = tmp_path / "ok" / "node_modules"
    with pytest.raises(ValueError, match="holds .* which this command reads"):
        build_site(BUNDLES["Hopper-v5"], BUNDLES["Hopper-v5"].parent, node_modules=npm)
    assert not out.exists()

    def broken(*args, **kwargs):
        raise BundleError("the check failed")

    monkeypatch.setattr(web_site, "check_graph", broken)
    with pytest.raises(BundleError, match="the check failed"):
        build_site(BUNDLES["Hopper-v5"], out, node_modules=npm)
    assert not out.exists() and list(tmp_path.glob("*site*")) == []  # no half-written folder, no temporary
    monkeypatch.undo()
    build_site(BUNDLES["Hopper-v5"], out, node_modules=npm)
    with pytest.raises(OutputExistsError):
        build_site(BUNDLES["Hopper-v5"], out, node_modules=npm)
    build_site(BUNDLES["Walker2d-v5"], out, node_modules=npm, overwrite=True)
    assert json.loads((out / "site.json").read_text())["env_id"] == "Walker2d-v5"


def test_a_graph_that_differs_from_the_bundle_is_refused(tmp_path):
    """check_graph is no formality: a graph of the same weights with another normaliser is caught."""
    from gptrl.graph import serialize
    from gptrl.graph.policy import build_policy_graph

    bundle = load_bundle(BUNDLES["Hopper-v5"])
    graph = tmp_path / "policy.stateful.onnx"
    shifted = load_bundle(BUNDLES["Hopper-v5"])
    shifted.normalizer.mean[:] += 0.5  # the same weights, another normaliser: other actions
    graph.write_bytes(serialize(build_policy_graph(shifted, "stateful", kv=6, bos_cache_mode="discard",
                                                   version="t")))
    with pytest.raises(BundleError, match=r"differs from its policy\.onnx by .* in the action"):
        web_site.check_graph(graph, bundle, 6, "discard")


def test_the_cli_writes_and_serves_only_on_loopback_without_torch(tmp_path, npm):
    prelude = "import sys\nsys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
    code = prelude + (
        "import gptrl.cli\n"
        f"assert gptrl.cli.main(['web', {str(BUNDLES['Hopper-v5'])!r}, '-o', {str(tmp_path / 'site')!r}, "
        f"'--node-modules', {str(npm)!r}]) == 0\n"
        "assert not any(n == 'torch' or n.startswith('torch.') for n, m in sys.modules.items() if m is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "gptrl web" in done.stdout
    server = make_server(tmp_path / "site", 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        import urllib.request

        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url + "ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(url + "app.mjs") as response:
            assert response.headers["Content-Type"].startswith("text/javascript")
    finally:
        server.shutdown()
        server.server_close()
    assert main(["web", str(tmp_path / "site")]) == 2  # a page without --serve: says what to add
    assert main(["web", str(BUNDLES["Hopper-v5"])]) == 2  # a bundle without -o


# -- the env module in Node.js --------------------------------------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if not node:
        pytest.skip("Node.js is not installed: the page's env module cannot run here")
    if not (NODE_MODULES / "mujoco").is_dir():
        pytest.skip("web/node_modules is missing: `make test` installs it (npm ci in web/) where npm exists")
    return node


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    """The five MuJoCo bundles' pages, from the real npm packages."""
    _node()
    folder = tmp_path_factory.mktemp("sites")
    for env_id, bundle in BUNDLES.items():
        build_site(bundle, folder / env_id)
    return {env_id: folder / env_id for env_id in BUNDLES}


def _run_node(site: Path, cases: dict, folder: Path) -> dict:
    path = folder / "cases.json"
    path.write_text(json.dumps(cases))
    done = subprocess.run([_node(), str(WEB / "check.mjs"), str(site), str(path)], capture_output=True, text=True,
                          timeout=600, cwd=WEB)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _open_loop_case(env, state: tuple[np.ndarray, np.ndarray], steps: int, seed: int):
    """gymnasium's observations, rewards and terminations from ``state`` under random actions, cut at the first
    step that ends with a contact (the MuJoCo builds differ there by about 1e-5)."""
    u = env.unwrapped
    env.reset(seed=seed)
    u.set_state(*state)
    observations = [u._get_obs()]
    rewards, terminated, actions = [], [], []
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        action = (rng.uniform(-0.3, 0.3, env.action_space.shape) * env.action_space.high).astype(np.float32)
        obs, reward, term, _, _ = u.step(action)  # the unwrapped env: no TimeLimit, no checker
        if u.data.ncon:
            break
        actions.append(action.tolist())
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
    case = {"qpos": state[0].tolist(), "qvel": state[1].tolist(), "actions": actions}
    return case, np.array(observations), np.array(rewards), terminated


def test_the_module_observes_rewards_and_terminates_as_gymnasium(sites, tmp_path):
    """Per env: from gymnasium's reset(seed=0) state and from the same state lifted 2 m (free fall: at least 10
    contact-free steps), the module's observations, rewards and terminations equal gymnasium's over the steps
    before the first contact: the observations to 1e-4 relative (the planar envs: 1e-12), the rewards to 1e-4 (1e-6)."""
    for env_id, site in sites.items():
        env = gym.make(env_id)
        env.reset(seed=0)
        qpos, qvel = env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy()
        lifted = qpos.copy()
        lifted[ROOT_Z[env_id]] += 2.0
        expected = [_open_loop_case(env, (qpos, qvel), 30, 0), _open_loop_case(env, (lifted, qvel), 30, 1)]
        assert len(expected[1][0]["actions"]) >= 10, (env_id, len(expected[1][0]["actions"]))
        got = _run_node(site, {"open_loop": [e[0] for e in expected]}, tmp_path)["open_loop"]
        # The free-joint robots differ between MuJoCo 3.5.1 (wasm) and 4.0 (Python) by ~1e-6 a step from the first
        # step, in the air too (measured: at most 1.4e-5 over these steps); the planar ones agree to ~1e-14.
        # gymnasium computes the control cost in the action's float32 (the module in float64): ~1e-8 apart.
        tolerance, reward_tolerance = (1e-4, 1e-4) if env_id in ("Ant-v5", "Humanoid-v5") else (1e-12, 1e-6)
        for (_, observations, rewards, terminated), result in zip(expected, got):
            obs = np.array(result["observations"])
            assert obs.shape == observations.shape, (env_id, obs.shape, observations.shape)
            error = np.abs(obs - observations) / (1 + np.abs(observations))
            assert error.max() <= tolerance, (env_id, float(error.max()))
            reward_error = np.abs(np.array(result["rewards"]) - rewards).max(initial=0.0)
            assert reward_error <= reward_tolerance, (env_id, float(reward_error))
            assert result["terminated"] == terminated, env_id
        env.close()


def test_the_module_computes_exactly_the_envs_gptrl_web_offers(sites, tmp_path):
    code = ("const { ENVS } = await import(process.argv[1]);"
            "process.stdout.write(JSON.stringify(Object.keys(ENVS)));")
    done = subprocess.run([_node(), "--input-type=module", "-e", code,
                           (sites["Hopper-v5"] / "gptrl-web.mjs").as_uri()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)) == sorted(ENV_XML)


def test_a_closed_loop_hopper_episode_returns_what_python_returns(sites, tmp_path):
    """The page's loop (gptrl-web.mjs: MuJoCo wasm + onnxruntime-web running policy.stateful.onnx) from Python's
    reset(seed=0) state: the return within 1% of gymnasium + gptrl's runtime on the same graph."""
    from gptrl.runtime import load_policy

    site = sites["Hopper-v5"]
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    state = {"qpos": env.unwrapped.data.qpos.tolist(), "qvel": env.unwrapped.data.qvel.tolist(), "max_steps": 1000}
    policy = load_policy(site / "policy.stateful.onnx")
    policy.reset(obs)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    [got] = _run_node(site, {"closed_loop": [state]}, tmp_path)["closed_loop"]
    assert steps == 1000 and total > 3000, (steps, total)  # the shipped policy walks the whole episode
    assert got["length"] == steps, got
    assert abs(got["return"] - total) <= 0.01 * abs(total), (got["return"], total)
    print(f"Hopper-v5 seed 0: return {got['return']:.3f} in Node.js (MuJoCo wasm, onnxruntime-web), {total:.3f} in "
          "Python (gymnasium, gptrl's runtime)")


# -- the pages in headless Chromium ---------------------------------------------------------------------------------


def _chromium() -> str:
    for name in filter(None, (os.environ.get("GPTRL_CHROMIUM"), "chromium", "chromium-browser", "google-chrome")):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome or $GPTRL_CHROMIUM): the pages' "
                "browser test needs one; .ci/run installs Debian's")


def test_the_five_pages_run_in_headless_chromium(sites, tmp_path):
    """Each page loads, runs 300 steps of its bundle's policy, shows a finite return, logs no error or warning,
    and its screenshot is taken."""
    chromium = _chromium()
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.skip("web/node_modules/playwright-core is missing: `make test` installs it (npm ci in web/)")
    for env_id, site in sites.items():
        server = make_server(site, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        shot = tmp_path / f"{env_id}.png"
        try:
            done = subprocess.run([_node(), str(WEB / "browser.mjs"), chromium,
                                   f"http://127.0.0.1:{server.server_address[1]}/", str(shot), "300"],
                                  capture_output=True, text=True, timeout=300, cwd=WEB)
        finally:
            server.shutdown()
            server.server_close()
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        status = report["status"]
        assert status["error"] is None and status["steps"] == 300, (env_id, status)
        assert np.isfinite(status["return"]) and report["text"]["return"] == f"{status['return']:.1f}", env_id
        assert report["console"] == [] and report["page_errors"] == [], (env_id, report)
        assert status["stepsPerSecond"] > 0, env_id
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, env_id
        print(f"{env_id}: return {status['return']:.1f} after 300 steps, {status['stepsPerSecond']:.0f} steps/s, "
              f"loaded in {report['load_seconds']:.1f} s")
