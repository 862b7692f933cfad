"""Kernels of off-policy evaluation on a visit log (:data:`rlreco.schema.LOG_DTYPE` slots).

Every target follows the slate semantics of :mod:`rlreco.engine.kernels.visit`: slot by slot,
with probability ``1 - epsilon`` the greedy product (the known product of highest value not yet
in the slate, ties: lowest product id), otherwise a uniform product of the state's segment
catalogue not yet in the slate; with no known product left the slot is padded uniformly. Given
the slots before slot ``i`` of a state with catalogue size ``K``, its probability of product
``a`` is therefore

    pi = (1 - epsilon) * [a == greedy] + epsilon / (K - i)     (a greedy product exists)
    pi = 1 / (K - i)                                            (padding)

for ``a`` in the catalogue (0 outside it). The learning target of :func:`replay_log_nb` draws
slot by slot given the *logged* slots before and keeps a per-state list of its best products up
to date as it learns. Fixed targets are weighted by the probability that their *own* slate
shows the logged product (:func:`expect_slots_nb`, :func:`weigh_slots_nb`), read from a
per-state list of the ``n`` best known products (:func:`rank_top_nb`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlreco.engine.kernels.draw import draw_below_nb
from rlreco.engine.kernels.jit import jit


@jit(inline=True)
def ranks_before_nb(value_a: float, product_a: int, value_b: float, product_b: int) -> bool:
    """Whether product ``a`` ranks before ``b``: higher value, ties lower product id."""
    return value_a > value_b or (value_a == value_b and product_a < product_b)


@jit(inline=True)
def in_prefix_nb(product: int, slots: np.ndarray, first: int, filled: int) -> bool:
    """Whether ``product`` is among the logged products ``slots[first:first + filled]``."""
    found = False
    for j in range(first, first + filled):
        found |= slots[j].product == product
    return found


@jit()
def rank_top_nb(value: np.ndarray, n: int, ranked: np.ndarray, ranked_count: np.ndarray) -> None:
    """The ``n`` best known products of every state, best first.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, n_products)
        ``-inf`` = unknown.
    n : int
    ranked : ndarray of int64, shape (n_states, n)
        Output: product ids, best first (ties: lower id first); -1 beyond ``ranked_count``.
    ranked_count : ndarray of int64, shape (n_states,)
        Output: ``min(n, known products)``.
    """
    for s in range(value.shape[0]):
        count = 0
        for p in range(value.shape[1]):
            v = value[s, p]
            if v == -np.inf:
                continue
            last = ranked[s, n - 1]
            if count == n and not ranks_before_nb(v, p, value[s, last], last):
                continue
            # insertion into the sorted list; scanning products in id order keeps ties stable
            k = min(count, n - 1)
            while k > 0 and ranks_before_nb(v, p, value[s, ranked[s, k - 1]], ranked[s, k - 1]):
                ranked[s, k] = ranked[s, k - 1]
                k -= 1
            ranked[s, k] = p
            count = min(count + 1, n)
        ranked_count[s] = count
        for k in range(count, n):
            ranked[s, k] = -1


@jit()
def weigh_slots_nb(
    slots: np.ndarray,
    visit_ptr: np.ndarray,
    state_row: np.ndarray,
    product_column: np.ndarray,
    inclusion: np.ndarray,
    clip: float,
    target: np.ndarray,
    weight: np.ndarray,
) -> None:
    """Target inclusion probability and weight of every logged slot (sequential slate IPS).

    A visit of ``m`` slots estimates the target's own ``m``-slot slate value
    ``sum_a rho(a) r(a)``, ``rho(a)`` the probability that the target's slate shows ``a``.
    Slot ``i`` alone gives an unbiased estimate given the slots before it: the rewards already
    shown count with ``rho`` (observed for sure), the new product with ``rho / propensity``
    (observed with its logging propensity given those slots). The average of the ``m`` slot
    estimates puts on slot ``i`` the weight

        w_i = min((rho(a_i) / propensity_i + rho(a_i) * (m - 1 - i)) / m, clip)

    so that ``sum_i w_i y_i`` is unbiased for the target's slate value when a slot's expected
    reward depends only on the state and its product, and the logging policy can show every
    product the target can (unclipped, ``sum_i w_i`` has expectation ``m``: weights average 1).

    Parameters
    ----------
    slots : ndarray of LOG_DTYPE, shape (n_slots,)
        Sorted by visit, then position; ``propensity`` > 0.
    visit_ptr : ndarray of int64, shape (n_visits + 1,)
        Visit ``t`` is ``slots[visit_ptr[t]:visit_ptr[t + 1]]``.
    state_row : ndarray of int64, shape (n_states,)
        Row of each logged state in ``inclusion``.
    product_column : ndarray of int8, shape (n_states, n_products)
        Column of each product in ``inclusion``: its rank ``j < n`` among the state's ``n`` best
        known products, ``n`` another catalogue product, ``n + 1`` outside the catalogue.
    inclusion : ndarray of float64, shape (n_rows, n, n + 2)
        ``[r, m - 1, j]``: the probability that the first ``m`` slots of the target's slate
        show the product of column ``j`` (cumulative :func:`expect_slots_nb`; column ``n`` per
        other catalogue product, column ``n + 1`` zero).
    clip : float
        Weights above it are set to it (``inf``: no clipping).
    target : ndarray of float64, shape (n_slots,)
        Output: ``rho`` of the logged product in the target's slate of the visit's length.
    weight : ndarray of float64, shape (n_slots,)
        Output: ``w_i``.
    """
    for t in range(visit_ptr.shape[0] - 1):
        first = visit_ptr[t]
        end = visit_ptr[t + 1]
        m = end - first
        state = slots[first].state
        row = state_row[state]
        for j in range(first, end):
            rho = inclusion[row, m - 1, product_column[state, slots[j].product]]
            target[j] = rho
            weight[j] = min((rho / slots[j].propensity + rho * (end - 1 - j)) / m, clip)


@jit()
def expect_slots_nb(
    ranked: np.ndarray,
    ranked_count: np.ndarray,
    catalogue_size: np.ndarray,
    epsilon: float,
    states: np.ndarray,
    prob: np.ndarray,
) -> None:
    """Where the target's own slate puts its best products, slot by slot (exact).

    For each state, ``prob[k, i, j]`` is the probability that slot ``i`` of the target's slate
    shows its ``j``-th best known product (``j < ranked_count``), and ``prob[k, i, n]`` that it
    shows one of the other catalogue products; by symmetry each of those ``K - count`` others is
    equally likely, so the expected value of any additive score follows from these numbers.
    The greedy slot of a slate with ``i`` products always lands within the first ``i + 1`` best,
    so a distribution over subsets (bit masks) of the ``n`` best is exact: O(n * n * 2**n) per
    state.

    Parameters
    ----------
    ranked, ranked_count : ndarray of int64
        :func:`rank_top_nb` of the target's tables, width ``n``.
    catalogue_size : ndarray of int64, shape (n_states,)
        Catalogue size of each state's segment (``>= n``).
    epsilon : float
    states : ndarray of int64, shape (m,)
        States to expand.
    prob : ndarray of float64, shape (m, n, n + 1)
        Output.
    """
    n = ranked.shape[1]
    masks = 1 << n
    current = np.zeros(masks)
    following = np.zeros(masks)
    for k in range(states.shape[0]):
        state = states[k]
        count = ranked_count[state]
        size = catalogue_size[state]
        current[:] = 0.0
        current[0] = 1.0
        for i in range(n):
            following[:] = 0.0
            for j in range(n + 1):
                prob[k, i, j] = 0.0
            left = size - i
            for mask in range(masks):
                p = current[mask]
                if p == 0.0:
                    continue
                taken = 0
                greedy = -1
                for j in range(count):
                    if mask & (1 << j):
                        taken += 1
                    elif greedy < 0:
                        greedy = j
                uniform = epsilon
                if greedy >= 0:
                    share = p * (1.0 - epsilon)
                    prob[k, i, greedy] += share
                    following[mask | (1 << greedy)] += share
                else:
                    uniform = 1.0  # padding: uniform as exploring
                if uniform > 0.0:
                    each = p * uniform / left
                    for j in range(count):
                        if not mask & (1 << j):
                            prob[k, i, j] += each
                            following[mask | (1 << j)] += each
                    others = left - (count - taken)
                    prob[k, i, n] += each * others
                    following[mask] += each * others
            current[:] = following


@jit(inline=True)
def refresh_cache_nb(
    value: np.ndarray,
    state: int,
    cache_items: np.ndarray,
    cache_size: np.ndarray,
    cache_complete: np.ndarray,
) -> None:
    """Rebuild a state's list of best known products by a scan of its value row."""
    capacity = cache_items.shape[1]
    count = 0
    known = 0
    for p in range(value.shape[1]):
        v = value[state, p]
        if v == -np.inf:
            continue
        known += 1
        last = cache_items[state, count - 1] if count > 0 else -1
        if count == capacity and not ranks_before_nb(v, p, value[state, last], last):
            continue
        k = min(count, capacity - 1)
        while k > 0 and ranks_before_nb(
            v, p, value[state, cache_items[state, k - 1]], cache_items[state, k - 1]
        ):
            cache_items[state, k] = cache_items[state, k - 1]
            k -= 1
        cache_items[state, k] = p
        count = min(count + 1, capacity)
    cache_size[state] = count
    cache_complete[state] = known <= capacity


