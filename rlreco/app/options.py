"""Command-line option values turned into the arguments of the application calls.

The CLI only parses; what the parser cannot check (options that need or exclude each other,
comma-separated lists, the deprecated ``--episodes`` spelling of ``--visits``) is checked here,
with a one-line :class:`~rlreco.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlreco.config import RunConfig, StepSize
from rlreco.errors import ConfigError

if TYPE_CHECKING:  # imported where used: the CLI starts without the engine
    from rlreco.app.evaluate import EvaluationSpec
    from rlreco.app.sweep_grid import SweepSpec
    from rlreco.io.foreign_log import ColumnMap


def split_list(text: str | None, cast: Callable[[str], Any], option: str) -> list[Any] | None:
    """Parse a comma-separated option value; one-line ConfigError on a bad item."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list") from None


def visits_option(visits: int | None, episodes: int | None, *, default: int | None = None) -> int:
    """The visits of ``--visits`` or its deprecated spelling ``--episodes`` (one, or both with
    the same value); ``default`` when neither is given.

    Raises
    ------
    ConfigError
        Both are given with different values, or neither is and there is no default.
    """
    if visits is not None and episodes is not None and visits != episodes:
        raise ConfigError(
            f"--visits {visits} and --episodes {episodes}: --episodes is the old name of "
            "--visits; give one"
        )
    chosen = visits if visits is not None else episodes
    if chosen is None:
        if default is None:
            raise ConfigError("missing option --visits (the number of visits to simulate)")
        return default
    return chosen


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
) -> ColumnMap | None:
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


def prepare_config(
    config: RunConfig,
    *,
    from_log: bool,
    columns: ColumnMap | None,
    data_given: bool,
    holdout: str | None,
    holdout_seed: int | None,
) -> RunConfig:
    """The config ``prepare`` runs with, after checking that the options fit its source: a
    visit log (with its column options, without ``--data`` or ``--holdout``) or transactions
    (with neither column options nor ``--log``)."""
    if from_log:
        if columns is None:
            raise ConfigError(
                "--log needs --context-cols, --item-col and --reward-col or --click-col"
            )
        if data_given or holdout is not None:
            raise ConfigError("--log builds the run from the log: drop --data and --holdout")
        return config
    if columns is not None:
        raise ConfigError("--context-cols and the other column options need --log")
    changes: dict[str, Any] = {}
    if holdout is not None:
        changes["holdout.split"] = holdout
    if holdout_seed is not None:
        changes["holdout.seed"] = holdout_seed
    return config.replace(**changes) if changes else config


def sweep_spec(
    *,
    epsilons: str,
    replicates: int,
    visits: int,
    policies: str,
    slate_sizes: str | None,
    step_sizes: str | None,
    responses: str | None,
    schedule: str | None,
    drift_every: int | None,
    seed: int | None,
    blocks: int,
) -> SweepSpec:
    """The grid of ``rlreco sweep`` from its comma-separated options."""
    from rlreco.app.sweep_grid import SweepSpec

    return SweepSpec(
        epsilons=split_list(epsilons, float, "--epsilons") or [],
        replicates=replicates,
        episodes=visits,
        policies=split_list(policies, str, "--policies") or [],
        slate_sizes=split_list(slate_sizes, int, "--slate-sizes"),
        step_sizes=split_list(
            step_sizes, lambda text: StepSize.parse(text, "--step-sizes"), "--step-sizes"
        ),
        responses=split_list(responses, str, "--response"),
        schedule=schedule,
        drift_every=drift_every,
        seed=seed,
        blocks=blocks,
    )


def evaluation_spec(
    *,
    epsilons: str,
    policies: str,
    estimators: str | None,
    clip: float | None,
    reward_model: str,
    snapshot: str,
    seed: int | None,
) -> EvaluationSpec:
    """The targets and estimators of ``rlreco evaluate`` from its options."""
    from rlreco.app.evaluate import EvaluationSpec

    return EvaluationSpec(
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


def visit_response(
    respond: str | None, clicked: str, bought: str
) -> tuple[str, list[str], list[str]]:
    """``recommend``'s response mode and the product codes clicked and bought: ``given`` when
    any code is, ``simulate`` otherwise, unless ``--respond`` says which."""
    clicked_codes = [c.strip() for c in clicked.split(",") if c.strip()]
    bought_codes = [c.strip() for c in bought.split(",") if c.strip()]
    if respond is None:
        respond = "given" if clicked_codes or bought_codes else "simulate"
    return respond, clicked_codes, bought_codes
