"""State space: segment x month x month-half x weekday, and the product universe.

States are the full Cartesian product of the observed segments, months, month-halves and
weekdays, integer-indexed segment-major::

    state = ((segment * n_months + month) * n_halves + half) * n_weekdays + weekday

(indices into the observed, calendar-ordered values), each with the original design's string
id ``f"{segment}_{month_name}_{half}_{weekday_name}"``, e.g. ``Q1_December_0_Thursday``.
Products are all distinct product codes of the data, sorted; each segment has a catalogue of
the products its customers bought (CSR arrays).

A state space built from a visit log of another system (``rlreco prepare --log``) has no
calendar: its states are the distinct tuples of the log's context columns, with their labels as
string ids (:attr:`StateSpace.labels`; month, half and weekday are 0 and stored empty), and one
segment ``all`` whose catalogue is every product of the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rlreco.engine.history import History
from rlreco.errors import SnapshotError
from rlreco.schema import MONTH_NAMES, WEEKDAY_NAMES


@dataclass(frozen=True)
class StateSpace:
    """States, products and segment catalogues as arrays.

    Attributes
    ----------
    segments : tuple of str
        Observed segment names, sorted (e.g. ``("Q1", "Q2", "Q3", "Q4")``).
    months, halves, weekdays : tuple of int
        Observed months (1..12), month-halves (0, 1) and weekdays (0 = Monday), sorted.
    state_segment : ndarray of int16, shape (n_states,)
        Segment index of each state.
    state_month, state_half, state_weekday : ndarray of int8, shape (n_states,)
        Calendar month (1..12), month-half (0/1) and weekday (0 = Monday) of each state.
    state_weight : ndarray of float64, shape (n_states,)
        Historical transaction rows per state (weights for ``empirical`` state sampling).
    product_codes : ndarray of str, shape (n_products,)
        Product codes (StockCode), sorted; the index is the product id.
    product_names : ndarray of str, shape (n_products,)
        Product descriptions.
    catalog_ptr : ndarray of int64, shape (n_segments + 1,)
        CSR row pointer: segment g's catalogue is
        ``catalog_items[catalog_ptr[g]:catalog_ptr[g+1]]``.
    catalog_items : ndarray of int32, shape (nnz,)
        Sorted product ids of each segment's catalogue.
    labels : ndarray of str, shape (n_states,), optional
        String ids of a state space without calendar (built from a log's context columns);
        None for the calendar states, whose ids derive from their components.
    """

    segments: tuple[str, ...]
    months: tuple[int, ...]
    halves: tuple[int, ...]
    weekdays: tuple[int, ...]
    state_segment: np.ndarray
    state_month: np.ndarray
    state_half: np.ndarray
    state_weekday: np.ndarray
    state_weight: np.ndarray
    product_codes: np.ndarray
    product_names: np.ndarray
    catalog_ptr: np.ndarray
    catalog_items: np.ndarray
    labels: np.ndarray | None = None

    @property
    def n_states(self) -> int:
        """Number of states."""
        return int(self.state_segment.shape[0])

    @property
    def n_products(self) -> int:
        """Number of products."""
        return int(self.product_codes.shape[0])

    @property
    def n_segments(self) -> int:
        """Number of segments."""
        return len(self.segments)

    @property
    def state_ids(self) -> np.ndarray:
        """The original design's string id of every state (or its label), shape (n_states,)."""
        if self.labels is not None:
            return np.asarray(self.labels).astype(str)
        seg = np.asarray(self.segments, dtype=object)[self.state_segment]
        month = np.asarray(MONTH_NAMES, dtype=object)[self.state_month - 1]
        day = np.asarray(WEEKDAY_NAMES, dtype=object)[self.state_weekday]
        half = self.state_half.astype(str).astype(object)
        return (seg + "_" + month + "_" + half + "_" + day).astype(str)

    def catalogue(self, segment: int) -> np.ndarray:
        """Sorted product ids of one segment's catalogue."""
        return self.catalog_items[self.catalog_ptr[segment] : self.catalog_ptr[segment + 1]]

    def state_index(self) -> dict[str, int]:
        """Map from string state id to integer state id."""
        return {sid: i for i, sid in enumerate(self.state_ids.tolist())}

    def product_index(self) -> dict[str, int]:
        """Map from product code to integer product id."""
        return {code: i for i, code in enumerate(self.product_codes.tolist())}

    def to_columns(self) -> dict[str, dict[str, np.ndarray]]:
        """Column arrays of the ``states``, ``products`` and ``catalogues`` tables."""
        months = np.asarray(MONTH_NAMES)[self.state_month - 1]
        weekdays = np.asarray(WEEKDAY_NAMES)[self.state_weekday]
        if self.labels is not None:
            months = np.full(self.n_states, "")
            weekdays = np.full(self.n_states, "")
        seg_of_item = np.repeat(
            np.arange(self.n_segments, dtype=np.int16), np.diff(self.catalog_ptr)
        )
        return {
            "states": {
                "state_id": np.arange(self.n_states, dtype=np.int32),
                "state": self.state_ids,
                "segment": np.asarray(self.segments)[self.state_segment],
                "month": months,
                "half": self.state_half.astype(np.int8),
                "weekday": weekdays,
                "weight": self.state_weight.astype(np.float64),
            },
            "products": {
                "product_id": np.arange(self.n_products, dtype=np.int32),
                "product_code": self.product_codes.astype(str),
                "description": self.product_names.astype(str),
            },
            "catalogues": {
                "segment": np.asarray(self.segments)[seg_of_item],
                "product_id": self.catalog_items.astype(np.int32),
            },
        }

    @classmethod
    def from_columns(cls, tables: Mapping[str, Mapping[str, np.ndarray]]) -> StateSpace:
        """Rebuild a state space from :meth:`to_columns` output (as read from a run directory)."""
        st, pr, ca = tables["states"], tables["products"], tables["catalogues"]
        seg_names = np.asarray(st["segment"]).astype(str)
        segments = tuple(sorted(set(seg_names.tolist())))
        seg_code = {s: i for i, s in enumerate(segments)}
        month_code = {m: i + 1 for i, m in enumerate(MONTH_NAMES)}
        day_code = {d: i for i, d in enumerate(WEEKDAY_NAMES)}
        # a state space without calendar stores empty months and weekdays (module docstring)
        generic = len(seg_names) > 0 and bool(
            np.all(np.asarray(st["month"]).astype(str) == "")
            and np.all(np.asarray(st["weekday"]).astype(str) == "")
        )
        if generic:
            month_code[""] = 0
            day_code[""] = 0
        try:
            state_segment = np.array([seg_code[s] for s in seg_names], dtype=np.int16)
            state_month = np.array([month_code[m] for m in st["month"]], dtype=np.int8)
            state_weekday = np.array([day_code[d] for d in st["weekday"]], dtype=np.int8)
            cat_seg = np.array([seg_code[s] for s in np.asarray(ca["segment"]).astype(str)])
        except KeyError as exc:
            raise SnapshotError(f"state space: unknown segment, month or weekday {exc}") from None
        if not np.array_equal(np.asarray(st["state_id"]), np.arange(len(seg_names))):
            raise SnapshotError("state space: state ids are not 0..n-1 in order")
        order = np.lexsort((np.asarray(ca["product_id"]), cat_seg))
        items = np.asarray(ca["product_id"], dtype=np.int32)[order]
        ptr = np.zeros(len(segments) + 1, dtype=np.int64)
        np.cumsum(np.bincount(cat_seg, minlength=len(segments)), out=ptr[1:])
        space = cls(
            segments=segments,
            months=tuple(sorted(set(state_month.tolist()))),
            halves=tuple(sorted(set(np.asarray(st["half"]).tolist()))),
            weekdays=tuple(sorted(set(state_weekday.tolist()))),
            state_segment=state_segment,
            state_month=state_month,
            state_half=np.asarray(st["half"], dtype=np.int8),
            state_weekday=state_weekday,
            state_weight=np.asarray(st["weight"], dtype=np.float64),
            product_codes=np.asarray(pr["product_code"]).astype(str),
            product_names=np.asarray(pr["description"]).astype(str),
            catalog_ptr=ptr,
            catalog_items=items,
            labels=np.asarray(st["state"]).astype(str) if generic else None,
        )
        if generic and np.unique(space.state_ids).size != space.n_states:
            raise SnapshotError("state space: a state label appears twice")
        if not np.array_equal(space.state_ids, np.asarray(st["state"]).astype(str)):
            raise SnapshotError("state space: state ids do not match their components")
        return space


def history_states(history: History, customer_segment: np.ndarray, space: StateSpace) -> np.ndarray:
    """State id of every history row with a customer, -1 for rows without.

    Parameters
    ----------
    history : History
    customer_segment : ndarray of int16, shape (n_customers,)
        Segment index of each customer (indices into ``space.segments``).
    space : StateSpace

    Returns
    -------
    ndarray of int64, shape (n_rows,)
    """
    rows = history.customer >= 0
    month_pos = np.full(13, -1, dtype=np.int64)
    month_pos[list(space.months)] = np.arange(len(space.months))
    half_pos = np.full(2, -1, dtype=np.int64)
    half_pos[list(space.halves)] = np.arange(len(space.halves))
    day_pos = np.full(7, -1, dtype=np.int64)
    day_pos[list(space.weekdays)] = np.arange(len(space.weekdays))
    seg = np.where(rows, customer_segment[np.where(rows, history.customer, 0)], 0).astype(np.int64)
    state = (
        (seg * len(space.months) + month_pos[history.month]) * len(space.halves)
        + half_pos[history.half]
    ) * len(space.weekdays) + day_pos[history.weekday]
    return np.where(rows, state, -1)


def build_state_space(
    history: History, customer_segment: np.ndarray, segment_names: tuple[str, ...]
) -> StateSpace:
    """Build the state space from the history and each customer's segment.

    Parameters
    ----------
    history : History
    customer_segment : ndarray of int16, shape (n_customers,)
        Segment index of each customer, into ``segment_names``.
    segment_names : tuple of str
        Names of the segments, sorted.
    """
    rows = history.customer >= 0
    months = tuple(int(m) for m in np.unique(history.month[rows]))
    halves = tuple(int(h) for h in np.unique(history.half[rows]))
    weekdays = tuple(int(d) for d in np.unique(history.weekday[rows]))
    n_seg = len(segment_names)
    grid = np.indices((n_seg, len(months), len(halves), len(weekdays))).reshape(4, -1)
    n_products = history.n_products
    # catalogues: distinct (segment, product) pairs over rows with a customer
    row_seg = customer_segment[history.customer[rows]].astype(np.int64)
    pairs = np.unique(row_seg * n_products + history.product[rows])
    ptr = np.zeros(n_seg + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // n_products, minlength=n_seg), out=ptr[1:])
    space = StateSpace(
        segments=tuple(segment_names),
        months=months,
        halves=halves,
        weekdays=weekdays,
        state_segment=grid[0].astype(np.int16),
        state_month=np.asarray(months, dtype=np.int8)[grid[1]],
        state_half=np.asarray(halves, dtype=np.int8)[grid[2]],
        state_weekday=np.asarray(weekdays, dtype=np.int8)[grid[3]],
        state_weight=np.zeros(grid.shape[1]),
        product_codes=history.product_codes,
        product_names=history.product_names,
        catalog_ptr=ptr,
        catalog_items=(pairs % n_products).astype(np.int32),
    )
    state = history_states(history, customer_segment, space)
    weight = np.bincount(state[rows], minlength=space.n_states).astype(np.float64)
    return StateSpace(**{**space.__dict__, "state_weight": weight})
