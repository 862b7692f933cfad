"""Record dtypes and integer enums shared by kernels and the engine (numpy only)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: One cell of the (state x product) tables apart from its value. Value lives in its own
#: contiguous array because the top-n search index reads it in runs of 8 neighbours; the
#: remaining fields are touched together when a slate product is updated, so they share a line.
CELL_DTYPE = np.dtype([("reward", np.float64), ("count", np.int64), ("reco_count", np.int64)])


class _ResponseModel(NamedTuple):
    seed: int = 0
    truth: int = 1


class _StateSampling(NamedTuple):
    uniform: int = 0
    empirical: int = 1


class _Outcome(NamedTuple):
    ignored: int = 0
    clicked: int = 1
    bought: int = 2


#: Response model codes: ``seed`` (count distributions) or ``truth`` (per-cell probabilities).
ResponseModel = _ResponseModel()
#: State sampling codes.
StateSampling = _StateSampling()
#: Outcome of one slate product.
Outcome = _Outcome()


#: True response of one (state, product) cell under a known truth (``popularity`` model or a
#: user truth table): click and buy probability, read together by a slate product's response.
#: 16 bytes, so a cell never straddles two cache lines (the expected reward is recomputed from
#: them rather than stored: a third field would make a third of the cells straddle).
TRUTH_DTYPE = np.dtype([("p_click", np.float64), ("p_buy", np.float64)])

#: Sums of one block of consecutive visits (block ``b`` holds global visits
#: ``b * metrics_block .. (b + 1) * metrics_block - 1``). ``clicks`` counts click events,
#: including products that were also bought; ``regret_visits`` counts the visits whose expected
#: regret is known (those simulated under a known truth), ``regret_sum`` their regret.
METRICS_DTYPE = np.dtype(
    [
        ("visits", np.int64),
        ("slots", np.int64),
        ("reward_sum", np.float64),
        ("clicks", np.int64),
        ("buys", np.int64),
        ("explored", np.int64),
        ("regret_visits", np.int64),
        ("regret_sum", np.float64),
    ]
)


class _TopNSearch(NamedTuple):
    tree: int = 0
    scan: int = 1


#: How greedy slots find the best products: the 8-ary max tree index (``tree``) or a full scan
#: of the value row (``scan``, the O(n_products) baseline kept for benchmarks and tests).
TopNSearch = _TopNSearch()
