"""The sections of a run configuration: one frozen, validated dataclass each.

Each field's allowed values sit in its metadata (``check`` and ``allowed``), which
:mod:`rlreco.config` applies when it builds a :class:`~rlreco.config.RunConfig` from TOML or
JSON. Truth schedules (``VISITS=RESPONSE,...``) are parsed here too.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from rlreco.errors import ConfigError
from rlreco.schema import BUILTIN_STATE_FIELDS, DEFAULT_STATE_FIELDS

#: The embedded default data set (a copy of the UCI Online Retail data, see data/README.md).
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "online_retail.parquet"

#: The original design's click and buy count distributions over 0..9 per visit.
SEED_CLICK_PROBS = (0.50, 0.35, 0.10, 0.025, 0.015, 0.0055, 0.002, 0.00125, 0.00124, 0.00001)
SEED_BUY_PROBS = (0.70, 0.15, 0.10, 0.025, 0.015, 0.0055, 0.002, 0.00125, 0.00124, 0.00001)

StateSampling = Literal["uniform", "empirical", "holdout"]
#: slate policies (:data:`rlreco.schema.POLICY_PARAMS`)
PolicyName = Literal["eps-greedy", "decaying", "softmax", "ucb1", "thompson"]

#: Non-merchandise stock codes of the UCI Online Retail data (postage, fees, manual
#: adjustments, samples, gift vouchers): removed from catalogues, tables and truth by default.
#: Shell-style patterns (``fnmatch``), matched case-sensitively against the whole code.
UCI_NON_PRODUCTS = (
    "POST", "DOT", "M", "m", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS",
    "gift_*",
)  # fmt: skip

#: The sample-average step size, the original's rule: ``value += (r - value) / reco_count``.
SAMPLE_AVERAGE = "1/n"

#: One phase of a truth schedule: ``VISITS=RESPONSE``.
_PHASE = re.compile(r"^\s*(?P<start>\d+)\s*=\s*(?P<response>\S(?:.*\S)?)\s*$")

#: A truth schedule: (first visit, response spec) per phase, starting at 0, increasing.
Schedule = tuple[tuple[int, str], ...]


def is_schedule(response: str) -> bool:
    """Whether a response spec is a schedule (``VISITS=RESPONSE,...``) rather than one truth."""
    return _PHASE.match(response.split(",", 1)[0]) is not None


def parse_schedule(value: str | Sequence[str], what: str) -> Schedule:
    """A truth schedule from ``"0=A,2000000=B"`` or ``["0=A", "2000000=B"]``.

    Raises
    ------
    ConfigError
        One line naming ``what`` (a config key or option): an entry that is not
        ``VISITS=RESPONSE``, or visit counts that do not start at 0 and increase.
    """
    entries = value.split(",") if isinstance(value, str) else list(value)
    phases: list[tuple[int, str]] = []
    for entry in entries:
        match = _PHASE.match(entry) if isinstance(entry, str) else None
        if match is None:
            raise ConfigError(
                f"{what} = {value!r}: entry {entry!r} is not VISITS=RESPONSE "
                "(e.g. 0=holdout:2011-10,2000000=holdout:2011-11)"
            )
        phases.append((int(match["start"]), match["response"]))
    if not phases:
        raise ConfigError(f"{what} = {value!r}: expected at least one VISITS=RESPONSE entry")
    if phases[0][0] != 0:
        raise ConfigError(f"{what} = {value!r}: the first truth must start at visit 0")
    for (before, _), (start, _) in itertools.pairwise(phases):
        if start <= before:
            raise ConfigError(
                f"{what} = {value!r}: visit counts must increase ({start} after {before})"
            )
    return tuple(phases)


def format_schedule(phases: Schedule) -> str:
    """The text form ``0=A,2000000=B`` of a schedule (:func:`parse_schedule` inverts it)."""
    return ",".join(f"{start}={response}" for start, response in phases)


_HOLDOUT = re.compile(r"^(?:customers:(?P<fraction>[0-9.eE+-]+)|time:(?P<date>\d{4}-\d{2}-\d{2}))$")


def _check(predicate: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    return {"check": predicate, "allowed": allowed}


def _holdout_split(text: str) -> bool:
    """``""`` (no holdout), ``customers:F`` with F in (0, 1), or ``time:YYYY-MM-DD``."""
    if text == "":
        return True
    match = _HOLDOUT.match(text)
    if match is None:
        return False
    if match["fraction"] is not None:
        try:
            fraction = float(match["fraction"])
        except ValueError:
            return False
        return 0.0 < fraction < 1.0
    try:
        date.fromisoformat(match["date"])
    except ValueError:
        return False
    return True


def _probabilities(values: tuple[float, ...]) -> bool:
    return (
        len(values) >= 1
        and all(0.0 <= v <= 1.0 for v in values)
        and abs(math.fsum(values) - 1.0) <= 1e-6
    )


@dataclass(frozen=True)
class Columns:
    """Mapping from rlreco's canonical column names to the columns of the transactions file."""

    order_id: str = "InvoiceNo"
    product_id: str = "StockCode"
    product: str = "Description"
    quantity: str = "Quantity"
    order_date: str = "InvoiceDate"
    unit_price: str = "UnitPrice"
    customer_id: str = "CustomerID"
    #: read only when ``states.fields`` uses it
    country: str = "Country"
    #: further categorical columns usable as state fields: canonical name -> file column
    #: (any other key of ``[data.columns]``), read only when ``states.fields`` uses them
    categorical: tuple[tuple[str, str], ...] = ()

    def source_of(self, name: str) -> str | None:
        """File column of a categorical state field (``country`` or a ``categorical`` key)."""
        if name == "country":
            return self.country
        return dict(self.categorical).get(name)


