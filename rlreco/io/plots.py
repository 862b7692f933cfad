"""PNG plots of a sweep: learning curves and final metrics vs epsilon.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch, safe in any thread). One figure per response model, because reward scales differ
between models:

- ``learning_<response>.png``: reward per visit of each block of visits and cumulative
  expected regret (when the response model knows the truth) against visits, one line per
  setting with its 95% confidence band over replicates; under a drifting truth (a schedule,
  file stem ``schedule``) a dotted vertical line marks each switch of truth.
- ``epsilon_<response>.png``: mean reward per visit over the run, reward per visit over the
  final 10% of visits and cumulative expected regret against epsilon, with 95% error bars; one
  line per slate size for epsilon-greedy, and a horizontal line with a band for every setting
  of the other policies (which do not use epsilon).

The inputs are the frames :mod:`rlreco.app.sweep` computes (``curves`` and ``summary``);
nothing here does statistics.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rlreco.config import is_schedule
from rlreco.io.atomic_files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: metric -> (panel title, y-axis label)
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "reward_per_visit": ("Reward per visit", "mean reward per visit (reward units)"),
    "final_reward_per_visit": (
        "Reward per visit, last 10% of visits",
        "mean reward per visit (reward units)",
    ),
    "regret": ("Cumulative expected regret", "expected regret (reward units)"),
    "click_rate": ("Click rate", "clicks per shown product"),
    "buy_rate": ("Buy rate", "purchases per shown product"),
}
#: the setting columns, in label order
SETTING_COLUMNS = ("policy", "param_name", "param", "step_size", "slate_size", "response")
GREEDY = "eps-greedy"
_DPI = 120


def file_stem(name: str) -> str:
    """File-name-safe form of a response model name (a truth table path becomes its stem, a
    schedule ``schedule``: a sweep has at most one)."""
    if is_schedule(name):
        return "schedule"
    stem = Path(name).stem if ("/" in name or "." in name) else name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem) or "response"


def title_name(response: str) -> str:
    """A response as a figure title names it: a schedule by its phases' file stems."""
    if not is_schedule(response):
        return response
    phases = [part.split("=", 1) for part in response.split(",")]
    return "drift " + " -> ".join(f"{Path(r).stem} @{int(v):,}" for v, r in phases)


def setting_labels(frame: pd.DataFrame) -> pd.Series:
    """Legend label per row: policy and parameter, plus the slate size when it varies.

    Parameters
    ----------
    frame : DataFrame
        Rows with the setting columns (response fixed within a figure).
    """
    greek = {"epsilon": "ε", "tau": "τ", "sigma": "σ"}
    show_slate = frame["slate_size"].nunique() > 1
    labels = []
    for row in frame.itertuples(index=False):
        label = str(row.policy)
        if isinstance(row.param_name, str) and row.param_name:
            label += f" {greek.get(row.param_name, row.param_name)}={row.param:g}"
        if isinstance(row.step_size, str) and row.step_size != "1/n":
            label += f" α={row.step_size}"
        if show_slate:
            label += f", n={row.slate_size}"
        labels.append(label)
    return pd.Series(labels, index=frame.index, dtype=object)


def load_matplotlib() -> None:
    """Import what drawing a figure needs (about half a second; matplotlib is imported only
    where figures are drawn): a process about to draw calls this ahead of the data."""
    from matplotlib import colormaps  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


#: Margins of every figure in inches: left, right (the legend's column), bottom, top, and
#: between panels. Fixed, not computed by a layout engine: measuring every label to place the
#: panels took half of a figure's drawing time.
MARGINS = (0.9, 2.5, 0.65, 0.8, 0.95)


def _figure(panels: int, panel_width: float, height: float = 4.5) -> Figure:
    """A figure of ``panels`` panels side by side, ``panel_width`` inches each, with
    :data:`MARGINS` around them."""
    from matplotlib.figure import Figure

    left, right, bottom, top, gap = MARGINS
    width = left + panels * panel_width + (panels - 1) * gap + right
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1.0 - right / width,
        bottom=bottom / height,
        top=1.0 - top / height,
        wspace=gap / panel_width,
    )
    return fig


def _write_png(fig: Figure, target: Path | io.BytesIO) -> None:
    """Draw ``fig`` with Agg into a PNG (zlib level 1: a fraction of the default level's
    encoding time, for files ~15% larger)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(target, format="png", dpi=_DPI, pil_kwargs={"compress_level": 1})


def _save(fig: Figure, path: Path) -> Path:
    # written under a temporary name and renamed: an interrupted sweep leaves no partial PNG
    with atomic_path(path) as tmp:
        _write_png(fig, tmp)
    return path


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(fig: Figure, axes: list[Axes], title: str = "setting") -> None:
    """The legend of the first panel's lines, in the figure's right margin."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        right = 1.0 - (MARGINS[1] - 0.15) / fig.get_figwidth()
        fig.legend(
            handles,
            labels,
            loc="center left",
            bbox_to_anchor=(right, 0.5),
            fontsize="small",
            title=title,
        )


