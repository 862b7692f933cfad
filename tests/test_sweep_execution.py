"""How a sweep uses processes and memory: figures drawn in forked processes, the progress bar's
thread, and the reused heap of response-model builds."""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rlreco.app import report, sweep_execution
from rlreco.io.parquet_tables import reused_heap, use_system_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_call_forked_makes_every_call_and_raises_what_fails_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # threads other tests left behind (Dask's) hold no lock these calls need
    monkeypatch.setattr(sweep_execution, "can_fork", lambda: True)
    here = os.getpid()

    def write(name: str) -> Callable[[], None]:
        return lambda: (tmp_path / name).write_text(str(os.getpid()))

    def fails_away_from_here() -> None:
        if os.getpid() != here:
            raise RuntimeError("not here")
        (tmp_path / "retried").write_text(str(os.getpid()))

    def pid(name: str) -> int:
        return int((tmp_path / name).read_text())

    sweep_execution.call_forked([write("a"), write("b"), write("c")], 2)
    assert pid("a") == pid("c") == here and pid("b") != here  # round-robin over 2 processes
    # the forked process's calls (1 and 3) fail at 1: both are made again here
    sweep_execution.call_forked([write("a"), fails_away_from_here, write("c"), write("d")], 2)
    assert pid("retried") == pid("d") == here

    def broken() -> None:
        raise RuntimeError("plot broke")

    with pytest.raises(RuntimeError, match="plot broke"):
        sweep_execution.call_forked([write("e"), broken], 2)
    assert (tmp_path / "e").is_file()


def test_sweep_progress_bar_runs_no_thread_before_the_first_or_after_the_last_cell() -> None:
    def progress(done: int) -> sweep_execution.SweepProgress:
        return sweep_execution.SweepProgress(2, done, 0, 0, done * 10, 20, 1.0, None)

    def redraws() -> int:
        return sum(type(t).__name__ == "_RefreshThread" for t in threading.enumerate())

    with report.sweep_progress(enabled=True) as update:
        assert redraws() == 0  # workers may be forked here
        update(progress(0))
        update(progress(1))
        assert redraws() == 1  # rich's redraw thread
        update(progress(2))
        assert redraws() == 0  # plots may be drawn in forks here


def page_faults_of_reallocating(megabytes: int = 1, times: int = 40) -> int:
    """Minor page faults of allocating, touching and freeing the same array ``times`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        np.ones(megabytes * 2**20 // 8).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_response_models_are_built_on_a_reused_heap_and_the_setting_is_restored() -> None:
    use_system_allocator()  # what loading a run sets: every 1 MiB array is a fresh mapping
    fresh = page_faults_of_reallocating()
    with reused_heap():
        reused = page_faults_of_reallocating()
    assert reused < fresh / 5
    assert page_faults_of_reallocating() > 5 * reused  # loading's setting is back
