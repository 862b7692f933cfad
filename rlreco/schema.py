"""Names and record layouts shared by the engine and the readers and writers (numpy only).

The one place for what both :mod:`rlreco.engine` and :mod:`rlreco.io` must agree on: the
calendar names in state ids and the record dtypes of the tables, truth and metrics. The kernels'
arrays are allocated with these dtypes, and the run directory's Arrow schemas are derived from
them (:data:`rlreco.io.parquet_tables.SCHEMAS`).
"""

from __future__ import annotations

import numpy as np

MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

#: One cell of the (state x product) tables apart from its value. Value lives in its own
#: contiguous array because the top-n search index reads it in runs of 8 neighbours; the
#: remaining fields are touched together when a slate product is updated, so they share a line.
CELL_DTYPE = np.dtype([("reward", np.float64), ("count", np.int64), ("reco_count", np.int64)])

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

#: State fields of the original design, in id order: ``Q1_December_0_Thursday``.
DEFAULT_STATE_FIELDS = ("segment", "month", "half", "weekday")
#: State fields computed from the data itself; any other field names a categorical column of
#: the transactions (``country`` by default maps to the UCI data's ``Country``).
BUILTIN_STATE_FIELDS = ("segment", "month", "half", "weekday", "hour")
#: State fields stored as int8 in run directories and as integers in MongoDB (all others are
#: strings).
INTEGER_STATE_FIELDS = ("half", "hour")

_ID_ESCAPES = {"%": "%25", "_": "%5F"}


def escape_state_value(value: str) -> str:
    """A field value as it appears in a state id: ``%`` -> ``%25``, ``_`` -> ``%5F``.

    Values without those characters (all of the UCI data's) are unchanged, so ids join values
    with ``_`` and split back exactly.
    """
    if "%" not in value and "_" not in value:
        return value
    return value.replace("%", "%25").replace("_", "%5F")


def unescape_state_value(text: str) -> str:
    """Invert :func:`escape_state_value` (``%5F`` and ``%25`` are its only escapes)."""
    if "%" not in text:
        return text
    return text.replace("%5F", "_").replace("%25", "%")


def format_state_id(values: tuple[object, ...] | list[object]) -> str:
    """The state id of one state's field values, in field order: escaped values joined by
    ``_`` (``("Q1", "December", 0, "Thursday")`` -> ``Q1_December_0_Thursday``)."""
    return "_".join(escape_state_value(str(v)) for v in values)


def parse_state_id(state: str, fields: tuple[str, ...]) -> tuple[str | int, ...] | None:
    """Field values of a state id (integer fields as int), or None if it does not have one
    value per field."""
    parts = state.split("_")
    if len(parts) != len(fields) or not all(parts):
        return None
    values: list[str | int] = []
    for name, part in zip(fields, parts, strict=True):
        value = unescape_state_value(part)
        if name in INTEGER_STATE_FIELDS:
            if not value.isdigit():
                return None
            values.append(int(value))
        else:
            values.append(value)
    return tuple(values)


#: Outcome codes of one shown product, as the visit log stores them; ``-1`` marks a slot whose
#: outcome is unknown (a log from another system that gives only a reward column).
OUTCOME_NAMES = ("ignored", "clicked", "bought")

#: One shown slot of a visit log, as the visit kernels fill it and the estimators read it:
#: the global visit index, the integer state and product ids of the run, the slot (0-based),
#: the outcome code (:data:`OUTCOME_NAMES`, ``-1`` unknown), the drawn reward and the
#: logging policy's propensity of this product in this slot given the state, its tables at that
#: moment and the slots before it (NaN = unknown). Packed (35 bytes): a log is written once and
#: read sequentially, so no field needs alignment.
LOG_DTYPE = np.dtype(
    [
        ("visit", np.int64),
        ("state", np.int32),
        ("position", np.int16),
        ("product", np.int32),
        ("outcome", np.int8),
        ("reward", np.float64),
        ("propensity", np.float64),
    ]
)

#: Slate policies by name, each with the name of its one parameter (``eps-greedy``'s is its
#: epsilon, given as ``policy.epsilon``): the one list the config, the CLI, sweeps and the engine
#: share (the kernel codes are :data:`rlreco.engine.simulation.POLICIES`).
POLICY_PARAMS: dict[str, str] = {
    "eps-greedy": "epsilon",
    "decaying": "c",
    "softmax": "tau",
    "ucb1": "c",
    "thompson": "sigma",
}
#: Parameter value of each policy other than ``eps-greedy`` when none is given.
DEFAULT_POLICY_PARAM: dict[str, float] = {
    "decaying": 10.0,
    "softmax": 0.5,
    "ucb1": 2.0,
    "thompson": 2.5,
}


def policy_param_problem(policy: str, value: object) -> str | None:
    """What is wrong with a parameter value of a policy other than ``eps-greedy`` (None: fine).

    ``softmax`` tau and ``thompson`` sigma are finite numbers > 0; ``decaying`` c and ``ucb1``
    c finite numbers >= 0. The answer completes "expected ...".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return "a number"
    number = float(value)
    if policy in ("softmax", "thompson"):
        return None if 0.0 < number < np.inf else "a finite number > 0"
    return None if 0.0 <= number < np.inf else "a finite number >= 0"
