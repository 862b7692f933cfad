"""Exact Gaussian Thompson slates that draw only the keys that can reach the top ``n``.

Definition: every catalogue product ``i`` gets the key ``m_i + s_i * Z_i`` (``m_i`` its value,
0 while unknown; ``s_i = sigma / sqrt(reco_count_i + 1)``; ``Z_i`` standard normal,
independent) and the ``n`` largest keys form the slate (ties: lower product id).

Method: the products sit in the slots of :class:`~rlreco.engine.kernels.count_groups.
CountGroups`, ordered by count, under an 8-ary max tree of their means. For a tree node, the
largest mean ``M`` and the scale ``S`` of its first slot (the smallest count, so the largest
scale) bound every member: with ``T`` the ``n``-th best key found so far, a member can
enter the top ``n`` only if its key exceeds ``T``, which has probability
``q_i = Q((T - m_i) / s_i) <= Q((T - M) / S) <= r``, where ``Q`` is the normal upper tail and
``r = min(1, phi(z) / z * (1 + 1e-9))`` for ``z = (T - M) / S > 1`` (the Mills-ratio bound,
with a margin far above rounding; ``r = 1`` for ``z <= 1`` or while fewer than ``n`` keys
exist, ``T = -inf``).

Search, per visit: nodes are taken best-first by the priority ``M + 2 S`` (ties: lower node
id) from a heap that starts with the root. A node with ``r == 0`` is dropped; a node above the
bottom level with ``r * members > 2`` is split into its 8 children; otherwise its slots are
processed in slot order:

* ``r >= 1/2``: every member draws ``Z = rng.standard_normal()`` and its key is ranked;
* ``r < 1/2``: exact thinning. A geometric gap ``floor(log1p(-u) / log1p(-r))``
  (``u = rng.random()``) skips the members that are not *proposed* (each member is proposed
  independently with probability ``r``); a proposed member is accepted with probability
  ``q_i / r`` (``rng.random() * r < q_i``), so it is accepted with probability ``q_i``, and
  an accepted member draws ``Z`` from the normal tail above ``a_i = (T - m_i) / s_i``:
  rejection from ``rng.standard_normal()`` for ``a_i <= 0``, else Robert's exponential
  proposal ``z = a_i - log(1 - rng.random()) / alpha`` with
  ``alpha = (a_i + sqrt(a_i^2 + 4)) / 2``, accepted if ``rng.random() <= exp(-(z - alpha)^2 / 2)``.
  After each accepted member ``T`` (and ``r``) is recomputed; the geometric gap is
  memoryless, so restarting it with the new, smaller ``r`` keeps every later member proposed
  independently with probability ``>= q``.

Why this is exact: ``T`` only rises, so a member whose key does not exceed ``T`` when it is
reached cannot be in the final top ``n``; every member is reached exactly once, and its key
is drawn either unconditionally or, through thinning, with probability ``P(key > T)`` and
then from the distribution of the key given ``key > T``. The joint law of the keys that can
matter is therefore that of independent draws, and the top ``n`` has the definition's
distribution. (The random stream differs from the full scan's: one normal per product.)
Cost: the members reached with ``r >= 1/2`` (the first keys, and the nodes whose means or
scales still compete), plus one geometric draw per node and one proposal per ``1 / r``
members elsewhere.
"""

from __future__ import annotations

import math

import numpy as np

from rlreco.engine.kernels.count_groups import (
    FANOUT,
    FANOUT_BITS,
    CountGroups,
    depth_of_nb,
    insert_ranked_nb,
    mean_of_nb,
    move_product_nb,
)
from rlreco.engine.kernels.jit import jit

#: Scales above the node mean that order the best-first search.
PRIORITY_SCALES = 2.0
#: A node whose expected proposals ``r * members`` exceed this is split.
SPLIT_ABOVE = 2.0
#: A proposal rate at or above this draws every member.
DRAW_ALL_ABOVE = 0.5
#: Relative margin of the tail bound over rounding.
BOUND_MARGIN = 1.0 + 1e-9


