"""A user-supplied truth table checked against a run's state space.

A truth table gives the true ``p_click`` and ``p_buy`` of every (state, catalogue product) cell
of a run (the columns are in :mod:`rlreco.io.truth`, which reads and checks the file on its
own). This module maps its string ids to the run's integer ids and checks that it covers the
state space exactly: every state and product known, every product in its state's segment
catalogue, no cell twice, none missing. The result is the TRUTH_DTYPE array the response
kernels read.

It is separate from :mod:`rlreco.engine.response` because it is input checking (one
:class:`~rlreco.errors.DataError` line naming the file and the first fault), not a response
model: :func:`rlreco.engine.response.build_response` uses it for a truth-table response, and
the sweep checks a grid's truth tables with it before any cell runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlreco.engine.state_space import StateSpace
from rlreco.errors import DataError
from rlreco.schema import TRUTH_DTYPE


def truth_from_frame(
    space: StateSpace, frame: pd.DataFrame, *, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """``p_click`` and ``p_buy`` of :func:`truth_of_frame` as two float64 arrays."""
    truth = truth_of_frame(space, frame, source=source)
    return truth["p_click"].copy(), truth["p_buy"].copy()


def truth_of_frame(space: StateSpace, frame: pd.DataFrame, *, source: str) -> np.ndarray:
    """Check a truth table (as :func:`rlreco.io.truth.read_truth_table` reads it) against a
    state space.

    Parameters
    ----------
    space : StateSpace
    frame : DataFrame
        Columns ``state_id``, ``product_id`` (str), ``p_click``, ``p_buy`` (float64 in [0, 1]).
    source : str
        File name for error messages.

    Returns
    -------
    ndarray of TRUTH_DTYPE, shape (n_states, n_products)
        ``p_click`` and ``p_buy``; 0 outside each state's segment catalogue.

    Raises
    ------
    DataError
        One line naming the file and the first unknown state, unknown product, product outside
        its state's segment catalogue, duplicate cell, or missing (state, catalogue product).
    """
    n_states, n_products = space.n_states, space.n_products
    state_ids = space.state_ids
    state_of = {sid: i for i, sid in enumerate(state_ids.tolist())}
    product_of = space.product_index()
    states = np.array([state_of.get(s, -1) for s in frame["state_id"].tolist()], dtype=np.int64)
    products = np.array(
        [product_of.get(p, -1) for p in frame["product_id"].tolist()], dtype=np.int64
    )
    for ids, codes, what, example in (
        (states, frame["state_id"], "state_id", state_ids[0]),
        (products, frame["product_id"], "product_id", space.product_codes[0]),
    ):
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            row = int(unknown[0])
            raise DataError(
                f"{source}: row {row}: {what} {codes.iloc[row]!r} is not in this run "
                f"(ids look like {example!r})"
            )
    in_catalogue = np.zeros((space.n_segments, n_products), dtype=bool)
    for segment in range(space.n_segments):
        in_catalogue[segment, space.catalogue(segment)] = True
    outside = np.flatnonzero(~in_catalogue[space.state_segment[states], products])
    if outside.size:
        row = int(outside[0])
        segment = space.segments[space.state_segment[states[row]]]
        raise DataError(
            f"{source}: row {row}: product {frame['product_id'].iloc[row]!r} is not in the "
            f"catalogue of segment {segment} (state {frame['state_id'].iloc[row]!r})"
        )
    cell = states * n_products + products
    order = np.argsort(cell, kind="stable")
    repeated = order[1:][cell[order][1:] == cell[order][:-1]]
    if repeated.size:
        row = int(repeated.min())
        raise DataError(
            f"{source}: row {row}: cell ({frame['state_id'].iloc[row]!r}, "
            f"{frame['product_id'].iloc[row]!r}) appears more than once"
        )
    present = np.zeros((n_states, n_products), dtype=bool)
    present[states, products] = True
    expected = in_catalogue[space.state_segment]
    missing = np.argwhere(expected & ~present)
    if missing.size:
        state, product = (int(i) for i in missing[0])
        raise DataError(
            f"{source}: state {state_ids[state]!r} has no row for catalogue product "
            f"{space.product_codes[product]!r} ({len(missing)} (state, product) rows missing in "
            "all; every state needs one row per product of its segment catalogue)"
        )
    truth = np.zeros((n_states, n_products), dtype=TRUTH_DTYPE)
    truth["p_click"][states, products] = frame["p_click"].to_numpy(dtype=np.float64)
    truth["p_buy"][states, products] = frame["p_buy"].to_numpy(dtype=np.float64)
    return truth
