"""The ``rlreco`` command line: parses options, loads config, calls the application layer.

Results are shown by :mod:`rlreco.app.report`; nothing else happens here.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer

from rlreco.app import report
from rlreco.config import load_config
from rlreco.errors import ConfigError, RlrecoError

app = typer.Typer(
    name="rlreco",
    help="Offline simulation engine for a self-learning epsilon-greedy product recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config, or the original JSON config.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]
TimeoutOpt = Annotated[
    int, typer.Option("--timeout-ms", help="An unreachable server fails after this.")
]
DbOpt = Annotated[str, typer.Option("--db", help="Database.")]
ContextOpt = Annotated[
    str | None,
    typer.Option(
        "--context-cols", help="Foreign log: comma-separated context columns (a state = a tuple)."
    ),
]
ItemOpt = Annotated[str | None, typer.Option("--item-col", help="Foreign log: product column.")]
PositionOpt = Annotated[
    str | None, typer.Option("--position-col", help="Foreign log: 0-based slot column.")
]
RewardOpt = Annotated[str | None, typer.Option("--reward-col", help="Foreign log: reward column.")]
ClickOpt = Annotated[str | None, typer.Option("--click-col", help="Foreign log: 0/1 click column.")]
BuyOpt = Annotated[str | None, typer.Option("--buy-col", help="Foreign log: 0/1 purchase column.")]
PropensityOpt = Annotated[
    str | None,
    typer.Option("--propensity-col", help="Foreign log: logging propensity column, in (0, 1]."),
]
TimestampOpt = Annotated[
    str | None, typer.Option("--timestamp-col", help="Foreign log: time column (UTC).")
]
VisitOpt = Annotated[
    str | None, typer.Option("--visit-col", help="Foreign log: visit key column (one slate).")
]


#: Exit codes: 2 for input the user can fix, 3 for an unexpected failure (a bug).
EXIT_USER_ERROR = 2
EXIT_UNEXPECTED = 3
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
            report.print_error(str(exc))
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
            report.print_error(f"rlreco {command} failed unexpectedly ({what}){hint}")
            raise typer.Exit(code=EXIT_UNEXPECTED) from None

    return wrapper  # type: ignore[return-value]


def column_map(
    context: str | None,
    item: str | None,
    *,
    position: str | None,
    reward: str | None,
    click: str | None,
    buy: str | None,
    propensity: str | None,
    timestamp: str | None,
    visit: str | None,
) -> Any:
    """The column map of a foreign log, or None when no column option is given."""
    from rlreco.io.foreign_log import ColumnMap

    given = (context, item, position, reward, click, buy, propensity, timestamp, visit)
    if all(option is None for option in given):
        return None
    if context is None or item is None:
        raise ConfigError("a foreign log needs --context-cols and --item-col")
    columns = ColumnMap(
        context=tuple(split_list(context, str, "--context-cols") or ()),
        item=item,
        position=position,
        reward=reward,
        click=click,
        buy=buy,
        propensity=propensity,
        timestamp=timestamp,
        visit=visit,
    )
    columns.check()
    return columns


@app.command()
@user_errors
def prepare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    config: ConfigOpt = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Transactions file (CSV, CSV.gz, Parquet, XLSX).")
    ] = None,
    log: Annotated[
        Path | None,
        typer.Option(
            "--log", help="Build the run from a visit log of another system (CSV or Parquet)."
        ),
    ] = None,
    context_cols: ContextOpt = None,
    item_col: ItemOpt = None,
    position_col: PositionOpt = None,
    reward_col: RewardOpt = None,
    click_col: ClickOpt = None,
    buy_col: BuyOpt = None,
    propensity_col: PropensityOpt = None,
    timestamp_col: TimestampOpt = None,
    visit_col: VisitOpt = None,
    tables: Annotated[
        str,
        typer.Option(
            "--tables", help="With --log: empty, or history (logged shows and mean rewards)."
        ),
    ] = "empty",
    holdout: Annotated[
        str | None,
        typer.Option(
            "--holdout",
            help="Hold out customers:F (a fraction of customers) or time:YYYY-MM-DD (every "
            "transaction from that day) as the truth the learner is judged against.",
        ),
    ] = None,
    holdout_seed: Annotated[
        int | None, typer.Option("--holdout-seed", help="Seed of the customer hash.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing run directory.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load transactions, segment customers, build states and tables, write a run directory.

    With --log, build it from a visit log instead: a state per distinct tuple of the context
    columns, the logged items as products.
    """
    from rlreco.app.prepare import prepare as run_prepare

    run_config = load_config(config)
    columns = column_map(
        context_cols, item_col, position=position_col, reward=reward_col, click=click_col,
        buy=buy_col, propensity=propensity_col, timestamp=timestamp_col, visit=visit_col,
    )  # fmt: skip
    if log is not None:
        from rlreco.app.log_prepare import prepare_from_log

        if columns is None:
            raise ConfigError(
                "--log needs --context-cols, --item-col and --reward-col or --click-col"
            )
        if data is not None or holdout is not None:
            raise ConfigError("--log builds the run from the log: drop --data and --holdout")
        summary_log = prepare_from_log(
            run_config, log=log, columns=columns, out=out, tables=tables, force=force
        )
        report.show_log_prepare(summary_log, as_json=as_json)
        return
    if columns is not None:
        raise ConfigError("--context-cols and the other column options need --log")
    changes: dict[str, Any] = {}
    if holdout is not None:
        changes["holdout.split"] = holdout
    if holdout_seed is not None:
        changes["holdout.seed"] = holdout_seed
    if changes:
        run_config = run_config.replace(**changes)
    summary = run_prepare(run_config, out=out, data=data, force=force)
    report.show_prepare(summary, as_json=as_json)


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
    from rlreco.app.simulate import simulate_run

    with report.visit_progress(episodes, enabled=report.interactive(as_json)) as update:
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
    report.show_simulation(summary, run_dir, as_json=as_json)


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
    from rlreco.app.sweep import run_sweep
    from rlreco.app.sweep_grid import SweepSpec

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
    with report.sweep_progress(enabled=report.interactive(as_json)) as update:
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
    report.show_sweep(result, as_json=as_json)


