"""Run directories: a self-describing folder per run, written atomically.

Layout::

    RUN_DIR/
      manifest.json                       schema version, run id, config, seed, episodes,
                                          RNG state, package versions, data file hash, files
      state_space/states.parquet          state_id, state, one column per state field, weight
      state_space/products.parquet        product_id, product_code, description
      state_space/catalogues.parquet      segment, product_id
      snapshots/episodes-<N>.parquet      long-form tables after N visits (one row per known
                                          cell), in row groups of at most ROW_GROUP cells
      metrics.parquet                     per-block simulation metrics (after the first simulate)
      policy_state/episodes-<N>.parquet   per-state state of the run's policy after N visits
                                          (e.g. decaying's visits per state), when it keeps any

Every file is written to a temporary name in the same folder and renamed into place; the
manifest is written last and is the commit point, so a crash leaves the previous consistent
run (``metrics.parquet``, which keeps its name, is renamed into place after the manifest; see
:meth:`RunDir.commit`). ``prepare`` builds the whole folder under a temporary name and renames
it. Tables and their checks: :mod:`rlreco.io.parquet_tables`, :mod:`rlreco.io.run_dir_checks`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlreco.errors import SnapshotError, shown
from rlreco.io.atomic_files import staged_directory, write_json
from rlreco.io.parquet_tables import (
    SCHEMA_VERSION,
    Columns,
    Snapshot,
    iter_snapshot,
    read_policy_state,
    read_table,
    write_policy_state,
    write_snapshot,
    write_table,
)
from rlreco.io.run_dir_checks import check_manifest, check_space
from rlreco.schema import DEFAULT_STATE_FIELDS

MANIFEST = "manifest.json"
INITIAL_VISITS = 0
#: The metrics file, and the start of the pending name a commit writes it under first.
METRICS = "metrics.parquet"
PENDING_METRICS_PREFIX = ".metrics-"


def pending_metrics_name(visits: int) -> str:
    """Name the metrics of the commit after ``visits`` visits wait under until it is done."""
    return f"{PENDING_METRICS_PREFIX}{visits:015d}.parquet"


def policy_state_name(visits: int) -> str:
    """File name of the policy state saved after ``visits`` visits."""
    return f"policy_state/episodes-{visits:015d}.parquet"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot_name(visits: int) -> str:
    """File name of the snapshot taken after ``visits`` visits (``episodes-<N>``: the run
    directory format keeps its file names and manifest keys)."""
    return f"snapshots/episodes-{visits:015d}.parquet"


class RunDir:
    """An existing, validated run directory.

    Use :meth:`create` to write a new one and :meth:`open` to load one.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        manifest: dict[str, Any],
        space: Mapping[str, Columns],
        snapshot: Snapshot,
        extra: Sequence[Callable[[Path], None]] = (),
        force: bool = False,
    ) -> RunDir:
        """Write a new run directory atomically (built under a temporary name, then renamed).

        Each of ``extra`` is called with the staging folder to write more files into it (e.g.
        the held-out truth tables), before the manifest.

        Raises
        ------
        SnapshotError
            If ``path`` exists and ``force`` is false.
        """
        path = Path(path)
        with staged_directory(path, force=force) as tmp:
            for kind in ("states", "products", "catalogues"):
                write_table(tmp / "state_space" / f"{kind}.parquet", kind, space[kind])
            name = snapshot_name(INITIAL_VISITS)
            write_snapshot(tmp / name, snapshot)
            for write in extra:
                write(tmp)
            manifest = {
                **manifest,
                "schema_version": SCHEMA_VERSION,
                "episodes": INITIAL_VISITS,
                "snapshot": name,
                "initial_snapshot": name,
                "metrics": None,
                "rng_state": None,
                "policy_state": None,
            }
            write_json(tmp / MANIFEST, manifest)
        return cls(path, manifest)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open and validate a run directory's manifest."""
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise SnapshotError(f"{path}: run directory not found (create one with rlreco prepare)")
        if not mpath.is_file():
            raise SnapshotError(f"{path}: not a run directory ({MANIFEST} missing)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{mpath}: corrupt manifest ({exc})") from None
        if not isinstance(manifest, dict):
            raise SnapshotError(f"{mpath}: corrupt manifest (not a JSON object)")
        required = (
            "schema_version",
            "run_id",
            "config",
            "episodes",
            "snapshot",
            "initial_snapshot",
        )
        missing = [k for k in required if k not in manifest]
        if missing:
            raise SnapshotError(f"{mpath}: manifest lacks {', '.join(missing)}")
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise SnapshotError(
                f"{mpath}: schema version {shown(manifest['schema_version'])}, "
                f"expected {SCHEMA_VERSION}"
            )
        check_manifest(mpath, manifest)
        return cls(path, manifest)

    @property
    def visits(self) -> int:
        """Visits simulated so far (the manifest's ``episodes``)."""
        return int(self.manifest["episodes"])

    def read_space(self) -> dict[str, dict[str, np.ndarray]]:
        """Columns of the states, products and catalogues tables, checked against each other.

        Raises
        ------
        SnapshotError
            A file is missing or corrupt, or the tables disagree (ids not 0..n-1, a state id
            that is not its components, a catalogue product or segment that does not exist).
        """
        folder = self.path / "state_space"
        space = {
            kind: read_table(folder / f"{kind}.parquet", kind)
            for kind in ("states", "products", "catalogues")
        }
        check_space(folder, space)
        return space

    @property
    def fields(self) -> tuple[str, ...]:
        """The run's state fields (``state_fields`` of the manifest; the default fields for a
        run directory written before fields were configurable)."""
        fields = self.manifest.get("state_fields")
        if fields is None:
            return DEFAULT_STATE_FIELDS
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise SnapshotError(f"{self.path / MANIFEST}: corrupt 'state_fields' entry")
        return tuple(fields)

    def read_snapshot(self, which: str = "latest") -> dict[str, np.ndarray]:
        """Columns of the latest (or ``"initial"``) snapshot, all at once."""
        key = "initial_snapshot" if which == "initial" else "snapshot"
        return read_table(self.path / self.manifest[key], "snapshot")

    def iter_snapshot(
        self, which: str = "latest", columns: Sequence[str] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Row groups of the latest (or ``"initial"``) snapshot, one at a time."""
        key = "initial_snapshot" if which == "initial" else "snapshot"
        return iter_snapshot(self.path / self.manifest[key], columns)

    def truths(self) -> list[dict[str, Any]]:
        """The held-out truths of a run prepared with a holdout (``[]`` otherwise), in order:
        ``name``, ``file`` (relative path of the truth table) and ``rows``."""
        holdout = self.manifest.get("holdout") or {}
        truths = holdout.get("truths", []) if isinstance(holdout, dict) else []
        if not isinstance(truths, list) or not all(
            isinstance(t, dict) and isinstance(t.get(key), str)
            for t in truths
            for key in ("name", "file")
        ):
            raise SnapshotError(f"{self.path / MANIFEST}: corrupt 'holdout.truths' entry")
        return truths

    def truth_path(self, name: str) -> Path:
        """Path of the held-out truth ``name``.

        Raises
        ------
        SnapshotError
            The run has no held-out truth of that name.
        """
        truths = self.truths()
        for truth in truths:
            if truth["name"] == name:
                return self.path / truth["file"]
        if not truths:
            raise SnapshotError(
                f"{self.path}: prepared without a holdout, so it has no held-out truth "
                "(rlreco prepare --holdout customers:F or time:YYYY-MM-DD)"
            )
        raise SnapshotError(
            f"{self.path}: no held-out truth {name!r}; it has "
            + ", ".join(repr(t["name"]) for t in truths)
        )

    def read_state_weights(self, name: str) -> np.ndarray:
        """Held-out rows per state of the truth ``name``, shape (n_states,)."""
        self.truth_path(name)
        columns = read_table(self.path / "holdout" / "state_weights.parquet", "state_weights")
        n_states = int(self.manifest["prepare"]["states_total"])
        mine = columns["truth"] == name
        state = columns["state_id"][mine].astype(np.int64)
        if state.size and (state.min() < 0 or state.max() >= n_states):
            raise SnapshotError(f"{self.path}: holdout/state_weights.parquet: bad state_id")
        weight = np.zeros(n_states)
        weight[state] = columns["weight"][mine]
        return weight

    def read_policy_state(self, policy: str) -> dict[str, np.ndarray]:
        """The per-state state ``policy`` resumes from: ``{}`` when the run keeps none, and
        also when the saved state belongs to another policy (it has to start afresh; the caller
        checks that it may)."""
        entry = self.manifest.get("policy_state")
        if not entry:
            return {}
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise SnapshotError(f"{self.path / MANIFEST}: corrupt 'policy_state' entry")
        if entry.get("policy") != policy:
            return {}
        return read_policy_state(self.path / entry["file"], policy)

    def metrics_path(self) -> Path | None:
        """Where the committed metrics are: the manifest's pending metrics while a commit's
        last rename is still to happen (see :meth:`commit`), else ``metrics``; None before the
        first simulation."""
        pending = self.manifest.get("metrics_pending")
        if isinstance(pending, str) and (self.path / pending).is_file():
            return self.path / pending
        name = self.manifest.get("metrics")
        return self.path / name if name else None

    def read_metrics(self) -> dict[str, np.ndarray] | None:
        """Per-block metrics columns, or None before the first simulation."""
        path = self.metrics_path()
        return read_table(path, "metrics") if path is not None else None

    def _settle_metrics(self) -> None:
        """Finish the last commit's metrics rename if a crash stopped it, and remove the
        pending metrics of commits that never reached their manifest."""
        pending = self.manifest.get("metrics_pending")
        if isinstance(pending, str) and (self.path / pending).is_file():
            os.replace(self.path / pending, self.path / METRICS)
        for stale in self.path.glob(f"{PENDING_METRICS_PREFIX}*.parquet"):
            stale.unlink(missing_ok=True)

    def commit(
        self,
        *,
        visits: int,
        snapshot: Snapshot,
        metrics: Columns | None,
        updates: Mapping[str, Any],
        policy_state: tuple[str, Columns] | None = None,
    ) -> None:
        """Write a new snapshot, metrics and policy state, then the manifest (the commit point).

        ``metrics=None`` keeps the current metrics (e.g. after an online visit, which is not part
        of a simulated block). ``policy_state`` is (policy name, per-state arrays) after
        ``visits`` visits, saved under a name of its own (no arrays: the run keeps none);
        None drops any saved policy state. The previous snapshot and policy state are removed
        only after the new manifest is in place; the initial snapshot is always kept.

        Metrics keep one name (``metrics.parquet``), so they are written under a pending name
        that the new manifest records as ``metrics_pending`` and renamed into place only after
        it: a crash before the manifest leaves the old run whole, one after it leaves the new
        metrics under the pending name, where :meth:`read_metrics` finds them and the next
        commit renames them.
        """
        self._settle_metrics()
        name = snapshot_name(visits)
        previous = self.manifest["snapshot"]
        previous_state = self.manifest.get("policy_state")
        state_entry = None
        if policy_state is not None and policy_state[1]:
            state_entry = {"policy": policy_state[0], "file": policy_state_name(visits)}
        pending = pending_metrics_name(visits) if metrics is not None else None
        manifest = {
            **self.manifest,
            **updates,
            "episodes": visits,
            "snapshot": name,
            "metrics": METRICS if metrics is not None else self.manifest.get("metrics"),
            "metrics_pending": pending,
            "policy_state": state_entry,
        }
        old_file = previous_state.get("file") if isinstance(previous_state, dict) else None
        try:
            write_snapshot(self.path / name, snapshot)
            if policy_state is not None and state_entry is not None:
                write_policy_state(self.path / state_entry["file"], *policy_state)
            if metrics is not None and pending is not None:
                write_table(self.path / pending, "metrics", metrics)
            write_json(self.path / MANIFEST, manifest)
        except BaseException:
            # Not committed: remove the new files; the ones the manifest names are untouched.
            if name not in (previous, self.manifest["initial_snapshot"]):
                (self.path / name).unlink(missing_ok=True)
            if state_entry is not None and state_entry["file"] != old_file:
                (self.path / state_entry["file"]).unlink(missing_ok=True)
            if pending is not None:
                (self.path / pending).unlink(missing_ok=True)
            raise
        self.manifest = manifest
        if pending is not None:
            os.replace(self.path / pending, self.path / METRICS)
        if previous not in (name, manifest["initial_snapshot"]):
            (self.path / previous).unlink(missing_ok=True)
        if isinstance(old_file, str) and (state_entry is None or old_file != state_entry["file"]):
            (self.path / old_file).unlink(missing_ok=True)

    def derive(
        self,
        path: str | Path,
        *,
        snapshot: Snapshot,
        updates: Mapping[str, Any],
        force: bool = False,
    ) -> RunDir:
        """Write a new run directory with this run's state space and ``snapshot`` as its tables.

        The state space files are copied byte for byte and the manifest is this one's with
        ``updates`` applied (``episodes`` among them, default this run's). With 0 visits the
        snapshot is also the new run's initial snapshot; otherwise this run's initial snapshot
        is copied too. Metrics are copied when the visits are this run's (they count exactly
        those visits) and dropped otherwise. Built under a temporary name and renamed, like
        :meth:`create`.

        Raises
        ------
        SnapshotError
            If ``path`` exists and ``force`` is false, or ``path`` is this run directory.
        """
        path = Path(path)
        if path.resolve() == self.path.resolve():
            raise SnapshotError(f"{path}: is the run directory being derived from; choose another")
        manifest = {**self.manifest, **updates}
        visits = int(manifest["episodes"])
        name = snapshot_name(visits)
        same = visits == self.visits
        metrics_from = self.metrics_path() if same else None
        metrics = METRICS if metrics_from is not None else None
        state = self.manifest.get("policy_state") if same else None
        with staged_directory(path, force=force) as tmp:
            shutil.copytree(self.path / "state_space", tmp / "state_space")
            initial = name
            if visits != INITIAL_VISITS:
                initial = self.manifest["initial_snapshot"]
                (tmp / initial).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / initial, tmp / initial)
            if metrics_from is not None:
                shutil.copyfile(metrics_from, tmp / METRICS)
            if state:
                (tmp / state["file"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / state["file"], tmp / state["file"])
            write_snapshot(tmp / name, snapshot)
            manifest.update(
                episodes=visits,
                snapshot=name,
                initial_snapshot=initial,
                metrics=metrics,
                metrics_pending=None,
                policy_state=state,
            )
            write_json(tmp / MANIFEST, manifest)
        return type(self)(path, manifest)
