"""Which truth a run is judged against, and which states its visits come from.

``--response holdout`` (or ``holdout:NAME``, e.g. ``holdout:2011-11``) names a held-out truth of
a run prepared with ``--holdout``: it resolves to the truth table in the run directory, which
the engine reads like any user truth file. ``--state-sampling holdout`` draws visits from the
states that truth speaks for, weighted by its held-out rows (the ``all`` truth's when the
response is not a held-out one): the engine sees it as ``empirical`` sampling over a state space
whose weights are those rows.

A drifting truth is a schedule ``VISITS=RESPONSE,...`` of such responses (``response.schedule``,
``--schedule``), or ``response.drift_every`` / ``--drift-every N``: a time holdout's monthly
truths in order, each for N visits. Under ``holdout`` state sampling each phase draws its
visits from its own truth's states (:func:`phase_weights`): a held-out month's truth only
speaks for that month's states.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from rlreco.config import RunConfig, Schedule, format_schedule, is_schedule, parse_schedule
from rlreco.engine.state_space import StateSpace
from rlreco.errors import ConfigError, SimulationError
from rlreco.io.run_dir import RunDir
from rlreco.io.truth import read_truth_table

#: The response and state sampling names that refer to a run's held-out part.
HOLDOUT = "holdout"


def holdout_name(response: str) -> str | None:
    """The held-out truth a response names (``holdout`` -> ``all``), or None."""
    if response == HOLDOUT:
        return "all"
    if response.startswith(HOLDOUT + ":"):
        return response.split(":", 1)[1]
    return None


def resolve_response(run: RunDir, response: str) -> str:
    """The response the engine reads: a held-out truth's file path, or ``response`` itself;
    a schedule with each phase resolved."""
    if is_schedule(response):
        phases = parse_schedule(response, "response schedule")
        return format_schedule(tuple((start, resolve_response(run, r)) for start, r in phases))
    name = holdout_name(response)
    return str(run.truth_path(name)) if name is not None else response


def monthly_schedule(run: RunDir, every: int, what: str = "--drift-every") -> Schedule:
    """A time holdout's monthly truths in order, each for ``every`` visits.

    Raises
    ------
    ConfigError
        ``every`` < 1, or a run without monthly held-out truths (one line naming ``what``).
    """
    if every < 1:
        raise ConfigError(f"{what} = {every}: expected an integer >= 1")
    months = [str(t["name"]) for t in run.truths() if t["name"] != "all"]
    if not months:
        raise ConfigError(
            f"{what} {every}: {run.path} has no monthly held-out truths; prepare it with "
            "--holdout time:YYYY-MM-DD"
        )
    return tuple((i * every, f"{HOLDOUT}:{month}") for i, month in enumerate(months))


def response_spec(run: RunDir, config: RunConfig) -> str:
    """The response a config asks for: its schedule, its monthly drift, or its model."""
    if config.response.schedule:
        return format_schedule(parse_schedule(config.response.schedule, "response.schedule"))
    if config.response.drift_every:
        every = config.response.drift_every
        return format_schedule(monthly_schedule(run, every, "response.drift_every"))
    return config.response.model


def schedule_starts(response: str) -> tuple[int, ...]:
    """Visits at which the phases of a response start (``(0,)`` for a fixed response)."""
    if not is_schedule(response):
        return (0,)
    return tuple(start for start, _ in parse_schedule(response, "response schedule"))


def phase_weights(run: RunDir, state_sampling: str, response: str) -> np.ndarray | None:
    """Per-phase state weights of ``holdout`` sampling under a schedule (each phase's truth's
    held-out rows), shape (n_phases, n_states); None otherwise (one phase, or no holdout
    sampling)."""
    if state_sampling != HOLDOUT or not is_schedule(response):
        return None
    phases = parse_schedule(response, "response schedule")
    return np.stack([run.read_state_weights(truth_of_file(run, phase)) for _, phase in phases])


def truth_of_file(run: RunDir, response: str) -> str:
    """The held-out truth whose file ``response`` is, or ``all`` for any other response."""
    for truth in run.truths():
        if str(run.path / truth["file"]) == response:
            return str(truth["name"])
    return "all"


def sampling_space(
    run: RunDir, space: StateSpace, state_sampling: str, response: str
) -> tuple[StateSpace, str]:
    """The state space and sampling mode the engine uses for ``state_sampling``.

    Parameters
    ----------
    run : RunDir
    space : StateSpace
    state_sampling : str
        ``uniform``, ``empirical`` or ``holdout``.
    response : str
        The resolved response (:func:`resolve_response`).

    Raises
    ------
    SimulationError
        ``holdout`` sampling on a run prepared without a holdout.
    """
    if state_sampling != HOLDOUT:
        return space, state_sampling
    if not run.truths():
        raise SimulationError(
            f"--state-sampling holdout: {run.path} was prepared without --holdout; "
            "use uniform or empirical"
        )
    weight = run.read_state_weights(truth_of_file(run, response))
    return dataclasses.replace(space, state_weight=weight), "empirical"


def is_holdout_response(response: str) -> bool:
    """Whether a response spec refers to a held-out truth."""
    return holdout_name(response) is not None


def existing_file(response: str) -> bool:
    """Whether a response spec is a truth-table file that exists."""
    return Path(response).is_file()


def load_truth_tables(response: str) -> dict[str, pd.DataFrame]:
    """The truth-table files a resolved response names (one path, or a schedule's phases),
    read and checked on their own (:func:`rlreco.io.truth.read_truth_table`), by path.

    Raises
    ------
    DataError
        A file is missing or not a truth table (one line).
    """
    phases = (
        [phase for _, phase in parse_schedule(response, "response schedule")]
        if is_schedule(response)
        else [response]
    )
    return {
        name: read_truth_table(name)
        for name in dict.fromkeys(phases)
        if name not in ("seed", "popularity")
    }
