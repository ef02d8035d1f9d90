"""Executors (gptrl.executor): the seeds of an evaluation played in this process or by Ray actors, with the returns of
the local loop; a killed worker replaced and its item played again; an interrupted run resumed from its results file.

Every Ray process runs inside a network namespace that has only loopback (Ray binds to the machine's external
interface otherwise) and a PID namespace of its own: ``unshare -n -p -f --mount-proc --kill-child``. When the
namespace's first process exits, the kernel kills everything left in it, so no Ray process outlives a test, even
one that fails or times out. Ray's files (``/tmp/ray``: session logs, the address of the last cluster started) go
to a tmpfs mounted there inside the namespace, so a test's cluster is never found by another process. Where
``unshare`` is not permitted, the Ray tests are skipped, saying so.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from gptrl.evaluation import EpisodeJob, evaluate
from gptrl.executor import LocalExecutor, RayExecutor, executor_for
from gptrl.runtime import load_policy

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "bundles" / "hopper-v5"
CARTPOLE = ROOT / "bundles" / "cartpole-v1"
NAMESPACE = ["unshare", "-n", "-p", "-f", "--mount-proc", "--kill-child"]


def _namespace_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    try:
        probe = subprocess.run([*NAMESPACE, "sh", "-c", "ip link set lo up && mkdir -p /tmp/ray && "
                                "mount -t tmpfs gptrl-test-ray /tmp/ray"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed to run ({exc})"
    if probe.returncode != 0:
        return f"a loopback-only network namespace is not permitted here: {probe.stderr.strip()[:200]}"
    return None


def run_in_namespace(code: str, timeout: int = 300, before: str = "") -> dict:
    """Run ``code`` (Python, printing one JSON line prefixed RESULT) in a loopback-only namespace with Ray allowed,
    after the shell command ``before``; afterwards, list any Ray process still alive in that namespace."""
    problem = _namespace_problem()
    if problem:
        pytest.skip(f"Ray tests need a loopback-only namespace: {problem}")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(code))
    script = f"""
ip link set lo up || exit 90
mkdir -p /tmp/ray && mount -t tmpfs gptrl-test-ray /tmp/ray || exit 92
cd {shlex.quote(str(ROOT))}
{before}
{shlex.quote(sys.executable)} {shlex.quote(f.name)}
rc=$?
for i in $(seq 40); do  # a killed actor's process exits asynchronously (ray.kill returns first): allow it 10 s
  left=$(ps -eo comm= | grep -E 'raylet|gcs_server|ray::' || true)
  [ -z "$left" ] && break
  sleep 0.25
