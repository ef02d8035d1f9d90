"""Write the lock files (``make lock``): exact versions with sha256 hashes for each install profile.

Each ``locks/PROFILE.txt`` is what ``uv pip compile --generate-hashes`` resolves for the profile's extras of
pyproject.toml, for CPython 3.11 on x86-64 Linux, and is installed by plain pip with ``--require-hashes`` (see the
Makefile). The first line after uv's header records a digest of pyproject's dependency tables, so a test can tell
when pyproject changed and the locks were not refreshed. Existing pins are kept unless ``--upgrade`` is given.

torch is pinned per profile: ``dev`` takes the 2.13.0 CPU build from wherever pip finds it (its configured
find-links, else PyTorch's CPU index); ``cuda`` takes PyPI's default 2.13.0 build, which is the CUDA one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
TARGET = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_VERSION = "2.13.0"
DIGEST_PREFIX = "# pyproject digest: "

# profile -> (extras, torch pin or None, the profile whose pins it must agree with)
PROFILES: dict[str, tuple[list[str], str | None, str | None]] = {
    "dev": (["cpu", "dev"], f"{TORCH_VERSION}+cpu", None),
    "runtime": (["cpu", "mujoco", "progress"], None, "dev"),
    "cuda": (["cuda", "train", "media", "hub"], TORCH_VERSION, "dev"),
}


def pyproject_digest(path: Path = ROOT / "pyproject.toml") -> str:
    """sha256 of everything in pyproject.toml that decides what a lock holds."""
    data = tomllib.loads(path.read_text())
    project = data["project"]
    relevant = {"requires-python": project.get("requires-python"), "dependencies": project.get("dependencies", []),
                "optional-dependencies": project.get("optional-dependencies", {}),
                "build-requires": data.get("build-system", {}).get("requires", [])}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def pip_find_links() -> list[str]:
    """The find-links pip is configured with (where this machine keeps the torch CPU wheel, if anywhere)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    links = [v for line in out.splitlines() if "find-links" in line for v in line.split("=", 1)[1].strip("'").split()]
    links += os.environ.get("PIP_FIND_LINKS", "").split()
    return list(dict.fromkeys(links))


def torch_sources(pin: str) -> list[str]:
    if not pin.endswith("+cpu"):
        return []  # PyPI's own torch
    links = [a for link in pip_find_links() for a in ("--find-links", link)]
    return links or ["--index", TORCH_CPU_INDEX, "--index-strategy", "unsafe-best-match"]


def pins(lock: Path, skip: set[str]) -> list[str]:
    """``name==version`` lines of a lock, without the named packages."""
    lines = [ln.split()[0] for ln in lock.read_text().splitlines() if "==" in ln and not ln.startswith(("#", " "))]
    return [ln for ln in lines if ln.split("==")[0].lower() not in skip]


def compile_profile(uv: list[str], name: str, upgrade: bool) -> None:
    extras, torch_pin, agree_with = PROFILES[name]
    out = LOCKS / f"{name}.txt"
    constraints = []
    if torch_pin:
        constraints.append(f"torch=={torch_pin}")
    if agree_with:  # shared packages at the same versions, so profiles installed into one venv agree
        constraints += pins(LOCKS / f"{agree_with}.txt", skip={"torch", "onnxruntime", "onnxruntime-gpu"})
    cmd = [*uv, "pip", "compile", "pyproject.toml", *[a for e in extras for a in ("--extra", e)],
           "--generate-hashes", *TARGET, "--constraint", f"{name}-pins.txt", "--output-file", str(out), "--quiet",
           "--custom-compile-command", "make lock", *torch_sources(torch_pin or ""),
           *(["--upgrade"] if upgrade else [])]
    run_in_scratch(cmd, {f"{name}-pins.txt": constraints, "pyproject.toml": None})
    add_digest(out)


def compile_build(uv: list[str], upgrade: bool) -> None:
    """The build backend for the editable install (pip installs it with --no-build-isolation)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    out = LOCKS / "build.txt"
    run_in_scratch([*uv, "pip", "compile", "build-system.in", "--generate-hashes", *TARGET, "--output-file", str(out),
                    "--quiet", "--custom-compile-command", "make lock", *(["--upgrade"] if upgrade else [])],
                   {"build-system.in": [*requires, "wheel"]})
    add_digest(out)


def run_in_scratch(cmd: list[str], files: dict[str, list[str] | None]) -> None:
    """Run uv in a scratch folder holding ``files`` (None: a copy of the repo's file), so the lock's "via"
    notes name them by their short names instead of a random temporary path."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, lines in files.items():
            text = (ROOT / name).read_text() if lines is None else "\n".join(lines) + "\n"
            (Path(tmp) / name).write_text(text)
        subprocess.run(cmd, check=True, cwd=tmp)


def add_digest(lock: Path) -> None:
    lines = [ln for ln in lock.read_text().splitlines() if not ln.startswith(DIGEST_PREFIX)]
    lock.write_text("\n".join([DIGEST_PREFIX + pyproject_digest(), *lines]) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upgrade", action="store_true", help="re-resolve every package to its newest allowed version")
    p.add_argument("--uv", default=f"{sys.executable} -m uv", help="how to run uv")
    a = p.parse_args(argv)
    uv = a.uv.split()
    compile_build(uv, a.upgrade)
    for name in PROFILES:  # dev first: the others agree with it
        compile_profile(uv, name, a.upgrade)
        print(f"locks/{name}.txt")


if __name__ == "__main__":
    main()
