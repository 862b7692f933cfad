"""The ``rlreco`` command line: parses options, loads config, calls the application layer.

Results are shown by :mod:`rlreco.app.report`; nothing else happens here.
"""

from __future__ import annotations

import os

# No command does linear algebra worth a thread: numpy's OpenBLAS, loaded with numpy below,
# would start one per core that spins about 0.1 s of CPU for nothing, on a machine whose other
# cores the command's own processes use (the sweep's workers and plots). A user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gc
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import typer

from rlreco.app import options, report
from rlreco.cli_options import (
    BaseRunOpt,
    BatchSizeOpt,
    BlocksOpt,
    BoughtOpt,
    BuyOpt,
    CheckpointOpt,
    ClickedOpt,
    ClickOpt,
    ClipOpt,
    ConfigOpt,
    ContextOpt,
    DataOpt,
    DbOpt,
    DebugOpt,
    DriftEveryOpt,
    EpisodesOpt,
    EpsilonOpt,
    EpsilonsOpt,
    EstimatorsOpt,
    EvaluationOutOpt,
    ExportLayoutOpt,
    ExportRunArg,
    ExportUriOpt,
    FirstSeedOpt,
    HoldoutOpt,
    HoldoutSeedOpt,
    ImportRunIdOpt,
    ImportUriOpt,
    ItemOpt,
    JsonOpt,
    LogArg,
    LogSourceOpt,
    OnlineLogOpt,
    OutRunOpt,
    ParamOpt,
    PlotsOpt,
    PoliciesOpt,
    PolicyOpt,
    PositionOpt,
    PropensityOpt,
    ReplaceOpt,
    ReplaySeedOpt,
    ReplicatesOpt,
    RespondOpt,
    ResponseOpt,
    ResponsesOpt,
    RewardModelOpt,
    RewardOpt,
    RewriteOpt,
    RunArg,
    ScheduleOpt,
    SchedulerOpt,
    SeedOrTidyOpt,
    SimulateVisitsOpt,
    SlateSizesOpt,
    SnapshotOpt,
    StateOpt,
    StateSamplingOpt,
    StepSizeOpt,
    StepSizesOpt,
    SweepDriftEveryOpt,
    SweepForceOpt,
    SweepOutOpt,
    SweepScheduleOpt,
    SweepSeedOpt,
    SweepVisitsOpt,
    TablesOpt,
    TargetEpsilonsOpt,
    TargetPoliciesOpt,
    TargetRunOpt,
    TimeoutOpt,
    TimestampOpt,
    VisitKeyOpt,
    VisitLogOpt,
    VisitOpt,
    VisitRunArg,
    VisitRunIdOpt,
    VisitUriOpt,
    WorkersOpt,
)
from rlreco.config import load_config
from rlreco.errors import RlrecoError

