"""Fuzzing the run config: TOML files and the original design's JSON (``configs/custprof.json``).

Each case loads into a :class:`~rlreco.config.RunConfig` or is one
:class:`~rlreco.errors.ConfigError` line; through ``rlreco prepare --config``, exit 0 or 2.
"""

from __future__ import annotations

import json
import math
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from fuzz_support import cli_outcome, drive, examples, mutated, outcome, tally, unchanged
from helpers import write_transactions
from hypothesis import example, given
from typer.testing import CliRunner

from rlreco.cli import app
from rlreco.config import ORIGINAL_KEYS, RunConfig, load_config

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@cache
def base_toml() -> bytes:
    return (REPO / "configs" / "online_retail.toml").read_bytes()


@cache
def base_json() -> bytes:
    return (REPO / "configs" / "custprof.json").read_bytes()


def load(tmp: Path, suffix: str, data: bytes) -> str | None:
    path = tmp / f"run{suffix}"
    path.write_bytes(data)
    with unchanged(tmp):
        message = outcome(lambda: load_config(path))
    if message is not None:
        assert str(path) in message, message
    return message


#: Scalars of every kind TOML and JSON can hold, extremes included.
scalar = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["", "seed", "popularity", "uniform", "%", "%Q", "utf-8", "rot13", "0.1"]),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)

#: The config's sections and keys, from the defaults.
SCHEMA: dict[str, list[str]] = {
    section: list(keys) for section, keys in RunConfig().to_dict().items()
}


@st.composite
def config_dict(draw: st.DrawFn) -> dict[str, Any]:
    """Known sections and keys (sometimes an unknown one) with values of any type."""
    raw: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(list(SCHEMA)), max_size=4, unique=True)):
        keys = draw(st.lists(st.sampled_from(SCHEMA[section]), max_size=3, unique=True))
        raw[section] = {key: draw(value) for key in keys}
        if draw(st.integers(0, 15)) == 0:
            raw[section][draw(st.text(max_size=5))] = draw(scalar)
    if draw(st.integers(0, 15)) == 0:
        raw[draw(st.text(max_size=5))] = draw(value)
    return raw


def toml_value(v: Any) -> str:
    """TOML text of a value (inline tables for mappings)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(raw: dict[str, Any]) -> bytes:
    lines = []
    for section, body in raw.items():
        if isinstance(body, dict):
            lines.append(f"[{json.dumps(section)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
        else:
            lines.insert(0, f"{json.dumps(section)} = {toml_value(body)}")
    return "\n".join(lines).encode()


@st.composite
def original_json(draw: st.DrawFn) -> bytes:
    """The original's flat JSON: its keys (numbers sometimes as strings), with comments."""
    keys = draw(st.lists(st.sampled_from([*ORIGINAL_KEYS, "extra"]), max_size=8, unique=True))
    raw = {k: draw(st.one_of(value, scalar.map(str))) for k in keys}
    text = json.dumps(raw, indent=1)
    if draw(st.booleans()):
        text = "/* comment */\n" + text.replace(",\n", ", /* * / */\n", 1)
    return text.encode()


def test_fuzz_toml_bytes(tmp_path: Path) -> None:
    @examples(200)
    @given(st.one_of(st.binary(max_size=512), mutated(base_toml())))
    @example(b"\xff\xfe[data]")
    @example(b"[policy]\nepsilon = nan\n")
    def case(data: bytes) -> None:
        tally("config.toml")
        load(tmp_path, ".toml", data)

    drive("config.toml", case, share=0.5)


def test_fuzz_toml_values(tmp_path: Path) -> None:
    @examples(300)
    @given(config_dict())
    @example({"simulation": {"seed": 2**63 - 1, "metrics_block": 2**63 - 1}})
    @example({"policy": {"slate_size": 2**63 - 1}})
    @example({"data": {"encoding": "rot13"}})
    def case(raw: dict[str, Any]) -> None:
        tally("config.toml")
        load(tmp_path, ".toml", toml_text(raw))

    drive("config.toml", case, share=0.5)


def test_fuzz_json_bytes(tmp_path: Path) -> None:
    @examples(200)
    @given(st.one_of(st.binary(max_size=512), mutated(base_json())))
    @example(b"/* unterminated")
    @example(b'{"nclust": 1e999}')
    def case(data: bytes) -> None:
        tally("config.json")
        load(tmp_path, ".json", data)

    drive("config.json", case, share=0.5)


def test_fuzz_json_values(tmp_path: Path) -> None:
    @examples(300)
    @given(original_json())
    @example(b'{"nclust": "NaN"}')
    @example(b'{"nProducts": 100000000000000000000000}')
    @example(b'{"epsilon": "[1"}')
    def case(data: bytes) -> None:
        tally("config.json")
        load(tmp_path, ".json", data)

    drive("config.json", case, share=0.5)


def test_fuzz_config_prepare(tmp_path: Path) -> None:
    """The CLI on a subset: prepare with a fuzzed config (its data path set to a small CSV)."""
    data = tmp_path / "tx.csv"
    write_transactions(data, seed=1, n_rows=60)

    @examples(8)
    @given(
        st.one_of(
            config_dict().map(lambda raw: (".toml", toml_text(raw))),
            original_json().map(lambda text: (".json", text)),
        )
    )
    def case(config: tuple[str, bytes]) -> None:
        tally("config.cli")
        suffix, text = config
        path = tmp_path / f"run{suffix}"
        path.write_bytes(text)
        out = tmp_path / "run"
        result = runner.invoke(
            app, ["prepare", "--config", str(path), "--data", str(data), "--out", str(out)]
        )
        if cli_outcome(result) is not None:
            assert not out.exists()
        shutil.rmtree(out, ignore_errors=True)

    drive("config.cli", case)
