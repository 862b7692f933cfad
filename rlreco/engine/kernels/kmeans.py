"""Exact, globally optimal 1-D k-means by dynamic programming (Ckmeans.1d.dp style).

In one dimension every optimal k-means partition is contiguous in sorted order, so the optimum
over ``m`` sorted distinct values is the dynamic programme

    D[q, j] = min_{q <= i <= j} D[q - 1, i - 1] + cost(i, j)

where ``D[q, j]`` is the least within-cluster sum of squares (WCSS) of ``x[0..j]`` split into
``q + 1`` clusters and ``cost(i, j)`` is the weighted WCSS of ``x[i..j]`` as one cluster. The
leftmost argmin of each row is non-decreasing in ``j`` (the cost is a Monge array), so each
layer is filled by divide and conquer in O(m log m): O(k m log m) in all.

Tie-break (deterministic): candidates ``i`` are scanned in ascending order and replaced only on
a strictly smaller cost, so every cell keeps its leftmost argmin. Among equally good
partitions the last cluster therefore starts as early as possible, and so on recursively for
the remaining prefix. Equal values never straddle clusters because callers pass each distinct
value once, with its multiplicity as weight.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit

#: Capacity of the explicit divide-and-conquer stack: it holds at most log2(m) + 2 ranges.
_STACK_ROWS = 132


@jit()
def segment_cost_nb(prefix: np.ndarray, i: int, j: int) -> float:
    """Weighted WCSS of ``x[i..j]`` (inclusive) as one cluster, from prefix sums.

    Parameters
    ----------
    prefix : ndarray of float64, shape (m + 1, 3)
        Prefix sums of ``w``, ``w * y`` and ``w * y**2`` (columns 0, 1, 2) with ``y`` the
        centred values; row 0 is zero. Rows keep the three sums of one index on one cache
        line.
    i, j : int
        First and last index of the cluster, ``0 <= i <= j < m``.

    Returns
    -------
    float
        ``sum w (y - mean)**2``, clamped at 0 against rounding.
    """
    weight = prefix[j + 1, 0] - prefix[i, 0]
    total = prefix[j + 1, 1] - prefix[i, 1]
    cost = (prefix[j + 1, 2] - prefix[i, 2]) - total * total / weight
    return cost if cost > 0.0 else 0.0


@jit()
def fill_kmeans_layer_nb(
    prefix: np.ndarray, prev: np.ndarray, q: int, out_cost: np.ndarray, out_split: np.ndarray
) -> None:
    """Fill DP layer ``q >= 1`` by divide and conquer.

    Every prefix end ``j >= q`` is filled, except in the last layer (``q == k - 1``), which
    is only needed for the whole range ``j = m - 1``.

    Parameters
    ----------
    prefix : ndarray of float64, shape (m + 1, 3)
        Prefix sums, see :func:`segment_cost_nb`.
    prev : ndarray of float64, shape (m,)
        Layer ``q - 1``: ``prev[j]`` is the optimum of ``x[0..j]`` in ``q`` clusters
        (defined for ``j >= q - 1``).
    q : int
        Layer index: ``q + 1`` clusters.
    out_cost : ndarray of float64, shape (m,)
        Receives the optimum of ``x[0..j]`` in ``q + 1`` clusters.
    out_split : ndarray of int32, shape (k, m)
        Row ``q`` receives the start index of the last cluster of that optimum (leftmost
        argmin).
    """
    m = prev.shape[0]
    j_first = m - 1 if q == out_split.shape[0] - 1 else q
    # rows: (j_lo, j_hi, i_lo, i_hi); children of a node see the argmin bound of its midpoint
    stack = np.empty((_STACK_ROWS, 4), dtype=np.int64)
    stack[0, 0] = j_first
    stack[0, 1] = m - 1
    stack[0, 2] = q
    stack[0, 3] = m - 1
    top = 1
    while top > 0:
        top -= 1
        j_lo = stack[top, 0]
        j_hi = stack[top, 1]
        i_lo = stack[top, 2]
        i_hi = stack[top, 3]
        j = (j_lo + j_hi) // 2
        i_end = min(i_hi, j)
        best_i = i_lo
        best = prev[i_lo - 1] + segment_cost_nb(prefix, i_lo, j)
        for i in range(i_lo + 1, i_end + 1):
            c = prev[i - 1] + segment_cost_nb(prefix, i, j)
            if c < best:
                best = c
                best_i = i
        out_cost[j] = best
        out_split[q, j] = best_i
        if j + 1 <= j_hi:
            stack[top, 0] = j + 1
            stack[top, 1] = j_hi
            stack[top, 2] = best_i
            stack[top, 3] = i_hi
            top += 1
        if j_lo <= j - 1:
            stack[top, 0] = j_lo
            stack[top, 1] = j - 1
            stack[top, 2] = i_lo
            stack[top, 3] = best_i
            top += 1


@jit()
def fit_kmeans_1d_nb(
    x: np.ndarray, w: np.ndarray, k: int, out_labels: np.ndarray, out_centers: np.ndarray
) -> float:
    """Globally optimal weighted 1-D k-means of sorted distinct values.

    Parameters
    ----------
    x : ndarray of float64, shape (m,)
        Distinct finite values in strictly ascending order, ``m >= 1``.
    w : ndarray of float64, shape (m,)
        Positive weights (multiplicities) of ``x``.
    k : int
        Number of clusters, ``1 <= k <= m`` (callers clip it to the number of distinct
        values: with fewer distinct values than clusters each value is its own cluster).
    out_labels : ndarray of int32, shape (m,)
        Receives the cluster of each value, ``0..k-1``; clusters are contiguous runs in
        sorted order, so cluster ids ascend with their centres.
    out_centers : ndarray of float64, shape (k,)
        Receives the weighted mean of each cluster.

    Returns
    -------
    float
        Weighted within-cluster sum of squares of the partition, recomputed in two passes
        (not from the prefix sums) for accuracy.
    """
    m = x.shape[0]
    # centre on the weighted mean so the prefix sums of squares stay small (less cancellation)
    w_total = 0.0
    wx_total = 0.0
    for t in range(m):
        w_total += w[t]
        wx_total += w[t] * x[t]
    shift = wx_total / w_total
    prefix = np.zeros((m + 1, 3))
    for t in range(m):
        y = x[t] - shift
        prefix[t + 1, 0] = prefix[t, 0] + w[t]
        prefix[t + 1, 1] = prefix[t, 1] + w[t] * y
        prefix[t + 1, 2] = prefix[t, 2] + w[t] * y * y

    split = np.zeros((k, m), dtype=np.int32)
    prev = np.empty(m)
    cur = np.empty(m)
    for j in range(m):
        prev[j] = segment_cost_nb(prefix, 0, j)
    for q in range(1, k):
        fill_kmeans_layer_nb(prefix, prev, q, cur, split)
        prev, cur = cur, prev

    j = m - 1
    for q in range(k - 1, -1, -1):
        i = split[q, j]
        for t in range(i, j + 1):
            out_labels[t] = q
        j = i - 1

    # centre of each contiguous run relative to its first value: a one-value cluster's centre
    # is that value exactly
    wcss = 0.0
    i = 0
    for q in range(k):
        j = i
        while j + 1 < m and out_labels[j + 1] == q:
            j += 1
        weight = 0.0
        offset = 0.0
        for t in range(i, j + 1):
            weight += w[t]
            offset += w[t] * (x[t] - x[i])
        center = x[i] + offset / weight
        out_centers[q] = center
        for t in range(i, j + 1):
            d = x[t] - center
            wcss += w[t] * d * d
        i = j + 1
    return wcss
