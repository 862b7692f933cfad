"""Exact 1-D k-means and RFM segmentation against slow references and the real data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from naive_segmentation import (
    brute_force_kmeans_1d,
    dp_kmeans_1d_wcss,
    rfm_reference,
    wcss_of,
)

from rlreco.config import RunConfig
from rlreco.engine.history import History, history_from_frame
from rlreco.engine.kernels.kmeans import fit_kmeans_1d_nb
from rlreco.engine.segmentation import kmeans_1d, rfm_summary, segment_customers
from rlreco.errors import DataError
from rlreco.io.transactions import load_transactions

RTOL = 1e-9


def _random_values(rng: np.random.Generator, n: int, kind: int) -> np.ndarray:
    if kind == 0:  # continuous: the optimum is unique almost surely
        return rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
    if kind == 1:  # few small integers: duplicates and tied partitions
        return rng.integers(0, 4, size=n).astype(np.float64)
    return np.round(rng.exponential(5.0, size=n), 1)  # skewed, some duplicates


def _check_partition(values: np.ndarray, fit_labels: np.ndarray, centers: np.ndarray) -> None:
    """Labels are contiguous in sorted order, ascend with the centres, and centres are means."""
    order = np.argsort(values, kind="stable")
    assert (np.diff(fit_labels[order]) >= 0).all()
    assert np.array_equal(np.unique(fit_labels), np.arange(centers.size))
    assert (np.diff(centers) > 0).all()
    for c in range(centers.size):
        assert centers[c] == pytest.approx(values[fit_labels == c].mean(), rel=1e-12, abs=1e-12)


def test_kmeans_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(7)
    for case in range(400):
        kind = case % 3
        n = int(rng.integers(1, 11))
        k = int(rng.integers(1, n + 1))
        values = _random_values(rng, n, kind)
        fit = kmeans_1d(values, k)
        best, best_labels = brute_force_kmeans_1d(values, k)
        n_distinct = np.unique(values).size
        assert fit.centers.size == min(k, n_distinct)
        assert fit.wcss == pytest.approx(best, rel=RTOL, abs=1e-12 * (1.0 + np.abs(values).max()))
        assert fit.wcss == pytest.approx(wcss_of(values, fit.labels), rel=1e-12, abs=1e-12)
        _check_partition(values, fit.labels, fit.centers)
        if kind == 0:
            assert np.array_equal(fit.labels, best_labels)


def test_kmeans_divide_and_conquer_matches_quadratic_dp() -> None:
    rng = np.random.default_rng(11)
    for kind in range(3):
        for k in (2, 4, 7):
            values = _random_values(rng, 120, kind)
            if np.unique(values).size < k:
                continue
            fit = kmeans_1d(values, k)
            assert fit.wcss == pytest.approx(dp_kmeans_1d_wcss(values, k), rel=RTOL)
            _check_partition(values, fit.labels, fit.centers)


def test_kmeans_with_more_clusters_than_distinct_values() -> None:
    values = np.array([3.0, 3.0, 1.0, 1.0, 1.0, 7.5])
    fit = kmeans_1d(values, 5)
    assert np.array_equal(fit.centers, [1.0, 3.0, 7.5])
    assert np.array_equal(fit.labels, [1, 1, 0, 0, 0, 2])
    assert fit.labels.dtype == np.int32
    assert fit.wcss == 0.0
    single = kmeans_1d(np.full(4, 2.5), 3)
    assert np.array_equal(single.centers, [2.5])
    assert np.array_equal(single.labels, np.zeros(4))


def test_kmeans_single_cluster_is_the_mean() -> None:
    values = np.array([4.0, -1.0, 2.0, 2.0, 10.0])
    fit = kmeans_1d(values, 1)
    assert np.array_equal(fit.labels, np.zeros(5))
    assert fit.centers == pytest.approx([values.mean()])
    assert fit.wcss == pytest.approx(((values - values.mean()) ** 2).sum())


def test_kmeans_tie_break_starts_last_cluster_earliest() -> None:
    # {0 | 1, 2} and {0, 1 | 2} both cost 0.5; the documented rule picks the first
    assert np.array_equal(kmeans_1d(np.array([2.0, 0.0, 1.0]), 2).labels, [1, 0, 1])
    # 0..3 in 3 clusters: three splits cost 0.5 each; the last cluster starts earliest
    fit = kmeans_1d(np.arange(4.0), 3)
    assert fit.wcss == 0.5
    assert np.array_equal(fit.labels, [0, 1, 2, 2])


def test_kmeans_survives_a_large_offset() -> None:
    # without centring, squares of 1e9 would swamp the within-cluster spread
    values = 1e9 + np.array([0.0, 1.0, 2.0, 10.0, 11.0])
    fit = kmeans_1d(values, 2)
    assert np.array_equal(fit.labels, [0, 0, 0, 1, 1])
    assert fit.wcss == pytest.approx(2.5, rel=1e-12)
    assert np.array_equal(fit.centers, 1e9 + np.array([1.0, 10.5]))


def test_kmeans_is_deterministic_and_order_free() -> None:
    rng = np.random.default_rng(3)
    values = np.round(rng.exponential(50.0, size=3000))
    fit = kmeans_1d(values, 4)
    again = kmeans_1d(values, 4)
    perm = rng.permutation(values.size)
    shuffled = kmeans_1d(values[perm], 4)
    assert np.array_equal(fit.labels, again.labels)
    assert np.array_equal(fit.centers, again.centers)
    assert fit.wcss == again.wcss
    assert np.array_equal(shuffled.labels, fit.labels[perm])
    assert np.array_equal(shuffled.centers, fit.centers)


def test_kernel_weights_act_as_multiplicities() -> None:
    x = np.array([0.0, 1.0, 4.0, 5.0, 9.0])
    w = np.array([3.0, 1.0, 2.0, 2.0, 1.0])
    labels = np.empty(5, dtype=np.int32)
    centers = np.empty(2)
    wcss = fit_kmeans_1d_nb(x, w, 2, labels, centers)
    expanded = np.repeat(x, w.astype(np.int64))
    best, best_labels = brute_force_kmeans_1d(expanded, 2)
    assert wcss == pytest.approx(best, rel=1e-12)
    assert np.array_equal(np.repeat(labels, w.astype(np.int64)), best_labels)
    assert centers == pytest.approx([0.25, 5.4])


def test_kmeans_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        kmeans_1d(np.array([]), 2)
    with pytest.raises(ValueError, match="k = 0"):
        kmeans_1d(np.array([1.0, 2.0]), 0)
    with pytest.raises(ValueError, match="finite"):
        kmeans_1d(np.array([1.0, np.nan]), 2)


def make_history(
    customer: list[int], day: list[int], gross: list[float], customer_ids: list[str]
) -> History:
    """A History with only the fields segmentation reads filled in meaningfully."""
    n = len(customer)
    day_arr = np.asarray(day, dtype=np.int32)
    return History(
        customer=np.asarray(customer, dtype=np.int32),
        product=np.zeros(n, dtype=np.int32),
        day=day_arr,
        month=np.ones(n, dtype=np.int8),
        half=np.zeros(n, dtype=np.int8),
        weekday=np.zeros(n, dtype=np.int8),
        quantity=np.ones(n, dtype=np.int64),
        gross=np.asarray(gross, dtype=np.float64),
        customer_ids=np.asarray(customer_ids, dtype=str),
        product_codes=np.asarray(["P"], dtype=str),
        product_names=np.asarray(["product"], dtype=str),
        last_day=int(day_arr.max()),
    )


# customer, day, gross; rows deliberately out of order
HAND_ROWS = [
    (0, 103, 20.0), (3, 108, 8.0), (0, 100, 10.0), (2, 104, -50.0), (-1, 110, 99.0),
    (1, 105, 7.0), (0, 103, -8.0), (3, 102, 4.0), (0, 107, 30.0), (2, 101, 50.0),
    (3, 106, 6.0), (0, 100, 5.0), (1, 105, 3.0), (3, 109, 10.0), (-1, 100, 1.0),
]  # fmt: skip


@pytest.fixture
def hand_history() -> History:
    customer, day, gross = zip(*HAND_ROWS, strict=True)
    return make_history(list(customer), list(day), list(gross), ["A", "B", "C", "D"])


def test_rfm_on_hand_made_history(hand_history: History) -> None:
    rfm = rfm_summary(hand_history)
    # A: days 100 (15), 103 (20 - 8 cancelled = 12), 107 (30) -> repeat mean (12 + 30) / 2
    # B: one purchase day -> frequency 0, monetary 0
    # C: 101 (50), 104 (only a cancellation, -50) -> the cancellation day is a repeat day
    # D: 102, 106, 108, 109 -> repeat mean (6 + 8 + 10) / 3; end of observation is day 110
    assert np.array_equal(rfm.frequency, [2, 0, 1, 3])
    assert np.array_equal(rfm.recency, [7, 0, 3, 7])
    assert np.array_equal(rfm.T, [10, 5, 9, 8])
    assert np.array_equal(rfm.monetary_value, [21.0, 0.0, -50.0, 8.0])
    assert rfm.frequency.dtype == np.int32
    ref = rfm_reference(
        hand_history.customer, hand_history.day, hand_history.gross, 4, hand_history.last_day
    )
    assert np.array_equal(ref["frequency"], rfm.frequency)
    assert np.array_equal(ref["recency"], rfm.recency)
    assert np.array_equal(ref["T"], rfm.T)
    assert np.array_equal(ref["monetary_value"], rfm.monetary_value)


def test_segments_of_hand_made_history(hand_history: History) -> None:
    cfg = RunConfig().replace(**{"segmentation.n_clusters": 2})
    seg = segment_customers(hand_history, cfg)
    # recency 7, 0, 3, 7 -> {0, 3} {7, 7}; the high-recency cluster has rank 0
    assert np.array_equal(seg.recency_rank, [0, 1, 1, 0])
    # frequency 2, 0, 1, 3 -> {0, 1} {2, 3}
    assert np.array_equal(seg.frequency_rank, [1, 0, 0, 1])
    # monetary 21, 0, -50, 8 -> {-50} {0, 8, 21}
    assert np.array_equal(seg.monetary_rank, [1, 1, 0, 1])
    assert np.array_equal(seg.score, [2, 2, 1, 2])
    # k = 2 table: 0, 1 -> Q2; 2 -> Q3; 3 -> Q1 (default)
    assert seg.segment_names == ("Q2", "Q3")
    assert np.array_equal(seg.customer_segment, [1, 1, 0, 1])
    assert seg.counts() == {"Q2": 1, "Q3": 3}
    assert np.array_equal(seg.recency_centers, [7.0, 1.5])
    assert np.array_equal(seg.frequency_centers, [0.5, 2.5])
    assert seg.monetary_centers == pytest.approx([-50.0, 29.0 / 3.0])
    assert seg.wcss == pytest.approx((4.5, 1.0, 2022.0 / 9.0))
    assert seg.score.dtype == np.int16
    assert seg.customer_segment.dtype == np.int16
    assert seg.recency_rank.dtype == np.int8


def test_rfm_rejects_customer_without_rows(hand_history: History) -> None:
    ids = np.asarray(["A", "B", "C", "D", "E"])
    history = dataclasses.replace(hand_history, customer_ids=ids)
    with pytest.raises(DataError, match="'E' has no transaction row"):
        rfm_summary(history)


@pytest.fixture(scope="module")
def retail_history(embedded_parquet: Path) -> History:
    cfg = RunConfig()
    frame, _ = load_transactions(embedded_parquet, cfg.data, split_day=cfg.states.split_day)
    return history_from_frame(frame, source=str(embedded_parquet))


@pytest.mark.realdata
def test_rfm_matches_reference_on_real_data(retail_history: History) -> None:
    h = retail_history
    rfm = rfm_summary(h)
    ref = rfm_reference(h.customer, h.day, h.gross, h.n_customers, h.last_day)
    assert np.array_equal(ref["frequency"], rfm.frequency)
    assert np.array_equal(ref["recency"], rfm.recency)
    assert np.array_equal(ref["T"], rfm.T)
    np.testing.assert_allclose(rfm.monetary_value, ref["monetary_value"], rtol=1e-9, atol=1e-9)


@pytest.mark.realdata
def test_segments_on_real_data_beat_sklearn(retail_history: History) -> None:
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    cfg = RunConfig()
    seg = segment_customers(retail_history, cfg)
    rfm = seg.rfm
    dims = (rfm.recency, rfm.frequency, rfm.monetary_value)
    for values, ours in zip(dims, seg.wcss, strict=True):
        model = sklearn_cluster.KMeans(n_clusters=4, n_init=20, random_state=0)
        labels = model.fit_predict(values.astype(np.float64).reshape(-1, 1))
        assert ours <= wcss_of(values.astype(np.float64), labels) * (1.0 + RTOL)

    counts = seg.counts()
    print("segment counts on the real data:", counts)
    assert sum(counts.values()) == retail_history.n_customers == 4372
    assert seg.segment_names == ("Q1", "Q2", "Q3", "Q4")
    # the original's random k-means gave about Q1 2313, Q2 732, Q3 1085, Q4 242
    for name, approx in {"Q1": 2313, "Q2": 732, "Q3": 1085, "Q4": 242}.items():
        assert abs(counts[name] - approx) <= 0.05 * approx
    table = cfg.segment_of_score()
    names = np.asarray(seg.segment_names)[seg.customer_segment]
    assert all(names[c] == table[int(seg.score[c])] for c in range(0, 4372, 97))
    assert (np.diff(seg.recency_centers) < 0).all()
    assert (np.diff(seg.frequency_centers) > 0).all()
    assert (np.diff(seg.monetary_centers) > 0).all()
