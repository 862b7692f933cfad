"""The ``rlreco`` command line: parses, loads config, calls the API; nothing else."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rlreco.config import load_config
from rlreco.errors import ConfigError, RlrecoError

app = typer.Typer(
    name="rlreco",
    help="Offline simulation engine for a self-learning epsilon-greedy product recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# wide enough for the summary tables when output goes to a file or a pipe
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config, or the original JSON config.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]
TimeoutOpt = Annotated[
    int, typer.Option("--timeout-ms", help="An unreachable server fails after this.")
]
DbOpt = Annotated[str, typer.Option("--db", help="Database.")]


#: Exit codes: 2 for input the user can fix, 3 for an unexpected failure (a bug).
EXIT_USER_ERROR = 2
EXIT_UNEXPECTED = 3
#: Longest error line printed; longer messages are cut (a file's junk header can be huge).
MAX_ERROR_CHARS = 2000
_debug = {"on": False}


@app.callback()
def root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an unexpected error."),
    ] = False,
) -> None:
    """Offline simulation engine for a self-learning epsilon-greedy product recommender."""
    _debug["on"] = debug


def one_line(text: str) -> str:
    """``text`` as one printable line: line breaks and control characters escaped, cut short."""
    line = "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text.strip()
    )
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return line


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr (the message is printed literally, never as markup)."""
    err_console.print(
        f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True
    )


def user_errors(func: F) -> F:
    """Turn errors into one line on stderr: exit code 2 for bad input, 3 for anything else.

    :class:`RlrecoError` is input the user can fix. Any other exception is a bug: one line
    names the command and the exception and suggests ``--debug``, which prints the traceback
    instead. Outputs are written to temporary names and renamed, so neither leaves a partial
    output behind.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RlrecoError as exc:
            print_error(str(exc))
            raise typer.Exit(code=EXIT_USER_ERROR) from None
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            command = func.__name__.replace("_", "-")
            if _debug["on"]:
                traceback.print_exc(file=sys.stderr)
            reason = str(exc).strip().splitlines()
            kind = type(exc).__qualname__
            if type(exc).__module__ != "builtins":
                kind = f"{type(exc).__module__}.{kind}"
            what = f"{kind}: {reason[0]}" if reason else kind
            hint = "" if _debug["on"] else "; rerun with --debug for the traceback"
            print_error(f"rlreco {command} failed unexpectedly ({what}){hint}")
            raise typer.Exit(code=EXIT_UNEXPECTED) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def print_pairs(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column rich table."""
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    console.print(table)


@app.command()
@user_errors
def prepare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    config: ConfigOpt = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Transactions file (CSV, CSV.gz, Parquet, XLSX).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing run directory.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load transactions, segment customers, build states and tables, write a run directory."""
    from rlreco.engine.preparation import prepare as run_prepare

    summary = run_prepare(load_config(config), out=out, data=data, force=force)
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
            ("wall time", f"{summary.seconds:.2f} s"),
        ],
    )


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


def fmt(value: float | None, spec: str = ",.4f") -> str:
    """Format a number, or "n/a" for None/NaN."""
    if value is None or math.isnan(value):
        return "n/a"
    return format(value, spec)


@app.command()
@user_errors
def simulate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from rlreco prepare.")],
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="Visits to simulate.")],
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Exploration probability in [0, 1].")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed (only before the run's first visit).")
    ] = None,
    response: Annotated[
        str | None,
        typer.Option("--response", help="seed, popularity, or a truth-table Parquet file."),
    ] = None,
    state_sampling: Annotated[
        str | None, typer.Option("--state-sampling", help="uniform or empirical.")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option("--checkpoint-every", help="Visits between snapshots.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate visits on a run directory, continuing from its latest snapshot.

    Ctrl-C stops at the next chunk boundary and saves everything simulated so far.
    """
    from rlreco.engine.runs import simulate_run

    with visit_progress(episodes, enabled=not as_json and sys.stderr.isatty()) as update:
        summary = simulate_run(
            run_dir,
            episodes,
            epsilon=epsilon,
            seed=seed,
            response=response,
            state_sampling=state_sampling,
            checkpoint_every=checkpoint_every,
            progress=update,
        )
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


