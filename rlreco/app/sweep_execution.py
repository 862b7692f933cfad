"""Running the cells of a sweep: in this process, in a local process pool, or on Dask.

``workers=1`` runs the cells in the calling process. With more workers, the calling process
loads the run, the visit loops and the response models once (``start_warm_up`` and
:meth:`LoadedRun.build_responses`) and then forks the pool's workers (:func:`fork_pool`), which
start at once with all of it, shared copy-on-write: no interpreter start, import, file read,
kernel load or model build per worker. Where fork is unsafe (a platform without it, or a process
already running other threads, such as a progress bar's) the pool falls back to ``spawn``
(:func:`start_pool`): workers started before the driver reads anything, each loading the run
itself, in parallel. Either way a worker reuses the run for all its cells; Ctrl-C terminates the
pool at once. A worker that dies (``kill -9``) ends the sweep with one line; workers end
themselves when the driver dies. Cells are saved by the driver as they finish, so either way
running the sweep again finishes the grid. ``scheduler="tcp://HOST:PORT"`` runs the cells on an
existing Dask distributed cluster (extra ``rlreco[dask]``): the driver scatters the run's
columns to the workers, so they need no shared file system (truth-table responses are read by
path, though). All paths run the same function on the same data, so the results are identical
whatever the execution; only wall-clock times differ. The plots, drawn after the cells by the
plot process (:mod:`rlreco.app.sweep_plots`), are shared the same way between it and processes
forked from it (:func:`call_forked`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlreco.app.sweep_cells import (
    CellOutcome,
    CellTask,
    LoadedRun,
    RunPayload,
    execute_cell,
    simulate_cell,
    warm_up,
)
from rlreco.errors import ConfigError, RlrecoError, SimulationError, SnapshotError

#: how long to wait for a Dask scheduler
CONNECT_TIMEOUT = "10s"


@dataclass(frozen=True)
class SweepProgress:
    """Progress of a sweep, passed to the ``progress`` callback after every cell.

    Attributes
    ----------
    cells_total : int
        Cells of the grid.
    cells_done : int
        Cells finished, including those skipped because a previous run finished them.
    cells_skipped : int
        Cells found finished on disk at the start.
    cells_failed : int
        Cells that raised in this run.
    visits_done, visits_total : int
        Visits simulated so far / to simulate in this run (skipped cells excluded).
    seconds : float
        Wall time since the cells started.
    last_cell : str or None
        Key of the cell that just finished or failed.
    """

    cells_total: int
    cells_done: int
    cells_skipped: int
    cells_failed: int
    visits_done: int
    visits_total: int
    seconds: float
    last_cell: str | None

    @property
    def visits_per_second(self) -> float:
        """Visits simulated per wall-clock second in this run."""
        return self.visits_done / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[SweepProgress], None]


@dataclass(frozen=True)
class CellError:
    """Why a cell failed: one line for the summary and the full traceback for its error file."""

    line: str
    report: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> CellError:
        """Describe an exception: a user error's own message, else its type and first line."""
        first = str(exc).splitlines()[0] if str(exc) else ""
        if isinstance(exc, RlrecoError) and first:
            line = first
        else:
            line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return cls(line, "".join(traceback.format_exception(exc)))


#: a finished cell: its task and either its outcome or its error
Completed = tuple[CellTask, CellOutcome | None, CellError | None]


class CollectorPause:
    """The cyclic garbage collector paused while a sweep starts, then told to skip what the start
    built (:func:`gc.freeze`), for the sweep's duration.

    Importing numba, pandas and matplotlib and loading the run create a few hundred thousand
    objects that live as long as the process, and almost no garbage: every full collection on the
    way (several per sweep) traverses all of them for nothing, and one in a forked worker would
    also copy the pages of every object it touches. This is the
    pattern :func:`gc.freeze` documents for processes that fork: collector off early, freeze
    before forking. :meth:`restore` puts the collector back as it was for the caller.
    """

    def __init__(self) -> None:
        self._enabled = gc.isenabled()
        # objects someone else froze stay theirs: only a pause that froze nothing unfreezes
        self._owns_freeze = gc.get_freeze_count() == 0
        self._paused = True
        gc.disable()

    def release(self) -> None:
        """End the pause (the cells start): freeze what exists, collect from then on."""
        if self._paused:
            self._paused = False
            gc.freeze()
            if self._enabled:
                gc.enable()

    def restore(self) -> None:
        """The collector as it was before the pause (what was frozen goes back to collection)."""
        self.release()
        if self._owns_freeze:
            gc.unfreeze()


def _attempt(loaded: LoadedRun, task: CellTask) -> Completed:
    """Simulate one cell; an exception becomes the cell's error (the other cells go on)."""
    try:
        return task, simulate_cell(loaded, task), None
    except Exception as exc:
        return task, None, CellError.from_exception(exc)


def run_inline(loaded: LoadedRun, tasks: list[CellTask]) -> Iterator[Completed]:
    """Run cells in this process, on a run loaded once (:func:`load_run` keeps it for the next
    sweep)."""
    for task in tasks:
        yield _attempt(loaded, task)


#: what a pool worker loaded, or why it could not
_WORKER_RUN: list[LoadedRun | CellError] = []
#: seconds between a pool worker's checks that the sweep that started it still runs
PARENT_POLL = 0.5


def _exit_with_parent(parent: int) -> None:
    """End this worker when the sweep process that started it is gone (e.g. ``kill -9``): an
    orphan would simulate cells nobody can save."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


def _guard_worker(parent: int) -> None:
    """Leave Ctrl-C to the driver (it ends the workers) and end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _init_forked_worker(parent: int) -> None:
    """Start a forked pool worker: :func:`_guard_worker`, and a cell buffer of its own
    (:meth:`~rlreco.app.cell_buffers.CellBuffers.use_own_buffer`: the loaded tables stay the
    parent's pages)."""
    _guard_worker(parent)
    loaded = _WORKER_RUN[0] if _WORKER_RUN else None
    if isinstance(loaded, LoadedRun):
        loaded.buffers.use_own_buffer()