done
echo "LEFT:$(echo $left)"
exit $rc
"""
    try:
        proc = subprocess.run([*NAMESPACE, "bash", "-c", script], capture_output=True, text=True, timeout=timeout)
    finally:
        Path(f.name).unlink()
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    [left] = [ln for ln in proc.stdout.splitlines() if ln.startswith("LEFT:")]
    out = json.loads(line[len("RESULT "):])
    out["left"] = left[len("LEFT:"):].strip()
    return out


class CountingJob:
    """An EpisodeJob that counts the items it plays (here, in this process) and can stop the run after some."""

    def __init__(self, inner: EpisodeJob, stop_after: int | None = None):
        self.inner, self.stop_after, self.played = inner, stop_after, []

    def describe(self):
        return self.inner.describe()

    def setup(self):
        return self.inner.setup()

    def run(self, state, item):
        if self.stop_after is not None and len(self.played) == self.stop_after:
            raise KeyboardInterrupt("interrupted by the test")
        self.played.append(item)
        return self.inner.run(state, item)

    def close(self, state):
        self.inner.close(state)


def _hopper_job(max_steps: int = 60, **kw) -> EpisodeJob:
    return EpisodeJob("Hopper-v5", load_policy(HOPPER).source, num_envs=1, max_steps=max_steps, **kw)


def test_local_executor_gives_the_local_loop_returns():
    policy = load_policy(HOPPER)
    here = evaluate("Hopper-v5", policy, seeds=range(3), max_steps=80)
    seen = []
    there = evaluate("Hopper-v5", policy, seeds=range(3), max_steps=80, executor=LocalExecutor())
    assert there == here
    assert len(set(here.returns)) == 3  # three different episodes, so equality says something
    job = _hopper_job(80)
    assert LocalExecutor().map(job, [[0], [1], [2]], on_result=lambda i, r: seen.append(i)) == \
        [[[r, n]] for r, n in zip(here.returns, here.lengths)]
    assert seen == [0, 1, 2]


def test_vector_waves_through_an_executor_match_one_env():
    one = evaluate("Hopper-v5", load_policy(HOPPER), seeds=range(5), max_steps=50)
    waves = evaluate("Hopper-v5", load_policy(HOPPER, num_envs=2), seeds=range(5), max_steps=50, num_envs=2,
                     executor=LocalExecutor())
    assert waves.returns == one.returns and waves.lengths == one.lengths


def test_a_decision_transformer_through_an_executor_gets_its_target():
    policy = load_policy(ROOT / "bundles" / "dt-hopper-v5")
    here = evaluate("Hopper-v5", policy, seeds=range(2), max_steps=100, target_return=2000.0)
    there = evaluate("Hopper-v5", policy, seeds=range(2), max_steps=100, target_return=2000.0,
                     executor=LocalExecutor())
    other = evaluate("Hopper-v5", policy, seeds=range(2), max_steps=100, target_return=3000.0,
                     executor=LocalExecutor())
    assert there == here and other.returns != here.returns  # the target reached the workers' policy


def test_an_interrupted_run_resumes_from_its_results_file(tmp_path):
    results = tmp_path / "run" / "results.json"
    items = [[s] for s in range(5)]
    full = LocalExecutor().map(_hopper_job(), items)
    first = CountingJob(_hopper_job(), stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(results=results).map(first, items)
    saved = json.loads(results.read_text())
    assert [item for item, _ in saved["results"]] == [[0], [1]]
    assert [p.name for p in results.parent.iterdir()] == ["results.json"]  # no temporary left beside it
    second = CountingJob(_hopper_job())
    assert LocalExecutor(results=results).map(second, items) == full
    assert second.played == items[2:]  # only the seeds not yet in the file were played
    again = CountingJob(_hopper_job())
    assert LocalExecutor(results=results).map(again, items) == full and again.played == []
    more = CountingJob(_hopper_job())  # more seeds: the file's are reused, only the new one is played
    assert LocalExecutor(results=results).map(more, [*items, [5]])[:5] == full and more.played == [[5]]


def test_a_results_file_of_another_run_is_refused(tmp_path):
    results = tmp_path / "results.json"
    LocalExecutor(results=results).map(_hopper_job(), [[0]])
    with pytest.raises(ValueError, match=r"results\.json: holds results of another run \(key 'job'.*max_steps"):
        LocalExecutor(results=results).map(_hopper_job(max_steps=61), [[0]])
    results.write_text('{"something": "else"}\n')
    with pytest.raises(ValueError, match=r"results\.json: not a gptrl results file \(key 'format'"):
        LocalExecutor(results=results).map(_hopper_job(), [[0]])


def test_what_an_executor_cannot_run_is_refused():
    policy = load_policy(HOPPER)
    with pytest.raises(ValueError, match="sample_seed=3: sampled evaluation .* cannot be spread"):
        evaluate("CartPole-v1", load_policy(CARTPOLE), seeds=range(2), sample_seed=3, executor=LocalExecutor())
    from gptrl.evaluation import make_env

    env = make_env("Hopper-v5")
    with pytest.raises(ValueError, match="takes an env id, not"):
        evaluate(env, policy, seeds=range(2), executor=LocalExecutor())
    env.close()

    class NoSource:
        num_envs, return_conditioned = 1, False

    with pytest.raises(ValueError, match="NoSource records no source"):
        evaluate("Hopper-v5", NoSource(), seeds=range(2), executor=LocalExecutor())
    with pytest.raises(ValueError, match="--workers 2 needs --ray"):
        executor_for(None, num_workers=2)
    with pytest.raises(ValueError, match="num_workers must be a positive integer, got 0"):
        RayExecutor(num_workers=0)


def test_a_policy_source_rebuilds_the_same_policy_without_the_folder():
    policy = load_policy(HOPPER)
    twin = policy.source.load()
    assert twin.source is policy.source
    assert policy.source.describe()["graph_sha256"] == __import__("hashlib").sha256(
        (HOPPER / "policy.onnx").read_bytes()).hexdigest()
    assert evaluate("Hopper-v5", twin, seeds=[7], max_steps=40).returns == \
        evaluate("Hopper-v5", policy, seeds=[7], max_steps=40).returns


RAY_EVAL = """
import json, os, signal, sys
from pathlib import Path
from gptrl.evaluation import EpisodeJob, evaluate
from gptrl.executor import LocalExecutor, RayExecutor
from gptrl.runtime import load_policy