def thompson_workspace(slate_size: int, groups: CountGroups) -> tuple[np.ndarray, ...]:
    """Per-visit workspace of :func:`choose_thompson_slate_nb`:
    ``(top_key, top_product, heap_score, heap_node)``."""
    nodes = groups.node_max.shape[1]
    return (
        np.empty(slate_size + 1, dtype=np.float64),
        np.empty(slate_size + 1, dtype=np.int64),
        np.empty(nodes, dtype=np.float64),
        np.empty(nodes, dtype=np.int64),
    )


@jit(inline=True)
def tail_bound_nb(z: float) -> float:
    """Upper bound ``r`` of the normal tail ``Q(z)`` (module docstring)."""
    if z <= 1.0:
        return 1.0
    return min(1.0, np.exp(-0.5 * z * z) / (z * np.sqrt(2.0 * np.pi)) * BOUND_MARGIN)


@jit(inline=True)
def draw_tail_nb(rng: np.random.Generator, a: float) -> float:
    """Standard normal conditioned on ``Z > a`` (module docstring)."""
    if a <= 0.0:
        z = rng.standard_normal()
        while z <= a:
            z = rng.standard_normal()
        return z
    alpha = 0.5 * (a + np.sqrt(a * a + 4.0))
    while True:
        z = a - np.log(1.0 - rng.random()) / alpha
        if rng.random() <= np.exp(-0.5 * (z - alpha) * (z - alpha)):
            return z


