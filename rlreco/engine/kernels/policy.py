"""Slate policies: how each visit fills its slate, and the dispatch by policy code.

Every policy fills a slate of ``n`` distinct products of the state's segment catalogue (in
catalogue order ``K``), drawing from the visit's generator after the state draw and before
the response (:mod:`rlreco.engine.kernels.visit`). :func:`choose_slate_nb` dispatches on
:data:`~rlreco.engine.kernels.records.Policy`:

``eps_greedy`` (parameter ``epsilon``)
    Slot by slot: ``u = rng.random()``. If ``u < epsilon`` the slot *explores*: a uniform
    product of the catalogue, redrawn (``below(K)``) until it is not yet in the slate.
    Otherwise it is *greedy*: the known product of highest value not yet in the slate (ties:
    lowest product id); if no known product is left (a cold state, or fewer than ``n`` known)
    the slot is *padded* with a catalogue product drawn exactly like an explored one but not
    counted as explored. The best products come from the top-n search
    (:mod:`rlreco.engine.kernels.topn`), looked up once, at the first greedy slot.
``decaying`` (parameter ``c``)
    Epsilon-greedy with a per-state epsilon ``min(1, c / v)``, ``v`` the visits to the state
    including this one (``Learner.state_visits``, counted under this policy only): the same
    path as ``eps_greedy``.
``softmax`` (temperature ``tau``)
    Boltzmann sampling without replacement over the known products of the catalogue, drawn
    from a per-state sum tree (:mod:`rlreco.engine.kernels.sum_tree`, which gives the exact
    draw order). Fewer than ``n`` known products: the slate is padded with catalogue products
    drawn as in epsilon-greedy exploration (``below(K)`` until new).
``ucb1`` (parameter ``c``)
    Products never recommended in the state (``reco_count == 0``) first, in random order (a
    partial Fisher-Yates shuffle of the untried products in catalogue order, step ``i`` picking
    ``i + below(m - i)``); the remaining slots take the largest
    ``value + c * sqrt(ln N_s / reco_count)``, ``N_s`` the recommendations made in the state
    (``Learner.state_shown``). Found from rows of the tried products grouped by count
    (:mod:`rlreco.engine.kernels.ucb1_cache`); the draws are those of the definition.
``thompson`` (parameter ``sigma``)
    Gaussian Thompson sampling: each catalogue product's key is
    ``mean + sigma / sqrt(reco_count + 1) * Z`` with ``mean`` its value (0 if unknown) and
    ``Z`` a standard normal from one ``rng.random()`` per visit and counter-based uniforms
    (:mod:`rlreco.engine.kernels.thompson`, which defines them); the ``n`` largest keys form
    the slate.

The structures of the last three (:class:`PolicyState`, in ``Learner.policy``) are derived from
the tables at the start of every run and kept exact after each visit by their update kernels,
which the fused loop (:func:`~rlreco.engine.kernels.visit_loop.simulate_visits_nb`) calls; none of
them changes a draw, so a run resumed from its tables continues bit for bit.

Ties rank the lower product id first. The ``explored`` metric counts the explored slots
(``eps_greedy``, ``decaying``), or the slots of a product never recommended in the state
before the visit (the other policies).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.candidate_cache import find_top_cached_nb
from rlreco.engine.kernels.draw import draw_below_nb, is_in_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import scan_top_nb
from rlreco.engine.kernels.records import (
    Learner,
    Policy,
    PolicyParams,
    TopNSearch,
    Workspace,
    World,
)
from rlreco.engine.kernels.sum_tree import (
    SumTree,
    SumTreeWork,
    build_softmax_nb,
    choose_softmax_slate_nb,
    new_sum_tree,
    new_sum_tree_work,
)
from rlreco.engine.kernels.thompson import (
    ThompsonCache,
    ThompsonWork,
    choose_thompson_slate_nb,
    new_thompson_cache,
    new_thompson_work,
)
from rlreco.engine.kernels.ucb1_cache import (
    Ucb1Cache,
    Ucb1Work,
    choose_ucb1_slate_nb,
    new_ucb1_cache,
    new_ucb1_work,
)
from rlreco.engine.kernels.untried_set import Untried, build_untried_nb, new_untried


class PolicyState(NamedTuple):
    """Structures of ``softmax``, ``ucb1`` and ``thompson`` and their scratch, per run.

    Only the active policy's are sized (:func:`new_policy_state`); the others have no rows.

    Attributes
    ----------
    untried : Untried
        ``ucb1``'s untried products (:mod:`rlreco.engine.kernels.untried_set`).
    ucb1, ucb1_work : Ucb1Cache, Ucb1Work
        ``ucb1``'s rows grouped by count (:mod:`rlreco.engine.kernels.ucb1_cache`).
    sum_tree, sum_tree_work : SumTree, SumTreeWork
        ``softmax``'s sum trees (:mod:`rlreco.engine.kernels.sum_tree`).
    thompson, thompson_work : ThompsonCache, ThompsonWork
        ``thompson``'s candidate caches (:mod:`rlreco.engine.kernels.thompson`).
    """

    untried: Untried
    ucb1: Ucb1Cache
    ucb1_work: Ucb1Work
    sum_tree: SumTree
    sum_tree_work: SumTreeWork
    thompson: ThompsonCache
    thompson_work: ThompsonWork


def new_policy_state(
    code: int,
    param: float,
    slate_size: int,
    value: np.ndarray,
    cells: np.ndarray,
    world: World,
) -> PolicyState:
    """The policy's structures built from the tables (a run's start; nothing persisted).

    Parameters
    ----------
    code : int
        :data:`~rlreco.engine.kernels.records.Policy` code.
    param : float
        The policy's parameter (``tau`` for the sum trees).
    slate_size : int
    value : ndarray of float64, shape (S, W)
    cells : ndarray of CELL_DTYPE, shape (S, P)
    world : World
    """
    n_states, width = value.shape
    sizes = np.diff(world.catalogue_ptr)
    largest = int(sizes.max()) if sizes.size else 1
    rows = {c: n_states if code == c else 0 for c in (Policy.softmax, Policy.ucb1, Policy.thompson)}
    untried = new_untried(rows[Policy.ucb1], width)
    tree = new_sum_tree(rows[Policy.softmax], width)
    if code == Policy.ucb1:
        build_untried_nb(
            cells, world.catalogue_ptr, world.catalogue_items, world.state_segment, untried
        )
    elif code == Policy.softmax:
        build_softmax_nb(
            value, world.catalogue_ptr, world.catalogue_items, world.state_segment, param, tree
        )
    return PolicyState(
        untried,
        new_ucb1_cache(rows[Policy.ucb1], largest),
        new_ucb1_work(slate_size, largest),
        tree,
        new_sum_tree_work(slate_size, width),
        new_thompson_cache(rows[Policy.thompson], width),
        new_thompson_work(slate_size, largest, width),
    )


@jit()
def choose_slate_nb(
    rng: np.random.Generator,
    state: int,
    world: World,
    learner: Learner,
    policy: PolicyParams,
    ws: Workspace,
) -> int:
    """Fill ``ws.slate`` for a visit to ``state`` by the policy (module docstring).

    The fused loop calls the epsilon-greedy path itself, with the bundles unpacked (see
    :func:`~rlreco.engine.kernels.feedback.respond_update_record_nb`).

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    world : World
    learner : Learner
        Read; ``state_visits`` is counted under ``decaying``, and the top-n caches of the tree
        search are refreshed.
    policy : PolicyParams
    ws : Workspace
        ``slate`` is the output; the rest is scratch.

    Returns
    -------
    int
        Explored slots.
    """
    segment = world.state_segment[state]
    first = world.catalogue_ptr[segment]
    size = world.catalogue_ptr[segment + 1] - first
    code = policy.code
    slate, top_value, top_product = ws.slate, ws.top_value, ws.top_product
    value, cells = learner.value, learner.cells
    if code in (Policy.eps_greedy, Policy.decaying):
        epsilon = greedy_epsilon_nb(code, policy.param, learner.state_visits, state)
        return choose_greedy_slate_nb(
            rng, state, value, learner.tree, learner.depth, policy.search,
            world.catalogue_items, first, size, epsilon, slate, top_value, top_product,
            ws.frontier, learner.cache_floor, learner.cache_size, learner.cache_items,
        )  # fmt: skip
    catalogue = world.catalogue_items[first : first + size]
    ps = learner.policy
    if code == Policy.softmax:
        work = ps.sum_tree_work
        return choose_softmax_slate_nb(
            rng, ps.sum_tree, value, cells, state, catalogue, policy.param, slate,
            work.saved_path, work.batch_u, work.batch_leaf,
        )  # fmt: skip
    if code == Policy.ucb1:
        return choose_ucb1_slate_nb(
            rng, ps.untried, ps.ucb1, value, cells, state, catalogue, policy.param,
            learner.state_shown[state], slate, ps.ucb1_work,
        )  # fmt: skip
    return choose_thompson_slate_nb(
        rng, ps.thompson, value, cells, state, catalogue, policy.param, slate, ps.thompson_work
    )


@jit(inline=True)
def greedy_epsilon_nb(code: int, param: float, state_visits: np.ndarray, state: int) -> float:
    """Epsilon of a visit: ``param`` (``eps_greedy``), or ``min(1, c / v)`` (``decaying``),
    counting the visit in ``state_visits`` first."""
    if code != Policy.decaying:
        return param
    state_visits[state] += 1
    return min(1.0, param / state_visits[state])


@jit(inline=True)
def choose_greedy_slate_nb(
    rng: np.random.Generator,
    state: int,
    value: np.ndarray,
    index: np.ndarray,
    depth: int,
    search: int,
    catalogue_items: np.ndarray,
    first: int,
    size: int,
    epsilon: float,
    slate: np.ndarray,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> int:
    """Fill ``slate`` by epsilon-greedy choice (``eps_greedy`` in the module docstring).

    The state's top ``n`` known products are looked up once, at the first greedy slot: with at
    most ``n - 1`` products already in the slate, the best known product not in the slate is
    the first of them not in the slate, if any.

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    value, index, depth
        As in :class:`~rlreco.engine.kernels.records.Learner`.
    search : int
        :data:`~rlreco.engine.kernels.records.TopNSearch` code.
    catalogue_items : ndarray of int32, shape (nnz,)
    first, size : int
        The state's catalogue is ``catalogue_items[first:first + size]`` (passed as bounds, not
        as a view), ``size >= n``.
    epsilon : float
        Exploration probability per slot.
    slate, top_value, top_product, frontier
        As in :class:`~rlreco.engine.kernels.records.Workspace` (``slate`` is the output).
    cache_floor, cache_size, cache_items
        As in :class:`~rlreco.engine.kernels.records.Learner`.

    Returns
    -------
    int
        Number of explored slots.
    """
    n = slate.shape[0]
    explored = 0
    found = -1
    cursor = 0
    for i in range(n):
        u = rng.random()
        product = -1
        if u >= epsilon:
            if found < 0:
                if search == TopNSearch.tree:
                    found = find_top_cached_nb(
                        value, index, state, depth, n, top_value, top_product, frontier,
                        cache_floor, cache_size, cache_items,
                    )  # fmt: skip
                else:
                    found = scan_top_nb(value, state, n, top_value, top_product)
            while cursor < found and is_in_nb(top_product[cursor], slate, i):
                cursor += 1
            if cursor < found:
                product = top_product[cursor]
                cursor += 1
        if product < 0:
            if u < epsilon:
                explored += 1
            product = catalogue_items[first + draw_below_nb(rng, size)]
            while is_in_nb(product, slate, i):
                product = catalogue_items[first + draw_below_nb(rng, size)]
        slate[i] = product
    return explored
