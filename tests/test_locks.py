"""The lock files in locks/ agree with pyproject.toml: every requirement of every profile is pinned, hashed and
satisfied, torch is the build each profile promises, one onnxruntime wheel per profile, and the locks were
refreshed (``make lock``) after pyproject's dependencies last changed."""

import importlib.util
import re
from itertools import combinations
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the locks are
ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TARGET_ENV = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _lock_module():
    spec = importlib.util.spec_from_file_location("gptrl_lock", ROOT / "locks" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _lock_module()


def pins(profile: str) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of locks/PROFILE.txt."""
    text = (ROOT / "locks" / f"{profile}.txt").read_text()
    found = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if match:
            found[canonicalize_name(match[1])] = (Version(match[2]), block.count("--hash=sha256:"))
    return found


def requirements(extras: list[str]) -> list[Requirement]:
    """The profile's requirements, with gptrl[...] self-references expanded, markers applied for the target."""
    out, todo, seen = [], list(extras), set()
    for dep in PYPROJECT["project"]["dependencies"]:
        out.append(Requirement(dep))
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for dep in EXTRAS[extra]:
            req = Requirement(dep)
            if req.name == "gptrl":
                todo.extend(req.extras)
            elif req.marker is None or req.marker.evaluate({**TARGET_ENV, "extra": extra}):
                out.append(req)
    return out


@pytest.mark.parametrize("profile", sorted(LOCK.PROFILES))
def test_every_requirement_of_the_profile_is_pinned_within_its_range(profile):
    locked = pins(profile)
    for req in requirements(LOCK.PROFILES[profile][0]):
        name = canonicalize_name(req.name)
        assert name in locked, f"locks/{profile}.txt lacks {req}: run `make lock`"
        assert req.specifier.contains(locked[name][0], prereleases=True), \
            f"locks/{profile}.txt pins {name}=={locked[name][0]}, outside pyproject's {req}: run `make lock`"


@pytest.mark.parametrize("profile", [*sorted(LOCK.PROFILES), "build"])
def test_locks_were_refreshed_after_pyproject_changed_and_every_pin_is_hashed(profile):
    text = (ROOT / "locks" / f"{profile}.txt").read_text()
    assert text.startswith(LOCK.DIGEST_PREFIX + LOCK.pyproject_digest()), \
        f"pyproject.toml's dependencies changed since locks/{profile}.txt was written: run `make lock`"
    locked = pins(profile)
    assert locked and all(n >= 1 for _, n in locked.values()), [k for k, (_, n) in locked.items() if n == 0]


def test_torch_is_the_cpu_build_for_development_and_pypis_build_for_cuda():
    assert pins("dev")["torch"][0] == Version("2.13.0+cpu")
    assert pins("cuda")["torch"][0] == Version("2.13.0")
    assert "torch" not in pins("runtime")
    assert any(name.startswith("nvidia-") for name in pins("cuda"))  # PyPI's 2.13.0 is the CUDA build
    assert not any(name.startswith("nvidia-") for name in pins("dev"))


def test_each_profile_holds_exactly_one_onnxruntime_wheel():
    for profile, wheel in (("runtime", "onnxruntime"), ("dev", "onnxruntime"), ("cuda", "onnxruntime-gpu")):
        assert {"onnxruntime", "onnxruntime-gpu"} & set(pins(profile)) == {wheel}, profile


def test_no_combination_of_extras_installs_both_onnxruntime_wheels():
    for a, b in combinations(sorted(EXTRAS), 2):
        names = {canonicalize_name(r.name) for r in requirements([a, b])}
        if {a, b} != {"cpu", "cuda"}:
            assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"gptrl[{a},{b}] installs both wheels"


def test_the_runtime_lock_agrees_with_the_development_lock():
    """`make demo` then `make test` in one .venv must not move a package between versions."""
    dev, runtime = pins("dev"), pins("runtime")
    assert {k: v for k, (v, _) in runtime.items() if dev[k][0] != v} == {}