@jit(inline=True)
def heap_push_nb(
    score: float, node: int, heap_score: np.ndarray, heap_node: np.ndarray, size: int
) -> int:
    """Push onto the max-heap ordered by (score, lower node id first); returns the size."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        ps = heap_score[parent]
        if ps > score or (ps == score and heap_node[parent] < node):
            break
        heap_score[i] = ps
        heap_node[i] = heap_node[parent]
        i = parent
    heap_score[i] = score
    heap_node[i] = node
    return size + 1


@jit(inline=True)
def heap_pop_nb(heap_score: np.ndarray, heap_node: np.ndarray, size: int) -> int:
    """Remove the top of the heap (read it first); returns the new size."""
    size -= 1
    score = heap_score[size]
    node = heap_node[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and (
            heap_score[child + 1] > heap_score[child]
            or (
                heap_score[child + 1] == heap_score[child]
                and heap_node[child + 1] < heap_node[child]
            )
        ):
            child += 1
        cs = heap_score[child]
        if score > cs or (score == cs and node < heap_node[child]):
            break
        heap_score[i] = cs
        heap_node[i] = heap_node[child]
        i = child
    heap_score[i] = score
    heap_node[i] = node
    return size


@jit(inline=True)
def node_level_nb(node: int, depth: int) -> int:
    """Level of a node id (level ``l`` starts at ``(8**l - 1) // 7``)."""
    level = 0
    while level + 1 < depth and node >= ((1 << (FANOUT_BITS * (level + 1))) - 1) // (FANOUT - 1):
        level += 1
    return level


@jit()
def choose_thompson_slate_nb(
    rng: np.random.Generator,
    groups: CountGroups,
    cells: np.ndarray,
    state: int,
    size: int,
    sigma: float,
    slate: np.ndarray,
    top_key: np.ndarray,
    top_product: np.ndarray,
    heap_score: np.ndarray,
    heap_node: np.ndarray,
) -> int:
    """Gaussian Thompson slate by the exact lazy search of the module docstring.

    Parameters
    ----------
    rng : numpy.random.Generator
    groups : CountGroups
        Read only.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    size : int
        ``K``, the size of the state's catalogue (``>= n``).
    sigma : float
        Reward noise scale (> 0).
    slate : ndarray of int64, shape (n,)
        Output.
    top_key, top_product : ndarray, shape (n + 1,)
        Workspace (float64, int64).
    heap_score, heap_node : ndarray, shape (groups.node_max.shape[1],)
        Workspace (float64, int64).

    Returns
    -------
    int
        Explored slots: slate products never recommended in the state before.
    """
    n = slate.shape[0]
    depth = depth_of_nb(groups)
    slot_mean = groups.slot_mean
    slot_count = groups.slot_count
    node_max = groups.node_max
    found = 0
    heap = heap_push_nb(0.0, 0, heap_score, heap_node, 0)
    while heap > 0:
        node = heap_node[0]
        heap = heap_pop_nb(heap_score, heap_node, heap)
        level = node_level_nb(node, depth)
        start = ((1 << (FANOUT_BITS * level)) - 1) // (FANOUT - 1)
        shift = FANOUT_BITS * (depth - level)
        lo = (node - start) << shift
        hi = min((node - start + 1) << shift, size)
        top = node_max[state, node]
        scale = sigma / np.sqrt(slot_count[state, lo] + 1.0)
        threshold = top_key[n - 1] if found == n else -np.inf
        rate = 1.0 if found < n else tail_bound_nb((threshold - top) / scale)
        if rate == 0.0:
            continue
        if level < depth - 1 and rate * (hi - lo) > SPLIT_ABOVE:
            child_start = ((1 << (FANOUT_BITS * (level + 1))) - 1) // (FANOUT - 1)
            first_child = child_start + ((node - start) << FANOUT_BITS)
            for child in range(first_child, first_child + FANOUT):
                child_lo = (child - child_start) << (shift - FANOUT_BITS)
                if child_lo >= size:
                    break
                child_scale = sigma / np.sqrt(slot_count[state, child_lo] + 1.0)
                heap = heap_push_nb(
                    node_max[state, child] + PRIORITY_SCALES * child_scale,
                    child,
                    heap_score,
                    heap_node,
                    heap,
                )
            continue
        if rate >= DRAW_ALL_ABOVE:
            for slot in range(lo, hi):
                s = sigma / np.sqrt(slot_count[state, slot] + 1.0)
                key = slot_mean[state, slot] + s * rng.standard_normal()
                found = insert_ranked_nb(
                    key, groups.slot_product[state, slot], top_key, top_product, found, n
                )
            continue
        slot = lo
        while True:
            gap = np.log1p(-rng.random()) / np.log1p(-rate)
            if gap >= hi - slot:
                break
            slot += int(gap)
            mean = slot_mean[state, slot]
            s = sigma / np.sqrt(slot_count[state, slot] + 1.0)
            a = (threshold - mean) / s
            q = 0.5 * math.erfc(a / np.sqrt(2.0))
            if rng.random() * rate < q:
                key = mean + s * draw_tail_nb(rng, a)
                found = insert_ranked_nb(
                    key, groups.slot_product[state, slot], top_key, top_product, found, n
                )
                threshold = top_key[n - 1]
                rate = tail_bound_nb((threshold - top) / scale)
                if rate == 0.0:
                    break
            slot += 1
            if slot >= hi:
                break
    explored = 0
    for i in range(n):
        slate[i] = top_product[i]
        explored += cells[state, slate[i]].reco_count == 0
    return explored


@jit()
def update_thompson_nb(
    groups: CountGroups,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    slate: np.ndarray,
    previous_value: np.ndarray,
) -> None:
    """Bring the state's count groups up to date after a visit updated the slate's cells.

    Parameters
    ----------
    groups : CountGroups
        Updated in place.
    value : ndarray of float64, shape (n_states, width)
        Values after the visit.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
        Cells after the visit.
    state : int
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    previous_value : ndarray of float64, shape (n,)
        Values before the visit (unused; kept for the common update contract).
    """
    depth = depth_of_nb(groups)
    for i in range(slate.shape[0]):
        product = slate[i]
        move_product_nb(
            groups,
            state,
            product,
            cells[state, product].reco_count,
            mean_of_nb(value[state, product]),
            depth,
        )
