"""`rlreco sweep` from the command line: JSON summary, resume, bad grids exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlreco.app.prepare import prepare
from rlreco.cli import app
from rlreco.config import RunConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, embedded_parquet: Path) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "base"
    prepare(RunConfig(), out=out)
    return out


def test_sweep_json_and_resume(base: Path, tmp_path: Path) -> None:
    argv = ["sweep", str(base), "--out", str(tmp_path / "sw"), "--epsilons", "0,0.5",
            "--replicates", "2", "--visits", "4000", "--response", "popularity",
            "--workers", "1", "--blocks", "4", "--json"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["cells_total"] == 4 and out["cells_run"] == 4 and not out["failures"]
    eps = {row["param"]: row for row in out["settings"]}
    assert set(eps) == {0.0, 0.5}
    for row in eps.values():
        assert row["replicates"] == 2
        assert row["reward_per_visit_low"] <= row["reward_per_visit_mean"]
        assert row["reward_per_visit_mean"] <= row["reward_per_visit_high"]
    # exploring half the slots at random costs reward under a known truth
    assert eps[0.5]["regret_mean"] > eps[0.0]["regret_mean"]
    assert all(Path(p).is_file() for p in out["plots"])
    again = json.loads(runner.invoke(app, argv).stdout)
    assert again["cells_run"] == 0 and again["cells_skipped"] == 4
    assert again["settings"] == out["settings"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epsilons", "0,1.5"], "1.5"),
        (["--epsilons", "0,x"], "--epsilons"),
        (["--replicates", "0"], "replicates"),
        (["--policies", "eps-greedy,greedier"], "greedier"),
    ],
)
def test_bad_grid_is_one_line_exit_2(
    base: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    argv = ["sweep", str(base), "--out", str(tmp_path / "sw"), "--episodes", "100", *args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("argv", [["--help"], ["sweep", "no-such-run", "--out", "x"]])
def test_the_command_leaves_its_objects_to_the_exit_uncollected(
    argv: list[str], tmp_path: Path
) -> None:
    # the exit's collections over every object cost more than a small sweep's cells: main
    # freezes them last, whether the command succeeds or fails
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "from rlreco.cli import main\n"
        f"sys.argv = ['rlreco', *{argv!r}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.stdout.rstrip().endswith("frozen True")
    assert done.returncode == (0 if argv == ["--help"] else 2)


def test_sweep_reports_kernel_compilation_apart_from_the_cells(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep whose warm-up compiled the visit loops (a machine's first run) says so on stderr,
    as ``simulate`` does; a sweep that found them compiled says nothing."""
    from rlreco.app import sweep_cells
    from rlreco.engine import warmup

    def argv(out: str) -> list[str]:
        return ["sweep", str(base), "--out", str(tmp_path / out), "--epsilons", "0",
                "--replicates", "1", "--visits", "500", "--workers", "1", "--no-plots",
                "--json"]  # fmt: skip

    result = runner.invoke(app, argv("warm"))
    assert result.exit_code == 0, result.output
    assert "compiling kernels" not in result.stderr
    monkeypatch.setattr(sweep_cells, "_WARM", set())  # as in a fresh process
    monkeypatch.setattr(
        warmup, "warm_up_simulation", lambda *a, **k: warmup.Warmup(12.34, compiled=True)
    )
    result = runner.invoke(app, argv("first"))
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == ["compiling kernels, first run only: 12.3 s"]
    assert json.loads(result.stdout)["cells_run"] == 1  # stdout stays one JSON object