@app.command()
@user_errors
def evaluate(
    log: Annotated[
        Path,
        typer.Argument(
            help="Visit log: a run directory or its logs/ folder or a part file, or a CSV / "
            "Parquet log of another system (with the column options)."
        ),
    ],
    run: Annotated[
        Path, typer.Option("--run", help="Run directory: state space and the targets' tables.")
    ],
    policies: Annotated[
        str, typer.Option("--policies", help="Comma-separated target policies: eps-greedy.")
    ] = "eps-greedy",
    epsilons: Annotated[
        str, typer.Option("--epsilons", help="Comma-separated target epsilons.")
    ] = "0,0.05,0.1,0.2",
    estimators: Annotated[
        str | None,
        typer.Option(
            "--estimators",
            help="Comma-separated: replay, ips, snips, dr (default: all the log allows).",
        ),
    ] = None,
    clip: Annotated[
        float | None, typer.Option("--clip", help="Cap of the importance weights (default: none).")
    ] = None,
    reward_model: Annotated[
        str, typer.Option("--reward-model", help="dr's direct-method model: fitted or values.")
    ] = "fitted",
    snapshot: Annotated[
        str, typer.Option("--snapshot", help="The run's latest or initial tables.")
    ] = "latest",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of replay's draws (default: the run's).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write summary.parquet, summary.json and plots/ here."),
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
    context_cols: ContextOpt = None,
    item_col: ItemOpt = None,
    position_col: PositionOpt = None,
    reward_col: RewardOpt = None,
    click_col: ClickOpt = None,
    buy_col: BuyOpt = None,
    propensity_col: PropensityOpt = None,
    timestamp_col: TimestampOpt = None,
    visit_col: VisitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Off-policy estimates of epsilon-greedy targets (the run's tables) on a visit log."""
    import math

    from rlreco.app.evaluate import EvaluationSpec, evaluate_log

    spec = EvaluationSpec(
        epsilons=tuple(split_list(epsilons, float, "--epsilons") or ()),
        policies=tuple(split_list(policies, str, "--policies") or ()),
        estimators=(
            tuple(split_list(estimators, str, "--estimators") or ()) if estimators else None
        ),
        clip=math.inf if clip is None else clip,
        reward_model=reward_model,
        snapshot=snapshot,
        seed=seed,
    )
    columns = column_map(
        context_cols, item_col, position=position_col, reward=reward_col, click=click_col,
        buy=buy_col, propensity=propensity_col, timestamp=timestamp_col, visit=visit_col,
    )  # fmt: skip
    result = evaluate_log(log, run, spec, columns=columns, out=out, plots=plots)
    report.show_evaluation(result, as_json=as_json)


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
    from rlreco.app.mongo_sync import export_run

    exported = export_run(
        run_dir,
        uri=uri,
        db=db,
        layout=layout,
        timeout_ms=timeout_ms,
        batch_size=batch_size,
        force=force,
    )
    report.show_export(exported, uri, as_json=as_json)


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
    from rlreco.app.mongo_sync import import_run

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
    report.show_import(summary, uri, as_json=as_json)


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
    from rlreco.app.recommend import recommend as run_visit

    clicked_codes = [c.strip() for c in clicked.split(",") if c.strip()]
    bought_codes = [c.strip() for c in bought.split(",") if c.strip()]
    if respond is None:
        respond = "given" if clicked_codes or bought_codes else "simulate"
    visited = run_visit(
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
    report.show_visit(visited, as_json=as_json)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