@jit(inline=True)
def reposition_cache_nb(
    value: np.ndarray,
    state: int,
    product: int,
    cache_items: np.ndarray,
    cache_size: np.ndarray,
    cache_complete: np.ndarray,
) -> None:
    """Keep a state's list exact after ``product``'s value changed.

    Invariant: every known product outside the list ranks below every product in it, and a
    *complete* list holds every known product. A product that falls below the list's last entry
    leaves an incomplete list (an outside product may now rank above it); the list shrinks and
    is rebuilt when a lookup runs out of it.
    """
    size = cache_size[state]
    if size < 0:
        return
    capacity = cache_items.shape[1]
    v = value[state, product]
    at = -1
    for k in range(size):
        if cache_items[state, k] == product:
            at = k
            break
    if at >= 0:
        for k in range(at, size - 1):
            cache_items[state, k] = cache_items[state, k + 1]
        size -= 1
    if not cache_complete[state]:
        last = cache_items[state, size - 1] if size > 0 else -1
        if size == 0 or not ranks_before_nb(v, product, value[state, last], last):
            cache_size[state] = size
            return
    if size == capacity:
        # only a product new to the list gets here: it enters only by ranking above the last
        # entry, which then drops out (ranking below every kept one, as outside products must)
        last = cache_items[state, size - 1]
        cache_complete[state] = False
        if not ranks_before_nb(v, product, value[state, last], last):
            return
        size -= 1
    k = size
    while k > 0 and ranks_before_nb(
        v, product, value[state, cache_items[state, k - 1]], cache_items[state, k - 1]
    ):
        cache_items[state, k] = cache_items[state, k - 1]
        k -= 1
    cache_items[state, k] = product
    cache_size[state] = size + 1


