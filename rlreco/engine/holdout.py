"""Held-out truth: split the transactions into what the learner starts from and what it is
judged against, and exclude non-merchandise products.

A split is ``customers:F`` (a deterministic fraction ``F`` of customers, chosen by a hash of the
customer id and a seed, with every row of theirs) or ``time:YYYY-MM-DD`` (every row on or after
the date). Everything the learner starts with (segment boundaries, initial values and counts,
known cells, state weights) comes from the training rows; the truth comes from the held-out
rows only.

Segments without leakage
------------------------
The RFM segment boundaries (the k-means centres of each dimension) are fitted on the training
customers' training rows. A customer with training rows keeps that segment for all of their
rows. A customer seen only in the held-out part (every held-out customer of a customer split;
customers whose first purchase is on or after the date of a time split) is assigned with the
*training* centres: each of their R, F and M values (from their held-out rows) goes to the
nearest training centre of that dimension, and the ranks' sum maps to a segment as usual. This
touches only held-out rows, which only the truth reads, so nothing of the held-out part reaches
the learner's start.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from rlreco.config import RunConfig
from rlreco.engine.history import History
from rlreco.engine.segmentation import Segmentation, rfm_summary
from rlreco.errors import ConfigError, DataError

#: Days from 0001-01-01 (``date.toordinal``) to 1970-01-01, the origin of ``History.day``.
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Split:
    """A parsed holdout split.

    Attributes
    ----------
    mode : {"customers", "time"}
    fraction : float
        Held-out share of customers (``customers`` mode).
    day : int
        First held-out day, in days since 1970-01-01 (``time`` mode).
    seed : int
        Seed of the customer hash.
    text : str
        The split as written (``customers:0.2``, ``time:2011-10-01``).
    """

    mode: str
    fraction: float
    day: int
    seed: int
    text: str


def parse_split(text: str, seed: int) -> Split:
    """Parse ``customers:F`` or ``time:YYYY-MM-DD`` (already validated by the config)."""
    mode, _, arg = text.partition(":")
    if mode == "customers":
        return Split("customers", float(arg), 0, seed, text)
    day = date.fromisoformat(arg).toordinal() - _EPOCH_ORDINAL
    return Split("time", 0.0, day, seed, text)


def day_name(day: int) -> str:
    """ISO date of a day number (days since 1970-01-01)."""
    return date.fromordinal(day + _EPOCH_ORDINAL).isoformat()


def excluded_products(codes: np.ndarray, patterns: Sequence[str]) -> np.ndarray:
    """Which product codes match any exclusion pattern (``fnmatch``, case-sensitive).

    Parameters
    ----------
    codes : ndarray of str, shape (n_products,)
    patterns : sequence of str

    Returns
    -------
    ndarray of bool, shape (n_products,)
    """
    out = np.zeros(codes.shape[0], dtype=bool)
    for pattern in patterns:
        out |= np.fromiter(
            (fnmatch.fnmatchcase(str(c), pattern) for c in codes), dtype=bool, count=codes.size
        )
    return out


def drop_products(history: History, drop: np.ndarray) -> History:
    """The history without the rows of dropped products, products renumbered.

    Parameters
    ----------
    history : History
    drop : ndarray of bool, shape (n_products,)
    """
    keep_rows = ~drop[history.product]
    new_id = np.cumsum(~drop) - 1
    return dataclasses.replace(
        _rows(history, keep_rows),
        product=new_id[history.product[keep_rows]].astype(np.int32),
        product_codes=history.product_codes[~drop],
        product_names=history.product_names[~drop],
    )


def held_out_rows(history: History, split: Split) -> np.ndarray:
    """Rows of the held-out part.

    ``customers``: every row of a customer whose hash ``sha256(f"{seed}:{customer_id}")``, read
    as a fraction in [0, 1), is below ``F``; rows without a customer stay in training.
    ``time``: every row on or after the date.

    Raises
    ------
    DataError
        The date is not inside the data (the training part would be empty or the held-out
        part would be), or either part has no row with a customer.
    """
    if split.mode == "customers":
        held_customer = np.array(
            [_unit_hash(split.seed, c) < split.fraction for c in history.customer_ids.tolist()],
            dtype=bool,
        )
        known = history.customer >= 0
        held = np.zeros(history.n_rows, dtype=bool)
        held[known] = held_customer[history.customer[known]]
    else:
        first, last = int(history.day.min()), int(history.day.max())
        if not first < split.day <= last:
            raise ConfigError(
                f"holdout: date {day_name(split.day)} is outside the data: allowed dates are "
                f"{day_name(first + 1)} .. {day_name(last)} (first data day {day_name(first)})"
            )
        held = history.day >= split.day
    for name, rows in (("training", ~held), ("held-out", held)):
        if not np.any(rows & (history.customer >= 0)):
            raise DataError(
                f"holdout {split.text}: the {name} part has no rows with a customer; "
                "choose another fraction or date"
            )
    return held


def _unit_hash(seed: int, customer_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _rows(history: History, rows: np.ndarray) -> History:
    """The rows ``rows`` of a history; customer and product ids unchanged."""
    day = history.day[rows]
    return dataclasses.replace(
        history,
        **history.rows(rows),  # type: ignore[arg-type]
        last_day=int(day.max()) if day.size else history.last_day,
    )


def customers_of(history: History, rows: np.ndarray) -> tuple[History, np.ndarray]:
    """The rows ``rows`` as a history of their own customers only (renumbered).

    Returns
    -------
    (History, ndarray of int64)
        The sub-history (``customer_ids`` only those with a row in it, ``last_day`` its own
        last day) and, per customer of the sub-history, its index in ``history.customer_ids``.
    """
    part = _rows(history, rows)
    known = part.customer >= 0
    present = np.unique(part.customer[known])
    renumber = np.full(history.n_customers, -1, dtype=np.int32)
    renumber[present] = np.arange(present.size, dtype=np.int32)
    customer = np.where(known, renumber[np.where(known, part.customer, 0)], -1).astype(np.int32)
    return (
        dataclasses.replace(part, customer=customer, customer_ids=history.customer_ids[present]),
        present.astype(np.int64),
    )


def assign_segments(history: History, fitted: Segmentation, config: RunConfig) -> np.ndarray:
    """Segment names of a history's customers under already fitted RFM centres.

    Each R, F and M value goes to the nearest centre of that dimension (ties: the lower
    rank); the sum of the ranks maps to a segment by ``config.segment_of_score()``.

    Returns
    -------
    ndarray of str, shape (n_customers,)
    """
    rfm = rfm_summary(history)
    ranks = [
        _nearest(np.asarray(values, dtype=np.float64), centers)
        for values, centers in (
            (rfm.recency, fitted.recency_centers),
            (rfm.frequency, fitted.frequency_centers),
            (rfm.monetary_value, fitted.monetary_centers),
        )
    ]
    score = ranks[0] + ranks[1] + ranks[2]
    table = config.segment_of_score()
    return np.array([table[int(s)] for s in score], dtype=str).reshape(-1)


def _nearest(values: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre per value (first of equally near ones)."""
    return np.argmin(np.abs(values[:, None] - centers[None, :]), axis=1).astype(np.int64)


def count_cells(
    row_state: np.ndarray, row_product: np.ndarray, row_quantity: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Summed quantity per (state, product) over rows with a state (``row_state >= 0``).

    Returns
    -------
    ndarray of int64, shape ``shape``
    """
    use = row_state >= 0
    flat = row_state[use] * shape[1] + row_product[use]
    # quantities are integers far below 2**53, so float accumulation is exact
    qty = np.bincount(flat, weights=row_quantity[use], minlength=shape[0] * shape[1])
    return np.rint(qty).astype(np.int64).reshape(shape)


def month_keys(day: np.ndarray) -> np.ndarray:
    """Calendar month ``YYYY-MM`` of each day number."""
    return np.datetime_as_string(day.astype("datetime64[D]").astype("datetime64[M]"), unit="M")