def split_list(text: str | None, cast: Callable[[str], Any], option: str) -> list[Any] | None:
    """Parse a comma-separated option value; one-line ConfigError on a bad item."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list") from None


@app.command()
@user_errors
def sweep(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from rlreco prepare.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep directory (resumable).")],
    epsilons: Annotated[
        str, typer.Option("--epsilons", help="Comma-separated epsilons of eps-greedy.")
    ] = "0,0.01,0.05,0.1,0.2,0.5",
    replicates: Annotated[
        int, typer.Option("--replicates", "-r", help="Replicates per setting.")
    ] = 8,
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="Visits per cell.")] = 1_000_000,
    response: Annotated[
        str | None,
        typer.Option("--response", help="Comma-separated: seed, popularity, truth Parquet files."),
    ] = None,
    policies: Annotated[
        str,
        typer.Option(
            "--policies", help="Comma-separated: eps-greedy, decaying, softmax, ucb1, thompson."
        ),
    ] = "eps-greedy",
    slate_sizes: Annotated[
        str | None, typer.Option("--slate-sizes", help="Comma-separated slate sizes.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sweep seed.")] = None,
    blocks: Annotated[int, typer.Option("--blocks", help="Learning-curve points per cell.")] = 100,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", help="Local worker processes (default: all cores)."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Dask scheduler address tcp://HOST:PORT.")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Discard a sweep directory with another spec.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep epsilons (and policies, slate sizes, response models) x replicates from one run.

    Re-running the same command resumes: finished cells are skipped.
    """
    from rlreco.engine.sweep import SweepSpec, run_sweep

    spec = SweepSpec(
        epsilons=split_list(epsilons, float, "--epsilons") or [],
        replicates=replicates,
        episodes=episodes,
        policies=split_list(policies, str, "--policies") or [],
        slate_sizes=split_list(slate_sizes, int, "--slate-sizes"),
        responses=split_list(response, str, "--response"),
        seed=seed,
        blocks=blocks,
    )
    show = not as_json and sys.stderr.isatty()
    with sweep_progress(enabled=show) as update:
        result = run_sweep(
            run_dir,
            spec,
            out,
            workers=workers,
            scheduler=scheduler,
            progress=update,
            force=force,
            plots=plots,
        )
    if as_json:
        print_json(
            {
                "settings": result.to_json(),
                "best": result.best,
                "failures": result.failures,
                "cells_total": result.cells_total,
                "cells_run": result.cells_run,
                "cells_skipped": result.cells_skipped,
                "seconds": result.seconds,
                "out": str(result.out),
                "plots": [str(p) for p in result.plots],
            }
        )
        return
    print_sweep(result)


@contextlib.contextmanager
def sweep_progress(*, enabled: bool) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar across sweep cells with visits/s."""
    if not enabled:
        yield lambda progress: None
        return
    with progress_bar() as bar:
        task = bar.add_task("cells", total=None, rate="")

        def update(progress: Any) -> None:
            bar.update(
                task,
                total=progress.cells_total,
                completed=progress.cells_done,
                rate=f"{progress.visits_per_second:,.0f} visits/s"
                + (f", {progress.cells_failed} failed" if progress.cells_failed else ""),
            )

        yield update


def print_sweep(result: Any) -> None:
    """Summary table (mean [95% CI]) per setting, best settings, failures and plot files."""
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
    for best in result.best:
        if best["metric"] not in ("reward_per_visit", "regret", "buy_rate"):
            continue
        verdict = "n/a"
        if best["p_value"] is not None:
            verdict = ("significantly" if best["significant"] else "not significantly") + (
                f" better than {escape(str(best['runner_up']))} (Welch p = {best['p_value']:.3g})"
            )
        console.print(f"best {best['metric']}: [bold]{escape(str(best['best']))}[/] - {verdict}")
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


@app.command("export-mongo")
@user_errors
def export_mongo(
    run_dir: Annotated[Path, typer.Argument(help="Run directory whose latest tables to export.")],
    *,
    uri: Annotated[
        str,
        typer.Option(
            "--uri",
            help="MongoDB connection string, e.g. mongodb://user:pw@host:27017 "
            "(the password is never printed).",
        ),
    ],
    db: DbOpt = "rlRecomendation",
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="seed: the original's collections, one document per "
            "state; tidy: one document per (run, state, product) plus the manifest.",
        ),
    ] = "seed",
    timeout_ms: TimeoutOpt = 5000,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Most documents per bulk write.")
    ] = 1000,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite every state, changed or not.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a run's tables to MongoDB; only states changed since the last export are written."""
    from rlreco.engine.sync import export_run
    from rlreco.io.mongo import redact_uri

    report = export_run(
        run_dir,
        uri=uri,
        db=db,
        layout=layout,
        timeout_ms=timeout_ms,
        batch_size=batch_size,
        force=force,
    )
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


