"""The ``rlreco`` command line: parses, loads config, calls the API; nothing else."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from rlreco.config import load_config
from rlreco.errors import RlrecoError

app = typer.Typer(
    name="rlreco",
    help="Offline simulation engine for a self-learning epsilon-greedy product recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config, or the original JSON config.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]


@app.callback()
def root() -> None:
    """Offline simulation engine for a self-learning epsilon-greedy product recommender."""


def user_errors(func: F) -> F:
    """Turn :class:`RlrecoError` into one line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RlrecoError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def print_pairs(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column rich table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
