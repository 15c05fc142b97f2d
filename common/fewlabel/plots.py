"""Plots of sweep results (:func:`fewlabel.sweep.collect`): a metric against one parameter with a
band of one standard deviation over seeds, a heat map over two parameters, and bars for named
variants — the panels of the SurgicalSemiSeg paper's Figure 4 and the other papers' ablations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["metric_value", "cell_values", "plot_curves", "plot_heatmap", "plot_bars"]


def metric_value(metrics: dict[str, Any], metric: str) -> float | None:
    """``metrics[metric]``, where ``metric`` may be a dotted path (``per_class.liver.dice``); ``None``
    when absent or not a finite number."""
    value: Any = metrics
    for part in metric.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _unit(scale: float) -> str:
    return " (%)" if scale == 100 else ""


def cell_values(summary: dict[str, Any], metric: str = "mean_iou",
                scale: float = 100.0) -> list[tuple[dict[str, Any], np.ndarray]]:
    """``[(params, per-seed values x scale), ...]`` for every cell of a grid summary (percent by default)."""
    out = []
    for cell in summary["cells"]:
        vals = [v for v in (metric_value(s, metric) for s in cell["seeds"].values()) if v is not None]
        out.append((cell["params"], scale * np.asarray(vals, dtype=float)))
    return out


def plot_curves(ax: plt.Axes, summary: dict[str, Any], x: str, group: str | None = None,
                metric: str = "mean_iou", where: dict[str, Any] | None = None, scale: float = 100.0) -> None:
    """``metric`` (x ``scale``; percent by default) against parameter ``x``, one line per value of
    ``group``, mean ± std band over seeds. A non-numeric ``x`` is spaced evenly in first-seen order."""
    rows = [(p, v) for p, v in cell_values(summary, metric, scale)
            if x in p and len(v) and all(p.get(k) == w for k, w in (where or {}).items())]
    groups = sorted({p.get(group) for p, _ in rows}, key=str) if group else [None]
    x_values = list(dict.fromkeys(p[x] for p, _ in rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x_values)
    position = (lambda v: float(v)) if numeric else (lambda v: float(x_values.index(v)))
    if not numeric:
        ax.set_xticks(range(len(x_values)), [str(v) for v in x_values])
    for g in groups:
        pts = sorted(((position(p[x]), v) for p, v in rows if group is None or p.get(group) == g), key=lambda t: t[0])
        if not pts:
            continue
        xs = np.array([p for p, _ in pts], dtype=float)
        mean = np.array([v.mean() for _, v in pts])
        std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for _, v in pts])
        label = f"{group}={g}" if group else None
        ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric}{_unit(scale)}")
    if group and len(groups) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_heatmap(ax: plt.Axes, summary: dict[str, Any], x: str, y: str, metric: str = "mean_iou",
                 scale: float = 100.0, cmap: str = "Blues") -> None:
    """Mean ``metric`` (x ``scale``) over seeds for every (x, y) cell; darker is higher."""
    rows = [(p, v) for p, v in cell_values(summary, metric, scale) if x in p and y in p]
    xs = sorted({p[x] for p, _ in rows}, key=lambda v: (isinstance(v, str), v))
    ys = sorted({p[y] for p, _ in rows}, key=lambda v: (isinstance(v, str), v))
    grid = np.full((len(ys), len(xs)), np.nan)
    for p, v in rows:
        grid[ys.index(p[y]), xs.index(p[x])] = v.mean() if len(v) else np.nan
    im = ax.imshow(grid, cmap=cmap, origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not np.isnan(grid[i, j]):
                shade = im.norm(grid[i, j])  # 0..1 along the colour map: light text on dark cells
                dark = shade > 0.6 if not cmap.endswith("_r") else shade < 0.4
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    plt.colorbar(im, ax=ax, label=f"{metric}{_unit(scale)}")


def plot_bars(ax: plt.Axes, summary: dict[str, Any], keys: Sequence[str], metric: str = "mean_iou",
              scale: float = 100.0) -> None:
    """One bar per cell (labelled by the values of ``keys``), mean ± std over seeds."""
    rows = [(p, v) for p, v in cell_values(summary, metric, scale) if len(v)]
    labels = ["/".join(str(p.get(k)) for k in keys) for p, _ in rows]
    means = [v.mean() for _, v in rows]
    stds = [v.std(ddof=1) if len(v) > 1 else 0.0 for _, v in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric}{_unit(scale)}")
    ax.grid(axis="y", alpha=0.3)