@dataclass(frozen=True)
class DataConfig:
    """Where the transactions are and how to read them."""

    path: Path = DEFAULT_DATA
    encoding: str = "ISO-8859-1"
    date_format: str = field(default="%m/%d/%Y %H:%M", metadata=_check(bool, "a strftime format"))
    #: product codes or shell patterns that are not merchandise: kept for the RFM segmentation
    #: (they are part of what customers paid) but removed from catalogues, tables and truth
    exclude_products: tuple[str, ...] = field(
        default=UCI_NON_PRODUCTS, metadata=_check(all, "non-empty strings")
    )
    columns: Columns = Columns()


@dataclass(frozen=True)
class HoldoutConfig:
    """A part of the data the learner never sees, used as the truth it is judged against.

    ``split``: ``""`` (no holdout), ``customers:F`` (a deterministic fraction F of customers,
    chosen by a hash of the customer id and ``seed``) or ``time:YYYY-MM-DD`` (every transaction
    on or after the date).
    """

    split: str = field(
        default="",
        metadata=_check(_holdout_split, "'', 'customers:F' with F in (0, 1), or 'time:YYYY-MM-DD'"),
    )
    seed: int = field(default=0, metadata=_check(lambda v: v >= 0, "an integer >= 0"))


@dataclass(frozen=True)
class SegmentationConfig:
    """RFM segmentation: clusters per dimension and the score -> segment table."""

    n_clusters: int = field(
        default=4, metadata=_check(lambda v: 1 <= v <= 64, "an integer in [1, 64]")
    )
    #: segment name -> cluster-index scores that map to it; other scores get ``default_segment``
    scores: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("Q2", (0, 1)),
        ("Q3", (2,)),
        ("Q4", (4, 5, 6)),
    )
    default_segment: str = field(default="Q1", metadata=_check(bool, "a non-empty name"))


def _state_fields(fields: tuple[str, ...]) -> bool:
    """Distinct, non-empty field names including ``segment``."""
    return len(set(fields)) == len(fields) and "segment" in fields and all(fields)


@dataclass(frozen=True)
class StatesConfig:
    """State space: the fields whose values make a state, and the month-half split day.

    ``fields``: in id order; ``segment`` (RFM segment, required: catalogues are per segment),
    ``month``, ``half`` (month-half), ``weekday``, ``hour`` (of the order time), or the
    canonical name of a categorical column in ``data.columns`` (``country`` or a name added
    there). ``split_day``: a visit after this day of month is in the second month-half.
    """

    fields: tuple[str, ...] = field(
        default=DEFAULT_STATE_FIELDS,
        metadata=_check(_state_fields, "distinct field names including 'segment'"),
    )
    split_day: int = field(
        default=15, metadata=_check(lambda v: 1 <= v <= 30, "an integer in [1, 30]")
    )

    def columns(self) -> tuple[str, ...]:
        """The fields read from a categorical column of the transactions (not built in)."""
        return tuple(f for f in self.fields if f not in BUILTIN_STATE_FIELDS)


