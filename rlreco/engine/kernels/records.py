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
