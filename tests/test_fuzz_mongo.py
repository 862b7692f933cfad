"""Fuzzing MongoDB documents read back by ``import-mongo`` and ``recommend --uri`` (mongomock).

A run is exported once per layout; each case then edits one stored document (a field removed,
set to a value of another type, renamed to a name that does not decode, the document made
huge or duplicated under another id) and reads the database back: in-process with the
MongoDB readers (whole snapshot, and one state as an online visit reads it), and on a subset
through the CLI. Each case succeeds or is one line (exit code 2); the base run directory is
unchanged and a failed import leaves no run directory.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import mongomock
import pytest
from fuzz_support import cli_outcome, drive, examples, outcome, tally, tree_digest
from helpers import write_transactions
from hypothesis import example, given
from mongo_suite import patch_mongomock
from pymongo.errors import DuplicateKeyError
from typer.testing import CliRunner

import rlreco.io.mongo_connection
from rlreco.app.prepare import prepare
from rlreco.cli import app
from rlreco.config import RunConfig
from rlreco.engine.state_space import StateSpace
from rlreco.io.mongo import CodeIndex, import_snapshot, read_state
from rlreco.io.mongo_layout import SEED_COLLECTIONS, conform_snapshot
from rlreco.io.run_dir import RunDir

runner = CliRunner()
URI = "mongodb://fuzz.invalid:27017"
LAYOUTS = ("seed", "tidy")


#: The client that the patched ``connect`` returns.
CURRENT: dict[str, Any] = {}


def patch_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module of rlreco that imported ``connect`` gets one returning ``CURRENT``'s client
    (the MongoDB sync and online visit modules)."""
    for name in ("rlreco.app.mongo_sync", "rlreco.app.recommend"):
        importlib.import_module(name)
    real = rlreco.io.mongo_connection.connect
    for module in list(sys.modules.values()):
        if module.__name__.startswith("rlreco") and getattr(module, "connect", None) is real:
            monkeypatch.setattr(module, "connect", lambda *a, **k: CURRENT["client"])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared run of 30 transactions (few states: a small database, cheap to read back)."""
    root = tmp_path_factory.mktemp("fuzz-mongo")
    write_transactions(root / "tx.csv", seed=5, n_rows=30)
    prepare(RunConfig(), out=root / "run", data=root / "tx.csv")
    return root / "run"


@pytest.fixture(scope="module")
def exported(small_run: Path) -> Iterator[dict[str, Any]]:
    """One mongomock client per layout holding the small run's export."""
    patch_mongomock()
    clients = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        patch_connect(monkeypatch)
        for layout in LAYOUTS:
            CURRENT["client"] = clients[layout] = mongomock.MongoClient()
            result = runner.invoke(
                app, ["export-mongo", str(small_run), "--uri", URI, "--layout", layout]
            )
            assert result.exit_code == 0, result.output
    yield clients


def documents(client: Any) -> list[tuple[str, Any]]:
    """(collection, _id) of every stored document."""
    db = client["rlRecomendation"]
    return sorted(
        ((name, doc["_id"]) for name in db.list_collection_names() for doc in db[name].find()),
        key=repr,
    )


#: Values of the wrong kind, extremes and oversized ones.
bson_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["", "Q1_January_0_Monday", "1.5", "%", "%2", "%zz"]),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    st.dictionaries(
        st.text(max_size=4).filter(lambda k: "\0" not in k and "." not in k and k[:1] != "$"),
        st.integers(-(2**63), 2**63 - 1),
        max_size=2,
    ),
    st.just(datetime.datetime(2011, 1, 1)),
    st.integers(1, 3000).map(lambda n: {f"C{i}": i for i in range(n)}),  # oversized
)
#: Field names that do not decode (a "%" that starts no escape) or are not stored codes.
bad_name = st.one_of(
    st.sampled_from(["%", "%2", "%zz", "%2e", "a%", "%%25", "unknown", "_v"]),
    # any name a server stores (no ".", "$" first or NUL)
    st.text(min_size=1, max_size=6).filter(
        lambda s: "." not in s and not s.startswith("$") and "\0" not in s
    ),
)


