"""Executors: where a job's independent items (evaluation seeds, dataset episodes, DAgger waves) are played.

A *job* is a picklable object with four methods (``evaluation.EpisodeJob`` is the model)::

    describe() -> dict          # JSON: what the job is, so a results file is only resumed by the same job
    setup() -> state            # once per worker: an env and a torch-free policy, say
    run(state, item) -> result  # one item; the same item gives the same result in any worker
    close(state) -> None

``LocalExecutor`` runs it in this process; ``RayExecutor`` in Ray actors, one job ``setup`` per actor, one item at
a time per actor, items handed out as actors free up (``ray.wait``). Both return the results in item order, so
whatever ran where, the caller sees what the local loop gives.

Failures: an actor that dies (its process killed, its node lost) is replaced by a fresh one and its item run again
(at most ``max_retries`` times per item); an exception raised by the job itself is raised here as it is. With
``results=PATH`` each finished item's result is added to a small JSON file, rewritten atomically
(``gptrl.fileio.write_json``) after every item, so an interrupted run, started again with the same file, plays only
the items not yet in it (results are kept by item, so a run over more seeds reuses a shorter run's); a file made by
another job (``describe()`` differs) is refused, never mixed in.

Ray is imported only here and only by ``RayExecutor`` (``pip install "gptrl[ray]"``); nothing below this module
imports it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from gptrl.fileio import read_json, write_json

log = logging.getLogger("gptrl.executor")

OnResult = Callable[[int, Any], None]
RESULTS_FORMAT = "gptrl.executor.results/1"


class Job(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def setup(self) -> Any: ...

    def run(self, state: Any, item: Any) -> Any: ...

    def close(self, state: Any) -> None: ...


class ResultsFile:
    """The finished items of one job, kept in ``path`` (JSON, rewritten atomically after each item).

    Results are stored by item (its JSON), so a run over more items (more seeds) resumes from a shorter one's file;
    the job's ``describe()`` must match exactly, or the file is refused."""

    @classmethod
    def opened(cls, path: str | Path | None, job: Job, items: list[Any], on_result: OnResult | None) -> ResultsFile:
        """The file of ``job`` over ``items``, its finished items reported to ``on_result`` first (in item order)."""
        store = cls(path, job, items)
        for i, result in sorted(store.results.items()):
            if on_result is not None:
                on_result(i, result)
        return store

    def __init__(self, path: str | Path | None, job: Job, items: list[Any]):
        self.path = None if path is None else Path(path)
        self.job = job.describe()
        self.items = [json.dumps(item, sort_keys=True) for item in items]
        self.done: dict[str, Any] = {}  # item's JSON -> result
        if self.path is not None and self.path.exists():
            data = read_json(self.path)
            if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
                raise ValueError(f"{self.path}: not a gptrl results file (key 'format' is "
                                 f"{data.get('format') if isinstance(data, dict) else None!r}, want "
                                 f"{RESULTS_FORMAT!r}); remove it or pick another results file")
            if data.get("job") != self.job:
                raise ValueError(f"{self.path}: holds results of another run (key 'job' is {data.get('job')!r} "
                                 f"there, {self.job!r} now); remove it or pick another results file")
            pairs = data.get("results")
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise ValueError(f"{self.path}: key 'results' must be a list of [item, result] pairs; remove the "
                                 "file or pick another results file")
            self.done = {json.dumps(item, sort_keys=True): result for item, result in pairs}

    @property
    def results(self) -> dict[int, Any]:
        """Index (in this run's items) -> result, for the items already done."""
        return {i: self.done[key] for i, key in enumerate(self.items) if key in self.done}

    def record(self, index: int, result: Any) -> None:
        self.done[self.items[index]] = result
        if self.path is not None:
            write_json(self.path, {"format": RESULTS_FORMAT, "job": self.job,
                                   "results": [[json.loads(k), v] for k, v in self.done.items()]})

    def pending(self, count: int) -> list[int]:
        return [i for i in range(count) if self.items[i] not in self.done]

    def ordered(self, count: int) -> list[Any]:
        return [self.done[self.items[i]] for i in range(count)]


class LocalExecutor:
    """Every item in this process, in order (one ``setup``); ``results``: a file to resume from."""

    def __init__(self, *, results: str | Path | None = None):
        self.results = results

    def map(self, job: Job, items: Iterable[Any], *, on_result: OnResult | None = None) -> list[Any]:
        items = list(items)
        store = ResultsFile.opened(self.results, job, items, on_result)
        pending = store.pending(len(items))
        if pending:
            state = job.setup()
            try:
                for i in pending:
                    result = job.run(state, items[i])
                    store.record(i, result)
                    if on_result is not None:
                        on_result(i, result)
            finally:
                job.close(state)
        return store.ordered(len(items))


class _Worker:
    """One Ray actor: the job's state, built once, then one item per call."""

    def __init__(self, job: Job):
        self.job = job
        self.state = job.setup()

    def run(self, item: Any) -> Any:
        return self.job.run(self.state, item)

    def close(self) -> None:
        self.job.close(self.state)


