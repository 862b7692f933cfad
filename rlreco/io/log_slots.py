"""Log slots: a visit log in names, and the checks and grouping that build one from columns.

:class:`LogSlots` is what both log readers return: :func:`rlreco.io.visit_log.read_visit_log`
(rlreco's own Parquet parts) and :func:`rlreco.io.foreign_log.read_foreign_log` (logs written by
other systems). It is separate from :mod:`rlreco.io.visit_log` because it is the readers' shared
result, not part of rlreco's file layout: the column checks (finite rewards, propensities in
(0, 1]), the string encoding of state labels and product codes, and :func:`group_slots`, which
numbers the visits, sorts slots by (visit, position) and checks that each visit logs positions
``0, 1, ..., m - 1``, are the same whatever file the columns came from.

Every problem is one :class:`~rlreco.errors.DataError` line naming the source, the column and
the first bad row (0-based data row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rlreco.errors import DataError


@dataclass(frozen=True)
class LogSlots:
    """A visit log in names, one entry per slot, sorted by visit then position.

    Attributes
    ----------
    source : str
        File or folder read (for messages).
    visit : ndarray of int64, shape (n,)
        Visit number, 0, 1, 2, ... in log order (consecutive slots of a visit share it).
    position : ndarray of int16, shape (n,)
        Slot, ``0..m-1`` within each visit.
    state_index, product_index : ndarray of int64, shape (n,)
        Indices into ``state_names`` and ``product_codes``.
    state_names, product_codes : ndarray of str
        Distinct state labels and product codes.
    outcome : ndarray of int8, shape (n,)
        0 ignored, 1 clicked, 2 bought, -1 unknown.
    reward : ndarray of float64, shape (n,)
    propensity : ndarray of float64, shape (n,)
        NaN where unknown.
    row : ndarray of int64, shape (n,)
        Data row of each slot in the source (for messages).
    policy : str or None
        Logging policy and parameter, when the log is one of rlreco's (of its first row).
    run_id : str or None
        Run that wrote the log (rlreco logs).
    buys_known : bool
        Whether a slot's outcome tells purchases apart (false for a foreign log with a click
        column but no purchase column: its buy rate is unknown).
    """

    source: str
    visit: np.ndarray
    position: np.ndarray
    state_index: np.ndarray
    state_names: np.ndarray
    product_index: np.ndarray
    product_codes: np.ndarray
    outcome: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    row: np.ndarray
    policy: str | None = None
    run_id: str | None = None
    buys_known: bool = True

    @property
    def n_slots(self) -> int:
        """Number of logged slots."""
        return int(self.visit.shape[0])

    @property
    def n_visits(self) -> int:
        """Number of visits."""
        return int(self.visit[-1]) + 1 if self.visit.size else 0


def encode_column(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary codes (int64, in order of first appearance) and the distinct values (str)."""
    coded = column.combine_chunks().dictionary_encode()
    names = np.asarray(coded.dictionary.to_pylist(), dtype=str)
    return coded.indices.to_numpy().astype(np.int64), names


def check_finite(values: np.ndarray, source: str, name: str) -> None:
    """Reject NaN and infinite values (rewards: every estimate would be undefined)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{source}: column '{name}' row {row}: {float(values[row])!r} is not a finite number"
        )


def check_propensity(propensity: np.ndarray, source: str, name: str) -> None:
    known = ~np.isnan(propensity)
    bad = np.flatnonzero(known & ~((propensity > 0.0) & (propensity <= 1.0)))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{source}: column '{name}' row {row}: propensity {float(propensity[row])!r} is "
            "outside (0, 1]"
        )


def group_slots(
    source: str,
    *,
    visit_key: np.ndarray | None,
    position: np.ndarray,
    context_changes: np.ndarray | None,
    state_index: np.ndarray,
    state_names: np.ndarray,
    product_index: np.ndarray,
    product_codes: np.ndarray,
    outcome: np.ndarray,
    reward: np.ndarray,
    propensity: np.ndarray,
    policy: str | None,
    run_id: str | None,
    buys_known: bool = True,
) -> LogSlots:
    """Number the visits, sort slots by (visit, position) and check positions are 0..m-1."""
    n = position.shape[0]
    if visit_key is None:
        assert context_changes is not None
        starts = np.ones(n, dtype=bool)
        starts[1:] = (position[1:] <= position[:-1]) | (context_changes[1:] != context_changes[:-1])
        visit = np.cumsum(starts) - 1
        order = np.arange(n)
    else:
        # number visits in order of first appearance, keep each visit's rows together
        _, first, inverse = np.unique(visit_key, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        visit = rank[inverse.reshape(-1)]
        order = np.lexsort((position, visit))
        visit = visit[order]
    row = order.astype(np.int64)
    position = position[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = visit[1:] != visit[:-1]
    first_slot = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    expected = np.arange(n) - first_slot
    bad = np.flatnonzero(position != expected)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{source}: row {int(row[i])}: position {int(position[i])} where slot "
            f"{int(expected[i])} of its visit was expected (each visit must log positions "
            "0, 1, ..., m-1 once)"
        )
    state = state_index[order]
    mixed = np.flatnonzero(~starts & (np.concatenate([[0], np.diff(state)]) != 0))
    if mixed.size:
        raise DataError(
            f"{source}: row {int(row[mixed[0]])}: the slots of one visit have different states"
        )
    return LogSlots(
        source=source,
        visit=visit.astype(np.int64),
        position=position.astype(np.int16),
        state_index=state,
        state_names=state_names,
        product_index=product_index[order],
        product_codes=product_codes,
        outcome=outcome[order],
        reward=reward[order],
        propensity=propensity[order],
        row=row,
        policy=policy,
        run_id=run_id,
        buys_known=buys_known,
    )
