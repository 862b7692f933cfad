"""Ranking of products by value: the order every top-n answer uses, and its kernels.

Products rank by value (descending), ties by lower product id; ``-inf`` (unknown) products are
never returned. A few dozen candidates are ranked by counting, for each, the candidates ahead of
it (:func:`count_ahead_nb`: one flat loop that LLVM's loop vectoriser turns into vector compares
and adds, with no data-dependent branch), more by insertion into a short ranked list
(:func:`insert_ranked_nb`). :func:`scan_top_nb` is the full-scan baseline of the tree query
(:mod:`rlreco.engine.kernels.topn`).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.records import LANES

#: Candidate counts up to this are ranked by counting (quadratic but branch-free).
RANK_BY_COUNTING = 64


@jit(inline=True)
def count_ahead_nb(keys: np.ndarray, labels: np.ndarray, stop: int, key: float, label: int) -> int:
    """Number of ``i < stop`` whose ``(keys[i], labels[i])`` ranks ahead of ``(key, label)``: a
    larger key, or an equal key with a smaller label (one flat, vectorised loop)."""
    ahead = 0
    for i in range(stop):
        other = keys[i]
        ahead += (other > key) | ((other == key) & (labels[i] < label))
    return ahead


@jit(inline=True)
def insert_ranked_nb(
    key: float, item: int, keys: np.ndarray, items: np.ndarray, size: int, capacity: int
) -> int:
    """Insert ``(key, item)`` into a list ranked by key (descending), ties by lower item.

    Parameters
    ----------
    key : float
    item : int
    keys : ndarray of float64, shape (>= capacity,)
        Ranked keys, modified in place.
    items : ndarray of int64, shape (>= capacity,)
        Items of ``keys``, modified in place.
    size : int
        Current length of the list.
    capacity : int
        Maximum length; a full list drops its last entry (or rejects the new one).

    Returns
    -------
    int
        New length.
    """
    if size == capacity:
        last = size - 1
        if key < keys[last] or (key == keys[last] and item > items[last]):
            return size
        position = last
    else:
        position = size
        size += 1
    while position > 0 and (
        key > keys[position - 1] or (key == keys[position - 1] and item < items[position - 1])
    ):
        keys[position] = keys[position - 1]
        items[position] = items[position - 1]
        position -= 1
    keys[position] = key
    items[position] = item
    return size


@jit(inline=True)
def rank_top_nb(
    value: np.ndarray,
    state: int,
    frontier: np.ndarray,
    row: int,
    kept: int,
    n: int,
    top_value: np.ndarray,
    top_product: np.ndarray,
) -> int:
    """Rank the ``kept`` candidate products of ``frontier[row]`` and keep the best ``n``.

    A few dozen candidates are ranked by counting, for each, the candidates ahead of it (one
    vector loop over the candidates padded to a multiple of 8 with ``-inf``, no data-dependent
    branches); many are ranked by insertion, O(kept * n).

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
    state : int
    frontier : ndarray of int64, shape (3, >= kept rounded up to a multiple of 8)
        Row ``row`` holds the candidates; row 2 is overwritten (candidate values as bits).
    row : int
    kept : int
    n : int
    top_value : ndarray of float64, shape (>= n + 1,)
        Output: values, best first (slot ``n`` is scratch).
    top_product : ndarray of int64, shape (>= n + 1,)
        Output: product ids, best first.

    Returns
    -------
    int
        ``min(kept, n)``.
    """
    if kept > RANK_BY_COUNTING:
        found = 0
        for k in range(kept):
            product = frontier[row, k]
            found = insert_ranked_nb(
                value[state, product], product, top_value, top_product, found, n
            )
        return found
    keys = frontier[2].view(np.float64)
    labels = frontier[row]
    for k in range(kept):
        keys[k] = value[state, labels[k]]
    # -inf keys fill the last group: they never rank ahead of a (finite) candidate
    for k in range(kept, -(-kept // LANES) * LANES):
        keys[k] = -np.inf
    padded = -(-kept // LANES) * LANES
    for k in range(kept):
        ahead = count_ahead_nb(keys, labels, padded, keys[k], labels[k])
        # losers all land in the scratch slot n: no branch on the rank
        slot = min(ahead, n)
        top_value[slot] = keys[k]
        top_product[slot] = labels[k]
    return min(kept, n)


@jit(inline=True)
def scan_top_nb(
    value: np.ndarray, state: int, n: int, top_value: np.ndarray, top_product: np.ndarray
) -> int:
    """Full-scan baseline of :func:`~rlreco.engine.kernels.topn.find_top_nb`: same result,
    O(n_products) per call.

    Parameters
    ----------
    value : ndarray of float64, shape (n_states, W)
    state : int
    n : int
    top_value : ndarray of float64, shape (>= n,)
        Output: values, best first.
    top_product : ndarray of int64, shape (>= n,)
        Output: product ids, best first.

    Returns
    -------
    int
        Number of products found: ``min(n, known products)``.
    """
    found = 0
    for p in range(value.shape[1]):
        key = value[state, p]
        if key != -np.inf:
            found = insert_ranked_nb(key, p, top_value, top_product, found, n)
    return found