class RayExecutor:
    """A job's items spread over Ray actors (``num_workers`` of them, ``cpus_per_worker`` CPUs each).

    ``address`` None starts a local Ray instance in ``start`` and stops it in ``shutdown``; ``"auto"`` or
    ``"HOST:PORT"`` joins that cluster (``shutdown`` then only disconnects). When Ray is already initialised in this
    process, that connection is used and left alone. ``num_workers`` None: as many as the cluster's CPUs allow.
    Use it as a context manager (or call ``shutdown``) so a local instance never outlives the run.
    """

    def __init__(self, address: str | None = None, *, num_workers: int | None = None, cpus_per_worker: float = 1,
                 results: str | Path | None = None, max_retries: int = 3, init_kwargs: dict[str, Any] | None = None):
        if num_workers is not None and (isinstance(num_workers, bool) or num_workers < 1):
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be positive, got {cpus_per_worker!r}")
        self.address, self.num_workers, self.cpus_per_worker = address, num_workers, cpus_per_worker
        self.results, self.max_retries, self.init_kwargs = results, max_retries, dict(init_kwargs or {})
        self.workers: list[Any] = []
        self.restarts = 0  # actors replaced after dying, over this executor's life
        self.workers_used = 0  # how many actors the last map started
        self.start_seconds: float | None = None  # how long ray.init took (None: Ray was already initialised)
        self._owns = False

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def start(self) -> None:
        ray = _import_ray()
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, **self.init_kwargs}
        if self.address is None and self.num_workers is not None:
            kwargs.setdefault("num_cpus", max(1, math.ceil(self.num_workers * self.cpus_per_worker)))
        t = time.perf_counter()
        # "local": always a new instance of our own (address None would join whatever cluster RAY_ADDRESS or the
        # machine's last `ray start` names, and that one would not be ours to stop)
        ray.init(address=self.address or "local", **kwargs)
        self.start_seconds = time.perf_counter() - t
        self._owns = True

    def shutdown(self) -> None:
        """Kill this executor's actors and, if ``start`` initialised Ray, shut it down (a local instance stops)."""
        if not self._owns and not self.workers:
            return
        ray = _import_ray()
        self._kill_workers(ray)
        if self._owns:
            ray.shutdown()
            self._owns = False

    def _kill_workers(self, ray: Any) -> None:
        """Close each worker's job (its env) where the worker still answers, then end it."""
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=30)
        except Exception:  # a dead or stuck worker: killed below all the same
            pass
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # already dead
                pass
        self.workers = []

    def _size(self, ray: Any, pending: int) -> int:
        """As many workers as asked, but no more than the cluster has CPUs for: an actor Ray can never place would
        hold its item forever. (CPUs busy with other work only delay an actor; the free count is not used, as
        Ray frees a killed actor's CPU a moment after ``ray.kill`` returns.)"""
        fits = max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))
        wanted = self.num_workers or fits
        if wanted > fits:
            log.warning("%d workers asked for, but the cluster has CPUs for %d; using %d", wanted, fits, fits)
        return max(1, min(pending, wanted, fits))

    def map(self, job: Job, items: Iterable[Any], *, on_result: OnResult | None = None) -> list[Any]:
        items = list(items)
        store = ResultsFile.opened(self.results, job, items, on_result)
        queue = deque(store.pending(len(items)))
        if not queue:
            return store.ordered(len(items))
        self.start()
        ray = _import_ray()
        actor = ray.remote(num_cpus=self.cpus_per_worker, max_restarts=0)(_Worker)
        job_ref = ray.put(job)
        self.workers = [actor.remote(job_ref) for _ in range(self._size(ray, len(queue)))]
        self.workers_used = len(self.workers)
        running: dict[Any, tuple[int, int]] = {}  # task ref -> (worker slot, item index)
        tries: dict[int, int] = {}

        def submit(slot: int) -> None:
            i = queue.popleft()
            running[self.workers[slot].run.remote(items[i])] = (slot, i)

        try:
            for slot in range(len(self.workers)):
                submit(slot)
            while running:
                [ref], _ = ray.wait(list(running), num_returns=1)
                slot, i = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the worker died: a fresh one plays the item again
                    if exc.actor_init_failed:  # the job's setup raised: every new worker would fail the same way
                        raise RuntimeError(f"the job's setup failed in a Ray worker: {exc}") from None
                    tries[i] = tries.get(i, 0) + 1
                    if tries[i] > self.max_retries:
                        raise RuntimeError(f"item {i} ({items[i]!r}): its worker died {tries[i]} times; giving up "
                                           f"(max_retries={self.max_retries}). Last error: {exc}") from None
                    self.restarts += 1
                    log.warning("worker %d died while playing item %d (%r); starting a new one and playing it "
                                "again (try %d)", slot, i, items[i], tries[i] + 1)
                    try:
                        ray.kill(self.workers[slot], no_restart=True)
                    except Exception:
                        pass
                    self.workers[slot] = actor.remote(job_ref)
                    queue.appendleft(i)
                    submit(slot)
                    continue
                except ray.exceptions.RayTaskError as exc:  # the job's own error, raised as itself
                    raise exc.as_instanceof_cause() from None
                store.record(i, result)
                if on_result is not None:
                    on_result(i, result)
                if queue:
                    submit(slot)
        finally:
            self._kill_workers(ray)
        return store.ordered(len(items))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError('RayExecutor needs Ray: pip install "gptrl[ray]"') from None
    return ray


def executor_for(ray: str | None, *, num_workers: int | None = None, results: str | Path | None = None):
    """The command line's choice: ``ray`` None runs here (``LocalExecutor``); ``"local"`` starts a local Ray instance;
    ``"auto"`` or an address joins that cluster."""
    if ray is None:
        if num_workers is not None:
            raise ValueError(f"--workers {num_workers} needs --ray (without it the seeds run in this process)")
        return LocalExecutor(results=results)
    return RayExecutor(None if ray == "local" else ray, num_workers=num_workers, results=results)