@jit()
def replay_log_nb(
    rng: np.random.Generator,
    slots: np.ndarray,
    visit_ptr: np.ndarray,
    value: np.ndarray,
    reco_count: np.ndarray,
    state_segment: np.ndarray,
    catalogue_ptr: np.ndarray,
    catalogue_items: np.ndarray,
    in_catalogue: np.ndarray,
    epsilon: float,
    cache_items: np.ndarray,
    cache_size: np.ndarray,
    cache_complete: np.ndarray,
    accepted: np.ndarray,
    target: np.ndarray,
) -> None:
    """Replay a log with a learning epsilon-greedy target (Li, Chu, Langford and Wang 2011).

    Slot by slot, given the logged slots before it, the target draws its product exactly as a
    simulated slot does (``u = rng.random()``; explore or pad: ``below(K)`` until not among the
    slots before; greedy otherwise). When it draws the logged product the event is *accepted*:
    the logged reward updates the target's cell by the visit kernels' rule (a new product starts
    at value 0; ``reco_count += 1``; ``value += (r - value) / reco_count``). Other events are
    skipped and change nothing.

    Parameters
    ----------
    rng : numpy.random.Generator
        The target's own draws.
    slots : ndarray of LOG_DTYPE, shape (n_slots,)
    visit_ptr : ndarray of int64, shape (n_visits + 1,)
    value : ndarray of float64, shape (n_states, n_products)
        The target's values (``-inf`` unknown); updated in place.
    reco_count : ndarray of int64, shape (n_states, n_products)
        Updated in place.
    state_segment : ndarray of int16, shape (n_states,)
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
    catalogue_items : ndarray of int32, shape (nnz,)
    in_catalogue : ndarray of bool, shape (n_segments, n_products)
    epsilon : float
    cache_items : ndarray of int64, shape (n_states, capacity)
        Workspace: each state's best known products (capacity > slots per visit).
    cache_size : ndarray of int64, shape (n_states,)
        Start at -1 (not built).
    cache_complete : ndarray of bool, shape (n_states,)
    accepted : ndarray of bool, shape (n_slots,)
        Output: whether the target drew the logged product.
    target : ndarray of float64, shape (n_slots,)
        Output: the target's probability of the logged product at that moment (its mean is the
        expected acceptance rate).
    """
    for t in range(visit_ptr.shape[0] - 1):
        first = visit_ptr[t]
        end = visit_ptr[t + 1]
        state = slots[first].state
        segment = state_segment[state]
        base = catalogue_ptr[segment]
        size = catalogue_ptr[segment + 1] - base
        if cache_size[state] < 0:
            refresh_cache_nb(value, state, cache_items, cache_size, cache_complete)
        for j in range(first, end):
            i = j - first
            logged = slots[j].product
            greedy = -1
            for attempt in range(2):
                for k in range(cache_size[state]):
                    candidate = cache_items[state, k]
                    if not in_prefix_nb(candidate, slots, first, i):
                        greedy = candidate
                        break
                if greedy >= 0 or cache_complete[state] or attempt == 1:
                    break
                refresh_cache_nb(value, state, cache_items, cache_size, cache_complete)
            uniform = 1.0 / (size - i) if in_catalogue[segment, logged] else 0.0
            if greedy >= 0:
                target[j] = epsilon * uniform + (1.0 - epsilon) * (greedy == logged)
            else:
                target[j] = uniform
            u = rng.random()
            product = -1
            if u >= epsilon:
                product = greedy
            if product < 0:
                product = catalogue_items[base + draw_below_nb(rng, size)]
                while in_prefix_nb(product, slots, first, i):
                    product = catalogue_items[base + draw_below_nb(rng, size)]
            accepted[j] = product == logged
            if product != logged:
                continue
            mean = value[state, product]
            if mean == -np.inf:
                mean = 0.0
            reco_count[state, product] += 1
            mean += (slots[j].reward - mean) / reco_count[state, product]
            value[state, product] = mean
            reposition_cache_nb(value, state, product, cache_items, cache_size, cache_complete)


