"""State space: the Cartesian product of the configured state fields, and the product universe.

A state is one value of each state field (``states.fields``; default segment, month,
month-half, weekday). The states are the full Cartesian product of the values observed in the
history (rows with a customer) of every field, integer-indexed in field order, first field
slowest (mixed radix)::

    state = ((code[0] * n[1] + code[1]) * n[2] + code[2]) ...

where ``code[f]`` is the index of the state's value among field f's observed values in their
canonical order (segments and categorical values sorted, months and weekdays in calendar order,
half and hour numerically). The string id joins the values with ``_`` in field order, each
value escaped (:func:`rlreco.schema.escape_state_value`: ``%`` -> ``%25``, ``_`` -> ``%5F``) so
ids are unique and split back exactly; the default fields give the original design's ids, e.g.
``Q1_December_0_Thursday``, and its integer order.

Products are all distinct product codes of the data, sorted; each segment has a catalogue of
the products its customers bought (CSR arrays). ``segment`` is always a field.

A state space built from a visit log of another system (``rlreco prepare --log``) has no
calendar: its states are the distinct tuples of the log's context columns, with their labels as
string ids (:attr:`StateSpace.labels`), the default fields with every state's month, half and
weekday stored empty / 0, and one segment ``all`` whose catalogue is every product of the log.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rlreco.engine.history import History
from rlreco.errors import DataError, SnapshotError
from rlreco.schema import (
    DEFAULT_STATE_FIELDS,
    INTEGER_STATE_FIELDS,
    MONTH_NAMES,
    WEEKDAY_NAMES,
    escape_state_value,
)

#: Values of the calendar fields, in canonical order (the domain every history is coded in).
CALENDAR_VALUES: dict[str, tuple[str, ...]] = {
    "month": MONTH_NAMES,
    "half": ("0", "1"),
    "weekday": WEEKDAY_NAMES,
    "hour": tuple(str(h) for h in range(24)),
}


@dataclass(frozen=True)
class StateSpace:
    """States, products and segment catalogues as arrays.

    Attributes
    ----------
    fields : tuple of str
        State fields in id order; ``"segment"`` is one of them.
    levels : tuple of tuple of str
        Per field, its observed values in canonical order, as they are written in state ids
        before escaping (month and weekday names, half and hour as decimal text).
    state_codes : ndarray of int16, shape (n_fields, n_states)
        Index into ``levels[f]`` of every state's value of field f (row f is contiguous).
    state_weight : ndarray of float64, shape (n_states,)
        Historical transaction rows per state (weights for ``empirical`` state sampling).
    product_codes : ndarray of str, shape (n_products,)
        Product codes (StockCode), sorted; the index is the product id.
    product_names : ndarray of str, shape (n_products,)
        Product descriptions.
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
        CSR row pointer: segment g's catalogue is
        ``catalogue_items[catalogue_ptr[g]:catalogue_ptr[g+1]]``.
    catalogue_items : ndarray of int32, shape (nnz,)
        Sorted product ids of each segment's catalogue.
    labels : ndarray of str, shape (n_states,), optional
        String ids of a state space without calendar (built from a log's context columns);
        None for states whose ids derive from their field values.
    """

    fields: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    state_codes: np.ndarray
    state_weight: np.ndarray
    product_codes: np.ndarray
    product_names: np.ndarray
    catalogue_ptr: np.ndarray
    catalogue_items: np.ndarray
    labels: np.ndarray | None = None

    @classmethod
    def without_calendar(
        cls,
        labels: np.ndarray,
        segment: str,
        *,
        product_codes: np.ndarray,
        product_names: np.ndarray,
        catalogue_ptr: np.ndarray,
        catalogue_items: np.ndarray,
        state_weight: np.ndarray,
    ) -> StateSpace:
        """A state space of labelled states in one segment, without calendar (module docstring)."""
        return cls(
            fields=DEFAULT_STATE_FIELDS,
            levels=((segment,), ("",), ("0",), ("",)),
            state_codes=np.zeros((len(DEFAULT_STATE_FIELDS), len(labels)), dtype=np.int16),
            state_weight=state_weight,
            product_codes=product_codes,
            product_names=product_names,
            catalogue_ptr=catalogue_ptr,
            catalogue_items=catalogue_items,
            labels=np.asarray(labels).astype(str),
        )

    @classmethod
    def from_grid(
        cls,
        fields: tuple[str, ...],
        levels: tuple[tuple[str, ...], ...],
        *,
        product_codes: np.ndarray,
        product_names: np.ndarray,
        catalogue_ptr: np.ndarray,
        catalogue_items: np.ndarray,
        state_weight: np.ndarray | None = None,
    ) -> StateSpace:
        """The full product of ``levels`` in field order (first field slowest)."""
        shape = tuple(len(v) for v in levels)
        codes = np.indices(shape).reshape(len(shape), -1).astype(np.int16)
        n_states = codes.shape[1]
        return cls(
            fields=tuple(fields),
            levels=tuple(tuple(v) for v in levels),
            state_codes=np.ascontiguousarray(codes),
            state_weight=np.zeros(n_states) if state_weight is None else state_weight,
            product_codes=product_codes,
            product_names=product_names,
            catalogue_ptr=catalogue_ptr,
            catalogue_items=catalogue_items,
        )

    @property
    def n_states(self) -> int:
        """Number of states."""
        return int(self.state_codes.shape[1])

    @property
    def n_products(self) -> int:
        """Number of products."""
        return int(self.product_codes.shape[0])

    @property
    def segments(self) -> tuple[str, ...]:
        """Segment names, sorted (e.g. ``("Q1", "Q2", "Q3", "Q4")``)."""
        return self.levels[self.fields.index("segment")]

    @property
    def n_segments(self) -> int:
        """Number of segments."""
        return len(self.segments)

    @property
    def state_segment(self) -> np.ndarray:
        """Segment index of each state, int16 (n_states,) (a contiguous view)."""
        return self.state_codes[self.fields.index("segment")]

    def field_values(self, name: str) -> np.ndarray:
        """Every state's value of field ``name``: int8 for half and hour, else str."""
        labels = np.asarray(self.levels[self.fields.index(name)])
        values = labels[self.state_codes[self.fields.index(name)]]
        return values.astype(np.int8) if name in INTEGER_STATE_FIELDS else values.astype(str)

    @functools.cached_property
    def state_ids(self) -> np.ndarray:
        """The string id of every state (or its label), shape (n_states,)."""
        if self.labels is not None:
            return np.asarray(self.labels).astype(str)
        ids: np.ndarray | None = None
        for f, labels in enumerate(self.levels):
            escaped = np.asarray([escape_state_value(v) for v in labels], dtype=object)
            part = escaped[self.state_codes[f]]
            ids = part if ids is None else ids + "_" + part
        assert ids is not None  # segment is always a field
        return ids.astype(str)

    def catalogue(self, segment: int) -> np.ndarray:
        """Sorted product ids of one segment's catalogue."""
        return self.catalogue_items[self.catalogue_ptr[segment] : self.catalogue_ptr[segment + 1]]

    def state_index(self) -> dict[str, int]:
        """Map from string state id to integer state id."""
        return {sid: i for i, sid in enumerate(self.state_ids.tolist())}

    def product_index(self) -> dict[str, int]:
        """Map from product code to integer product id."""
        return {code: i for i, code in enumerate(self.product_codes.tolist())}

    def to_columns(self) -> dict[str, dict[str, np.ndarray]]:
        """Column arrays of the ``states``, ``products`` and ``catalogues`` tables.

        ``states`` holds ``state_id``, ``state``, one column per field (in field order) and
        ``weight``.
        """
        seg_of_item = np.repeat(
            np.arange(self.n_segments, dtype=np.int16), np.diff(self.catalogue_ptr)
        )
        states: dict[str, np.ndarray] = {
            "state_id": np.arange(self.n_states, dtype=np.int32),
            "state": self.state_ids,
        }
        for name in self.fields:
            states[name] = self.field_values(name)
        states["weight"] = self.state_weight.astype(np.float64)
        return {
            "states": states,
            "products": {
                "product_id": np.arange(self.n_products, dtype=np.int32),
                "product_code": self.product_codes.astype(str),
                "description": self.product_names.astype(str),
            },
            "catalogues": {
                "segment": np.asarray(self.segments)[seg_of_item],
                "product_id": self.catalogue_items.astype(np.int32),
            },
        }

    @classmethod
    def from_columns(
        cls, tables: Mapping[str, Mapping[str, np.ndarray]], fields: tuple[str, ...] | None = None
    ) -> StateSpace:
        """Rebuild a state space from :meth:`to_columns` output (as read from a run directory).

        ``fields`` default to the states table's columns between ``state`` and ``weight``.
        """
        st, pr, ca = tables["states"], tables["products"], tables["catalogues"]
        if fields is None:
            names = list(st)
            fields = tuple(names[names.index("state") + 1 : names.index("weight")])
        if "segment" not in fields:
            raise SnapshotError("state space: the states table has no segment column")
        n_states = len(np.asarray(st["state_id"]))
        if not np.array_equal(np.asarray(st["state_id"]), np.arange(n_states)):
            raise SnapshotError("state space: state ids are not 0..n-1 in order")
        # a state space without calendar stores empty months and weekdays (module docstring)
        generic = (
            fields == DEFAULT_STATE_FIELDS
            and n_states > 0
            and bool(np.all(np.asarray(st["month"]).astype(str) == ""))
            and bool(np.all(np.asarray(st["weekday"]).astype(str) == ""))
        )
        levels = []
        for name in fields:
            values = np.unique(np.asarray(st[name]).astype(str))
            levels.append(tuple(sorted(values.tolist(), key=functools.partial(_order, name))))
        segments = levels[fields.index("segment")]
        seg_code = {s: i for i, s in enumerate(segments)}
        try:
            cat_seg = np.array(
                [seg_code[s] for s in np.asarray(ca["segment"]).astype(str)], dtype=np.int64
            )
        except KeyError as exc:
            raise SnapshotError(f"state space: catalogue of unknown segment {exc}") from None
        order = np.lexsort((np.asarray(ca["product_id"]), cat_seg))
        items = np.asarray(ca["product_id"], dtype=np.int32)[order]
        ptr = np.zeros(len(segments) + 1, dtype=np.int64)
        np.cumsum(np.bincount(cat_seg, minlength=len(segments)), out=ptr[1:])
        if generic:
            if len(segments) != 1 or np.unique(np.asarray(st["state"])).size != n_states:
                raise SnapshotError(
                    "state space: a state space without calendar needs one segment and "
                    "distinct state labels"
                )
            return cls.without_calendar(
                np.asarray(st["state"]).astype(str),
                segments[0],
                product_codes=np.asarray(pr["product_code"]).astype(str),
                product_names=np.asarray(pr["description"]).astype(str),
                catalogue_ptr=ptr,
                catalogue_items=items,
                state_weight=np.asarray(st["weight"], dtype=np.float64),
            )
        space = cls.from_grid(
            fields,
            tuple(levels),
            product_codes=np.asarray(pr["product_code"]).astype(str),
            product_names=np.asarray(pr["description"]).astype(str),
            catalogue_ptr=ptr,
            catalogue_items=items,
            state_weight=np.asarray(st["weight"], dtype=np.float64),
        )
        if space.n_states != n_states:
            raise SnapshotError(
                f"state space: {n_states} states, but the product of the fields' values has "
                f"{space.n_states}"
            )
        for name in fields:
            if not np.array_equal(
                space.field_values(name),
                np.asarray(st[name]).astype(space.field_values(name).dtype),
            ):
                raise SnapshotError(
                    f"state space: column {name!r} is not in field order (first field slowest)"
                )
        if not np.array_equal(space.state_ids, np.asarray(st["state"]).astype(str)):
            raise SnapshotError("state space: state ids do not match their components")
        return space


def _order(field: str, label: str) -> tuple[int, str]:
    """Canonical sort key of a field value: calendar or numeric order, else the text."""
    calendar = CALENDAR_VALUES.get(field)
    if calendar is not None and label in calendar:
        return (calendar.index(label), "")
    return (0, label)


def field_codes(
    history: History, customer_segment: np.ndarray, segment_names: tuple[str, ...], name: str
) -> tuple[tuple[str, ...], np.ndarray]:
    """A field's domain (values in canonical order) and each history row's index into it.

    Rows without a customer get -1 for ``segment`` (and whatever they hold otherwise; they are
    never in a state).

    Raises
    ------
    DataError
        The history lacks the field (``hour`` not derived, a categorical column not read).
    """
    if name == "segment":
        known = history.customer >= 0
        seg = customer_segment[np.where(known, history.customer, 0)]
        return tuple(segment_names), np.where(known, seg, -1).astype(np.int64)
    if name == "month":
        return MONTH_NAMES, history.month.astype(np.int64) - 1
    if name == "half":
        return CALENDAR_VALUES["half"], history.half.astype(np.int64)
    if name == "weekday":
        return WEEKDAY_NAMES, history.weekday.astype(np.int64)
    if name == "hour":
        if history.hour is None:
            raise DataError("key 'states.fields' value 'hour': the history has no order times")
        return CALENDAR_VALUES["hour"], history.hour.astype(np.int64)
    if name not in history.categorical:
        raise DataError(f"key 'states.fields' value {name!r}: the data has no such column")
    values, codes = history.categorical[name]
    return tuple(values.tolist()), codes.astype(np.int64)


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
    state = np.zeros(history.n_rows, dtype=np.int64)
    valid = history.customer >= 0
    for name, levels in zip(space.fields, space.levels, strict=True):
        domain, codes = field_codes(history, customer_segment, space.segments, name)
        where = {label: i for i, label in enumerate(levels)}
        position = np.array([where.get(label, -1) for label in domain], dtype=np.int64)
        pos = position[np.maximum(codes, 0)]
        valid &= (codes >= 0) & (pos >= 0)
        state = state * len(levels) + pos
    return np.where(valid, state, -1)


def build_state_space(
    history: History,
    customer_segment: np.ndarray,
    segment_names: tuple[str, ...],
    fields: tuple[str, ...] = DEFAULT_STATE_FIELDS,
) -> StateSpace:
    """Build the state space from the history and each customer's segment.

    Parameters
    ----------
    history : History
    customer_segment : ndarray of int16, shape (n_customers,)
        Segment index of each customer, into ``segment_names``.
    segment_names : tuple of str
        Names of the segments, sorted.
    fields : tuple of str
        State fields in id order (``segment`` among them).

    Raises
    ------
    DataError
        A field the history does not hold, or a field value that is empty.
    """
    rows = history.customer >= 0
    levels = []
    for name in fields:
        domain, codes = field_codes(history, customer_segment, segment_names, name)
        if name == "segment":
            levels.append(tuple(segment_names))
            continue
        observed = np.unique(codes[rows])
        values = tuple(domain[int(c)] for c in observed if c >= 0)
        if "" in values:
            raise DataError(f"key 'states.fields' value {name!r}: the column has empty values")
        levels.append(values)
    n_seg = len(segment_names)
    n_products = history.n_products
    # catalogues: distinct (segment, product) pairs over rows with a customer
    row_seg = customer_segment[history.customer[rows]].astype(np.int64)
    pairs = np.unique(row_seg * n_products + history.product[rows])
    ptr = np.zeros(n_seg + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // n_products, minlength=n_seg), out=ptr[1:])
    space = StateSpace.from_grid(
        tuple(fields),
        tuple(levels),
        product_codes=history.product_codes,
        product_names=history.product_names,
        catalogue_ptr=ptr,
        catalogue_items=(pairs % n_products).astype(np.int32),
    )
    state = history_states(history, customer_segment, space)
    weight = np.bincount(state[state >= 0], minlength=space.n_states).astype(np.float64)
    return StateSpace.from_grid(
        space.fields,
        space.levels,
        product_codes=space.product_codes,
        product_names=space.product_names,
        catalogue_ptr=space.catalogue_ptr,
        catalogue_items=space.catalogue_items,
        state_weight=weight,
    )
