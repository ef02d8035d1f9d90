"""File rules written once: atomic writes, JSON reading with limits, file digests.

Every file gptrl writes goes through :func:`atomic_path` (or :func:`atomic_dir` for a folder): the content goes
to a temporary sibling named ``.NAME.tmp-PID-RANDOM``, is flushed to disk, and is renamed over the destination
only when complete, so a crash, an exception or a signal never leaves a half-written file. Temporaries of dead
processes (a ``kill -9``) are swept the next time the same destination is written. No command writes over a file
it reads (:func:`check_output`: each writer names what it reads), and an existing output is replaced only on
request (:func:`refuse_existing`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gptrl.errors import BundleError, OutputExistsError

MAX_JSON_BYTES = 64 << 20  # config.json, metadata and run files are kilobytes; refuse anything absurd
MAX_JSON_DEPTH = 64  # nesting deeper than this is refused (Python's decoder would hit its recursion limit)
_TMP_MARK = ".tmp-"


def _tmp_name(dest: Path) -> Path:
    # The destination's suffix is kept: some writers (onnx, torch) look at it.
    return dest.parent / f".{dest.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{dest.suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(dest: Path) -> list[Path]:
    """Remove temporaries of ``dest`` left by processes that no longer run; returns what was removed."""
    removed = []
    prefix = f".{dest.name}{_TMP_MARK}"
    if not dest.parent.is_dir():
        return removed
    for path in dest.parent.glob(f"{prefix}*"):
        pid_text = path.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output(dest: str | Path, reads: Iterable[str | Path] = (), *, folder: bool = False) -> Path:
    """Refuse, before any work, an output a command cannot write: one that is a file the command reads (or, for a
    ``folder`` output, a folder holding one), since writing it would destroy the command's own input; one that is
    a folder where a file is wanted (or the reverse); one below a file. Returns ``dest`` as a Path.
    """
    dest = Path(dest)
    for source in map(Path, reads):  # compared after symlinks: an alias of the folder is the folder
        if dest.resolve() == source.resolve():
            raise ValueError(f"{dest}: is {source}, which this command reads; writing it would destroy the input "
                             "(give another output path)")
        if folder and dest.resolve() in source.resolve().parents:
            raise ValueError(f"{dest}: holds {source}, which this command reads; replacing the folder would "
                             "destroy the input (give another output folder)")
    if not folder and dest.is_dir():
        raise IsADirectoryError(f"{dest}: is a folder; give a file path")
    if folder and dest.exists() and not dest.is_dir():
        raise BundleError(f"{dest}: exists and is not a folder")
    parent = next(p for p in (dest.absolute(), *dest.absolute().parents) if p.exists() or p == p.parent)
    if parent != dest.absolute() and not parent.is_dir():
        raise NotADirectoryError(f"{dest}: cannot be written: {parent} is a file, not a folder")
    return dest


def refuse_existing(dest: str | Path, overwrite: bool) -> None:
    """An existing output is replaced only on request; the error names the request (``OutputExistsError``)."""
    if Path(dest).exists() and not overwrite:
        raise OutputExistsError(str(dest))


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, reads: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary path to write ``dest``'s new content to; on success it replaces ``dest`` atomically.

    ``reads``: the files the command reads; ``dest`` may not be one of them (:func:`check_output`). On any
    exception (or a signal turned into one by :func:`signals_raise`) the temporary is removed and ``dest`` is left
    exactly as it was.
    """
    dest = check_output(dest, reads)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(dest)
    tmp = _tmp_name(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{dest}: nothing was written")
        fsync_path(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | Path, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    return write_text(dest, json.dumps(obj, indent=indent) + "\n")


def copy_file(src: str | Path, dest: str | Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


@contextlib.contextmanager
def atomic_dir(dest: str | Path, *, overwrite: bool = False, reads: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``dest`` (an existing one only if ``overwrite``).

    ``reads``: the files the command reads; ``dest`` may not hold one (:func:`check_output`). An existing ``dest``
    is moved aside first and removed only once the new folder is in place; on failure the temporary folder is
    removed and ``dest`` is untouched.
    """
    dest = check_output(dest, reads, folder=True)
    refuse_existing(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(dest)
    tmp = _tmp_name(dest)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                fsync_path(file)
        _replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.rename(src, dst)
        return
    old = _tmp_name(dst)
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


# -- reading -----------------------------------------------------------------------------------------------------


def _depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (write null or the string \"inf\" / \"-inf\")")


def loads_json(text: str, source: str) -> Any:
    """Decode JSON text; any problem is a BundleError naming ``source``.

    NaN and Infinity literals are refused (they are not JSON), as is nesting deeper than ``MAX_JSON_DEPTH``.
    """
    if len(text) > MAX_JSON_BYTES:
        raise BundleError(f"{source}: {len(text)} bytes of JSON exceeds the limit of {MAX_JSON_BYTES}")
    if ("[" in text or "{" in text) and _depth(text) > MAX_JSON_DEPTH:
        raise BundleError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{source}: not valid JSON ({exc})") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file (see :func:`loads_json`); a missing, unreadable or too large file raises BundleError."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: missing")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise BundleError(f"{path}: {path.stat().st_size} bytes exceeds the JSON size limit of {MAX_JSON_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror})") from None
    return loads_json(text, str(path))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- signals -----------------------------------------------------------------------------------------------------


RECEIVED_SIGNALS: list[int] = []  # what signals_raise caught, so a caller can tell an interruption from an error


@contextlib.contextmanager
def signals_raise(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``SystemExit(128 + signum)`` so ``finally`` blocks (temporaries) run.

    Library code may turn that exception into another (an import interrupted halfway raises ImportError), so the
    signal is also recorded in ``RECEIVED_SIGNALS``.
    """

    def handler(signum, frame):
        RECEIVED_SIGNALS.append(signum)
        raise SystemExit(128 + signum)

    previous = {}
    for sig in signals:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
