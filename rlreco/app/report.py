"""What the commands show a person: rich tables, progress bars, and one-object JSON.

The CLI parses options and calls the application layer; this module turns the application's
results into terminal output (stdout for results, stderr for progress and failures).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rlreco.errors import one_line
from rlreco.schema import POLICY_PARAMS

# wide enough for the summary tables when output goes to a file or a pipe
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, its ``episodes`` keys also under their ``visits`` names."""
    sys.stdout.write(json.dumps(with_visits(obj), sort_keys=True) + "\n")


def with_visits(obj: Any) -> Any:
    """A JSON document with every key that says ``episodes``, at any depth, also under the
    name that says ``visits`` (``episodes_total`` as ``visits_total``), same value.

    ``visits`` is the word; the ``episodes`` keys stay for scripts written against them. A
    key already present under the ``visits`` name is left as it is.
    """
    if isinstance(obj, list):
        return [with_visits(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: with_visits(v) for k, v in obj.items()}
    for key, value in list(out.items()):
        if isinstance(key, str) and "episodes" in key:
            out.setdefault(key.replace("episodes", "visits"), value)
    return out


def print_pairs(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column rich table."""
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    console.print(table)


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr (the message is printed literally, never as markup)."""
    err_console.print(
        f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True
    )


def fmt(value: float | None, spec: str = ",.4f") -> str:
    """Format a number, or "n/a" for None/NaN."""
    if value is None or math.isnan(value):
        return "n/a"
    return format(value, spec)


def progress_bar() -> Progress:
    """A rich progress bar on stderr: description, bar, done/total, rate field, times."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )


def interactive(as_json: bool) -> bool:
    """Whether to draw progress bars: a terminal on stderr and no ``--json``."""
    return not as_json and sys.stderr.isatty()


@contextlib.contextmanager
def visit_progress(
    total: int, *, enabled: bool, label: str = "visits"
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over visits with visits/s; yields an ``update(done)`` callback."""
    if not enabled:
        yield lambda done: None
        return
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(label, total=total, rate="")

        def update(done: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, rate=f"{rate:,.0f} visits/s")

        yield update


@contextlib.contextmanager
def sweep_progress(*, enabled: bool) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar across sweep cells with visits/s.

    The bar (and the thread that redraws it) starts at the first update, which the sweep sends
    once its worker processes exist, and stops once every cell is done: before and after the
    cells, the sweep can fork processes (workers, plots) from a process without threads.
    """
    if not enabled:
        yield lambda progress: None
        return
    with contextlib.ExitStack() as stack:
        shown: list[tuple[Progress, TaskID]] = []

        def update(progress: Any) -> None:
            if not shown:
                bar = stack.enter_context(progress_bar())
                shown.append((bar, bar.add_task("cells", total=None, rate="")))
            bar, task = shown[0]
            bar.update(
                task,
                total=progress.cells_total,
                completed=progress.cells_done,
                rate=f"{progress.visits_per_second:,.0f} visits/s"
                + (f", {progress.cells_failed} failed" if progress.cells_failed else ""),
            )
            if progress.cells_done >= progress.cells_total:
                # rich's stop() only signals its redraw thread: wait for it to end
                redraw = getattr(bar.live, "_refresh_thread", None)
                bar.stop()
                if redraw is not None:
                    redraw.join()

        yield update


def show_prepare(summary: Any, *, as_json: bool) -> None:
    """``rlreco prepare``: what was read, segmented and built."""
    if as_json:
        print_json(summary.to_dict())
        return
    segs = ", ".join(f"{k} {v:,}" for k, v in summary.customers_per_segment.items())
    print_pairs(
        f"rlreco prepare -> {summary.run_dir}",
        [
            ("data", summary.data),
            ("rows read", f"{summary.rows_read:,}"),
            ("rows without customer (dropped)", f"{summary.rows_without_customer:,}"),
            ("customers", f"{summary.customers:,}"),
            ("customers per segment", segs),
            ("products", f"{summary.products:,}"),
            (
                "states with history / total",
                f"{summary.states_with_history:,} / {summary.states_total:,}",
            ),
            ("known (state, product) pairs", f"{summary.known_pairs:,}"),
            (
                "products per state min / median / max",
                f"{summary.products_per_state_min:,} / {summary.products_per_state_median:,.0f}"
                f" / {summary.products_per_state_max:,}",
            ),
            ("products excluded (not merchandise)", f"{summary.products_excluded:,}"),
            *_holdout_rows(summary.holdout),
            ("wall time", f"{summary.seconds:.2f} s"),
        ],
    )


def _holdout_rows(holdout: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The split's two sides and its truths, as table rows."""
    if not holdout:
        return []
    rows = [("holdout", f"{holdout['split']} (seed {holdout['seed']})")]
    for key in ("rows", "customers", "products", "states"):
        train, held = holdout["training"][key], holdout["held_out"][key]
        rows.append((f"{key}: training / held out", f"{train:,} / {held:,}"))
    names = ", ".join(t["name"] for t in holdout["truths"])
    rows.append(("held-out truths", names))
    return rows


def show_warmup(warmup: Any) -> None:
    """The kernels' compile time, on stderr, when this run compiled them (first run only)."""
    if warmup.compiled:
        err_console.print(
            f"compiling kernels, first run only: {warmup.seconds:.1f} s", highlight=False
        )


def show_simulation(summary: Any, run_dir: Any, *, as_json: bool) -> None:
    """``rlreco simulate``: visits, speed and rates of the call."""
    if as_json:
        print_json(summary.to_dict())
        return
    print_pairs(
        f"rlreco simulate -> {run_dir}"
        + ("  (stopped by Ctrl-C, saved)" if summary.stopped else ""),
        [
            (
                "visits (this call / run total)",
                f"{summary.episodes:,} / {summary.episodes_total:,}",
            ),
            ("visits/s (simulation kernel)", f"{summary.episodes_per_second:,.0f}"),
            ("mean reward per visit", fmt(summary.mean_reward)),
            ("click rate per shown product", fmt(summary.click_rate)),
            ("buy rate per shown product", fmt(summary.buy_rate)),
            ("explored share of slots", fmt(summary.explored_share)),
            ("mean expected regret per visit", fmt(summary.mean_regret)),
        ],
    )


def show_sweep(result: Any, *, as_json: bool) -> None:
    """``rlreco sweep``: mean [95% CI] per setting, best settings, failures and plot files."""
    if result.warmup is not None:
        show_warmup(result.warmup)
    if as_json:
        print_json({**result.document(), "seconds": result.seconds, "out": str(result.out)})
        return
    table = Table(title=escape(f"rlreco sweep -> {result.out}"), title_justify="left")
    metrics = [
        ("reward_per_visit", "reward/visit", ",.3f"),
        ("click_rate", "click rate", ".4f"),
        ("buy_rate", "buy rate", ".4f"),
        ("regret", "cum. regret", ",.0f"),
        ("visits_per_second", "visits/s", ",.0f"),
    ]
    table.add_column("setting")
    table.add_column("reps", justify="right")
    for _, title, _ in metrics:
        table.add_column(f"{title} mean [95% CI]", justify="right")
    for row in result.summary.to_dict(orient="records"):
        cells = [escape(str(row["label"])), str(row["replicates"])]
        for key, _, spec in metrics:
            mean, low, high = row[f"{key}_mean"], row[f"{key}_low"], row[f"{key}_high"]
            cells.append(
                "n/a"
                if mean is None or math.isnan(mean)
                else f"{fmt(mean, spec)} [{fmt(low, spec)}, {fmt(high, spec)}]"
            )
        table.add_row(*cells)
    console.print(table)
    for verdict in result.verdicts:
        show_verdict(verdict)
    for best in result.best:
        if best["metric"] != "buy_rate":
            continue
        verdict = "n/a"
        if best["p_value"] is not None:
            verdict = ("significantly" if best["significant"] else "not significantly") + (
                f" better than {best['runner_up']} (Welch p = {best['p_value']:.3g})"
            )
        console.print(f"best {best['metric']}: [bold]{best['best']}[/] - {verdict}")
    for failure in result.failures:
        err_console.print(
            f"[red]failed cell[/] {escape(str(failure['label']))} #{failure['replicate']}: "
            f"{escape(one_line(str(failure['error'])))}"
        )
    console.print(
        f"{result.cells_run} cell(s) run, {result.cells_skipped} found finished, "
        f"{len(result.failures)} failed, {result.seconds:.1f} s"
    )
    for path in result.plots:
        console.print(f"plot: {escape(str(path))}")


def show_verdict(verdict: dict[str, Any]) -> None:
    """The setting to ship for one truth, and the cost of each alternative per 1,000 visits."""
    what = "regret" if verdict["metric"] == "regret_per_visit" else "reward"
    cost = "extra regret" if what == "regret" else "reward lost"
    truth = Path(str(verdict["response"])).name
    console.print(
        f"verdict for {escape(truth)}, slate {verdict['slate_size']}: ship "
        f"[bold]{escape(str(verdict['best']))}[/]"
        f" - {what} per visit {fmt(verdict['best_mean'], ',.4f')} "
        f"[{fmt(verdict['best_low'], ',.4f')}, {fmt(verdict['best_high'], ',.4f')}]",
        highlight=False,
    )
    if not verdict["alternatives"]:
        return
    table = Table(title_justify="left", show_edge=False)
    table.add_column("instead")
    table.add_column(f"{cost} per 1,000 visits [95% CI]", justify="right")
    table.add_column("Welch p", justify="right")
    for alt in verdict["alternatives"]:
        table.add_row(
            escape(str(alt["label"])),
            f"{fmt(alt['cost_per_1000'], ',.1f')} "
            f"[{fmt(alt['cost_low'], ',.1f')}, {fmt(alt['cost_high'], ',.1f')}]",
            fmt(alt["p_value"], ".3g"),
        )
    console.print(table)


def show_export(report: Any, uri: str, *, as_json: bool) -> None:
    """``rlreco export-mongo``: documents and states written, round trips."""
    from rlreco.io.mongo import redact_uri  # pymongo loads only for the commands that use it

    if as_json:
        print_json({**report.to_dict(), "uri": redact_uri(uri)})
        return
    rows = [
        ("layout", report.layout),
        ("run id", report.run_id or "-"),
        (
            "states written / unchanged / deleted",
            f"{report.states_written:,} / {report.states_unchanged:,} / {report.states_deleted:,}",
        ),
    ]
    rows += [
        (
            f"{name}: documents written / unchanged / deleted",
            f"{c.written:,} / {c.unchanged:,} / {c.deleted:,}",
        )
        for name, c in sorted(report.collections.items())
    ]
    rows += [
        ("documents written", f"{report.documents_written:,}"),
        ("round trips", f"{report.round_trips:,}"),
        ("wall time", f"{report.seconds:.2f} s"),
    ]
    print_pairs(f"rlreco export-mongo -> {redact_uri(uri)} {report.database}", rows)


def show_import(summary: Any, uri: str, *, as_json: bool) -> None:
    """``rlreco import-mongo``: what was loaded into which run directory."""
    from rlreco.io.mongo import redact_uri

    if as_json:
        print_json(summary.to_dict())
        return
    print_pairs(
        f"rlreco import-mongo {redact_uri(uri)} {summary.database} -> {summary.run_dir}",
        [
            ("layout", summary.layout),
            ("base run", summary.base_run),
            ("run id", summary.run_id),
            ("states / known cells", f"{summary.states:,} / {summary.cells:,}"),
            ("episodes", f"{summary.episodes:,}"),
            ("wall time", f"{summary.seconds:.2f} s"),
        ],
    )


def show_visit(report: Any, *, as_json: bool) -> None:
    """``rlreco recommend``: the slate, the response and each cell's change."""
    if as_json:
        print_json(report.to_dict())
        return
    where = (
        "dry run"
        if report.respond == "none"
        else f"episodes {report.episodes:,}"
        if report.episodes is not None
        else f"state version {report.version}"
    )
    table = Table(
        title=escape(
            f"rlreco recommend: {report.state} (visit {report.visit}, {report.source}, {where})"
        ),
        title_justify="left",
    )
    for column in (
        "slot",
        "product",
        "description",
        "outcome",
        "reward",
        "value",
        "reward sum",
        "reco_count",
    ):
        table.add_column(
            column, justify="left" if column in ("product", "description", "outcome") else "right"
        )

    def change(item: dict[str, Any], key: str, spec: str) -> str:
        old = "new" if item["before"] is None else format(item["before"][key], spec)
        return old if item["after"] is None else f"{old} -> {format(item['after'][key], spec)}"

    for item in report.slate:
        table.add_row(
            str(item["slot"] + 1),
            escape(item["product_code"]),
            escape(item["description"]),
            item["outcome"] or "-",
            "-" if item["reward"] is None else f"{item['reward']:.2f}",
            change(item, "value", ".4f"),
            change(item, "reward", ".2f"),
            change(item, "reco_count", ","),
        )
    console.print(table)
    console.print(
        (
            f"epsilon {report.epsilon}"
            if report.policy == "eps-greedy"
            else f"{report.policy} {POLICY_PARAMS[report.policy]} {report.param:g}"
        )
        + f", {report.explored} explored slot(s); response "
        f"{report.respond}: {report.clicks} click(s), {report.buys} purchase(s), total reward "
        f"{report.total_reward:.2f}",
        highlight=False,
    )


def show_log_prepare(summary: Any, *, as_json: bool) -> None:
    """``rlreco prepare --log``: what was read from the log and built."""
    if as_json:
        print_json(summary.to_dict())
        return
    print_pairs(
        f"rlreco prepare --log -> {summary.run_dir}",
        [
            ("log", summary.log),
            ("rows (slots) read", f"{summary.rows_read:,}"),
            ("visits", f"{summary.visits:,}"),
            ("states (distinct contexts)", f"{summary.states:,}"),
            ("products", f"{summary.products:,}"),
            ("slate size", f"{summary.slate_size:,}"),
            ("tables", summary.tables),
            ("known (state, product) pairs", f"{summary.known_pairs:,}"),
            ("wall time", f"{summary.seconds:.2f} s"),
        ],
    )


def show_evaluation(result: Any, *, as_json: bool) -> None:
    """``rlreco evaluate``: estimate [95% CI] per estimator and target, diagnostics, files."""
    if result.warmup is not None:
        show_warmup(result.warmup)
    if as_json:
        print_json(result.document())
        return
    log = result.log
    table = Table(
        title=f"rlreco evaluate {log['source']} ({log['visits']:,} visits, {log['slots']:,} "
        f"slots; logged by {log['logging_policy'] or 'an unknown policy'})",
        title_justify="left",
    )
    metrics = [
        ("reward_per_visit", "reward/visit", ",.3f"),
        ("click_rate", "click rate", ".4f"),
        ("buy_rate", "buy rate", ".4f"),
    ]
    for column in ("estimator", "target"):
        table.add_column(column)
    for _, title, _ in metrics:
        table.add_column(f"{title} [95% CI]", justify="right")
    table.add_column("accepted / ESS", justify="right")
    for row in result.summary.to_dict(orient="records"):
        cells = [row["estimator"], f"{row['policy']} ε={row['epsilon']:g}"]
        for key, _, spec in metrics:
            mean, low, high = row[f"{key}_mean"], row[f"{key}_low"], row[f"{key}_high"]
            cells.append(
                "n/a"
                if mean is None or math.isnan(mean)
                else f"{fmt(mean, spec)} [{fmt(low, spec)}, {fmt(high, spec)}]"
            )
        if row["estimator"] == "replay":
            cells.append(
                f"{int(row['accepted']):,} ({row['acceptance_rate']:.2%}, expected "
                f"{row['predicted_acceptance']:.2%})"
            )
        else:
            cells.append(f"{row['ess']:,.0f} (max w {row['max_weight']:,.1f})")
        table.add_row(*cells)
    console.print(table)
    for line in result.skipped:
        err_console.print(f"[yellow]skipped[/] {line}")
    if result.out is not None:
        console.print(f"summary: {result.out / 'summary.parquet'}")
    for path in result.plots:
        console.print(f"plot: {escape(str(path))}")
