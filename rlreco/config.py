"""Typed, validated run configuration.

A run is configured by a TOML file (``configs/online_retail.toml``) or by the original design's
JSON file with ``/* */`` comments (``configs/custprof.json``). Both become one frozen
:class:`RunConfig`. Validation happens here, at the edge: unknown keys, wrong types and
out-of-range values raise :class:`~rlreco.errors.ConfigError` with one line naming the key,
the value and what is allowed.

This module is the configuration's entry point: :class:`RunConfig`, how raw TOML and JSON
become one, and (in ``__all__``) the section types and constants of
:mod:`rlreco.config_sections` that a run's configuration is made of.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from rlreco.config_sections import (
    DEFAULT_DATA,
    SAMPLE_AVERAGE,
    SEED_BUY_PROBS,
    SEED_CLICK_PROBS,
    UCI_NON_PRODUCTS,
    Columns,
    DataConfig,
    HoldoutConfig,
    PolicyConfig,
    PolicyName,
    ResponseConfig,
    RewardConfig,
    Schedule,
    SegmentationConfig,
    SimulationConfig,
    StateSampling,
    StatesConfig,
    StepSize,
    format_schedule,
    is_schedule,
    parse_schedule,
)
from rlreco.errors import ConfigError, shown
from rlreco.schema import BUILTIN_STATE_FIELDS, POLICY_PARAMS, policy_param_problem

__all__ = [
    "DEFAULT_DATA",
    "ORIGINAL_KEYS",
    "RESERVED_NAMES",
    "SAMPLE_AVERAGE",
    "SEED_BUY_PROBS",
    "SEED_CLICK_PROBS",
    "UCI_NON_PRODUCTS",
    "Columns",
    "DataConfig",
    "HoldoutConfig",
    "PolicyConfig",
    "PolicyName",
    "ResponseConfig",
    "RewardConfig",
    "RunConfig",
    "Schedule",
    "SegmentationConfig",
    "SimulationConfig",
    "StateSampling",
    "StatesConfig",
    "StepSize",
    "config_from_dict",
    "format_schedule",
    "is_schedule",
    "load_config",
    "parse_schedule",
]


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, validated."""

    data: DataConfig = field(default_factory=DataConfig)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    states: StatesConfig = field(default_factory=StatesConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    response: ResponseConfig = field(default_factory=ResponseConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def replace(self, **changes: Any) -> RunConfig:
        """Return a copy with dotted keys changed and validated, e.g. ``policy.epsilon=0.2``."""
        raw = self.to_dict()
        for dotted, value in changes.items():
            section, _, key = dotted.replace("__", ".").partition(".")
            raw.setdefault(section, {})[key] = value
        return config_from_dict(raw, source="<override>")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-compatible dict (paths as strings, tuples as lists)."""
        raw: dict[str, Any] = _plain(dataclasses.asdict(self))
        raw["policy"]["step_size"] = self.policy.step_size.to_config()
        return raw

    def segment_of_score(self) -> dict[int, str]:
        """Explicit score -> segment table for every possible score."""
        k = self.segmentation.n_clusters
        table = {score: self.segmentation.default_segment for score in range(3 * (k - 1) + 1)}
        for name, scores in self.segmentation.scores:
            for score in scores:
                table[score] = name
        return table


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "scores" in obj and isinstance(obj["scores"], (list, tuple)):
            obj = dict(obj)
            obj["scores"] = {name: list(s) for name, s in obj["scores"]}
        if "categorical" in obj and isinstance(obj["categorical"], (list, tuple)):
            # extra categorical columns are plain keys of [data.columns], as written
            extra = dict(obj.pop("categorical"))
            obj = {**obj, **extra}
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if tp is Path:
        return "a path string"
    if origin is tuple:
        return "a list of strings" if get_args(tp)[0] is str else "a list of numbers"
    return str(tp)


def _coerce(key: str, tp: Any, value: Any, base: Path | None) -> Any:
    """Convert a raw TOML/JSON value to the field type or raise a one-line ConfigError."""

    def bad(allowed: str) -> ConfigError:
        return ConfigError(f"key {shown(key)} = {shown(value, 60)}: expected {allowed}")

    origin = get_origin(tp)
    if origin is types.UnionType:  # X | None: None (absent) or an X
        if value is None:
            return None
        (tp,) = (a for a in get_args(tp) if a is not type(None))
        return _coerce(key, tp, value, base)
    if origin is Literal:
        if value not in get_args(tp):
            raise bad(_type_name(tp))
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise bad("a path string")
        path = Path(value).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return path
    if origin is tuple and get_args(tp) == (str, ...):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if origin is tuple and get_args(tp) == (float, ...):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise bad("a list of numbers")
        return tuple(float(v) for v in value)
    raise bad(_type_name(tp))  # pragma: no cover - every field type is handled above


def _scores(key: str, value: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str)
        and isinstance(s, (list, tuple))
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in s)
        for name, s in value.items()
    ):
        raise ConfigError(
            f"key {shown(key)} = {shown(value, 60)}: expected a table of segment name = "
            "[scores >= 0]"
        )
    seen: dict[int, str] = {}
    for name, s in value.items():
        for i in s:
            if i in seen:
                raise ConfigError(
                    f"key {shown(key)} = {shown(value, 60)}: score {i} is mapped to both "
                    f"{shown(seen[i])} and {shown(name)}"
                )
            seen[i] = name
    return tuple((name, tuple(int(i) for i in s)) for name, s in value.items())


#: Column names of run-directory tables and MongoDB documents: no state field may take them.
RESERVED_NAMES = frozenset(
    (
        "state_id", "state", "product_id", "product_code", "description", "value", "reward",
        "count", "reco_count", "weight", "run_id", "episodes", "updated_at", "truth",
        "categorical",
    )
)  # fmt: skip
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _categorical_columns(raw: Mapping[str, Any], prefix: str, known: set[str]) -> dict[str, Any]:
    """``[data.columns]`` with its extra keys (categorical columns) moved to ``categorical``."""
    extra = []
    for name, value in raw.items():
        if name in known:
            continue
        key = f"{prefix}.{name}"
        if not _FIELD_NAME.match(name) or name in RESERVED_NAMES or name in BUILTIN_STATE_FIELDS:
            raise ConfigError(
                f"key '{key}' = {value!r}: a categorical column needs a name of letters, digits "
                "and '_' (starting with a letter) that is not a built-in state field or "
                f"reserved ({', '.join(sorted(RESERVED_NAMES | set(BUILTIN_STATE_FIELDS)))})"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(f"key '{key}' = {value!r}: expected a column name")
        extra.append((name, value))
    if not extra:
        return dict(raw)
    return {**{k: v for k, v in raw.items() if k in known}, "categorical": tuple(extra)}


def _check_state_fields(config: RunConfig) -> None:
    """Every state field is built in or a categorical column of ``data.columns``."""
    columns = config.data.columns
    allowed = [*BUILTIN_STATE_FIELDS, "country", *(n for n, _ in columns.categorical)]
    for name in config.states.fields:
        if name not in allowed:
            raise ConfigError(
                f"key 'states.fields' = {list(config.states.fields)!r}: unknown state field "
                f"{name!r}; allowed: {', '.join(allowed)} (add a categorical column as "
                '[data.columns] NAME = "Column")'
            )


def _check_policy(policy: PolicyConfig) -> None:
    """``policy.param`` fits ``policy.name`` (eps-greedy takes ``policy.epsilon`` instead)."""
    if policy.param is None:
        return
    if policy.name == "eps-greedy":
        raise ConfigError(
            f"key 'policy.param' = {policy.param!r}: eps-greedy takes 'policy.epsilon'; "
            f"'policy.param' is the parameter of {', '.join(list(POLICY_PARAMS)[1:])}"
        )
    problem = policy_param_problem(policy.name, policy.param)
    if problem is not None:
        raise ConfigError(
            f"key 'policy.param' = {policy.param!r}: expected {problem} "
            f"({policy.name} {POLICY_PARAMS[policy.name]})"
        )


def _build(cls: type[Any], raw: Any, prefix: str, base: Path | None) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"key {shown(prefix)} = {shown(raw, 60)}: expected a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is Columns:
        raw = _categorical_columns(raw, prefix, set(fields))
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = shown(f"{prefix}.{unknown[0]}" if prefix else unknown[0])
        raise ConfigError(f"unknown key {where}: allowed keys are {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if tp is StepSize:
            kwargs[name] = StepSize.parse(value, f"key '{key}'")
            continue
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key, base)
            continue
        if name == "scores" and cls is SegmentationConfig:
            kwargs[name] = _scores(key, value)
            continue
        if name == "categorical" and cls is Columns:
            kwargs[name] = value
            continue
        converted = _coerce(key, tp, value, base)
        meta = fields[name].metadata
        if "check" in meta and not meta["check"](converted):
            raise ConfigError(f"key {shown(key)} = {shown(value, 60)}: expected {meta['allowed']}")
        kwargs[name] = converted
    return cls(**kwargs)


def config_from_dict(
    raw: Mapping[str, Any], *, source: str = "<dict>", base: Path | None = None
) -> RunConfig:
    """Validate a nested mapping (as parsed from TOML) into a :class:`RunConfig`.

    Parameters
    ----------
    raw : mapping
        Sections ``data``, ``segmentation``, ``states``, ``policy``, ``rewards``, ``response``
        and ``simulation``; every key optional.
    source : str
        File name used in error messages.
    base : Path, optional
        Directory that relative data paths are resolved against.
    """
    try:
        cfg: RunConfig = _build(RunConfig, _state_alias(raw), "", base)
        _check_state_fields(cfg)
        _check_policy(cfg.policy)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def _state_alias(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept ``[state]`` as another spelling of the ``[states]`` section."""
    if "state" not in raw:
        return raw
    alias, states = raw["state"], raw.get("states", {})
    if not isinstance(alias, Mapping) or not isinstance(states, Mapping):
        return raw  # reported by _build as a non-table
    both = sorted(set(alias) & set(states))
    if both:
        raise ConfigError(
            f"key 'state.{both[0]}' is also given as 'states.{both[0]}'; "
            "[state] and [states] are the same section"
        )
    merged = {k: v for k, v in raw.items() if k != "state"}
    merged["states"] = {**states, **alias}
    return merged


_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)

#: original JSON key -> (section, key) of RunConfig
ORIGINAL_KEYS: dict[str, tuple[str, ...]] = {
    "inputData": ("data", "path"),
    "order_id": ("data", "columns", "order_id"),
    "product_id": ("data", "columns", "product_id"),
    "product": ("data", "columns", "product"),
    "prod_qnty": ("data", "columns", "quantity"),
    "order_date": ("data", "columns", "order_date"),
    "unit_price": ("data", "columns", "unit_price"),
    "customer_id": ("data", "columns", "customer_id"),
    "nclust": ("segmentation", "n_clusters"),
    "monthPer": ("states", "split_day"),
    "epsilon": ("policy", "epsilon"),
    "nProducts": ("policy", "slate_size"),
    "buyReward": ("rewards", "buy"),
    "clickReward": ("rewards", "click"),
    "ignore": ("rewards", "ignore"),
}


def _original_to_nested(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    # the original recommends every stock code, postage and fees included
    nested: dict[str, Any] = {"data": {"exclude_products": []}}
    for key, value in raw.items():
        if key not in ORIGINAL_KEYS:
            raise ConfigError(
                f"{source}: unknown key {shown(key)}: allowed keys are {', '.join(ORIGINAL_KEYS)}"
            )
        node = nested
        *parents, leaf = ORIGINAL_KEYS[key]
        for p in parents:
            node = node.setdefault(p, {})
        # the original stores some numbers as strings ("4", "0.1")
        if isinstance(value, str) and parents[0] != "data":
            with contextlib.suppress(ValueError):
                value = json.loads(value)  # noqa: PLW2901
        node[leaf] = value
    return nested


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load a TOML (``.toml``) or original-design JSON (``.json``) config; defaults if None.

    Relative data paths are resolved against the config file's directory.
    """
    if path is None:
        return RunConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    base = path.resolve().parent
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(_COMMENT.sub("", text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object at the top level")
        return config_from_dict(_original_to_nested(raw, str(path)), source=str(path), base=base)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(raw, source=str(path), base=base)
