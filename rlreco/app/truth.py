"""Which truth a run is judged against, and which states its visits come from.

``--response holdout`` (or ``holdout:NAME``, e.g. ``holdout:2011-11``) names a held-out truth of
a run prepared with ``--holdout``: it resolves to the truth table in the run directory, which
the engine reads like any user truth file. ``--state-sampling holdout`` draws visits from the
states that truth speaks for, weighted by its held-out rows (the ``all`` truth's when the
response is not a held-out one): the engine sees it as ``empirical`` sampling over a state space
whose weights are those rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlreco.engine.state_space import StateSpace
from rlreco.errors import SimulationError
from rlreco.io.run_dir import RunDir

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
    """The response the engine reads: a held-out truth's file path, or ``response`` itself."""
    name = holdout_name(response)
    return str(run.truth_path(name)) if name is not None else response


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