@app.command("import-mongo")
@user_errors
def import_mongo(
    *,
    uri: Annotated[
        str,
        typer.Option("--uri", help="MongoDB connection string (the password is never printed)."),
    ],
    run: Annotated[
        Path,
        typer.Option(
            "--run",
            help="Base run directory: the state space the stored tables "
            "belong to (its state space and manifest are copied).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    db: DbOpt = "rlRecomendation",
    layout: Annotated[str, typer.Option("--layout", help="seed or tidy.")] = "seed",
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Tidy layout: the run to load (default: the only one)."),
    ] = None,
    timeout_ms: TimeoutOpt = 5000,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing run directory.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load tables from MongoDB (either layout) into a new run directory."""
    from rlreco.engine.sync import import_run
    from rlreco.io.mongo import redact_uri

    summary = import_run(
        uri=uri,
        base_run=run,
        out=out,
        db=db,
        layout=layout,
        run_id=run_id,
        timeout_ms=timeout_ms,
        force=force,
    )
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


@app.command()
@user_errors
def recommend(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="Run directory. Alone: its tables are read and a new snapshot is "
            "committed. With --uri: it supplies the state space, product "
            "descriptions and config, and is not changed."
        ),
    ],
    *,
    uri: Annotated[
        str | None,
        typer.Option(
            "--uri",
            help="Visit the tables stored in MongoDB instead (the password is never printed).",
        ),
    ] = None,
    db: DbOpt = "rlRecomendation",
    layout: Annotated[str, typer.Option("--layout", help="seed or tidy.")] = "seed",
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Tidy layout: the stored run (default: RUN_DIR's id)."),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="State id, e.g. Q1_December_0_Thursday (default: drawn uniformly)."
        ),
    ] = None,
    respond: Annotated[
        str | None,
        typer.Option(
            "--respond",
            help="simulate (the seed model, default), given (implied by "
            "--clicked/--bought), or none (dry run: show the slate, change nothing).",
        ),
    ] = None,
    clicked: Annotated[
        str, typer.Option("--clicked", help="Comma-separated product codes clicked.")
    ] = "",
    bought: Annotated[
        str, typer.Option("--bought", help="Comma-separated product codes bought.")
    ] = "",
    visit: Annotated[
        int | None,
        typer.Option(
            "--visit",
            help="Key of the visit's random stream (default: RUN_DIR's "
            "episode count; random with --uri). The same key replays the same slate.",
        ),
    ] = None,
    timeout_ms: TimeoutOpt = 5000,
    as_json: JsonOpt = False,
) -> None:
    """One customer visit: recommend a slate by epsilon-greedy, apply the response, update."""
    from rlreco.engine.sync import recommend as run_visit

    clicked_codes = [c.strip() for c in clicked.split(",") if c.strip()]
    bought_codes = [c.strip() for c in bought.split(",") if c.strip()]
    if respond is None:
        respond = "given" if clicked_codes or bought_codes else "simulate"
    report = run_visit(
        run_dir,
        uri=uri,
        db=db,
        layout=layout,
        run_id=run_id,
        state=state,
        respond=respond,
        clicked=clicked_codes,
        bought=bought_codes,
        visit=visit,
        timeout_ms=timeout_ms,
    )
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
        f"epsilon {report.epsilon}, {report.explored} explored slot(s); response "
        f"{report.respond}: {report.clicks} click(s), {report.buys} purchase(s), total reward "
        f"{report.total_reward:.2f}",
        highlight=False,
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