def warm_up_drawing() -> None:
    """Draw and discard a small figure with every kind of artist the sweep's figures use, as a
    process about to draw does ahead of the data: the fonts, glyph and text caches, the
    Agg renderer and the PNG writer are loaded when the real figures come."""
    load_matplotlib()
    fig = _figure(1, 1.0, 1.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(3, dtype=float)
    ax.plot(x, x, color=_colors(1)[0], label="eps-greedy ε=0.1 α=1/n", lw=1.3)
    ax.fill_between(x, x - 0.5, x + 0.5, alpha=0.18, lw=0)
    ax.errorbar(x, x, yerr=np.full((2, 3), 0.1), marker="o", capsize=3, label="n=10")
    ax.axhline(1.0, ls="--", lw=1.2)
    ax.axhspan(0.5, 1.5, alpha=0.15, lw=0)
    ax.axvline(1.0, color="0.35", ls=":", lw=1.2)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_title("Reward per visit (per block of visits)")
    ax.set_xlabel("visits simulated")
    ax.set_ylabel("mean reward per visit (reward units)")
    ax.grid(alpha=0.3)
    fig.suptitle("Learning curves, response model 'popularity' (mean and 95% CI over replicates)")
    _legend(fig, [ax])
    _write_png(fig, io.BytesIO())


def plot_learning_curves(
    curves: pd.DataFrame, response: str, path: Path, switches: Sequence[int] = ()
) -> Path:
    """Learning curves of one response model.

    Parameters
    ----------
    curves : DataFrame
        Setting columns, ``metric`` (``reward_per_visit`` or ``regret``), ``visits``
        (visits simulated at the end of the block), ``mean``, ``low``, ``high``.
    response : str
        Response model drawn (rows of other models are ignored).
    path : Path
        PNG file to write.
    switches : sequence of int
        Visits at which the truth switches (a schedule's phase starts after the first): a
        dotted vertical line each.
    """
    data = curves[curves["response"] == response]
    metrics = [m for m in ("reward_per_visit", "regret") if m in set(data["metric"])]
    regret = data[data["metric"] == "regret"]
    if regret.empty or not np.isfinite(regret["mean"].to_numpy(dtype=float)).any():
        metrics = ["reward_per_visit"]
    settings = data[list(SETTING_COLUMNS)].drop_duplicates().reset_index(drop=True)
    labels = setting_labels(settings)
    colors = _colors(len(settings))
    fig = _figure(len(metrics), 5.0)
    axes = [fig.add_subplot(1, len(metrics), i + 1) for i in range(len(metrics))]
    for ax, metric in zip(axes, metrics, strict=True):
        rows = data[data["metric"] == metric]
        for i, setting in settings.iterrows():
            mask = np.ones(len(rows), dtype=bool)
            for col in SETTING_COLUMNS:
                mask &= (rows[col] == setting[col]).to_numpy() | (
                    rows[col].isna().to_numpy() & pd.isna(setting[col])
                )
            line = rows[mask].sort_values("visits")
            x = line["visits"].to_numpy(dtype=float)
            ax.plot(x, line["mean"].to_numpy(dtype=float), color=colors[i], label=labels[i], lw=1.3)
            ax.fill_between(
                x,
                line["low"].to_numpy(dtype=float),
                line["high"].to_numpy(dtype=float),
                color=colors[i],
                alpha=0.18,
                lw=0,
            )
        for k, visit in enumerate(switches):
            label = "truth switches" if k == 0 else None
            ax.axvline(float(visit), color="0.35", ls=":", lw=1.2, label=label)
        title, ylabel = METRIC_LABELS[metric]
        if metric == "reward_per_visit":
            title += " (per block of visits)"
        ax.set_title(title)
        ax.set_xlabel("visits simulated")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    fig.suptitle(
        f"Learning curves, response model '{title_name(response)}' "
        "(mean and 95% CI over replicates)"
    )
    _legend(fig, axes)
    return _save(fig, path)


def plot_metrics_vs_epsilon(summary: pd.DataFrame, response: str, path: Path) -> Path:
    """Final metrics against epsilon for one response model.

    Parameters
    ----------
    summary : DataFrame
        One row per setting: setting columns and ``<metric>_mean``, ``<metric>_low``,
        ``<metric>_high`` for ``reward_per_visit``, ``final_reward_per_visit`` and ``regret``.
    response : str
    path : Path
        PNG file to write.
    """
    data = summary[summary["response"] == response].reset_index(drop=True)
    metrics = ["reward_per_visit", "final_reward_per_visit"]
    if np.isfinite(data["regret_mean"].to_numpy(dtype=float)).any():
        metrics.append("regret")
    greedy = data[data["policy"] == GREEDY]
    others = data[data["policy"] != GREEDY].reset_index(drop=True)
    slates = sorted(greedy["slate_size"].unique().tolist())
    colors = _colors(len(slates) + len(others))
    other_labels = setting_labels(others) if len(others) else pd.Series([], dtype=object)
    eps = greedy["param"].to_numpy(dtype=float)
    positive = eps[eps > 0]
    fig = _figure(len(metrics), 4.0)
    axes = [fig.add_subplot(1, len(metrics), i + 1) for i in range(len(metrics))]
    for ax, metric in zip(axes, metrics, strict=True):
        mean, low, high = (f"{metric}_{k}" for k in ("mean", "low", "high"))
        for i, slate in enumerate(slates):
            line = greedy[greedy["slate_size"] == slate].sort_values("param")
            y = line[mean].to_numpy(dtype=float)
            err = np.vstack(
                [y - line[low].to_numpy(dtype=float), line[high].to_numpy(dtype=float) - y]
            )
            label = f"{GREEDY}, n={slate}" if len(slates) > 1 else GREEDY
            ax.errorbar(
                line["param"].to_numpy(dtype=float),
                y,
                yerr=np.nan_to_num(err),
                color=colors[i],
                marker="o",
                capsize=3,
                label=label,
            )
        for j, row in others.iterrows():
            color = colors[len(slates) + j]
            ax.axhline(row[mean], color=color, ls="--", lw=1.2, label=other_labels[j])
            if np.isfinite(row[low]) and np.isfinite(row[high]):
                ax.axhspan(row[low], row[high], color=color, alpha=0.15, lw=0)
        if positive.size and positive.max() / positive.min() >= 20:
            # small epsilons matter most; symlog keeps 0 on the axis
            ax.set_xscale("symlog", linthresh=float(positive.min()))
            ax.set_xlim(-0.3 * float(positive.min()), 1.3 * float(positive.max()))
        if eps.size:
            ticks = np.unique(eps)
            ax.set_xticks(ticks, [f"{e:g}" for e in ticks])
            ax.minorticks_off()
        title, ylabel = METRIC_LABELS[metric]
        ax.set_title(title)
        ax.set_xlabel("epsilon (exploration probability per slot)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Metrics vs epsilon, response model '{title_name(response)}' (mean and 95% CI)")
    _legend(fig, axes)
    return _save(fig, path)


def sweep_figures(
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: Path,
    switches: Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[Path, Callable[[], Path]]]:
    """The figures of a sweep, each as its PNG path and a call that draws and writes it:
    both figures for every response model (independent calls: any order, any process).

    ``switches`` gives, per response, the visits at which its truth switches (schedules).
    """
    figures: list[tuple[Path, Callable[[], Path]]] = []
    paths = iter(sweep_figure_paths(summary, out_dir))
    for response in _responses(summary):
        marks = (switches or {}).get(response, ())
        learning, epsilon = next(paths), next(paths)
        figures.append(
            (learning, functools.partial(plot_learning_curves, curves, response, learning, marks))
        )
        figures.append(
            (epsilon, functools.partial(plot_metrics_vs_epsilon, summary, response, epsilon))
        )
    return figures


def sweep_figure_paths(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The PNG files :func:`sweep_figures` writes, in its order (without matplotlib)."""
    paths = []
    for response in _responses(summary):
        stem = file_stem(response)
        paths += [out_dir / f"learning_{stem}.png", out_dir / f"epsilon_{stem}.png"]
    return paths


def _responses(summary: pd.DataFrame) -> list[str]:
    return sorted(summary["response"].unique().tolist())


#: metric of an off-policy estimate -> (panel title, y-axis label)
ESTIMATE_LABELS: dict[str, tuple[str, str]] = {
    "reward_per_visit": ("Reward per visit", "mean reward per visit (reward units)"),
    "click_rate": ("Click rate", "clicked or bought per shown product"),
    "buy_rate": ("Buy rate", "purchases per shown product"),
}


def plot_estimates(summary: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """Off-policy estimates against the target's epsilon, one line per estimator.

    Parameters
    ----------
    summary : DataFrame
        One row per (estimator, policy, epsilon) with ``<metric>_mean``, ``_low``, ``_high``.
    metrics : list of str
        Keys of :data:`ESTIMATE_LABELS` to draw, one panel each.
    path : Path
        PNG file to write.
    """
    estimators = list(dict.fromkeys(summary["estimator"].tolist()))
    colors = _colors(len(estimators))
    fig = _figure(len(metrics), 4.0)
    axes = [fig.add_subplot(1, len(metrics), i + 1) for i in range(len(metrics))]
    eps = np.unique(summary["epsilon"].to_numpy(dtype=float))
    for ax, metric in zip(axes, metrics, strict=True):
        for i, name in enumerate(estimators):
            line = summary[summary["estimator"] == name].sort_values("epsilon")
            y = line[f"{metric}_mean"].to_numpy(dtype=float)
            if not np.isfinite(y).any():
                continue
            err = np.vstack(
                [
                    y - line[f"{metric}_low"].to_numpy(dtype=float),
                    line[f"{metric}_high"].to_numpy(dtype=float) - y,
                ]
            )
            ax.errorbar(
                line["epsilon"].to_numpy(dtype=float),
                y,
                yerr=np.nan_to_num(err),
                color=colors[i],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        title, ylabel = ESTIMATE_LABELS[metric]
        ax.set_title(title)
        ax.set_xlabel("target epsilon")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("Off-policy estimates of epsilon-greedy targets (mean and 95% CI)")
    _legend(fig, axes, "estimator")
    return _save(fig, path)
