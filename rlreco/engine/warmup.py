"""Loading the compiled kernels before any timed work: compiled once, then from numba's cache.

The kernels are compiled on their first use on a machine (``cache=True`` keeps the machine code
on disk afterwards), which takes seconds; every later process loads them in a fraction of that.
:func:`warm_up_simulation` makes that first use a tiny simulation on a synthetic two-state run
whose arrays have the types of every real run's (a kernel is compiled per argument type, so
the real run then finds it compiled), so that compile time is measured and reported on its own
and never counted in the visits per second of the real run. Each policy family has its own loop
(:func:`~rlreco.engine.kernels.visit_loop.visit_loop`), with or without logging: a warm-up compiles
only those the caller names, so a run pays for the policies it uses.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from rlreco.engine.kernels.feedback import play_slate_nb
from rlreco.engine.kernels.policy import choose_slate_nb
from rlreco.engine.kernels.propensity import slate_propensities_nb
from rlreco.engine.kernels.records import PolicyParams, TopNSearch
from rlreco.engine.kernels.sum_tree import build_softmax_nb
from rlreco.engine.kernels.table_rows import reset_rows_nb
from rlreco.engine.kernels.topn import build_index_nb
from rlreco.engine.kernels.untried_set import build_untried_nb
from rlreco.engine.kernels.visit_loop import loop_kernels
from rlreco.engine.online import play_online_visit
from rlreco.engine.simulation import SimulationParams, Simulator
from rlreco.engine.simulation_params import POLICIES
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.schema import DEFAULT_POLICY_PARAM, DEFAULT_STATE_FIELDS

#: the entry points, besides the visit loops, whose first call compiles (or loads) kernels
SIMULATION_KERNELS: tuple[Any, ...] = (build_index_nb, build_untried_nb, build_softmax_nb)
#: the kernels one online visit calls instead of a visit loop
#: (:func:`~rlreco.engine.online.play_online_visit`)
ONLINE_KERNELS: tuple[Any, ...] = (choose_slate_nb, slate_propensities_nb, play_slate_nb)


@dataclass(frozen=True)
class Warmup:
    """Outcome of a warm-up.

    Attributes
    ----------
    seconds : float
        Wall time of the warm-up (compiling, or loading the cached machine code).
    compiled : bool
        Whether a kernel was compiled (not found in numba's cache): a machine's first run.
    """

    seconds: float
    compiled: bool

    def __add__(self, other: Warmup) -> Warmup:
        """Two warm-ups one after the other."""
        return Warmup(self.seconds + other.seconds, self.compiled or other.compiled)


def cache_misses(kernels: tuple[Any, ...] | None = None) -> int:
    """Compilations of ``kernels`` (default: :data:`SIMULATION_KERNELS` and every visit loop
    built so far) in this process so far (0 under ``NUMBA_DISABLE_JIT``)."""
    total = 0
    if kernels is None:
        kernels = SIMULATION_KERNELS + loop_kernels()
    for kernel in kernels:
        stats = getattr(kernel, "stats", None)
        if stats is not None:
            total += sum(stats.cache_misses.values())
    return total


class _NoScipyLinalg(importlib.abc.MetaPathFinder):
    """An import finder that makes ``scipy.linalg`` unimportable, for the thread that made it
    only (another thread importing it meanwhile is not affected)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if threading.get_ident() == self.thread and fullname.split(".")[:2] == ["scipy", "linalg"]:
            raise ModuleNotFoundError(f"{fullname}: not imported while numba loads", name=fullname)
        return None


def load_numba_typing() -> None:
    """Import numba's NumPy array typing (``numba.np.arraymath``) without its BLAS probe.

    Numba imports that module when it sets up its typing registries, at a process's first
    compile or cache load, and on the way probes for a BLAS by importing ``scipy.linalg``
    wherever scipy is installed: 0.15 s of CPU (and an OpenBLAS thread that spins on the
    other core), on the critical path of every command that runs a kernel. The probe only
    decides whether jitted ``np.correlate`` and ``np.convolve`` call BLAS, which no kernel does;
    a kernel using ``np.dot`` or ``np.linalg`` still imports scipy when it is compiled. So the
    import is made here with ``scipy.linalg`` out of reach of this thread. Nothing happens if
    numba set up its registries already.
    """
    if "numba.np.arraymath" in sys.modules:
        return
    finder = _NoScipyLinalg()
    sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("numba.np.arraymath")
    finally:
        sys.meta_path.remove(finder)


def tiny_run() -> tuple[StateSpace, Tables]:
    """A two-state, three-product run with one known cell per state."""
    space = StateSpace.from_grid(
        DEFAULT_STATE_FIELDS,
        (("Q1",), ("January",), ("0",), ("Monday", "Tuesday")),
        product_codes=np.array(["A", "B", "C"]),
        product_names=np.array(["a", "b", "c"]),
        catalogue_ptr=np.array([0, 3], dtype=np.int64),
        catalogue_items=np.arange(3, dtype=np.int32),
        state_weight=np.ones(2),
    )
    tables = Tables.empty(space.n_states, space.n_products)
    tables.value[:, 0] = 1.0
    tables.cells["count"][:, 0] = 1
    return space, tables


def timed_first_use(use: Callable[[], object], kernels: tuple[Any, ...] | None = None) -> Warmup:
    """Make a first use of kernels (``use``, after :func:`load_numba_typing`), timed, and say
    whether it compiled any of ``kernels`` (as :func:`cache_misses`: the default counts the
    visit loops built meanwhile too, from zero)."""
    start = time.perf_counter()
    load_numba_typing()
    before = cache_misses(kernels)
    use()
    return Warmup(time.perf_counter() - start, cache_misses(kernels) > before)


def warm_up_simulation(
    policies: Iterable[str] = ("eps-greedy",), *, logging: bool = False
) -> Warmup:
    """Compile, or load from numba's cache, every kernel a simulation under ``policies`` runs
    (with a visit log if ``logging``; every response model and state sampling share them), with
    a few visits on :func:`tiny_run`."""

    def use() -> None:
        for policy in dict.fromkeys(policies):
            space, tables = tiny_run()
            params = SimulationParams(slate_size=2, metrics_block=2, policy=policy)
            Simulator(space, tables, params).run(4, chunk=2, log=_ignore if logging else None)

    return timed_first_use(use)


def warm_up_online(policy: str = "eps-greedy") -> Warmup:
    """Compile, or load from numba's cache, every kernel an online visit under ``policy``
    (``rlreco recommend``) runs, with a visit to the first state of :func:`tiny_run`, whose
    arrays have a real visit's types. Compiled, they take 35-50 s here: the online
    visit calls the policy and feedback kernels one by one, not the fused visit loop."""
    space, tables = tiny_run()
    param = 0.1 if policy == "eps-greedy" else DEFAULT_POLICY_PARAM[policy]
    return timed_first_use(
        lambda: play_online_visit(
            np.random.default_rng(0),
            space,
            0,
            tables.value[:1],
            tables.cells[:1],
            policy=PolicyParams(POLICIES[policy], param, 2, TopNSearch.tree, 0.0),
            click_cdf=np.array([0.5, 0.5]),
            buy_cdf=np.array([0.5, 0.5]),
            rewards=(-1.0, 1.0, 2.0),
            respond="simulate",
        ),
        SIMULATION_KERNELS + ONLINE_KERNELS,
    )


def warm_up_cell_reset() -> Warmup:
    """Compile, or load from numba's cache, the kernel that resets a sweep cell's tables
    between cells (:meth:`~rlreco.engine.tables.Tables.reset_rows`), on :func:`tiny_run`."""
    _, tables = tiny_run()
    return timed_first_use(
        lambda: tables.reset_rows(tables.known_cells(), np.arange(1)), (reset_rows_nb,)
    )


def _ignore(records: np.ndarray) -> None:
    """A visit log that keeps nothing (the warm-up's)."""