def _init_worker(run_path: str, token: str, parent: int, policies: tuple[str, ...]) -> None:
    """Load the run in a spawned pool worker, once, from the run directory itself.

    Reading the files costs each worker a fraction of a second, in parallel with the other
    workers and with the driver; receiving the driver's payload through the spawn pipe instead
    would start the workers one after another. A failure is kept and reported by every cell:
    a raising initializer would break the pool.
    """
    _guard_worker(parent)
    _WORKER_RUN.clear()
    try:
        found, loaded = LoadedRun.read(run_path)
        if found != token:
            raise SnapshotError(f"{run_path}: the run directory changed while the sweep started")
        warm_up(policies)  # the compiled loops now: no cell's timing includes them
        _WORKER_RUN.append(loaded)
    except Exception as exc:
        _WORKER_RUN.append(CellError.from_exception(exc))


def _pool_cell(task: CellTask) -> Completed:
    loaded = _WORKER_RUN[0]
    if isinstance(loaded, CellError):
        return task, None, loaded
    return _attempt(loaded, task)


def can_fork() -> bool:
    """Whether pool workers can be forked from this process: Linux (macOS system libraries are
    not fork-safe; Windows has no fork), and no other Python thread runs here (one holding a
    lock at the fork would leave it held in the child)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def fork_pool(loaded: LoadedRun, workers: int) -> ProcessPoolExecutor:
    """Fork ``workers`` processes from this one, each with ``loaded`` (prepared: see
    :meth:`LoadedRun.build_responses`) as the run its cells use, changing a buffer of its own
    (:func:`_init_forked_worker`)."""
    _WORKER_RUN[:] = [loaded]
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_forked_worker,
        initargs=(os.getpid(),),
    )
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork in a process with native threads: numpy's BLAS and
        # Arrow's thread pools here, which re-initialise themselves in a forked child (at-fork
        # handlers), and nothing else runs (can_fork)
        warnings.simplefilter("ignore", DeprecationWarning)
        # the first submission forks every worker, before the pool's own manager thread starts
        for _ in range(workers):
            pool.submit(int)
    _WORKER_RUN.clear()  # the children have their copy
    return pool


def call_forked(calls: Sequence[Callable[[], object]], processes: int) -> None:
    """Make independent calls whose results are files (the plots) in up to ``processes``
    processes at once: this one and processes forked for the others, calls shared round-robin.

    A forked process's failure is not reported from there: its calls are made again here, so
    that their error is raised here. Where fork is unsafe (:func:`can_fork`) every call is made
    here, one after the other.
    """
    groups = [calls[i::processes] for i in range(max(1, min(processes, len(calls))))]
    if len(groups) > 1 and not can_fork():
        groups = [list(calls)]
    children: dict[int, Sequence[Callable[[], object]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as in fork_pool
        for group in groups[1:]:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the forked process (coverage does not follow)
                code = 1
                try:
                    for call in group:
                        call()
                    code = 0
                finally:
                    os._exit(code)
            children[pid] = group
    failed: list[Callable[[], object]] = []
    try:
        for call in groups[0]:
            call()
    finally:
        for pid, group in children.items():
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.extend(group)
    for call in failed:
        call()


def start_pool(
    run_path: Path, token: str, workers: int, policies: tuple[str, ...]
) -> ProcessPoolExecutor:
    """Start ``workers`` spawned processes that each load the run and the visit loops of
    ``policies`` (in the background): the pool where :func:`can_fork` says no."""
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(str(run_path), token, os.getpid(), policies),
    )
    # the processes start on the first submissions: start them all now, so that they import
    # and load the run while the driver does its own work
    for _ in range(workers):
        pool.submit(int)
    return pool


def run_pool(pool: ProcessPoolExecutor, tasks: list[CellTask], out: Path) -> Iterator[Completed]:
    """Run cells on a :func:`start_pool` pool, yielding each as it finishes; shut it down.

    Raises
    ------
    SimulationError
        A worker process died (killed, out of memory): the cells finished so far are kept,
        and running the sweep again finishes the grid.
    """
    try:
        futures = {pool.submit(_pool_cell, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                raise SimulationError(
                    f"a sweep worker process ended unexpectedly (killed, or out of memory); "
                    f"the finished cells are saved in {out}: run the same command again to "
                    "finish the grid"
                ) from None
    finally:
        stop_pool(pool)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now, running cells included (finished ones are saved): on
    Ctrl-C, a dead worker, any error, or at the end."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    for process in workers:
        process.join()
    # and the pool's manager thread: left running, it could close its wake-up pipe while the
    # interpreter's exit handler writes to it (Python 3.11: a traceback after the sweep's one
    # line when a worker died)
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(timeout=10)


def run_dask(payload: RunPayload, tasks: list[CellTask], address: str) -> Iterator[Completed]:
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--scheduler needs Dask distributed: pip install 'rlreco[dask]'"
        ) from None
    dask: Any = distributed  # untyped package
    try:
        client = dask.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot connect to Dask scheduler {address}: {exc}") from None
    try:
        shared = client.scatter(payload, broadcast=True)
        run = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                execute_cell, shared, task, key=f"rlreco-{run}-{task.key}", pure=False
            ): task
            for task in tasks
        }
        for future in dask.as_completed(list(futures)):
            task = futures.pop(future)
            if future.status == "finished":
                yield task, future.result(), None
            else:
                yield task, None, CellError.from_exception(future.exception())
            future.release()
    finally:
        client.close()
