"""Sweep statistics: replicate-level metrics, per-setting t-intervals, best settings,
learning curves (pure computation on the per-block results of a sweep).

Per setting, over replicates: mean and 95% Student-t interval of reward per visit, reward per
visit over the last 10% of blocks, click rate and buy rate (per shown product), share of
explored slots, cumulative expected regret and regret per visit (when the response model knows
the truth), and visits/s. The best setting per metric is compared with the runner-up by
Welch's t-test (two-sided, 5% level); see :mod:`rlreco.engine.statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rlreco.engine.simulation_params import METRIC_SUMS
from rlreco.engine.statistics import t_interval, t_quantile, welch_difference, welch_test

#: columns of the per-block metric sums of a cell, in order
METRIC_COLUMNS: tuple[str, ...] = tuple(METRIC_SUMS or ())
#: columns identifying a setting, in order
SETTING_COLUMNS = ("policy", "param_name", "param", "step_size", "slate_size", "response")
#: replicate-level metrics summarised per setting
SUMMARY_METRICS = (
    "reward_per_visit",
    "final_reward_per_visit",
    "click_rate",
    "buy_rate",
    "explored_share",
    "regret",
    "regret_per_visit",
    "visits_per_second",
)
#: metric -> whether larger is better, for the best-setting comparison
BEST_DIRECTION: dict[str, bool] = {
    "reward_per_visit": True,
    "final_reward_per_visit": True,
    "click_rate": True,
    "buy_rate": True,
    "regret": False,
}
#: metric -> the range its values can take, where it is bounded: a t-interval (symmetric) around
#: the mean of a few replicates can reach past it (a negative speed), and is cut to it
METRIC_RANGE: dict[str, tuple[float, float]] = {
    "click_rate": (0.0, 1.0),
    "buy_rate": (0.0, 1.0),
    "explored_share": (0.0, 1.0),
    "regret": (0.0, math.inf),
    "regret_per_visit": (0.0, math.inf),
    "visits_per_second": (0.0, math.inf),
}
#: share of the last blocks that "final" metrics average over
FINAL_SHARE = 0.1
LEVEL = 0.95
SIGNIFICANCE = 0.05


def replicate_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """Replicate-level metrics: one row per cell (setting and replicate).

    Parameters
    ----------
    results : DataFrame
        Per-block results (setting columns, ``replicate``, ``block``, metric columns,
        ``cell_seconds``).
    """
    keys = [*SETTING_COLUMNS, "replicate"]
    results = results.sort_values([*keys, "block"], kind="stable")
    grouped = results.groupby(keys, sort=False, dropna=False)
    sums = grouped[list(METRIC_COLUMNS)].sum()
    n_blocks = grouped["block"].transform("size")
    rank_from_end = n_blocks - grouped.cumcount()
    tail = results[rank_from_end <= np.ceil(FINAL_SHARE * n_blocks)]
    tail_sums = tail.groupby(keys, sort=False, dropna=False)[["visits", "reward_sum"]].sum()
    seconds = grouped["cell_seconds"].first()
    out = pd.DataFrame(index=sums.index)
    visits = sums["visits"].astype(float)
    slots = sums["slots"].astype(float)
    out["visits"] = sums["visits"]
    out["reward_per_visit"] = sums["reward_sum"] / visits
    out["final_reward_per_visit"] = tail_sums["reward_sum"] / tail_sums["visits"].astype(float)
    out["click_rate"] = sums["clicks"] / slots
    out["buy_rate"] = sums["buys"] / slots
    out["explored_share"] = sums["explored"] / slots
    known = sums["regret_visits"] == sums["visits"]
    out["regret"] = sums["regret_sum"].where(known, np.nan)
    out["regret_per_visit"] = out["regret"] / visits
    out["visits_per_second"] = visits / seconds
    return out.reset_index()


def summarise(
    replicates: pd.DataFrame, settings: Sequence[tuple[str, Mapping[str, Any]]]
) -> pd.DataFrame:
    """Mean and 95% t-interval of every summary metric per setting, in grid order, each
    interval cut to the range its metric can take (:data:`METRIC_RANGE`).

    Parameters
    ----------
    replicates : DataFrame
        :func:`replicate_metrics`.
    settings : sequence of (str, mapping)
        Each setting's label and its values of :data:`SETTING_COLUMNS`, in grid order.

    Settings without any finished replicate get NaN statistics and ``replicates`` 0.
    """
    rows = []
    for label, cols in settings:
        mask = np.ones(len(replicates), dtype=bool)
        for name in SETTING_COLUMNS:
            mask &= (replicates[name] == cols[name]).to_numpy()
        mine = replicates[mask]
        row: dict[str, Any] = {"label": label, **cols, "replicates": len(mine)}
        for metric in SUMMARY_METRICS:
            ci = t_interval(mine[metric].to_numpy(dtype=float), LEVEL)
            bottom, top = METRIC_RANGE.get(metric, (-math.inf, math.inf))
            row[f"{metric}_mean"] = ci.mean
            # a NaN bound (fewer than two replicates) compares false and stays NaN
            row[f"{metric}_low"] = bottom if ci.low < bottom else ci.low
            row[f"{metric}_high"] = top if ci.high > top else ci.high
        rows.append(row)
    return pd.DataFrame(rows)


def best_settings(summary: pd.DataFrame, replicates: pd.DataFrame) -> list[dict[str, Any]]:
    """Best setting per metric and whether it beats the runner-up significantly.

    Returns
    -------
    list of dict
        Per metric of :data:`BEST_DIRECTION` with a finite mean: ``metric``, ``higher_is_better``,
        ``best`` and ``runner_up`` (labels), their means, ``p_value`` (Welch, two-sided; None
        when a side has fewer than two replicates) and ``significant`` (p < 0.05).
    """
    out = []
    for metric, higher in BEST_DIRECTION.items():
        means = summary[f"{metric}_mean"].to_numpy(dtype=float)
        finite = np.flatnonzero(np.isfinite(means))
        if finite.size == 0:
            continue
        order = finite[np.argsort(-means[finite] if higher else means[finite], kind="stable")]
        best = summary.iloc[order[0]]
        entry: dict[str, Any] = {
            "metric": metric,
            "higher_is_better": higher,
            "best": best["label"],
            "best_mean": float(best[f"{metric}_mean"]),
            "runner_up": None,
            "runner_up_mean": None,
            "p_value": None,
            "significant": None,
        }
        if order.size > 1:
            second = summary.iloc[order[1]]
            p = welch_test(_values(replicates, best, metric), _values(replicates, second, metric))
            entry.update(
                runner_up=second["label"],
                runner_up_mean=float(second[f"{metric}_mean"]),
                p_value=None if math.isnan(p) else p,
                significant=None if math.isnan(p) else bool(p < SIGNIFICANCE),
            )
        out.append(entry)
    return out


def verdicts(summary: pd.DataFrame, replicates: pd.DataFrame) -> list[dict[str, Any]]:
    """Which setting to ship for each truth, and what each alternative costs.

    Settings are compared within each (response, slate size): by expected regret per visit
    when the truth is known (lower is better), else by reward per visit (higher is better).
    The cost of an alternative is its extra regret (or lost reward) per 1,000 visits against
    the best setting, with a 95% Welch interval of the difference and Welch's p-value.

    Returns
    -------
    list of dict
        Per (response, slate size): ``response``, ``slate_size``, ``metric``, ``best``
        (label), ``best_mean`` / ``best_low`` / ``best_high`` (the metric per visit), and
        ``alternatives``: per other setting, best first, ``label``, ``cost_per_1000``,
        ``cost_low``, ``cost_high``, ``p_value`` and ``significant`` (None where a setting has
        fewer than two replicates).
    """
    out: list[dict[str, Any]] = []
    for (response, slate), group in summary.groupby(["response", "slate_size"], sort=False):
        regret = group["regret_per_visit_mean"].to_numpy(dtype=float)
        metric, lower = (
            ("regret_per_visit", True) if np.isfinite(regret).all() else ("reward_per_visit", False)
        )
        means = group[f"{metric}_mean"].to_numpy(dtype=float)
        finite = np.flatnonzero(np.isfinite(means))
        if finite.size == 0:
            continue
        order = finite[np.argsort(means[finite] if lower else -means[finite], kind="stable")]
        best = group.iloc[order[0]]
        best_values = _values(replicates, best, metric)
        alternatives = []
        for i in order[1:]:
            other = group.iloc[i]
            values = _values(replicates, other, metric)
            # extra regret, or lost reward, of the alternative: positive is worse
            diff = (
                welch_difference(values, best_values)
                if lower
                else welch_difference(best_values, values)
            )
            p = welch_test(values, best_values)
            alternatives.append(
                {
                    "label": other["label"],
                    "cost_per_1000": _finite(1000.0 * diff.mean),
                    "cost_low": _finite(1000.0 * diff.low),
                    "cost_high": _finite(1000.0 * diff.high),
                    "p_value": _finite(p),
                    "significant": None if math.isnan(p) else bool(p < SIGNIFICANCE),
                }
            )
        out.append(
            {
                "response": response,
                "slate_size": int(slate),
                "metric": metric,
                "best": best["label"],
                "best_mean": _finite(best[f"{metric}_mean"]),
                "best_low": _finite(best[f"{metric}_low"]),
                "best_high": _finite(best[f"{metric}_high"]),
                "alternatives": alternatives,
            }
        )
    return out


def _finite(value: Any) -> float | None:
    """A float, or None for NaN (JSON has no NaN)."""
    x = float(value)
    return None if math.isnan(x) else x


def _values(replicates: pd.DataFrame, setting: pd.Series, metric: str) -> np.ndarray:
    mask = np.ones(len(replicates), dtype=bool)
    for name in SETTING_COLUMNS:
        mask &= (replicates[name] == setting[name]).to_numpy()
    return replicates.loc[mask, metric].to_numpy(dtype=float)


def learning_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Per setting and block: mean and 95% interval over replicates of the block's reward per
    visit and of the cumulative expected regret.

    Parameters
    ----------
    results : DataFrame
        Per-block results with every cell's blocks in order (as :func:`run_sweep` writes them).

    Returns
    -------
    DataFrame
        Setting columns, ``metric`` (``reward_per_visit`` or ``regret``), ``block``,
        ``visits`` (visits simulated at the block's end), ``mean``, ``low``, ``high``, ``n``.
    """
    keys = [*SETTING_COLUMNS, "replicate"]
    frame = results.copy()
    grouped = frame.groupby(keys, sort=False, dropna=False)
    frame["visits_end"] = grouped["visits"].cumsum()
    frame["reward_per_visit"] = frame["reward_sum"] / frame["visits"].astype(float)
    known = grouped["regret_visits"].transform("sum") == grouped["visits"].transform("sum")
    frame["regret"] = grouped["regret_sum"].cumsum().where(known, np.nan)
    parts = []
    for metric in ("reward_per_visit", "regret"):
        stats = (
            frame.groupby([*SETTING_COLUMNS, "block"], sort=False, dropna=False)
            .agg(
                visits=("visits_end", "mean"),
                mean=(metric, "mean"),
                std=(metric, "std"),
                n=(metric, "count"),
            )
            .reset_index()
        )
        quantile = {
            n: t_quantile(0.5 + 0.5 * LEVEL, n - 1) if n >= 2 else math.nan
            for n in stats["n"].unique().tolist()
        }
        half = stats["n"].map(quantile) * stats["std"] / np.sqrt(stats["n"].astype(float))
        stats["low"] = stats["mean"] - half
        stats["high"] = stats["mean"] + half
        stats.insert(len(SETTING_COLUMNS), "metric", metric)
        parts.append(stats.drop(columns="std"))
    return pd.concat(parts, ignore_index=True)
