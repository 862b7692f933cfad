"""Propensities of a chosen slate: the probability that the policy put each product in its slot.

For visit logs (:mod:`rlreco.io.visit_log`): slot ``i``'s propensity is the probability that
the policy put ``slate[i]`` in slot ``i`` given the state, the tables before the visit's
update and the slots ``0..i-1``, in the semantics of :mod:`rlreco.engine.kernels.policy`
(``K`` the state's catalogue size):

``eps_greedy``, ``decaying`` (with the visit's epsilon)
    ``(1 - eps) * [slate[i] == g_i] + eps / (K - i)``, ``g_i`` the best known product not in
    slots ``0..i-1``; ``1 / (K - i)`` when no known product is left (a padded slot).
``softmax``
    ``exp(v_a / tau) / sum of exp(v_b / tau)`` over the known catalogue products ``b`` not in
    slots ``0..i-1`` (the Gumbel top-n slate is a sequence of softmax draws without
    replacement); a padded slot ``1 / (K - i)``.
``ucb1``
    ``1 / (m - i)`` for the ``m`` products never recommended in the state, shuffled into the
    first slots; 1 for the deterministic slots after them.
``thompson``
    NaN: no closed form.

Computing them reads the tables only and draws nothing, so logging changes no draw and no
table. The fused loop reuses the policy's own top-n lookup when it made one (a visit with a
greedy or padded slot): it fills ``top_product`` with -1 before the policy and counts the
entries the lookup wrote (:func:`count_found_nb`); only a visit whose every slot explored looks
the top list up again. While every slot so far holds its greedy pick, the next greedy pick is the
next entry of the top list, found without searching the slate (:func:`greedy_propensities_nb`).

The loop's other logging kernel lives here too: :func:`prefetch_records_nb`, the cache hint of the
log records a visit is about to write.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.candidate_cache import find_top_cached_nb
from rlreco.engine.kernels.draw import is_in_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.prefetch import prefetch_nb
from rlreco.engine.kernels.ranking import scan_top_nb
from rlreco.engine.kernels.records import (
    Learner,
    Policy,
    PolicyParams,
    TopNSearch,
    Workspace,
    World,
)


@jit(inline=True)
def lookup_top_nb(
    value: np.ndarray,
    index: np.ndarray,
    depth: int,
    search: int,
    state: int,
    n: int,
    top_value: np.ndarray,
    top_product: np.ndarray,
    frontier: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
) -> int:
    """The state's top ``n`` known products into ``top_product`` (the policy's lookup,
    :func:`~rlreco.engine.kernels.policy.choose_greedy_slate_nb`); returns how many."""
    if search == TopNSearch.tree:
        return find_top_cached_nb(
            value, index, state, depth, n, top_value, top_product, frontier,
            cache_floor, cache_size, cache_items,
        )  # fmt: skip
    return scan_top_nb(value, state, n, top_value, top_product)


@jit(inline=True)
def prefetch_records_nb(rows: np.ndarray, at: int, n: int) -> None:
    """Hint the cache lines of records ``at .. at + n - 1`` of a visit log buffer.

    A visit's records are written at its end into a buffer larger than the caches, and without
    the hint their stores miss behind the visit's own table misses: they cost the logging loop
    most of what logging cost it (records written into a buffer that stays in the L1 cache cost
    almost nothing). Hinted at the visit's start, the lines arrive while the visit runs.

    Parameters
    ----------
    rows : ndarray of LOG_DTYPE, shape (1, m)
        The log buffer as one row (``prefetch_nb`` takes 2-d arrays).
    at, n : int
        First record and number of records, ``at + n <= m``.
    """
    # a record (35 bytes) is hinted at its first and last byte, so every other record leaves
    # no line of the range out; the last one is hinted too
    for k in range(at, at + n, 2):
        prefetch_nb(rows, 0, k)
    prefetch_nb(rows, 0, at + n - 1)


@jit(inline=True)
def count_found_nb(top_product: np.ndarray, n: int) -> int:
    """Products a top-n lookup wrote into ``top_product`` that was filled with -1 before it
    (a lookup writes exactly its first ``found`` entries)."""
    found = 0
    while found < n and top_product[found] >= 0:
        found += 1
    return found


@jit(inline=True)
def greedy_propensities_nb(
    epsilon: float,
    size: int,
    slate: np.ndarray,
    top_product: np.ndarray,
    found: int,
    out: np.ndarray,
) -> None:
    """Epsilon-greedy propensities of ``slate`` (module docstring).

    Parameters
    ----------
    epsilon : float
        The visit's exploration probability.
    size : int
        ``K``, the state's catalogue size.
    slate : ndarray of int64, shape (n,)
    top_product : ndarray of int64, shape (>= found,)
        The state's best known products before the visit, best first (:func:`lookup_top_nb`).
    found : int
        Valid entries of ``top_product``: ``min(n, known products)``.
    out : ndarray of float64, shape (n,)
        Output: the propensity of each slot.
    """
    cursor = 0  # top_product[cursor] is slot i's greedy pick when cursor < found
    foreign = False  # whether a slot so far holds anything but its greedy pick
    for i in range(slate.shape[0]):
        # at most i products precede slot i, so its greedy pick is among the top n; while every
        # slot holds its greedy pick, slots 0..i-1 are top_product[:cursor], so the next entry
        # is free without a search of the slate (the common case)
        if i > 0 and cursor < found and slate[i - 1] == top_product[cursor]:
            cursor += 1
            while foreign and cursor < found and is_in_nb(top_product[cursor], slate, i):
                cursor += 1
        left = size - i
        if cursor < found:
            out[i] = (1.0 - epsilon) * (slate[i] == top_product[cursor]) + epsilon / left
            foreign |= slate[i] != top_product[cursor]
        else:
            out[i] = 1.0 / left


@jit(inline=True)
def softmax_propensities_nb(
    value: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    tau: float,
    slate: np.ndarray,
    out: np.ndarray,
) -> None:
    """Softmax (Gumbel top-n) propensities of ``slate`` (module docstring).

    Parameters
    ----------
    value : ndarray of float64, shape (S, W)
    state : int
    catalogue : ndarray of int32, shape (K,)
    tau : float
    slate : ndarray of int64, shape (n,)
    out : ndarray of float64, shape (n,)
        Output.
    """
    n = slate.shape[0]
    size = catalogue.shape[0]
    top = -np.inf
    known = 0
    for k in range(size):
        v = value[state, catalogue[k]]
        if v != -np.inf:
            known += 1
            top = max(top, v)
    # weights relative to the largest value: no overflow, same ratios
    total = 0.0
    for k in range(size):
        v = value[state, catalogue[k]]
        if v != -np.inf:
            total += np.exp((v - top) / tau)
    for i in range(n):
        if i < known:
            weight = np.exp((value[state, slate[i]] - top) / tau)
            out[i] = weight / total
            total = max(total - weight, 0.0)
        else:
            out[i] = 1.0 / (size - i)


@jit(inline=True)
def ucb_propensities_nb(
    cells: np.ndarray, state: int, catalogue: np.ndarray, slate: np.ndarray, out: np.ndarray
) -> None:
    """UCB1 propensities of ``slate``: ``1 / (m - i)`` for the shuffled untried products, 1
    after them (module docstring)."""
    untried = 0
    for k in range(catalogue.shape[0]):
        untried += cells[state, catalogue[k]]["reco_count"] == 0
    for i in range(slate.shape[0]):
        out[i] = 1.0 / (untried - i) if i < untried else 1.0


@jit()
def slate_propensities_nb(
    state: int, world: World, learner: Learner, policy: PolicyParams, ws: Workspace
) -> None:
    """Fill ``ws.propensity`` for the slate in ``ws.slate``, chosen by ``policy`` for a visit
    to ``state`` and not yet applied to the tables.

    Under ``decaying`` the visit's epsilon is ``min(1, c / state_visits[state])``: the
    policy has already counted the visit.
    """
    segment = world.state_segment[state]
    first = world.catalogue_ptr[segment]
    size = world.catalogue_ptr[segment + 1] - first
    code = policy.code
    out = ws.propensity
    if code in (Policy.eps_greedy, Policy.decaying):
        epsilon = policy.param
        if code == Policy.decaying:
            epsilon = min(1.0, policy.param / learner.state_visits[state])
        found = lookup_top_nb(
            learner.value, learner.tree, learner.depth, policy.search, state,
            ws.slate.shape[0], ws.top_value, ws.top_product, ws.frontier, learner.cache_floor,
            learner.cache_size, learner.cache_items,
        )  # fmt: skip
        greedy_propensities_nb(epsilon, size, ws.slate, ws.top_product, found, out)
    elif code == Policy.softmax:
        catalogue = world.catalogue_items[first : first + size]
        softmax_propensities_nb(learner.value, state, catalogue, policy.param, ws.slate, out)
    elif code == Policy.ucb1:
        catalogue = world.catalogue_items[first : first + size]
        ucb_propensities_nb(learner.cells, state, catalogue, ws.slate, out)
    else:
        out[:] = np.nan