@st.composite
def document_edit(draw: st.DrawFn, docs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An edit of one stored document: which, and what to do to which (nested) field."""
    collection, doc_id = draw(st.sampled_from(docs))
    return {
        "collection": collection,
        "_id": doc_id,
        "op": draw(st.sampled_from(["set", "set", "set", "unset", "rename", "copy", "delete"])),
        "depth": draw(st.integers(0, 1)),
        "pick": draw(st.integers(0, 10**6)),
        "value": draw(bson_value),
        "name": draw(bad_name),
    }


def apply_edit(client: Any, edit: dict[str, Any]) -> tuple[Any, Any]:
    """Apply ``edit``; return (collection, original document) to restore afterwards."""
    coll = client["rlRecomendation"][edit["collection"]]
    original = coll.find_one({"_id": edit["_id"]})
    doc = dict(original)
    node = doc
    nested = next((k for k, v in doc.items() if k != "_id" and isinstance(v, dict)), None)
    if edit["depth"] and nested is not None:
        node = doc[nested] = dict(doc[nested])
    keys = sorted((k for k in node if k != "_id"), key=str)
    key = keys[edit["pick"] % len(keys)] if keys else None
    if edit["op"] == "delete":
        coll.delete_one({"_id": edit["_id"]})
        return coll, original
    if edit["op"] == "copy":
        copy = {**doc, "_id": f"copy-{edit['pick']}"}
        with contextlib.suppress(DuplicateKeyError):  # a unique index refuses the copy
            coll.insert_one(copy)
        return coll, original
    if key is not None and edit["op"] == "unset":
        del node[key]
    elif key is not None and edit["op"] == "rename":
        node[edit["name"]] = node.pop(key)
    elif key is not None:
        node[key] = edit["value"]
    coll.replace_one({"_id": edit["_id"]}, doc)
    return coll, original


def restore(coll: Any, original: Any, edit: dict[str, Any]) -> None:
    if edit["op"] == "copy":
        coll.delete_one({"_id": f"copy-{edit['pick']}"})
    coll.replace_one({"_id": original["_id"]}, original, upsert=True)


def read_back(client: Any, layout: str, space: StateSpace, state: str) -> None:
    """What import-mongo and recommend --uri read, in-process."""
    index = CodeIndex(space.state_index(), space.product_index()) if layout == "seed" else None
    frame, _ = import_snapshot(client, layout=layout, index=index)
    conform_snapshot(frame, "snapshot read from MongoDB")
    conform_snapshot(read_state(client, state, layout=layout, index=index), "state")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fuzz_mongo_documents(
    exported: dict[str, Any],
    small_run: Path,
    layout: str,
) -> None:
    client = exported[layout]
    space = StateSpace.from_columns(RunDir.open(small_run).read_space())
    docs = documents(client)
    first_seed = (
        next(i for n, i in docs if n in SEED_COLLECTIONS.values()) if layout == "seed" else None
    )
    state = str(first_seed) if first_seed else str(space.state_ids[0])

    @examples(500)
    @given(document_edit(docs))
    @example(
        {
            "collection": "rlQuantdic",
            "_id": state,
            "op": "set",
            "depth": 1,
            "pick": 0,
            "value": "12",
            "name": "x",
        }
    )
    @example(
        {
            "collection": "rlValuedic",
            "_id": state,
            "op": "rename",
            "depth": 1,
            "pick": 0,
            "value": 0,
            "name": "%zz",
        }
    )
    @example(
        {
            "collection": "rlQuantdic",
            "_id": state,
            "op": "set",
            "depth": 1,
            "pick": 0,
            "value": None,
            "name": "x",
        }
    )
    @example(
        {
            "collection": "rlRecotrack",
            "_id": state,
            "op": "set",
            "depth": 1,
            "pick": 0,
            "value": 2.5,
            "name": "x",
        }
    )
    def case(edit: dict[str, Any]) -> None:
        if edit["collection"] not in client["rlRecomendation"].list_collection_names():
            edit = {**edit, "collection": docs[0][0], "_id": docs[0][1]}
        tally(f"mongo.{layout}")
        coll, original = apply_edit(client, edit)
        try:
            outcome(lambda: read_back(client, layout, space, state))
        finally:
            restore(coll, original, edit)

    drive(f"mongo.{layout}", case)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fuzz_mongo_cli(
    exported: dict[str, Any],
    small_run: Path,
    layout: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = CURRENT["client"] = exported[layout]
    patch_connect(monkeypatch)
    docs = documents(client)
    out = tmp_path / "imported"
    before = tree_digest(small_run)

    @examples(6)
    @given(document_edit(docs))
    def case(edit: dict[str, Any]) -> None:
        tally(f"mongo.{layout}.cli")
        coll, original = apply_edit(client, edit)
        try:
            result = runner.invoke(
                app,
                [
                    "import-mongo",
                    "--uri",
                    URI,
                    "--run",
                    str(small_run),
                    "--out",
                    str(out),
                    "--layout",
                    layout,
                    "--json",
                ],
            )
            if cli_outcome(result) is not None:
                assert not out.exists()
            shutil.rmtree(out, ignore_errors=True)
            state = str(original["_id"]) if layout == "seed" else str(original.get("state"))
            result = runner.invoke(
                app,
                [
                    "recommend",
                    str(small_run),
                    "--uri",
                    URI,
                    "--layout",
                    layout,
                    "--respond",
                    "none",
                    "--json",
                ]
                + (["--state", state] if "_" in state else []),
            )
            cli_outcome(result)
            assert tree_digest(small_run) == before
        finally:
            restore(coll, original, edit)

    drive(f"mongo.{layout}.cli", case)


@pytest.mark.parametrize("field", ["_v", "episodes"])
def test_tidy_visit_counts_of_the_wrong_type(
    exported: dict[str, Any], small_run: Path, field: str
) -> None:
    """A tidy cell whose ``_v`` or ``episodes`` is null crashed recommend --uri with TypeError
    (found by make fuzz)."""
    client = exported["tidy"]
    cells = client["rlRecomendation"]["cells"]
    original = cells.find_one({})
    cells.update_one({"_id": original["_id"]}, {"$set": {field: None}})
    try:
        message = outcome(lambda: read_state(client, original["state"], layout="tidy"))
    finally:
        cells.replace_one({"_id": original["_id"]}, original)
    assert message is not None and f"{field} = None" in message and "cells" in message


def test_tidy_half_out_of_range(exported: dict[str, Any]) -> None:
    """``half`` = 128 overflowed int8 (OverflowError; found by make fuzz)."""
    client = exported["tidy"]
    cells = client["rlRecomendation"]["cells"]
    original = cells.find_one({})
    cells.update_one({"_id": original["_id"]}, {"$set": {"half": 128}})
    try:
        message = outcome(lambda: import_snapshot(client, layout="tidy"))
    finally:
        cells.replace_one({"_id": original["_id"]}, original)
    assert message is not None and "half = 128" in message


@pytest.mark.parametrize("manifest", [True, {"config": 5}, {"episodes": "3"}])
def test_stored_manifest_of_the_wrong_type(exported: dict[str, Any], manifest: Any) -> None:
    """A stored manifest that is not a document crashed import-mongo with TypeError (found by
    make fuzz)."""
    client = exported["tidy"]
    runs = client["rlRecomendation"]["runs"]
    original = runs.find_one({})
    runs.update_one({"_id": original["_id"]}, {"$set": {"manifest": manifest}})
    try:
        message = outcome(lambda: import_snapshot(client, layout="tidy"))
    finally:
        runs.replace_one({"_id": original["_id"]}, original)
    assert message is not None and "runs document" in message and "manifest" in message
