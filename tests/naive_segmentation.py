"""Slow reference implementations for the segmentation tests.

Written straight from the definitions, with no shared code with :mod:`rlreco.engine.segmentation`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd


def wcss_of(values: np.ndarray, labels: np.ndarray) -> float:
    """Within-cluster sum of squares of ``values`` under ``labels``, two-pass per cluster."""
    total = 0.0
    for label in np.unique(labels):
        members = values[labels == label]
        total += float(((members - members.mean()) ** 2).sum())
    return total


def brute_force_kmeans_1d(values: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Optimal 1-D k-means by enumerating every contiguous partition of the sorted values.

    Duplicated values are *not* collapsed, so partitions that split equal values compete
    too. Feasible for ``len(values) <= ~12``.

    Parameters
    ----------
    values : ndarray of float64, shape (n,)
    k : int
        Number of non-empty clusters, ``1 <= k <= n``.

    Returns
    -------
    wcss : float
        The least WCSS over all partitions.
    labels : ndarray of int64, shape (n,)
        Cluster (0 = lowest) of each value of one optimal partition, in input order.
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    n = len(values)
    best = np.inf
    best_labels = np.zeros(n, dtype=np.int64)
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = (0, *cuts, n)
        cost = 0.0
        for a, b in itertools.pairwise(bounds):
            part = ordered[a:b]
            cost += float(((part - part.mean()) ** 2).sum())
        if cost < best:
            best = cost
            sorted_labels = np.repeat(np.arange(k), np.diff(bounds))
            best_labels = np.empty(n, dtype=np.int64)
            best_labels[order] = sorted_labels
    return best, best_labels


def dp_kmeans_1d_wcss(values: np.ndarray, k: int) -> float:
    """Optimal 1-D k-means WCSS by the plain O(k n^2) dynamic programme over sorted values.

    Every cluster cost is computed two-pass from its members (no prefix sums), so this also
    checks the kernel's prefix-sum arithmetic and its divide-and-conquer search on inputs too
    large for :func:`brute_force_kmeans_1d`. ``k`` must not exceed ``len(values)``.
    """
    x = np.sort(values)
    n = len(x)
    cost = np.full((n, n), np.inf)  # cost[i, j]: x[i..j] as one cluster
    for i in range(n):
        for j in range(i, n):
            part = x[i : j + 1]
            cost[i, j] = float(((part - part.mean()) ** 2).sum())
    best = cost[0].copy()  # best[j]: x[0..j] in q + 1 clusters
    for q in range(1, k):
        nxt = np.full(n, np.inf)
        for j in range(q, n):
            nxt[j] = min(best[i - 1] + cost[i, j] for i in range(q, j + 1))
        best = nxt
    return float(best[n - 1])


def rfm_reference(
    customer: np.ndarray, day: np.ndarray, gross: np.ndarray, n_customers: int, last_day: int
) -> pd.DataFrame:
    """RFM summary as ``lifetimes.summary_data_from_transaction_data(freq="D")`` defines it.

    Returns
    -------
    DataFrame
        Index ``0..n_customers-1``; columns ``frequency``, ``recency``, ``T``,
        ``monetary_value``.
    """
    rows = pd.DataFrame({"customer": customer, "day": day, "gross": gross})
    rows = rows[rows["customer"] >= 0]
    # one row per purchase period (day), its gross the sum of that day's rows
    periods = rows.groupby(["customer", "day"], as_index=False)["gross"].sum()
    stats = periods.groupby("customer")["day"].agg(["min", "max", "count"])
    first_day = periods["customer"].map(stats["min"])
    repeat = periods[periods["day"] != first_day]
    summary = pd.DataFrame(
        {
            "frequency": stats["count"] - 1,
            "recency": stats["max"] - stats["min"],
            "T": last_day - stats["min"],
            "monetary_value": repeat.groupby("customer")["gross"].mean(),
        }
    )
    summary["monetary_value"] = summary["monetary_value"].fillna(0.0)
    return summary.reindex(range(n_customers))
