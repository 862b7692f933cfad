"""RFM customer segmentation: recency, frequency and monetary value clustered by exact 1-D k-means.

The RFM summary follows ``lifetimes.summary_data_from_transaction_data`` with daily periods.
Each dimension is clustered on its own with globally optimal 1-D k-means (so, unlike the
original's randomly started k-means, the result does not depend on a seed), the clusters are
ranked, and the sum of the three ranks selects the customer's segment through
:meth:`rlreco.config.RunConfig.segment_of_score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlreco.config import RunConfig
from rlreco.engine.history import History
from rlreco.engine.kernels.kmeans import fit_kmeans_1d_nb
from rlreco.errors import DataError


@dataclass(frozen=True)
class RFM:
    """Per-customer RFM summary, in the index order of ``History.customer_ids``.

    Attributes
    ----------
    frequency : ndarray of int32, shape (n_customers,)
        Number of distinct purchase days minus 1 (repeat purchase days).
    recency : ndarray of int32, shape (n_customers,)
        Days from the first to the last purchase day.
    T : ndarray of int32, shape (n_customers,)
        Days from the first purchase day to the end of observation (``History.last_day``).
    monetary_value : ndarray of float64, shape (n_customers,)
        Mean daily gross over the repeat purchase days (every purchase day but the first);
        0 when ``frequency == 0``. Cancellations count: they lower their day's gross, and a
        day with only cancellations is a purchase day with negative gross.
    """

    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary_value: np.ndarray


@dataclass(frozen=True)
class KMeans1D:
    """Optimal 1-D k-means partition of a set of values.

    Attributes
    ----------
    labels : ndarray of int32, shape (n,)
        Cluster of each value; cluster ids ascend with their centres.
    centers : ndarray of float64, shape (k_eff,)
        Mean of each cluster, ascending. ``k_eff = min(k, number of distinct values)``.
    wcss : float
        Within-cluster sum of squared distances to the centres.
    """

    labels: np.ndarray
    centers: np.ndarray
    wcss: float


@dataclass(frozen=True)
class Segmentation:
    """RFM clusters, scores and segments of every customer (index order of ``customer_ids``).

    Cluster ranks follow the original design: recency clusters are ranked by descending mean
    (highest mean recency is rank 0), frequency and monetary clusters by ascending mean.

    Attributes
    ----------
    rfm : RFM
        The summary that was clustered.
    recency_rank, frequency_rank, monetary_rank : ndarray of int8, shape (n_customers,)
        Rank of the customer's cluster in each dimension, ``0..k_eff-1``.
    score : ndarray of int16, shape (n_customers,)
        Sum of the three ranks.
    customer_segment : ndarray of int16, shape (n_customers,)
        Index into ``segment_names``.
    segment_names : tuple of str
        Names of the segments that occur, sorted.
    segment_counts : ndarray of int64, shape (n_segments,)
        Customers per segment, aligned with ``segment_names``.
    recency_centers, frequency_centers, monetary_centers : ndarray of float64, shape (k_eff,)
        Cluster means indexed by rank (so ``recency_centers`` descends, the others ascend).
    wcss : tuple of float
        Within-cluster sum of squares of recency, frequency and monetary value.
    """

    rfm: RFM
    recency_rank: np.ndarray
    frequency_rank: np.ndarray
    monetary_rank: np.ndarray
    score: np.ndarray
    customer_segment: np.ndarray
    segment_names: tuple[str, ...]
    segment_counts: np.ndarray
    recency_centers: np.ndarray
    frequency_centers: np.ndarray
    monetary_centers: np.ndarray
    wcss: tuple[float, float, float]

    def counts(self) -> dict[str, int]:
        """Customers per segment name, in ``segment_names`` order."""
        return {
            name: int(c) for name, c in zip(self.segment_names, self.segment_counts, strict=True)
        }


def rfm_summary(history: History) -> RFM:
    """Summarise each customer's purchase days (``lifetimes`` semantics, daily periods).

    Only rows with ``customer >= 0`` take part. Gross is first summed per (customer, day);
    every such day is a purchase day, whatever the sign of its sum.

    Parameters
    ----------
    history : History
        Transactions; ``history.last_day`` is the end of observation for ``T``.

    Returns
    -------
    RFM
        One entry per customer in ``history.customer_ids`` order.

    Raises
    ------
    DataError
        If a customer id has no transaction row.
    """
    n_customers = history.n_customers
    known = history.customer >= 0
    customer = history.customer[known].astype(np.int64)
    day = history.day[known].astype(np.int64)
    if customer.size == 0:
        raise DataError("transactions: no row has a customer id; nothing to segment")
    day_min = int(day.min())
    span = int(day.max()) - day_min + 1
    # one sortable key per (customer, day); sorted keys give each customer's days in order
    keys, slot = np.unique(customer * span + (day - day_min), return_inverse=True)
    daily_gross = np.bincount(slot, weights=history.gross[known], minlength=keys.size)
    day_customer = keys // span
    day_number = keys % span + day_min

    n_days = np.bincount(day_customer, minlength=n_customers)
    if (n_days == 0).any():
        missing = str(history.customer_ids[int(np.flatnonzero(n_days == 0)[0])])
        raise DataError(f"transactions: customer id {missing!r} has no transaction row")
    last = np.cumsum(n_days) - 1
    first = last - n_days + 1
    first_day = day_number[first]

    repeat = np.ones(keys.size, dtype=bool)
    repeat[first] = False
    repeat_gross = np.bincount(
        day_customer[repeat], weights=daily_gross[repeat], minlength=n_customers
    )
    frequency = n_days - 1
    monetary = np.zeros(n_customers)
    has_repeat = frequency > 0
    monetary[has_repeat] = repeat_gross[has_repeat] / frequency[has_repeat]
    return RFM(
        frequency=frequency.astype(np.int32),
        recency=(day_number[last] - first_day).astype(np.int32),
        T=(history.last_day - first_day).astype(np.int32),
        monetary_value=monetary,
    )


def kmeans_1d(values: np.ndarray, k: int) -> KMeans1D:
    """Globally optimal k-means of 1-D values (deterministic, no random starts).

    Equal values always share a cluster. With fewer distinct values than ``k`` every distinct
    value is its own cluster, so only ``k_eff = min(k, n_distinct)`` clusters are returned.
    Ties between equally good partitions are broken as documented in
    :mod:`rlreco.engine.kernels.kmeans`.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Finite values, ``n >= 1``, any order.
    k : int
        Requested number of clusters, ``>= 1``.

    Returns
    -------
    KMeans1D
        Labels per value (cluster ids ascending with centres), centres and WCSS.

    Raises
    ------
    ValueError
        If ``values`` is empty, not 1-D or not finite, or ``k < 1``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"kmeans_1d: expected a non-empty 1-D array, got shape {x.shape}")
    if k < 1:
        raise ValueError(f"kmeans_1d: k = {k}: expected an integer >= 1")
    if not np.isfinite(x).all():
        raise ValueError("kmeans_1d: values must be finite")
    distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    k_eff = min(int(k), int(distinct.size))
    labels = np.empty(distinct.size, dtype=np.int32)
    centers = np.empty(k_eff, dtype=np.float64)
    wcss = fit_kmeans_1d_nb(distinct, counts.astype(np.float64), k_eff, labels, centers)
    return KMeans1D(labels=labels[inverse], centers=centers, wcss=float(wcss))


