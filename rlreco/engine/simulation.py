"""Simulating visits: the one driver around the fused visit kernel, for every policy.

:class:`Simulator` owns the random stream, the per-block metrics, the per-state policy state
and the kernels' derived arrays of one run (the top-n index and its candidate caches, the
recommendations per state; rebuilt from the tables at every :meth:`Simulator.run`, unless a
caller that keeps the index and the counts gives them for the first), and
advances the run's :class:`~rlreco.engine.tables.Tables` in place, chunk by chunk (the kernels
work on :attr:`Tables.padded <rlreco.engine.tables.Tables.padded>` directly). Persistence is
the caller's: :attr:`Simulator.rng_state`, :meth:`Simulator.metrics_frame`,
:attr:`Simulator.policy_state` and the tables are what a snapshot must hold to resume.

Determinism
-----------
Every draw comes from one PCG64 stream, ``streams.generator(seed, *stream)``. A visit consumes
a fixed pattern of draws (see :mod:`rlreco.engine.kernels.visit`) and metric blocks are keyed by
the global visit index, so N visits in one call, in any chunks, or interrupted and resumed from
(tables, RNG state, metrics, policy state) give bit-identical tables and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from rlreco.engine import streams
from rlreco.engine.kernels.candidate_cache import CACHE_CAPACITY
from rlreco.engine.kernels.policy import new_policy_state
from rlreco.engine.kernels.records import (
    Learner,
    PolicyParams,
    ResponseArrays,
    World,
    aligned_empty,
)
from rlreco.engine.kernels.topn import build_index_nb, index_depth, index_width
from rlreco.engine.kernels.visit_loop import simulate_visits_nb
from rlreco.engine.response import Response, build_response, uses_popularity
from rlreco.engine.simulation_inputs import (
    blocks_from_frame,
    check_params,
    phase_cdf,
    plain_state,
    state_visits_of,
)
from rlreco.engine.simulation_params import (
    METRIC_COLUMNS,
    METRIC_SUMS,
    POLICIES,
    POLICY_STATE,
    STATE_SAMPLING,
    TOPN_SEARCH,
    SimulationParams,
    SimulationSummary,
)
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import SimulationError, SnapshotError
from rlreco.schema import LOG_DTYPE, METRICS_DTYPE

#: Most visits per kernel call while logging (:meth:`Simulator.run`): their records, ~11 MB at
#: slate 10, are written into one buffer reused by every call.
LOG_VISITS = 1 << 15

__all__ = [
    "LOG_VISITS",
    "METRIC_COLUMNS",
    "METRIC_SUMS",
    "POLICIES",
    "POLICY_STATE",
    "STATE_SAMPLING",
    "TOPN_SEARCH",
    "SimulationParams",
    "SimulationSummary",
    "Simulator",
]


class Simulator:
    """Simulates visits of a run under any policy, advancing its tables in place.

    Parameters
    ----------
    space : StateSpace
    tables : Tables
        The run's tables; updated in place by :meth:`run`.
    params : SimulationParams
    seed : int
        Seed of the random stream when ``rng_state`` is None.
    stream : tuple of int
        Stream key under ``seed`` (default ``(streams.SIMULATION,)``; sweeps use their own).
    rng_state : dict, optional
        :attr:`rng_state` of an earlier simulator of this run, to continue its stream.
    episodes_done : int
        Visits already simulated on ``tables``.
    metrics : DataFrame, optional
        :meth:`metrics_frame` of those visits (required when ``episodes_done > 0``).
    history_count : ndarray of int64, shape (n_states, n_products), optional
        Historical counts (the initial snapshot's ``count``) for the ``popularity`` response;
        defaults to ``tables.count`` when no visit has been simulated yet.
    response : Response, optional
        A prebuilt response model (overrides ``params.response``), e.g. shared by many runs.
    truth_tables : mapping of str to DataFrame, optional
        The truth tables ``params.response`` names, by path, as the application layer read them
        (:func:`rlreco.app.truth.load_truth_tables`).
    policy_state : mapping of str to ndarray, optional
        :attr:`policy_state` of an earlier simulator of this run (required when
        ``episodes_done > 0`` and the policy keeps one, see :data:`POLICY_STATE`).
    phase_weights : ndarray of float64, shape (n_phases, n_states), optional
        Under ``empirical`` sampling, the state weights of each phase of the response (a
        schedule of held-out truths, each speaking for its own states); default
        ``space.state_weight`` in every phase.
    index : ndarray of float64, shape (n_states, index_width(W)), optional
        The top-n index of ``tables.padded`` as they are now
        (:func:`~rlreco.engine.kernels.topn.build_index_nb`; 64-byte aligned), kept by a caller
        that runs many simulations from the same tables (a sweep's cells): under ``tree``
        search the simulator uses it, and its first :meth:`run` does not build one (under
        ``scan`` search it is not used). The greedy policies update it in place with the
        tables; the others neither read nor change it.
    shown_per_state : ndarray of int64, shape (n_states,), optional
        ``tables.reco_count`` summed over products as they are now: the first :meth:`run`
        starts from it instead of summing the tables.

    Raises
    ------
    SimulationError
        Bad parameters (one line: policy and its parameter, slate size larger than a
        catalogue, probabilities, state sampling, response).
    SnapshotError
        RNG state, metrics or policy state inconsistent with each other or with
        ``episodes_done``.
    """

    def __init__(
        self,
        space: StateSpace,
        tables: Tables,
        params: SimulationParams,
        *,
        seed: int = 0,
        stream: tuple[int, ...] = (streams.SIMULATION,),
        rng_state: Mapping[str, Any] | None = None,
        episodes_done: int = 0,
        metrics: pd.DataFrame | None = None,
        history_count: np.ndarray | None = None,
        response: Response | None = None,
        truth_tables: Mapping[str, pd.DataFrame] | None = None,
        policy_state: Mapping[str, np.ndarray] | None = None,
        phase_weights: np.ndarray | None = None,
        index: np.ndarray | None = None,
        shown_per_state: np.ndarray | None = None,
    ) -> None:
        self.space = space
        self.tables = tables
        self.params = params
        check_params(space, tables, params)
        if history_count is None and episodes_done == 0 and uses_popularity(params.response):
            history_count = tables.count  # read only while the response is built
        self.response = (
            response
            if response is not None
            else build_response(
                params.response,
                space,
                rewards=params.rewards,
                slate_size=params.slate_size,
                click_probs=params.click_probs,
                buy_probs=params.buy_probs,
                history_count=history_count,
                truth_tables=truth_tables,
            )
        )
        self._rng = streams.generator(seed, *stream)
        if rng_state is not None:
            self._restore_rng(rng_state)
        self._episodes = int(episodes_done)
        self._blocks = blocks_from_frame(metrics, params.metrics_block, self._episodes)
        n_states = space.n_states
        self._state_visits = state_visits_of(params.policy, policy_state, n_states, self._episodes)
        self._world = World(
            np.ascontiguousarray(space.state_segment, dtype=np.int16),
            np.ascontiguousarray(space.catalogue_ptr, dtype=np.int64),
            np.ascontiguousarray(space.catalogue_items, dtype=np.int32),
            phase_cdf(space, params.state_sampling, self.response.n_phases, phase_weights),
        )
        width = tables.padded.shape[1]
        tree = params.search == "tree"
        index_shape = (n_states, index_width(width) if tree else 0)
        # what the first run need not derive from the tables (see run)
        self._index_built = tree and index is not None
        self._shown_start = shown_per_state
        if not tree or index is None:
            # 64-byte aligned: a group of 8 sibling maxima is one line
            index = aligned_empty(index_shape, np.float64)
        _check_given(index, index_shape, np.float64, "index")
        _check_given(shown_per_state, (n_states,), np.int64, "shown_per_state")
        self._learner = Learner(
            tables.padded,
            index,
            index_depth(width) if tree else 1,
            tables.cells,
            np.zeros(n_states),
            np.full(n_states, -1, dtype=np.int64),
            np.zeros((n_states, CACHE_CAPACITY), dtype=np.int64),
            self._state_visits,
            np.zeros(n_states, dtype=np.int64),
            # built at each run (the tables may change in between); empty until then
            new_policy_state(-1, 0.0, 1, tables.padded, tables.cells, self._world),
        )
        self._policy = PolicyParams(
            POLICIES[params.policy],
            params.param,
            int(params.slate_size),
            TOPN_SEARCH[params.search],
            params.step_size.kernel_step,
        )
        self._response_arrays = ResponseArrays(
            int(self.response.model),
            self.response.click_cdf,
            self.response.buy_cdf,
            self.response.truth,
            self.response.best_mu,
            np.array(self.response.rewards, dtype=np.float64),
            self.response.phase_start,
        )

    @property
    def episodes_total(self) -> int:
        """Visits simulated on the tables so far."""
        return self._episodes

    @property
    def rng_state(self) -> dict[str, Any]:
        """JSON-serialisable ``bit_generator.state`` of the random stream (to resume)."""
        return plain_state(self._rng.bit_generator.state)

    @property
    def policy_state(self) -> dict[str, np.ndarray]:
        """Per-state policy state to resume from (copies; empty for policies without one).

        ``decaying``: ``state_visits``, int64 (n_states,), the visits to each state so far.
        """
        names = POLICY_STATE.get(self.params.policy, ())
        return {name: getattr(self._learner, name).copy() for name in names}

    @property
    def shown_per_state(self) -> np.ndarray:
        """Recommendations shown per state: the tables' ``reco_count`` summed over products, as
        of the end of the last :meth:`run` (a copy), int64 (n_states,). A visit changes its own
        state's row of the tables only, and adds its slate size here: the rows a run changed
        are those whose count moved."""
        return self._learner.state_shown.copy()

    def metric_sums(self) -> dict[str, np.ndarray]:
        """Per-block metric sums so far, by name (:data:`METRIC_SUMS`; copies): the raw columns
        of :meth:`metrics_frame`."""
        return {name: self._blocks[name].copy() for name in METRIC_SUMS}

    def metrics_frame(self) -> pd.DataFrame:
        """Per-block metrics so far: raw sums and derived rates (see :data:`METRIC_COLUMNS`).

        ``mean_reward`` is per visit; ``click_rate``, ``buy_rate`` and ``explored_share`` per
        shown product; ``mean_regret`` per visit with a known truth (NaN without).
        """
        blocks = self._blocks
        frame = pd.DataFrame(
            {
                "block": np.arange(blocks.size, dtype=np.int64),
                "first_visit": np.arange(blocks.size, dtype=np.int64) * self.params.metrics_block,
            }
        )
        for name, column in self.metric_sums().items():
            frame[name] = column
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["mean_reward"] = blocks["reward_sum"] / blocks["visits"]
            frame["click_rate"] = blocks["clicks"] / blocks["slots"]
            frame["buy_rate"] = blocks["buys"] / blocks["slots"]
            frame["explored_share"] = blocks["explored"] / blocks["slots"]
            frame["mean_regret"] = blocks["regret_sum"] / blocks["regret_visits"]
        return frame

    def run(
        self,
        episodes: int,
        *,
        chunk: int = 500_000,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        log: Callable[[np.ndarray], None] | None = None,
    ) -> SimulationSummary:
        """Simulate ``episodes`` visits (fewer if ``should_stop`` returns True at a chunk end).

        Parameters
        ----------
        episodes : int
            Visits to simulate (>= 0).
        chunk : int
            Visits per kernel call; ``progress`` and ``should_stop`` are called between chunks.
        progress : callable, optional
            Called with the number of visits simulated by this call so far.
        should_stop : callable, optional
            Polled after every chunk (e.g. set by a SIGINT handler); True ends the call there,
            with tables, RNG state, metrics and policy state consistent.
        log : callable, optional
            Log every shown slot: called after every :data:`LOG_VISITS` visits of a chunk and
            after its last visit, before ``progress``, with those visits' records
            (:data:`rlreco.schema.LOG_DTYPE`, ``visits x slate size``, in visit and slot order,
            with propensities; a view of one buffer that the next call overwrites, so copy what
            must outlive the call). Without it no record is
            made, and either way the draws, tables and metrics are the same.
        """
        if episodes < 0 or chunk < 1:
            raise SimulationError(f"episodes = {episodes}, chunk = {chunk}: need >= 0 and >= 1")
        block = self.params.metrics_block
        learner = self._learner
        if learner.value is not self.tables.padded or learner.cells is not self.tables.cells:
            raise SimulationError("the simulator's tables were replaced; build a new Simulator")
        # the tables may have been edited since the last call: derive everything afresh (but
        # what the caller gave for the first call)
        if self.params.search == "tree" and not self._index_built:
            build_index_nb(learner.value, learner.tree)
        self._index_built = False
        learner.cache_size[:] = -1
        shown, self._shown_start = self._shown_start, None
        learner.state_shown[:] = self.tables.reco_count.sum(axis=1) if shown is None else shown
        learner = self._learner = learner._replace(
            policy=new_policy_state(
                self._policy.code,
                self._policy.param,
                self._policy.slate_size,
                learner.value,
                learner.cells,
                self._world,
            )
        )
        start_blocks = self._blocks.copy()
        done = 0
        seconds = 0.0
        stopped = False
        # while logging, the kernel is called for at most LOG_VISITS visits at a time, all into
        # one small buffer: a buffer of a whole chunk's records (hundreds of MB) would fault in
        # a fresh page per 4 KiB inside the kernel's time, and leave the cache before it is read
        slate = self.params.slate_size
        step = min(chunk, LOG_VISITS) if log else chunk
        buffer = np.empty(min(step, episodes) * slate if log else 0, dtype=LOG_DTYPE)
        while done < episodes:
            in_chunk = min(chunk, episodes - done)
            for start in range(0, in_chunk, step):
                n = min(step, in_chunk - start)
                first = self._episodes
                first_block = first // block
                out = np.zeros((first + n - 1) // block - first_block + 1, dtype=METRICS_DTYPE)
                if first_block < self._blocks.size:
                    out[0] = self._blocks[first_block]  # continue the partial block's sums
                records = buffer[: n * slate]
                t0 = time.perf_counter()
                simulate_visits_nb(
                    self._rng,
                    first,
                    n,
                    self._world,
                    learner,
                    self._policy,
                    self._response_arrays,
                    block,
                    out,
                    records,
                )
                seconds += time.perf_counter() - t0
                if log is not None:
                    log(records)
                self._blocks = np.concatenate([self._blocks[:first_block], out])
                self._episodes += n
            done += in_chunk
            if progress is not None:
                progress(done)
            if done < episodes and should_stop is not None and should_stop():
                stopped = True
                break
        return self._summary(start_blocks, done, seconds, stopped)

    def _summary(
        self, start_blocks: np.ndarray, done: int, seconds: float, stopped: bool
    ) -> SimulationSummary:
        """Rates over this call's visits: block sums now minus block sums before the call."""
        totals = {}
        for name in METRIC_SUMS:
            totals[name] = float(np.sum(self._blocks[name])) - float(np.sum(start_blocks[name]))
        slots = totals["slots"]
        regret_visits = totals["regret_visits"]
        return SimulationSummary(
            episodes=done,
            episodes_total=self._episodes,
            seconds=seconds,
            episodes_per_second=done / seconds if seconds > 0 else float("nan"),
            mean_reward=totals["reward_sum"] / done if done else float("nan"),
            click_rate=totals["clicks"] / slots if slots else float("nan"),
            buy_rate=totals["buys"] / slots if slots else float("nan"),
            mean_regret=totals["regret_sum"] / regret_visits if regret_visits else None,
            explored_share=totals["explored"] / slots if slots else float("nan"),
            stopped=stopped,
        )

    def _restore_rng(self, rng_state: Mapping[str, Any]) -> None:
        try:
            self._rng.bit_generator.state = dict(rng_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"rng_state: not the state of a PCG64 generator ({exc})") from None


def _check_given(array: np.ndarray | None, shape: tuple[int, ...], dtype: type, name: str) -> None:
    """One line when an array given to the :class:`Simulator` cannot be what it says it is."""
    if array is not None and (
        array.shape != shape or array.dtype != dtype or not array.flags.c_contiguous
    ):
        raise SimulationError(
            f"{name}: shape {array.shape} {array.dtype}, expected a C-contiguous {shape} "
            f"{np.dtype(dtype)}"
        )