app = typer.Typer(
    name="rlreco",
    help="Offline simulation engine for a self-learning epsilon-greedy product recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes: 2 for input the user can fix, 3 for an unexpected failure (a bug).
EXIT_USER_ERROR = 2
EXIT_UNEXPECTED = 3
_debug = {"on": False}


@app.callback()
def root(debug: DebugOpt = False) -> None:
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


@app.command()
@user_errors
def prepare(
    out: OutRunOpt,
    config: ConfigOpt = None,
    data: DataOpt = None,
    log: LogSourceOpt = None,
    context_cols: ContextOpt = None,
    item_col: ItemOpt = None,
    position_col: PositionOpt = None,
    reward_col: RewardOpt = None,
    click_col: ClickOpt = None,
    buy_col: BuyOpt = None,
    propensity_col: PropensityOpt = None,
    timestamp_col: TimestampOpt = None,
    visit_col: VisitOpt = None,
    tables: TablesOpt = "empty",
    holdout: HoldoutOpt = None,
    holdout_seed: HoldoutSeedOpt = None,
    force: ReplaceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Load transactions, segment customers, build states and tables, write a run directory.

    With --log, build it from a visit log instead: a state per distinct tuple of the context
    columns, the logged items as products.
    """
    run_config = load_config(config)
    columns = options.column_map(
        context_cols, item_col, position=position_col, reward=reward_col, click=click_col,
        buy=buy_col, propensity=propensity_col, timestamp=timestamp_col, visit=visit_col,
    )  # fmt: skip
    run_config = options.prepare_config(
        run_config, from_log=log is not None, columns=columns,
        data_given=data is not None, holdout=holdout, holdout_seed=holdout_seed,
    )  # fmt: skip
    if log is not None and columns is not None:
        from rlreco.app.log_prepare import prepare_from_log

        summary_log = prepare_from_log(
            run_config, log=log, columns=columns, out=out, tables=tables, force=force
        )
        report.show_log_prepare(summary_log, as_json=as_json)
        return
    from rlreco.app.prepare import prepare as run_prepare

    summary = run_prepare(run_config, out=out, data=data, force=force)
    report.show_prepare(summary, as_json=as_json)


@app.command()
@user_errors
def simulate(
    run_dir: RunArg,
    visits: SimulateVisitsOpt = None,
    episodes: EpisodesOpt = None,
    epsilon: EpsilonOpt = None,
    policy: PolicyOpt = None,
    param: ParamOpt = None,
    step_size: StepSizeOpt = None,
    seed: FirstSeedOpt = None,
    response: ResponseOpt = None,
    schedule: ScheduleOpt = None,
    drift_every: DriftEveryOpt = None,
    state_sampling: StateSamplingOpt = None,
    checkpoint_every: CheckpointOpt = None,
    log: VisitLogOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Simulate visits on a run directory, continuing from its latest snapshot.

    Policy options are recorded in the run and stay in force for later calls.
    Ctrl-C stops at the next chunk boundary and saves everything simulated so far.
    (--episodes is the deprecated name of --visits.)
    """
    from rlreco.app.simulate import simulate_run

    n = options.visits_option(visits, episodes)
    with report.visit_progress(n, enabled=report.interactive(as_json)) as update:
        summary = simulate_run(
            run_dir,
            n,
            epsilon=epsilon,
            policy=policy,
            param=param,
            step_size=step_size,
            seed=seed,
            response=response,
            schedule=schedule,
            drift_every=drift_every,
            state_sampling=state_sampling,
            checkpoint_every=checkpoint_every,
            progress=update,
            on_warmup=report.show_warmup,
            log=log,
        )
    report.show_simulation(summary, run_dir, as_json=as_json)


@app.command()
@user_errors
def sweep(
    run_dir: RunArg,
    out: SweepOutOpt,
    epsilons: EpsilonsOpt = "0,0.01,0.05,0.1,0.2,0.5",
    replicates: ReplicatesOpt = 8,
    visits: SweepVisitsOpt = None,
    episodes: EpisodesOpt = None,
    response: ResponsesOpt = None,
    schedule: SweepScheduleOpt = None,
    drift_every: SweepDriftEveryOpt = None,
    policies: PoliciesOpt = "eps-greedy",
    slate_sizes: SlateSizesOpt = None,
    step_sizes: StepSizesOpt = None,
    seed: SweepSeedOpt = None,
    blocks: BlocksOpt = 100,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    plots: PlotsOpt = True,
    force: SweepForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep epsilons (and policies, slate sizes, response models) x replicates from one run.

    Re-running the same command resumes: finished cells are skipped.
    (--episodes is the deprecated name of --visits.)
    """
    from rlreco.app.sweep import run_sweep

    spec = options.sweep_spec(
        epsilons=epsilons,
        replicates=replicates,
        visits=options.visits_option(visits, episodes, default=1_000_000),
        policies=policies,
        slate_sizes=slate_sizes,
        step_sizes=step_sizes,
        responses=response,
        schedule=schedule,
        drift_every=drift_every,
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
    log: LogArg,
    run: TargetRunOpt,
    policies: TargetPoliciesOpt = "eps-greedy",
    epsilons: TargetEpsilonsOpt = "0,0.05,0.1,0.2",
    estimators: EstimatorsOpt = None,
    clip: ClipOpt = None,
    reward_model: RewardModelOpt = "fitted",
    snapshot: SnapshotOpt = "latest",
    seed: ReplaySeedOpt = None,
    out: EvaluationOutOpt = None,
    plots: PlotsOpt = True,
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
    from rlreco.app.evaluate import evaluate_log

    spec = options.evaluation_spec(
        epsilons=epsilons, policies=policies, estimators=estimators, clip=clip,
        reward_model=reward_model, snapshot=snapshot, seed=seed,
    )  # fmt: skip
    columns = options.column_map(
        context_cols, item_col, position=position_col, reward=reward_col, click=click_col,
        buy=buy_col, propensity=propensity_col, timestamp=timestamp_col, visit=visit_col,
    )  # fmt: skip
    result = evaluate_log(log, run, spec, columns=columns, out=out, plots=plots)
    report.show_evaluation(result, as_json=as_json)


@app.command("export-mongo")
@user_errors
def export_mongo(
    run_dir: ExportRunArg,
    *,
    uri: ExportUriOpt,
    db: DbOpt = "rlRecomendation",
    layout: ExportLayoutOpt = "seed",
    timeout_ms: TimeoutOpt = 5000,
    batch_size: BatchSizeOpt = 1000,
    force: RewriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a run's tables to MongoDB; only states changed since the last export are written."""
    from rlreco.app.mongo_sync import export_run

    exported = export_run(
        run_dir, uri=uri, db=db, layout=layout, timeout_ms=timeout_ms, batch_size=batch_size,
        force=force,
    )  # fmt: skip
    report.show_export(exported, uri, as_json=as_json)


@app.command("import-mongo")
@user_errors
def import_mongo(
    *,
    uri: ImportUriOpt,
    run: BaseRunOpt,
    out: OutRunOpt,
    db: DbOpt = "rlRecomendation",
    layout: SeedOrTidyOpt = "seed",
    run_id: ImportRunIdOpt = None,
    timeout_ms: TimeoutOpt = 5000,
    force: ReplaceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Load tables from MongoDB (either layout) into a new run directory."""
    from rlreco.app.mongo_sync import import_run

    summary = import_run(
        uri=uri, base_run=run, out=out, db=db, layout=layout, run_id=run_id,
        timeout_ms=timeout_ms, force=force,
    )  # fmt: skip
    report.show_import(summary, uri, as_json=as_json)


@app.command()
@user_errors
def recommend(
    run_dir: VisitRunArg,
    *,
    uri: VisitUriOpt = None,
    db: DbOpt = "rlRecomendation",
    layout: SeedOrTidyOpt = "seed",
    run_id: VisitRunIdOpt = None,
    state: StateOpt = None,
    respond: RespondOpt = None,
    clicked: ClickedOpt = "",
    bought: BoughtOpt = "",
    visit: VisitKeyOpt = None,
    timeout_ms: TimeoutOpt = 5000,
    log: OnlineLogOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """One customer visit: recommend a slate by epsilon-greedy, apply the response, update."""
    from rlreco.app.recommend import recommend as run_visit

    mode, clicked_codes, bought_codes = options.visit_response(respond, clicked, bought)
    visited = run_visit(
        run_dir, uri=uri, db=db, layout=layout, run_id=run_id, state=state, respond=mode,
        clicked=clicked_codes, bought=bought_codes, visit=visit, timeout_ms=timeout_ms, log=log,
        on_warmup=report.show_warmup,
    )  # fmt: skip
    report.show_visit(visited, as_json=as_json)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # Exiting, the interpreter collects garbage over every object several times as it
        # clears the modules: once numba's registries are loaded, over well over a hundred
        # thousand objects, none of them garbage. The command's outputs are written and closed
        # by now; what is left is freed with the process, so the collector is told to skip it.
        gc.freeze()


if __name__ == "__main__":
    main()