class KillOnce:
    # the worker playing `item` kills its own process (SIGKILL) the first time, as an OOM kill or a lost node would
    def __init__(self, inner, item, marker):
        self.inner, self.item, self.marker = inner, item, marker
    def describe(self):
        return self.inner.describe()
    def setup(self):
        return self.inner.setup()
    def run(self, state, item):
        if item == self.item and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.run(state, item)
    def close(self, state):
        self.inner.close(state)

class Modules:
    def describe(self): return {}
    def setup(self): return None
    def run(self, state, item):
        import gptrl.evaluation, gptrl.runtime  # what an evaluation worker imports
        return sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "ray")
    def close(self, state): pass

policy = load_policy(HOPPER)
seeds = range(4)
local = evaluate("Hopper-v5", policy, seeds=seeds, max_steps=MAX_STEPS)
out = {"local": local.returns, "local_lengths": local.lengths}
with RayExecutor(num_workers=2) as ex:
    ray_result = evaluate("Hopper-v5", policy, seeds=seeds, max_steps=MAX_STEPS, executor=ex)
    out["ray"], out["ray_lengths"] = ray_result.returns, ray_result.lengths
    out["same_dataclass"] = type(ray_result).__name__ == type(local).__name__ and ray_result == local
    out["workers_used"] = ex.workers_used
    job = EpisodeJob("Hopper-v5", policy.source, num_envs=1, max_steps=MAX_STEPS)
    killed = ex.map(KillOnce(job, [2], str(TMP / "killed")), [[s] for s in seeds])
    out["killed"] = [r for [[r, n]] in killed]
    out["restarts"], out["kill_happened"] = ex.restarts, (TMP / "killed").exists()
    out["worker_modules"] = ex.map(Modules(), [0])[0]
    # resume: half the seeds from a local run's file, the rest by Ray
    results = TMP / "results.json"
    LocalExecutor(results=results).map(job, [[s] for s in seeds][:2])
    resumed = RayExecutor(num_workers=2, results=results)  # joins the running instance
    out["resumed"] = [r for [[r, n]] in resumed.map(job, [[s] for s in seeds])]
    out["resumed_workers"] = resumed.workers_used
print("RESULT " + json.dumps(out))
"""


def test_ray_workers_give_the_local_returns_and_recover_a_killed_worker(tmp_path):
    out = run_in_namespace(f"HOPPER = {str(HOPPER)!r}\nTMP = __import__('pathlib').Path({str(tmp_path)!r})\n"
                           "MAX_STEPS = 150\n" + RAY_EVAL)
    assert len(set(out["local"])) == 4  # four different episodes
    assert out["ray"] == out["local"] and out["ray_lengths"] == out["local_lengths"]  # bit for bit
    assert out["same_dataclass"] and out["workers_used"] == 2
    assert out["kill_happened"] and out["restarts"] == 1
    assert out["killed"] == out["local"]  # the killed worker's seed was played again by a fresh one
    assert out["worker_modules"] == ["ray"]  # no torch in a worker
    assert out["resumed"] == out["local"] and out["resumed_workers"] == 2  # only seeds 2 and 3 were left
    assert out["left"] == ""  # RayExecutor's shutdown stopped every Ray process it started


def test_gptrl_eval_ray_starts_a_local_cluster_and_matches_the_local_command():
    code = f"""