def segment_customers(history: History, cfg: RunConfig) -> Segmentation:
    """Cluster recency, frequency and monetary value and assign every customer a segment.

    Parameters
    ----------
    history : History
        Transactions.
    cfg : RunConfig
        ``segmentation.n_clusters`` clusters per dimension; ``segment_of_score()`` maps the
        score (sum of the three cluster ranks) to a segment name.

    Returns
    -------
    Segmentation

    Raises
    ------
    DataError
        If no row has a customer id or the monetary values are not finite.
    """
    rfm = rfm_summary(history)
    if not np.isfinite(rfm.monetary_value).all():
        bad = str(history.customer_ids[int(np.flatnonzero(~np.isfinite(rfm.monetary_value))[0])])
        raise DataError(f"transactions: customer id {bad!r} has a non-finite gross amount")
    k = cfg.segmentation.n_clusters
    recency = kmeans_1d(rfm.recency, k)
    frequency = kmeans_1d(rfm.frequency, k)
    monetary = kmeans_1d(rfm.monetary_value, k)

    # recency ranks descend with the mean: the highest mean recency is rank 0
    recency_rank = (recency.centers.size - 1 - recency.labels).astype(np.int8)
    frequency_rank = frequency.labels.astype(np.int8)
    monetary_rank = monetary.labels.astype(np.int8)
    score = recency_rank.astype(np.int16) + frequency_rank + monetary_rank

    table = cfg.segment_of_score()
    score_name = np.array([table[s] for s in range(len(table))], dtype=object)
    occurring = np.unique(score)
    segment_names = tuple(sorted({str(score_name[s]) for s in occurring}))
    segment_of = np.full(len(table), -1, dtype=np.int16)
    for s in occurring:
        segment_of[s] = segment_names.index(score_name[s])
    customer_segment = segment_of[score]
    return Segmentation(
        rfm=rfm,
        recency_rank=recency_rank,
        frequency_rank=frequency_rank,
        monetary_rank=monetary_rank,
        score=score,
        customer_segment=customer_segment,
        segment_names=segment_names,
        segment_counts=np.bincount(customer_segment, minlength=len(segment_names)),
        recency_centers=recency.centers[::-1].copy(),
        frequency_centers=frequency.centers,
        monetary_centers=monetary.centers,
        wcss=(recency.wcss, frequency.wcss, monetary.wcss),
    )
