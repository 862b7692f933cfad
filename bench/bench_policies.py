"""Visits per second of softmax, UCB1 and Thompson through the engine against today's scans.

``fast``: a :class:`~rlreco.engine.simulation.Simulator` run of the policy (the fused visit
loop with ``sum_tree``, ``ucb1_cache`` or ``thompson`` and their exact updates; the
structures are built from the tables at the start of the run, inside the timing). ``scan``:
the same loop with the full-scan choice of each policy as it was before those modules
(:func:`scan_policy_visits_nb`, below: Gumbel keys over every known product, every tried
product's UCB1 key, a ``standard_normal`` per catalogue product), the baseline of every
ratio. Both use ``respond_update_record_nb`` for the response, update and metrics.

Spaces (as ``bench_simulate.py``): ``synthetic`` (576 states x 4,070 products, catalogues of
~3,300, ``seed`` response) and ``real`` (``prepare`` on ``../shared/data``, ``popularity``
response; skipped when absent). Phases: ``fresh`` starts from the initial tables (UCB1 spends
it mostly on its untried products); ``steady`` starts from the tables after ``PRIOR`` visits
of the policy (about 1,700 per state: the end of a 1M-visit run); both methods start from the
same tables. Rates are visits per second of *process CPU time* (``time.process_time``): on
the shared machine wall time mostly measures the neighbours. Slate 10. Targets (``fast``, one
core): UCB1 and softmax >= 500,000 visits/s, Thompson >= 100,000.

Figures (one core of the shared 2-core AMD EPYC VM, ``taskset -c 1`` as core 0 was saturated
by other jobs, process CPU time, one sitting; fast / scan visits/s, ratio):

=========  ========  ==========================  ==========================
space      policy    fresh                       steady
=========  ========  ==========================  ==========================
synthetic  softmax   266k / 53k, 5.0x            273k / 52k, 5.3x
synthetic  ucb1      305k / 72k, 4.2x            181k / 61k, 3.0x
synthetic  thompson  101k / 40k, 2.5x            125k / 40k, 3.1x
real       softmax   205k / 51k, 4.0x            244k / 52k, 4.7x
real       ucb1      271k / 65k, 4.2x            219k / 58k, 3.8x
real       thompson  82k / 38k, 2.2x             64k / 38k, 1.7x
=========  ========  ==========================  ==========================

Same sitting, epsilon-greedy (``synthetic seed``, tree search, best of 3 x 2M visits): 560-582k
visits/s on this branch against 572-575k on the main branch before it (no regression).

Later, on the real space (``popularity``, from the initial tables, process CPU time, one core
of a machine loaded 10-15 deep, alternating with the tree before in one sitting; before ->
after): UCB1 228k -> 264k and 268k -> 300k (1.12-1.16x); softmax 212k -> 241k and 257k ->
254k (0.99-1.14x: no clear gain); Thompson 81k -> 104k and 80k -> 100k (1.25-1.29x).
First-use compile of these kernels did not change (``bench/bench_compile.py``, same sitting).

Where the time goes (kernels timed alone on
tables after 1M visits, per visit): softmax choose 3.2 us (1.4-1.6 us when one state's tree
stays in cache: half is memory), update 0.5 us; 71% of visits draw their last slots with the
slate's leaves taken out (the slate holds over half the weight at tau 0.5), 11.6 descents per
visit. UCB1 with the horizon cache of the time: choose 2.0 us (1.0 us on one cached state),
update 0.2 us; the walk read ~134 entries and computed ~46 keys per visit, a reorder on 7% of
visits, rebuilds on ~0.4%. UCB1 with the rows grouped by count (``ucb1_cache`` now): choose
0.43-0.52 us (0.27 us on one cached state), ~45 groups per state after 1M visits (at most 62),
no rebuild after a row's first build; the 10M-visit run of ``python bench/bench_simulate.py
real popularity ucb1`` timed in process CPU time, alternating with the horizon cache in one
sitting: 642k and 620k visits/s against 277k and 300k (2.1-2.3x); on a quieter machine 700k
and 759k against 337k and 380k (2.0x). On the synthetic space (``seed`` response, 3M visits,
same timing) it is slower: 127k against 224k visits/s (0.57x): its groups are large and of
close values, so an update shifts ~1,400 entries per visit (~150 on the real space). Each
group now keeps only a short sorted block of its best entries (the rest unordered, a block
extended by quickselect when a walk runs past it), so a move costs O(block): per visit ~75
entries shifted and ~75 read by extensions on the real space under ``seed``. Same sitting,
process CPU time, against the fully sorted groups: synthetic ``fresh`` 405k against 155k
visits/s (2.6x), ``steady`` 265k against 119k (2.2x); real space ``popularity``, 10M visits:
797k against 621k and 789k (no loss); real space ``seed``, 2M visits: ~310k against ~131k.
Maintaining the epsilon-greedy top-n index cost these policies ~8% (no longer done). Thompson
fell back to a full evaluation on 6.7% of visits (its threshold, estimated from 64 sampled
products, was off on skewed catalogues); the threshold is now the ``3 n``-th largest
``m - s`` (a selection over the catalogue at each rebuild): 0.28% of visits; its update found
members by a linear search (1.2 us per visit), now a per-state slot map.

Softmax, later: a visit (``real popularity``) made ~2.8 rounds, ~14 descents and took ~5 leaves
out; in choose, the descents took about half the time and the leaf take-outs an eighth. Three
changes, draws unchanged: the choose and update kernels compiled without reference counting
(the fused loop calls them, and each inlined helper counted its array arguments on every
descent step), unsigned one-position walks (no negative-index checks), and the root's running
sums added once per round. Stored running sums beside every group (no addition in a descent)
were slower: 0.85x, as the extra lines cost more than the additions saved. Real space,
``popularity``, from the initial tables, process CPU time, alternating in one process, medians
of 4 (machine loaded 5-6 deep): 3M visits, core 0: 481k against 388k visits/s (1.24x) and core
1: 457k against 371k (1.23x) before the root sums; 2M visits, core 0: 497k against 408k
(1.22x) with them. ``rlreco simulate --policy softmax --visits 3000000 --response popularity``
(CPU time less ~3.4 s of start-up, two alternating pairs): ~445k against ~372k (1.20x).

Run pinned to one core::

    taskset -c 0 .venv/bin/python -m pytest bench/bench_policies.py \\
        -o python_files='bench_*.py' -o python_functions='bench_*' --benchmark-only -s
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlreco.engine.kernels.draw import draw_below_nb, draw_state_nb, is_in_nb
from rlreco.engine.kernels.feedback import respond_update_record_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import insert_ranked_nb
from rlreco.engine.kernels.records import (
    Learner,
    Policy,
    PolicyParams,
    ResponseArrays,
    World,
)
from rlreco.engine.kernels.visit import new_workspace_nb
from rlreco.engine.simulation import SimulationParams, Simulator
from rlreco.engine.tables import Tables
from rlreco.schema import METRICS_DTYPE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import load_space, response_of

NAMES = {"softmax": Policy.softmax, "ucb1": Policy.ucb1, "thompson": Policy.thompson}
VISITS = {"scan": 50_000, "fast": 500_000}
PRIOR = 1_000_000
RESPONSE = {"synthetic": "seed", "real": "popularity"}
_rates: dict[tuple[str, str, str, str], float] = {}


@jit(inline=True)
def count_untried_nb(cells: np.ndarray, state: int, slate: np.ndarray) -> int:
    """Slate products never recommended in the state (the ``explored`` count)."""
    untried = 0
    for i in range(slate.shape[0]):
        untried += cells[state, slate[i]]["reco_count"] == 0
    return untried


@jit(inline=True)
def pad_slate_nb(
    rng: np.random.Generator, catalogue: np.ndarray, slate: np.ndarray, filled: int
) -> None:
    """Fill slots ``filled..n-1`` with catalogue products drawn ``below(K)`` until new.

    Parameters
    ----------
    rng : numpy.random.Generator
    catalogue : ndarray of int32, shape (K,)
    slate : ndarray of int64, shape (n,)
        Slots ``0..filled-1`` are set; the rest are filled in place.
    filled : int
    """
    size = catalogue.shape[0]
    for i in range(filled, slate.shape[0]):
        product = catalogue[draw_below_nb(rng, size)]
        while is_in_nb(product, slate, i):
            product = catalogue[draw_below_nb(rng, size)]
        slate[i] = product


@jit(inline=True)
def scan_softmax_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    tau: float,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
) -> None:
    """Softmax slate by Gumbel top-n over every known product (the former definition).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, W)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue, ``K >= n``.
    tau : float
        Temperature (> 0).
    slate : ndarray of int64, shape (n,)
        Output.
    top_key : ndarray of float64, shape (n,)
        Workspace.
    top_product : ndarray of int64, shape (n,)
        Workspace.
    """
    n = slate.shape[0]
    found = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        v = value[state, product]
        if v != -np.inf:
            key = v / tau - np.log(-np.log(rng.random()))
            found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    for i in range(found):
        slate[i] = top_product[i]
    pad_slate_nb(rng, catalogue, slate, found)


@jit(inline=True)
def scan_ucb_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    c: float,
    shown: int,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
    untried: np.ndarray,
) -> None:
    """UCB1 slate, untried products first, by a scan of the catalogue (the former kernel).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, W)
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
    state : int
    catalogue : ndarray of int32, shape (K,)
    c : float
        Exploration weight (>= 0).
    shown : int
        ``N_s``: recommendations made in the state so far.
    slate : ndarray of int64, shape (n,)
        Output.
    top_key, top_product : ndarray, shape (n,)
        Workspace.
    untried : ndarray of int64, shape (>= K,)
        Workspace.
    """
    n = slate.shape[0]
    m = 0
    found = 0
    log_shown = np.log(max(shown, 1))
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        tries = cells[state, product]["reco_count"]
        if tries == 0:
            untried[m] = product
            m += 1
        else:
            key = value[state, product] + c * np.sqrt(log_shown / tries)
            found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    first = min(m, n)
    for i in range(first):
        j = i + draw_below_nb(rng, m - i)
        untried[i], untried[j] = untried[j], untried[i]
        slate[i] = untried[i]
    for i in range(first, n):
        slate[i] = top_product[i - first]


@jit(inline=True)
def scan_thompson_slate_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    sigma: float,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
) -> None:
    """Thompson slate from a ``standard_normal`` per catalogue product (the former definition).

    Parameters
    ----------
    rng : numpy.random.Generator
    value : ndarray of float64, shape (n_states, W)
    cells : ndarray of CELL_DTYPE, shape (n_states, n_products)
    state : int
    catalogue : ndarray of int32, shape (K,)
    sigma : float
        Reward noise scale (> 0).
    slate : ndarray of int64, shape (n,)
        Output.
    top_key, top_product : ndarray, shape (n,)
        Workspace.
    """
    n = slate.shape[0]
    found = 0
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        mean = value[state, product]
        if mean == -np.inf:
            mean = 0.0
        scale = sigma / np.sqrt(cells[state, product]["reco_count"] + 1.0)
        key = mean + scale * rng.standard_normal()
        found = insert_ranked_nb(key, product, top_key, top_product, found, n)
    for i in range(n):
        slate[i] = top_product[i]


@jit()
def scan_policy_visits_nb(
    rng: np.random.Generator,
    n_visits: int,
    world: World,
    learner: Learner,
    policy: PolicyParams,
    response: ResponseArrays,
    metrics: np.ndarray,
) -> None:
    """``simulate_visits_nb`` with the former full-scan choices (the baseline).

    ``metrics`` (METRICS_DTYPE, shape (1,)) receives every visit's sums.
    """
    ws = new_workspace_nb(policy.slate_size, learner.depth)
    state_segment, catalogue_ptr, catalogue_items = world[:3]
    state_cdf = world.state_cdf[0]
    # by field name: the bundles have grown fields since this baseline was written
    value, index, depth, cells = learner.value, learner.tree, learner.depth, learner.cells
    cache_floor, cache_size = learner.cache_floor, learner.cache_size
    cache_items, state_shown = learner.cache_items, learner.state_shown
    code, param, search, step = policy.code, policy.param, policy.search, policy.step
    model, click_cdf, buy_cdf = response.model, response.click_cdf, response.buy_cdf
    truth, best_mu = response.truth[0], response.best_mu[0]  # the first phase: one truth here
    outcome_reward = response.outcome_reward
    slate, outcome, order, previous = ws.slate, ws.outcome, ws.order, ws.previous
    top_value, top_product, drawn = ws.top_value, ws.top_product, ws.drawn
    untried = np.empty(catalogue_items.shape[0], dtype=np.int64)
    for _ in range(n_visits):
        state = draw_state_nb(rng, state_cdf, value.shape[0])
        segment = state_segment[state]
        catalogue = catalogue_items[catalogue_ptr[segment] : catalogue_ptr[segment + 1]]
        if code == Policy.softmax:
            scan_softmax_slate_nb(
                rng, value, state, catalogue, param, slate, top_value, top_product
            )
        elif code == Policy.ucb1:
            scan_ucb_slate_nb(
                rng, value, cells, state, catalogue, param, state_shown[state], slate,
                top_value, top_product, untried,
            )  # fmt: skip
        else:
            scan_thompson_slate_nb(
                rng, value, cells, state, catalogue, param, slate, top_value, top_product
            )
        explored = count_untried_nb(cells, state, slate)
        respond_update_record_nb(
            rng, state, explored, model, click_cdf, buy_cdf, truth, best_mu, outcome_reward,
            value, index, depth, search, step, cells, cache_floor, cache_size, cache_items,
            state_shown, slate, outcome, order, previous, drawn, metrics, 0,
        )  # fmt: skip


class Case:
    """One space and policy: its tables (advanced by ``PRIOR`` visits for ``steady``)."""

    def __init__(self, spaces: dict[str, Any], space_name: str, policy: str, phase: str) -> None:
        self.space, initial = spaces["get"](space_name)
        self.response = response_of(self.space, initial, RESPONSE[space_name])
        self.params = SimulationParams(
            slate_size=10, response=RESPONSE[space_name], search="scan", policy=policy
        )
        self.tables = initial.copy()
        # warm-up: compile or load every kernel of both methods
        self.simulate(initial.copy(), "fast", 2_000, seed=9)
        self.simulate(initial.copy(), "scan", 200, seed=9)
        if phase == "steady":
            self.simulate(self.tables, "fast", PRIOR, seed=2)

    def simulate(self, tables: Tables, method: str, visits: int, seed: int) -> float:
        """Visits/s (process CPU time) of ``visits`` visits on ``tables`` (advanced)."""
        simulator = Simulator(self.space, tables, self.params, seed=seed, response=self.response)
        start = time.process_time()
        if method == "fast":
            simulator.run(visits, chunk=visits)
        else:
            learner = simulator._learner
            learner.state_shown[:] = tables.reco_count.sum(axis=1)
            scan_policy_visits_nb(
                np.random.default_rng(seed), visits, simulator._world, learner,
                simulator._policy, simulator._response_arrays, np.zeros(1, dtype=METRICS_DTYPE),
            )  # fmt: skip
        return visits / (time.process_time() - start)


_cases: dict[tuple[str, str, str], Case] = {}


@pytest.fixture(scope="module")
def spaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """State spaces, built once per module on first use."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            cache[name] = load_space(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return {"get": get}


@pytest.mark.parametrize("method", ["scan", "fast"])
@pytest.mark.parametrize("phase", ["fresh", "steady"])
@pytest.mark.parametrize("policy", list(NAMES))
@pytest.mark.parametrize("space_name", ["synthetic", "real"])
def bench_policy(
    benchmark: Any, spaces: dict[str, Any], space_name: str, policy: str, phase: str, method: str
) -> None:
    key = (space_name, policy, phase)
    if key not in _cases:
        _cases[key] = Case(spaces, space_name, policy, phase)
    case = _cases[key]
    rate = benchmark.pedantic(
        lambda: case.simulate(case.tables.copy(), method, VISITS[method], seed=4),
        rounds=1,
        iterations=1,
    )
    _rates[(space_name, policy, phase, method)] = rate
    benchmark.extra_info["visits_per_second"] = rate
    line = f"\n{space_name} {policy} {phase} {method}: {rate:,.0f} visits/s"
    if method == "fast" and (space_name, policy, phase, "scan") in _rates:
        ratio = rate / _rates[(space_name, policy, phase, "scan")]
        benchmark.extra_info["ratio_to_scan"] = ratio
        line += f", {ratio:.1f}x the scan"
    print(line)