import contextlib, io, json
from gptrl.cli import main
def run(*extra):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", {str(CARTPOLE)!r}, "--episodes", "3", "--seed", "5", "--max-steps", "60", "--json",
                     *extra]) == 0
    return json.loads(buf.getvalue())
here, there = run(), run("--ray", "--workers", "2")
print("RESULT " + json.dumps({{"here": here, "there": there}}))
"""
    out = run_in_namespace(code)
    here, there = out["here"], out["there"]
    assert there["returns"] == here["returns"] and there["lengths"] == here["lengths"]
    assert there["ray"]["address"] == "local" and there["ray"]["workers"] == 2 and there["ray"]["restarts"] == 0
    assert there["ray"]["start_seconds"] > 0
    assert out["left"] == ""  # the local cluster was shut down after the command


RAY_DATA = """
import json
import numpy as np
from gptrl.executor import RayExecutor
from gptrl.training.dagger import rollout
from gptrl.training.datasets import collect_episode_buffers
from gptrl.training.teacher_actor import load_teacher_actor

expert = load_teacher_actor(TEACHERS / "expert.safetensors")
medium = load_teacher_actor(TEACHERS / "medium.safetensors")

def same(a, b):
    fields = ("id", "seed", "observations", "actions", "rewards", "terminations", "truncations")
    return len(a) == len(b) and all(
        all(np.array_equal(getattr(x, f), getattr(y, f)) for f in fields)
        and np.array_equal(x.infos["expert_action"], y.infos["expert_action"]) for x, y in zip(a, b))

out = {}
here = collect_episode_buffers("Hopper-v5", medium, expert, 3, seed=11, noise_std=0.1, progress=False)
d_here, s_here = rollout("Hopper-v5", BUNDLE, expert, episodes=3, beta=0.5, seed=21, progress=False)
with RayExecutor(num_workers=2) as ex:
    there = collect_episode_buffers("Hopper-v5", medium, expert, 3, seed=11, noise_std=0.1, progress=False,
                                    executor=ex)
    d_there, s_there = rollout("Hopper-v5", BUNDLE, expert, episodes=3, beta=0.5, seed=21, progress=False,
                               executor=ex)
    out["workers"] = ex.workers_used
out["datasets_same"] = same(here, there)
out["dagger_same"] = same(d_here, d_there) and s_here == s_there
out["ids"] = [b.id for b in there]
out["steps"] = [len(b.actions) for b in here]
out["dagger_stats"] = s_here
print("RESULT " + json.dumps(out))
"""


def test_dataset_collection_and_dagger_rollouts_on_ray_are_those_of_this_process():
    out = run_in_namespace(f"BUNDLE = __import__('pathlib').Path({str(HOPPER)!r})\n"
                           f"TEACHERS = __import__('pathlib').Path({str(ROOT / 'teachers' / 'hopper')!r})\n"
                           + RAY_DATA, timeout=400)
    assert out["datasets_same"] and out["ids"] == [0, 1, 2] and min(out["steps"]) > 10
    assert out["dagger_same"] and out["workers"] == 2
    assert 0.3 < out["dagger_stats"]["expert_step_fraction"] < 0.7  # beta 0.5: both acted
    assert out["dagger_stats"]["expert_draws"] == "per episode and step"
    assert out["left"] == ""


def test_gptrl_eval_ray_auto_joins_a_running_cluster_and_leaves_it_running():
    ray = shlex.quote(str(Path(sys.executable).parent / "ray"))
    code = f"""
import contextlib, io, json
from gptrl.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    assert main(["eval", {str(CARTPOLE)!r}, "--episodes", "2", "--max-steps", "40", "--json", "--ray", "auto"]) == 0
print("RESULT " + json.dumps(json.loads(buf.getvalue())))
"""
    out = run_in_namespace(code, before=f"{ray} start --head --num-cpus=2 --disable-usage-stats "
                                        "--include-dashboard=false > /dev/null 2>&1 || exit 91")
    assert out["returns"] == [40.0, 40.0] and out["ray"]["address"] == "auto" and out["ray"]["workers"] == 2
    assert "raylet" in out["left"] and "gcs_server" in out["left"]  # joined, not started: the cluster stays up
