"""The options and arguments of the ``rlreco`` commands, as typer annotations.

One alias per option (its flags, type and help text), shared where commands take the same
option; :mod:`rlreco.cli` declares each command's parameters with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config, or the original JSON config.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")
]
TimeoutOpt = Annotated[
    int, typer.Option("--timeout-ms", help="An unreachable server fails after this.")
]
DbOpt = Annotated[str, typer.Option("--db", help="Database.")]
SeedOrTidyOpt = Annotated[str, typer.Option("--layout", help="seed or tidy.")]
PlotsOpt = Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")]
ReplaceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing run directory.")]
RunArg = Annotated[Path, typer.Argument(help="Run directory from rlreco prepare.")]
OutRunOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")]
#: ``--episodes``: the old name of ``--visits``, still accepted (hidden from --help).
EpisodesOpt = Annotated[
    int | None,
    typer.Option("--episodes", hidden=True, help="Deprecated spelling of --visits."),
]

# ------------------------------------------------------------------ foreign visit logs
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

# ------------------------------------------------------------------ prepare
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Transactions file (CSV, CSV.gz, Parquet, XLSX).")
]
LogSourceOpt = Annotated[
    Path | None,
    typer.Option(
        "--log", help="Build the run from a visit log of another system (CSV or Parquet)."
    ),
]
TablesOpt = Annotated[
    str,
    typer.Option("--tables", help="With --log: empty, or history (logged shows and mean rewards)."),
]
HoldoutOpt = Annotated[
    str | None,
    typer.Option(
        "--holdout",
        help="Hold out customers:F (a fraction of customers) or time:YYYY-MM-DD (every "
        "transaction from that day) as the truth the learner is judged against.",
    ),
]
HoldoutSeedOpt = Annotated[
    int | None, typer.Option("--holdout-seed", help="Seed of the customer hash.")
]

# ------------------------------------------------------------------ simulate
SimulateVisitsOpt = Annotated[
    int | None, typer.Option("--visits", "-n", help="Visits to simulate (required).")
]
EpsilonOpt = Annotated[
    float | None,
    typer.Option("--epsilon", help="eps-greedy's exploration probability in [0, 1]."),
]
PolicyOpt = Annotated[
    str | None,
    typer.Option("--policy", help="Slate policy: eps-greedy, decaying, softmax, ucb1 or thompson."),
]
ParamOpt = Annotated[
    float | None,
    typer.Option(
        "--param",
        help="The policy's parameter: decaying c, softmax tau, ucb1 c, thompson sigma "
        "(default: 10, 0.5, 2, 2.5).",
    ),
]
StepSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--step-size",
        help="Value update: 1/n (sample average) or a constant step ALPHA in (0, 1].",
    ),
]
FirstSeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed (only before the run's first visit).")
]
ResponseOpt = Annotated[
    str | None,
    typer.Option(
        "--response", help="seed, popularity, holdout[:NAME] or a truth-table Parquet file."
    ),
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        help="Drifting truth: VISITS=RESPONSE,... e.g. "
        "0=holdout:2011-10,2000000=holdout:2011-11 (visits start at 0 and increase).",
    ),
]
DriftEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--drift-every",
        help="Drifting truth: a time holdout's monthly truths in order, N visits each.",
    ),
]
StateSamplingOpt = Annotated[
    str | None, typer.Option("--state-sampling", help="uniform, empirical or holdout.")
]
CheckpointOpt = Annotated[
    int | None, typer.Option("--checkpoint-every", help="Visits between snapshots.")
]
VisitLogOpt = Annotated[
    bool,
    typer.Option("--log", help="Write a visit log (one row per shown slot, with its propensity)."),
]

# ------------------------------------------------------------------ sweep
SweepOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Sweep directory (resumable).")]
EpsilonsOpt = Annotated[
    str, typer.Option("--epsilons", help="Comma-separated epsilons of eps-greedy.")
]
ReplicatesOpt = Annotated[int, typer.Option("--replicates", "-r", help="Replicates per setting.")]
SweepVisitsOpt = Annotated[
    int | None, typer.Option("--visits", "-n", help="Visits per cell (default: 1,000,000).")
]
ResponsesOpt = Annotated[
    str | None,
    typer.Option("--response", help="Comma-separated: seed, popularity, truth Parquet files."),
]
SweepScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        help="One drifting truth swept as a response: VISITS=RESPONSE,... (visits start at "
        "0 and increase).",
    ),
]
SweepDriftEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--drift-every",
        help="One drifting truth: the run's monthly held-out truths, N visits each.",
    ),
]
PoliciesOpt = Annotated[
    str,
    typer.Option(
        "--policies", help="Comma-separated: eps-greedy, decaying, softmax, ucb1, thompson."
    ),
]
SlateSizesOpt = Annotated[
    str | None, typer.Option("--slate-sizes", help="Comma-separated slate sizes.")
]
StepSizesOpt = Annotated[
    str | None,
    typer.Option(
        "--step-sizes",
        help="Comma-separated step sizes of the value updates: 1/n (sample average) or "
        "constants in (0, 1], e.g. 1/n,0.1,0.01 (default: the run's).",
    ),
]
SweepSeedOpt = Annotated[int | None, typer.Option("--seed", help="Sweep seed.")]
BlocksOpt = Annotated[int, typer.Option("--blocks", help="Learning-curve points per cell.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", "-w", help="Local worker processes (default: all cores)."),
]
SchedulerOpt = Annotated[
    str | None, typer.Option("--scheduler", help="Dask scheduler address tcp://HOST:PORT.")
]
SweepForceOpt = Annotated[
    bool, typer.Option("--force", help="Discard a sweep directory with another spec.")
]

# ------------------------------------------------------------------ evaluate
LogArg = Annotated[
    Path,
    typer.Argument(
        help="Visit log: a run directory or its logs/ folder or a part file, or a CSV / "
        "Parquet log of another system (with the column options)."
    ),
]
TargetRunOpt = Annotated[
    Path, typer.Option("--run", help="Run directory: state space and the targets' tables.")
]
TargetPoliciesOpt = Annotated[
    str, typer.Option("--policies", help="Comma-separated target policies: eps-greedy.")
]
TargetEpsilonsOpt = Annotated[
    str, typer.Option("--epsilons", help="Comma-separated target epsilons.")
]
EstimatorsOpt = Annotated[
    str | None,
    typer.Option(
        "--estimators",
        help="Comma-separated: replay, ips, snips, dr (default: all the log allows).",
    ),
]
ClipOpt = Annotated[
    float | None, typer.Option("--clip", help="Cap of the importance weights (default: none).")
]
RewardModelOpt = Annotated[
    str, typer.Option("--reward-model", help="dr's direct-method model: fitted or values.")
]
SnapshotOpt = Annotated[str, typer.Option("--snapshot", help="The run's latest or initial tables.")]
ReplaySeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of replay's draws (default: the run's).")
]
EvaluationOutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write summary.parquet, summary.json and plots/ here."),
]

# ------------------------------------------------------------------ MongoDB
ExportRunArg = Annotated[Path, typer.Argument(help="Run directory whose latest tables to export.")]
ExportUriOpt = Annotated[
    str,
    typer.Option(
        "--uri",
        help="MongoDB connection string, e.g. mongodb://user:pw@host:27017 "
        "(the password is never printed).",
    ),
]
ExportLayoutOpt = Annotated[
    str,
    typer.Option(
        "--layout",
        help="seed: the original's collections, one document per "
        "state; tidy: one document per (run, state, product) plus the manifest.",
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Most documents per bulk write.")]
RewriteOpt = Annotated[bool, typer.Option("--force", help="Rewrite every state, changed or not.")]
ImportUriOpt = Annotated[
    str, typer.Option("--uri", help="MongoDB connection string (the password is never printed).")
]
BaseRunOpt = Annotated[
    Path,
    typer.Option(
        "--run",
        help="Base run directory: the state space the stored tables "
        "belong to (its state space and manifest are copied).",
    ),
]
ImportRunIdOpt = Annotated[
    str | None,
    typer.Option("--run-id", help="Tidy layout: the run to load (default: the only one)."),
]

# ------------------------------------------------------------------ recommend
VisitRunArg = Annotated[
    Path,
    typer.Argument(
        help="Run directory. Alone: its tables are read and a new snapshot is "
        "committed. With --uri: it supplies the state space, product "
        "descriptions and config, and is not changed."
    ),
]
VisitUriOpt = Annotated[
    str | None,
    typer.Option(
        "--uri", help="Visit the tables stored in MongoDB instead (the password is never printed)."
    ),
]
VisitRunIdOpt = Annotated[
    str | None,
    typer.Option("--run-id", help="Tidy layout: the stored run (default: RUN_DIR's id)."),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state", help="State id, e.g. Q1_December_0_Thursday (default: drawn uniformly)."
    ),
]
RespondOpt = Annotated[
    str | None,
    typer.Option(
        "--respond",
        help="simulate (the seed model, default), given (implied by "
        "--clicked/--bought), or none (dry run: show the slate, change nothing).",
    ),
]
ClickedOpt = Annotated[
    str, typer.Option("--clicked", help="Comma-separated product codes clicked.")
]
BoughtOpt = Annotated[str, typer.Option("--bought", help="Comma-separated product codes bought.")]
VisitKeyOpt = Annotated[
    int | None,
    typer.Option(
        "--visit",
        help="Key of the visit's random stream (default: RUN_DIR's "
        "visit count; random with --uri). The same key replays the same slate.",
    ),
]
OnlineLogOpt = Annotated[
    bool,
    typer.Option(
        "--log",
        help="Log the visit's slots with propensities and a UTC timestamp: a part in "
        "RUN_DIR/logs, or with --uri the visit_log collection.",
    ),
]