@jit(inline=True)
def slot_metric_nb(slot: Any, metric: int) -> float:
    """Metric ``0`` reward, ``1`` clicked (or bought), ``2`` bought of one logged slot."""
    if metric == 0:
        return float(slot.reward)
    if metric == 1:
        return 1.0 if slot.outcome >= 1 else 0.0
    return 1.0 if slot.outcome == 2 else 0.0


@jit()
def sum_weighted_nb(
    slots: np.ndarray, visit_ptr: np.ndarray, weight: np.ndarray, per_visit: np.ndarray
) -> None:
    """Weighted metric sums and the sum of weights of every visit, in one pass.

    Parameters
    ----------
    slots : ndarray of LOG_DTYPE, shape (n_slots,)
    visit_ptr : ndarray of int64, shape (n_visits + 1,)
    weight : ndarray of float64, shape (n_slots,)
    per_visit : ndarray of float64, shape (n_visits, 4)
        Output: ``sum_i w_i y_i`` of each metric (columns 0-2), and ``sum_i w_i`` (column 3).
    """
    for t in range(visit_ptr.shape[0] - 1):
        for m in range(4):
            per_visit[t, m] = 0.0
        for j in range(visit_ptr[t], visit_ptr[t + 1]):
            w = weight[j]
            for m in range(3):
                per_visit[t, m] += w * slot_metric_nb(slots[j], m)
            per_visit[t, 3] += w


@jit()
def accumulate_cells_nb(slots: np.ndarray, visit_ptr: np.ndarray, stats: np.ndarray) -> None:
    """Metric sums and shows of every (state, product) cell, per fold (visit index parity).

    Parameters
    ----------
    stats : ndarray of float64, shape (2, n_states, n_products, 4)
        Output: sums of reward, clicked, bought, and the number of shows.
    """
    stats[:] = 0.0
    for t in range(visit_ptr.shape[0] - 1):
        fold = t % 2
        for j in range(visit_ptr[t], visit_ptr[t + 1]):
            cell = stats[fold, slots[j].state, slots[j].product]
            for m in range(3):
                cell[m] += slot_metric_nb(slots[j], m)
            cell[3] += 1.0


@jit()
def correct_residuals_nb(
    slots: np.ndarray,
    visit_ptr: np.ndarray,
    weight: np.ndarray,
    stats: np.ndarray,
    prior: np.ndarray,
    value: np.ndarray,
    value_prior: float,
    use_values: bool,
    out: np.ndarray,
) -> None:
    """Doubly robust correction ``sum_i w_i (y_i - q(s, a_i))`` of every visit, cross-fitted.

    The model of a visit of fold ``f`` is fitted on the other fold:
    ``q = (sum + prior) / (shows + 1)`` from :func:`accumulate_cells_nb`; with ``use_values``
    the reward model is the target's value where known and ``value_prior`` elsewhere.

    Parameters
    ----------
    stats : ndarray of float64, shape (2, n_states, n_products, 4)
    prior : ndarray of float64, shape (2, 3)
        Each fold's mean of each metric per slot.
    value : ndarray of float64, shape (n_states, n_products)
    value_prior : float
    use_values : bool
    out : ndarray of float64, shape (n_visits, 3)
    """
    for t in range(visit_ptr.shape[0] - 1):
        other = 1 - t % 2
        for m in range(3):
            out[t, m] = 0.0
        for j in range(visit_ptr[t], visit_ptr[t + 1]):
            state = slots[j].state
            product = slots[j].product
            cell = stats[other, state, product]
            for m in range(3):
                if m == 0 and use_values:
                    v = value[state, product]
                    model = v if v != -np.inf else value_prior
                else:
                    model = (cell[m] + prior[other, m]) / (cell[3] + 1.0)
                out[t, m] += weight[j] * (slot_metric_nb(slots[j], m) - model)