@dataclass(frozen=True, order=True)
class StepSize:
    """How a shown product's value follows its rewards.

    ``alpha`` None is the sample average ``value += (r - value) / reco_count`` (written
    ``1/n``); a number in (0, 1] is a constant step ``value += alpha * (r - value)``, which
    weights recent rewards more and can track a truth that drifts.
    """

    alpha: float | None = None

    @classmethod
    def parse(cls, value: Any, what: str) -> StepSize:
        """``"1/n"``, or a number (or its text) in (0, 1]; else a one-line ConfigError naming
        ``what`` (a config key or a command-line option)."""
        if isinstance(value, StepSize):
            return value
        if isinstance(value, str) and value.strip() == SAMPLE_AVERAGE:
            return cls()
        alpha: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            alpha = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                alpha = float(value)
        if alpha is None or not 0.0 < alpha <= 1.0:
            raise ConfigError(f"{what} = {value!r}: expected '1/n' or a number in (0, 1]")
        return cls(alpha)

    @property
    def is_sample_average(self) -> bool:
        """Whether this is ``1/n``."""
        return self.alpha is None

    @property
    def kernel_step(self) -> float:
        """The kernels' encoding: 0.0 for ``1/n``, else ``alpha``."""
        return 0.0 if self.alpha is None else float(self.alpha)

    def to_config(self) -> str | float:
        """The TOML/JSON value: ``"1/n"`` or the number."""
        return SAMPLE_AVERAGE if self.alpha is None else float(self.alpha)

    def __str__(self) -> str:
        return SAMPLE_AVERAGE if self.alpha is None else f"{self.alpha:g}"


@dataclass(frozen=True)
class PolicyConfig:
    """Slate policy: ``name`` (default ``eps-greedy``, which takes ``epsilon``), the parameter
    ``param`` of the other policies (``decaying`` c, ``softmax`` tau, ``ucb1`` c, ``thompson``
    sigma; absent: the policy's default), the slate size, and the step size of the value
    updates."""

    epsilon: float = field(
        default=0.1, metadata=_check(lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
    )
    slate_size: int = field(default=10, metadata=_check(lambda v: v >= 1, "an integer >= 1"))
    name: PolicyName = "eps-greedy"
    param: float | None = None
    #: ``"1/n"`` (sample average) or a constant step in (0, 1]
    step_size: StepSize = StepSize()


@dataclass(frozen=True)
class RewardConfig:
    """Mean reward of a bought, clicked and ignored product (each draw is N(mean, 1))."""

    buy: float = field(default=5.0, metadata=_check(math.isfinite, "a finite number"))
    click: float = field(default=1.0, metadata=_check(math.isfinite, "a finite number"))
    ignore: float = field(default=-2.0, metadata=_check(math.isfinite, "a finite number"))


def _schedule_entries(entries: tuple[str, ...]) -> bool:
    """Empty, or ``VISITS=RESPONSE`` entries whose visits start at 0 and increase."""
    if not entries:
        return True
    try:
        parse_schedule(entries, "schedule")
    except ConfigError:
        return False
    return True


@dataclass(frozen=True)
class ResponseConfig:
    """Simulated customer response: ``seed``, ``popularity``, ``holdout`` (the run's held-out
    truth) or a path to a truth table; or a drifting truth: ``schedule`` (truths that take
    over at given visits) or ``drift_every`` (a time holdout's monthly truths in order, each
    for that many visits). ``schedule`` wins over ``drift_every``, both over ``model``."""

    model: str = field(
        default="seed", metadata=_check(bool, "seed, popularity, holdout or a Parquet path")
    )
    schedule: tuple[str, ...] = field(
        default=(),
        metadata=_check(
            _schedule_entries,
            "a list of 'VISITS=RESPONSE' whose visit counts start at 0 and increase",
        ),
    )
    drift_every: int = field(default=0, metadata=_check(lambda v: v >= 0, "an integer >= 0"))
    click_probs: tuple[float, ...] = field(
        default=SEED_CLICK_PROBS,
        metadata=_check(_probabilities, "probabilities in [0, 1] summing to 1 within 1e-6"),
    )
    buy_probs: tuple[float, ...] = field(
        default=SEED_BUY_PROBS,
        metadata=_check(_probabilities, "probabilities in [0, 1] summing to 1 within 1e-6"),
    )


@dataclass(frozen=True)
class SimulationConfig:
    """Random seed, state sampling, metric blocks and checkpoints of simulated visits."""

    seed: int = field(default=20111209, metadata=_check(lambda v: v >= 0, "an integer >= 0"))
    state_sampling: StateSampling = "uniform"
    metrics_block: int = field(default=10_000, metadata=_check(lambda v: v >= 1, "an integer >= 1"))
    checkpoint_every: int = field(
        default=5_000_000, metadata=_check(lambda v: v >= 1, "an integer >= 1")
    )
    #: refuse a state space whose tables would need more (estimated before any allocation);
    #: 0 = no limit
    memory_limit_mb: int = field(default=0, metadata=_check(lambda v: v >= 0, "an integer >= 0"))
