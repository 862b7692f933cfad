"""The plots of a sweep, drawn by a process forked when the sweep starts.

Importing matplotlib and drawing the figures both take a noticeable share of a small sweep, all
of it holding the GIL: in the sweep process it would add to every sweep's wall time. A
:class:`PlotProcess` is forked before the sweep reads the run (a process without threads, see
:func:`~rlreco.app.sweep_execution.can_fork`), imports the plotting module on the other core
while the sweep loads the run and runs its cells, and draws a throwaway figure (fonts, text
layout and PNG writer loaded), then waits for the learning curves and the summary on a pipe and
draws the figures (one process per figure, up to the cores available: the sweep process only
waits meanwhile; :func:`~rlreco.app.sweep_execution.call_forked`). A failure there is not
reported from there: the sweep process draws the figures again itself, so that the error is
raised where the user sees it. Where it cannot fork, the sweep draws the figures itself after
the cells.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from rlreco.app.sweep_execution import call_forked, can_fork
from rlreco.io.plots import sweep_figures, warm_up_drawing

#: what a plot process is sent: curves, summary, plots folder, truth switches per response
Figures = tuple[pd.DataFrame, pd.DataFrame, Path, Mapping[str, Sequence[int]]]


def draw_figures(figures: Figures, processes: int) -> list[Path]:
    """Draw the sweep's figures here (and in processes forked from here), importing matplotlib
    now; return the PNG files written."""
    curves, summary, out_dir, switches = figures
    drawn = sweep_figures(curves, summary, out_dir, switches)
    call_forked([draw for _, draw in drawn], processes)
    return [path for path, _ in drawn]


class PlotProcess:
    """A forked process that imports matplotlib and draws a throwaway figure now, and draws a
    sweep's figures when sent them.

    Parameters
    ----------
    pid : int
        The forked process.
    pipe : int
        Write end of the pipe it reads the figures from.
    """

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self._pipe: int | None = pipe
        self._sent = False
        self._running = True
        self._code = 1

    @classmethod
    def start(cls, processes: int) -> PlotProcess | None:
        """Fork the process (None where :func:`can_fork` says no)."""
        if not can_fork():
            return None
        read, write = os.pipe()
        with warnings.catch_warnings():
            # as in fork_pool: no other thread runs here
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked process (coverage does not follow)
            os.close(write)
            _serve(read, processes)
        os.close(read)
        return cls(pid, write)

    def send(self, figures: Figures) -> None:
        """Send the figures and return: they are drawn while the sweep writes its other
        outputs (:meth:`drawn` waits for them)."""
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        self._sent = True
        try:
            with open(pipe, "wb") as stream:
                pickle.dump(figures, stream, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError:  # the process is gone (BrokenPipeError)
            pass

    def drawn(self) -> bool:
        """Wait until the figures sent are written; False if none were sent or the process
        failed (or died). Nothing is left running either way."""
        self.close()
        return self._sent and self._code == 0

    def close(self) -> None:
        """End the process: without figures if none were sent (the sweep failed or was
        interrupted: it reads the end of the pipe and exits), else once they are drawn."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe)
        if self._running:
            self._running = False
            _, status = os.waitpid(self.pid, 0)
            self._code = os.waitstatus_to_exitcode(status)


def _serve(pipe: int, processes: int) -> None:  # pragma: no cover - runs in the forked process
    """The plot process: import the plotting module and draw a throwaway figure, read the
    figures, draw them, exit (0 when written, or when the sweep sent none)."""
    # Ctrl-C is the sweep's to handle: it closes the pipe, which ends this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 1
    try:
        # matplotlib's import and caches are long-lived objects, not garbage: no collection
        # traverses them (as the sweep process does, sweep_execution.CollectorPause)
        gc.disable()
        with contextlib.suppress(Exception):  # a failure shows when the sweep redraws
            warm_up_drawing()
        gc.freeze()
        gc.enable()
        with open(pipe, "rb") as stream:
            data = stream.read()
        if not data:
            code = 0
        else:
            draw_figures(pickle.loads(data), processes)
            code = 0
    finally:
        os._exit(code)
