"""``fewlabel report RUN_DIR``: collect a sweep's metrics and write a Markdown report with tables and plots.

The layout comes from the spec's ``report`` section (saved in ``RUN_DIR/sweep.yaml``)::

    report:
      title: "Table 3: thresholding methods"
      stage: evaluate            # whose metrics (default: the last stage)
      metrics_file: metrics.json # in that stage's folder
      metric: mean_iou           # main metric: plots, overlay order, default tables (default: mean_iou,
                                 # else mean_dice, else the first mean_* figure)
      lower_is_better: [mean_hausdorff]   # default: names with hausdorff / distance / loss / error
      percent: [mean_iou]        # shown x100; default: names with iou / dice / precision / recall / accuracy
                                 # (false: as the metrics hold them, the papers that print 0.753)
      digits: 2                  # decimals shown
      tables:
        - {rows: [threshold_method], metrics: [mean_iou, mean_dice]}      # a row per cell, a column per metric
        - {metrics: {supervised: stages.evaluate_supervised.mean_dice, mined: mean_dice}}  # headers; other stages
        - {rows: [mask_ratio], cols: mask_size, metric: mean_iou}         # a two-parameter grid
        - {rows: [arch], cols: epochs, where: {batch_size: 16}}            # 'where' picks cells
        - {rows: [mask_ratio], cols: mask_size, where: {mask_size: [16, 32]}}  # a list: any of its values
        - {rows: [pretrain_method], per_class: iou}                       # a column per class (+ mean)
        - {rows: [labelled_fraction], variants: {supervised: stages.evaluate_supervised, continuous: ""},
           metrics: {IoU: mean_iou_foreground, Dice: mean_dice_foreground}}  # a row per cell and variant
      plots:
        - {kind: curve, x: mask_ratio, group: mask_size}                  # metric vs parameter, seed band
        - {kind: heatmap, x: mask_size, y: mask_ratio}
        - {kind: bars, keys: [loss_name]}
      training_curves: true      # from the runs' TensorBoard logs
      overlays: {cells: 4, examples: 3}   # image / ground truth / prediction of the best cells

A ``variants`` table follows papers whose rows are methods (a stage each) within a setting: a row per
cell and variant (``label: path prefix`` of that variant's metrics, ``""`` for the report stage's own);
a variant without a value for a cell (a stage skipped there) has no row.

Every entry is mean ± standard deviation over the seeds that finished (``(n=k)`` when fewer than the
spec's; the value alone when the spec has one seed), the best of each column in bold. Without
``tables`` / ``plots`` the report has a table of every cell with the main metric and the other
``mean_*`` figures, the per-class table when the metrics have one, and curves / a heat map for one- and
two-parameter grids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fewlabel.errors import FewLabelError  # noqa: E402
from fewlabel.plots import metric_value, plot_bars, plot_curves, plot_heatmap  # noqa: E402
from fewlabel.sweep.spec import SweepSpec, param_matches, load_spec  # noqa: E402

__all__ = ["collect", "aggregate", "metrics_table", "grid_table", "per_class_table", "variant_table", "make_report"]

logger = logging.getLogger("fewlabel")

_LOWER = ("hausdorff", "distance", "loss", "error", "hd95")
_PERCENT = ("iou", "dice", "precision", "recall", "accuracy", "f1")


def collect(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run_dir/sweep.yaml`` and every finished run's metrics.

    Returns:
        ``{"spec": SweepSpec, "cells": [{"cell", "params", "seeds": {seed: metrics}, "folders": {seed: Path}}],
        "missing": [run keys without metrics], "failed": [{"key", "error"}]}``. ``metrics`` is the report
        stage's metrics file, with every stage's under ``"stages"`` (``stages.evaluate_sam.mean_dice``).
        This is the summary form :mod:`fewlabel.plots` takes.

    Raises:
        FewLabelError: ``run_dir`` has no ``sweep.yaml`` (not a sweep folder).
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "sweep.yaml").is_file():
        raise FewLabelError(f"{run_dir} is not a sweep folder (no sweep.yaml): pass the --run_dir of `fewlabel sweep`")
    spec = load_spec(run_dir / "sweep.yaml")
    rep = spec.report
    stage = rep.get("stage") or spec.stages[-1].name
    metrics_file = rep.get("metrics_file", "metrics.json")
    cells: dict[str, dict[str, Any]] = {}
    missing = []
    for run in spec.runs(run_dir):
        cell = cells.setdefault(run.cell, {"cell": run.cell, "params": run.params, "seeds": {}, "folders": {}})
        path = run.folder / stage / metrics_file
        if (run.folder / "done.json").is_file() and path.is_file():
            metrics = json.loads(path.read_text())
            metrics["stages"] = {s.name: json.loads((run.folder / s.name / metrics_file).read_text())
                                 for s in spec.stages if (run.folder / s.name / metrics_file).is_file()}
            cell["seeds"][run.seed] = metrics
            cell["folders"][run.seed] = run.folder
        else:
            missing.append(run.key)
    failed = json.loads((run_dir / "failed.json").read_text()) if (run_dir / "failed.json").is_file() else []
    return {"spec": spec, "stage": stage, "cells": list(cells.values()), "missing": missing, "failed": failed}


def aggregate(cell: dict[str, Any], metric: str) -> tuple[float, float, int] | None:
    """Mean, standard deviation (``ddof=1``; 0 for one seed) and count of ``metric`` over a cell's seeds."""
    vals = [v for v in (metric_value(m, metric) for m in cell["seeds"].values()) if v is not None]
    if not vals:
        return None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


class _Style:
    """How a metric is shown: scale (percent or not), direction, digits."""

    def __init__(self, rep: dict[str, Any]) -> None:
        self.lower = set(rep.get("lower_is_better", []))
        self.higher = set(rep.get("higher_is_better", []))
        self.percent = rep.get("percent")
        self.digits = int(rep.get("digits", 2))

    def scale(self, metric: str) -> float:
        if isinstance(self.percent, bool):
            return 100.0 if self.percent else 1.0
        if isinstance(self.percent, list):
            return 100.0 if metric in self.percent or metric.split(".")[-1] in self.percent else 1.0
        return 100.0 if any(k in metric.split(".")[-1].lower() for k in _PERCENT) else 1.0

    def lower_is_better(self, metric: str) -> bool:
        for name in (metric, metric.split(".")[-1]):
            if name in self.lower or name in self.higher:
                return name in self.lower
        return any(k in metric.lower() for k in _LOWER)


def _fmt(agg: tuple[float, float, int] | None, scale: float, n_seeds: int, digits: int = 2) -> str:
    if agg is None:
        return "-"
    mean, std, n = agg
    if n_seeds == 1:  # one seed (a deterministic table, e.g. scoring given predictions): the value alone
        return f"{scale * mean:.{digits}f}"
    text = f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"
    return text + (f" (n={n})" if n < n_seeds else "")


def _bold_best(columns: list[list[tuple[float, float, int] | None]], lower: list[bool]) -> list[set[int]]:
    """For each column, the row indices holding its best mean (ties all bold)."""
    best = []
    for col, low in zip(columns, lower):
        means = [a[0] for a in col if a is not None]
        if len(means) < 2:
            best.append(set())
            continue
        target = min(means) if low else max(means)
        best.append(
            {i for i, a in enumerate(col) if a is not None and abs(a[0] - target) <= 1e-12 * max(1.0, abs(target))}
        )
    return best


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _row_keys(data: dict[str, Any], rows: Sequence[str] | None) -> list[str]:
    if rows:
        return list(rows)
    keys: list[str] = []
    for c in data["cells"]:
        keys += [k for k in c["params"] if k not in keys]
    return keys


def _table(data: dict[str, Any], rows: Sequence[str] | None, columns: list[tuple[str, str]], style: _Style,
           cells: list[dict[str, Any]] | None = None) -> str:
    """Rows = cells (labelled by the values of ``rows``), columns = ``(header, metric path)``."""
    cells = cells if cells is not None else data["cells"]
    keys = _row_keys(data, rows)
    n_seeds = len(data["spec"].seeds)
    aggs = [[aggregate(c, metric) for c in cells] for _, metric in columns]
    best = _bold_best(aggs, [style.lower_is_better(m) for _, m in columns])
    body = []
    for i, c in enumerate(cells):
        row = [str(c["params"].get(k, "-")) for k in keys] or [c["cell"]]
        for j, (_, metric) in enumerate(columns):
            text = _fmt(aggs[j][i], style.scale(metric), n_seeds, style.digits)
            row.append(f"**{text}**" if i in best[j] else text)
        body.append(row)
    header = (keys or ["cell"]) + [h + (" (%)" if style.scale(m) == 100 else "") for h, m in columns]
    return _markdown(header, body)


def metrics_table(data: dict[str, Any], metrics: Sequence[str] | dict[str, str], rows: Sequence[str] | None = None,
                  style: _Style | None = None) -> str:
    """A row per cell, a column per metric (mean ± std over seeds, best in bold). ``metrics``: metric
    paths, or ``{column header: metric path}`` (e.g. ``{"SAM": "stages.evaluate_sam.mean_dice"}``)."""
    columns = list(metrics.items()) if isinstance(metrics, dict) else [(m, m) for m in metrics]
    return _table(data, rows, columns, style or _Style(data["spec"].report))


def variant_table(data: dict[str, Any], variants: dict[str, str], metrics: Sequence[str] | dict[str, str],
                  rows: Sequence[str] | None = None, style: _Style | None = None, label: str = "method") -> str:
    """A row per cell and variant, a column per metric: ``variants`` maps a row label to the path prefix of
    its metrics (``stages.evaluate_supervised``; ``""``: the report stage's), e.g. the supervised, one-time
    and continuous rows of each labelled share in SAM mining's Table 1. Variants with no value in a cell
    (their stage skipped there) are left out of that cell's rows."""
    style = style or _Style(data["spec"].report)
    columns = list(metrics.items()) if isinstance(metrics, dict) else [(m, m) for m in metrics]
    keys = _row_keys(data, rows)
    n_seeds = len(data["spec"].seeds)
    entries = []
    for c in data["cells"]:
        for name, prefix in variants.items():
            paths = [f"{prefix}.{m}" if prefix else m for _, m in columns]
            aggs = [aggregate(c, p) for p in paths]
            if any(a is not None for a in aggs) or not c["seeds"]:
                entries.append(([str(c["params"].get(k, "-")) for k in keys] + [name], aggs))
    best = _bold_best([[e[1][j] for e in entries] for j in range(len(columns))],
                      [style.lower_is_better(m) for _, m in columns])
    body = []
    for i, (labels, aggs) in enumerate(entries):
        row = list(labels)
        for j, (_, metric) in enumerate(columns):
            text = _fmt(aggs[j], style.scale(metric), n_seeds, style.digits)
            row.append(f"**{text}**" if i in best[j] else text)
        body.append(row)
    header = keys + [label] + [h + (" (%)" if style.scale(m) == 100 else "") for h, m in columns]
    return _markdown(header, body)


def per_class_table(data: dict[str, Any], metric: str = "iou", rows: Sequence[str] | None = None,
                    path: str = "per_class", mean: str | None = None, style: _Style | None = None) -> str:
    """A row per cell, a column per class (``<path>.<class>.<metric>``) and the mean (``mean_<metric>``)."""
    classes: list[str] = []
    for c in data["cells"]:
        for m in c["seeds"].values():
            node: Any = m
            for part in path.split("."):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            classes += [k for k in node if k not in classes]
    columns = [(f"{cls} {metric}", f"{path}.{cls}.{metric}") for cls in classes]
    columns.append((f"mean {metric}", mean or f"mean_{metric}"))
    return _table(data, rows, columns, style or _Style(data["spec"].report))


def grid_table(data: dict[str, Any], rows: Sequence[str], cols: str, metric: str, style: _Style | None = None) -> str:
    """A two-parameter layout: a row per combination of ``rows`` values, a column per ``cols`` value;
    entries are ``metric`` (best of the whole table in bold)."""
    style = style or _Style(data["spec"].report)
    n_seeds = len(data["spec"].seeds)
    row_vals = list(dict.fromkeys(tuple(c["params"].get(k) for k in rows) for c in data["cells"]))
    col_vals = list(dict.fromkeys(c["params"].get(cols) for c in data["cells"]))
    by_key: dict[tuple[Any, Any], dict[str, Any]] = {}
    for c in data["cells"]:
        key = (tuple(c["params"].get(k) for k in rows), c["params"].get(cols))
        if key in by_key:
            raise FewLabelError(f"cells {by_key[key]['cell']} and {c['cell']} fall on the same entry of the "
                                f"{', '.join(rows)} x {cols} table: add the parameter that separates them to "
                                "'rows', or pick cells with 'where'")
        by_key[key] = c
    aggs = {key: aggregate(c, metric) for key, c in by_key.items()}
    present = [a for a in aggs.values() if a is not None]
    lower = style.lower_is_better(metric)
    target = (min if lower else max)(a[0] for a in present) if len(present) > 1 else None
    scale = style.scale(metric)
    body = []
    for rv in row_vals:
        row = [str(v) for v in rv]
        for cv in col_vals:
            a = aggs.get((rv, cv))
            text = _fmt(a, scale, n_seeds, style.digits)
            row.append(f"**{text}**" if a is not None and target is not None and a[0] == target else text)
        body.append(row)
    header = list(rows) + [f"{cols}={v}" for v in col_vals]
    unit = " (%)" if scale == 100 else ""
    return f"{metric}{unit} by {', '.join(rows)} (rows) and {cols} (columns):\n\n" + _markdown(header, body)


def _where(data: dict[str, Any], where: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` with only the cells whose parameters match ``where`` (a list value: any of its values)."""
    if not where:
        return data
    keep = [c for c in data["cells"] if all(param_matches(c["params"].get(k), v) for k, v in where.items())]
    return {**data, "cells": keep}


def _plot(data: dict[str, Any], plot: dict[str, Any], metric: str, style: _Style, path: Path) -> Path | None:
    kind = plot.get("kind", "curve")
    metric = plot.get("metric", metric)
    data = _where(data, plot.get("where"))
    scale = style.scale(metric)
    if not any(aggregate(c, metric) for c in data["cells"]):
        logger.warning("report plot %s: no finished run has %s; not drawn", path.name, metric)
        return None
    fig, ax = plt.subplots(figsize=(6.5 if kind == "heatmap" else 6, 4.2))
    if kind == "curve":
        plot_curves(ax, data, plot["x"], group=plot.get("group"), metric=metric, scale=scale)
    elif kind == "heatmap":
        plot_heatmap(ax, data, plot["x"], plot["y"], metric=metric, scale=scale,
                     cmap="Blues_r" if style.lower_is_better(metric) else "Blues")
    elif kind == "bars":
        plot_bars(ax, data, plot.get("keys") or _row_keys(data, None), metric=metric, scale=scale)
    else:
        plt.close(fig)
        raise FewLabelError(f"report plot kind '{kind}' is not one of curve, heatmap, bars")
    ax.set_title(plot.get("title", f"{metric} ({kind})"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scalars(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar series in the TensorBoard event files of ``folder``: ``{tag: (steps, values)}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            ev = acc.Scalars(tag)
            steps = np.array([e.step for e in ev], dtype=float)
            vals = np.array([e.value for e in ev], dtype=float)
            if tag in out:
                steps, vals = np.concatenate([out[tag][0], steps]), np.concatenate([out[tag][1], vals])
            out[tag] = (steps, vals)
    return out


def training_curves(data: dict[str, Any], path: Path, max_cells: int = 8, max_tags: int = 3) -> Path | None:
    """Training curves from the runs' TensorBoard logs: a panel per (stage, scalar), a line per cell
    (mean over seeds, band of one standard deviation). ``None`` when no run has logs."""
    spec: SweepSpec = data["spec"]
    series: dict[tuple[str, str], dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for cell in data["cells"][:max_cells]:
        for folder in cell["folders"].values():
            for stage in spec.stages:
                for tag, sv in _scalars(folder / stage.name).items():
                    series.setdefault((stage.name, tag), {}).setdefault(cell["cell"], []).append(sv)
    if not series:
        return None
    panels: list[tuple[str, str]] = []
    for stage in spec.stages:
        panels += [k for k in series if k[0] == stage.name][:max_tags]
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        for name, runs in series[key].items():
            n = min(len(s) for s, _ in runs)
            if n == 0:
                continue
            steps = runs[0][0][:n]
            vals = np.stack([v[:n] for _, v in runs])
            mean = vals.mean(0)
            ax.plot(steps, mean, label=name, lw=1.2, marker="o" if n <= 30 else None, ms=3)
            if len(runs) > 1:
                std = vals.std(0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{key[0]}: {key[1]}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay_grid(data: dict[str, Any], path: Path, metric: str, style: _Style, cells: int = 4,
                 examples: int = 3, name: str = "metrics") -> Path | None:
    """Image / ground truth / prediction of the first ``examples`` test images for the ``cells`` best
    cells (by the main metric; the first finished seed of each), from ``<name>_examples.npz`` that the
    evaluation writes. ``None`` when no run saved examples."""
    from fewlabel.data.image_2d import overlay_mask

    ranked = [(aggregate(c, metric), c) for c in data["cells"]]
    ranked = [(a, c) for a, c in ranked if a is not None]
    ranked.sort(key=lambda t: t[0][0], reverse=not style.lower_is_better(metric))
    rows = []
    for agg, c in ranked:
        for seed, folder in sorted(c["folders"].items()):
            npz = folder / data["stage"] / f"{name}_examples.npz"
            if npz.is_file():
                with np.load(npz) as z:
                    k = min(examples, len([f for f in z.files if f.startswith("image_")]))
                    rows.append(
                        (c["cell"], seed, agg, [(z[f"image_{i}"], z[f"label_{i}"], z[f"pred_{i}"]) for i in range(k)])
                    )
                break
        if len(rows) >= cells:
            break
    if not rows:
        return None
    k = max(len(r[3]) for r in rows)
    height, width = rows[0][3][0][1].shape
    panel = 2.0
    fig, axes = plt.subplots(len(rows), 3 * k, squeeze=False,
                             figsize=(panel * 3 * k + 1.6, panel * height / width * len(rows) + 0.5))
    for r, (cell, seed, agg, exs) in enumerate(rows):
        for i in range(k):
            for j, title in enumerate(("image", "ground truth", "prediction")):
                ax = axes[r, 3 * i + j]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if i >= len(exs):
                    continue
                img, lab, prd = exs[i]
                rgb = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
                rgb8 = (255 * np.clip(rgb, 0, 1)).astype(np.uint8)
                ax.imshow(rgb8 if j == 0 else overlay_mask(rgb8, lab if j == 1 else prd))
                if r == 0:
                    ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(f"{cell}\nseed {seed}\n{metric.split('.')[-1]} {style.scale(metric) * agg[0]:.1f}",
                              rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.4)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _default_metric(data: dict[str, Any]) -> str:
    """``mean_iou``, else ``mean_dice``, else the first ``mean_*`` figure the runs report."""
    found = [k for c in data["cells"] for m in c["seeds"].values() for k in m if k.startswith("mean_")]
    for name in ("mean_iou", "mean_dice"):
        if name in found:
            return name
    return found[0] if found else "mean_iou"


def _default_tables(data: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    others = []
    for c in data["cells"]:
        for m in c["seeds"].values():
            others += [k for k, v in m.items() if k.startswith("mean_") and k != metric and k not in others
                       and isinstance(v, (int, float)) and not isinstance(v, bool)]
    tables: list[dict[str, Any]] = [{"metrics": [metric] + others[:4]}]
    if any("per_class" in m for c in data["cells"] for m in c["seeds"].values()):
        tables.append({"per_class": metric.removeprefix("mean_")})
    return tables


def _default_plots(data: dict[str, Any]) -> list[dict[str, Any]]:
    keys = _row_keys(data, None)
    if len(keys) == 1:
        return [{"kind": "curve", "x": keys[0]}]
    if len(keys) >= 2:
        return [{"kind": "curve", "x": keys[0], "group": keys[1]}, {"kind": "heatmap", "x": keys[1], "y": keys[0]}]
    return []


def make_report(run_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNGs (default into ``run_dir/report/``); returns the Markdown file's path.

    Raises:
        FewLabelError: not a sweep folder, or a table / plot names an unknown kind.
    """
    data = collect(run_dir)
    spec: SweepSpec = data["spec"]
    rep = spec.report
    style = _Style(rep)
    metric = rep.get("metric") or _default_metric(data)
    out = Path(output_dir or Path(run_dir) / "report")
    out.mkdir(parents=True, exist_ok=True)
    n_runs = len(spec.cell_params()) * len(spec.seeds)
    spread = ("Entries are mean ± standard deviation over seeds" if len(spec.seeds) > 1
              else "One seed: entries are single values")
    lines = [f"# {rep.get('title', spec.name)}", "",
             f"Bundle `{spec.bundle}`; stages {', '.join(s.name for s in spec.stages)}; metrics of stage "
             f"`{data['stage']}`. {len(data['cells'])} cells x {len(spec.seeds)} seeds "
             f"({', '.join(map(str, spec.seeds))}): {n_runs - len(data['missing'])} of {n_runs} runs finished. "
             f"{spread}; the best of each column is in **bold**.", ""]
    if spec.overrides:
        lines += ["Overrides of every run: " + ", ".join(f"`{k}={v}`" for k, v in spec.overrides.items()), ""]
    full = data
    for i, table in enumerate(rep.get("tables") or _default_tables(data, metric)):
        data = _where(full, table.get("where"))
        if table.get("title"):
            lines += [f"## {table['title']}", ""]
        rows = table.get("rows")
        if "cols" in table:
            lines.append(grid_table(data, rows or [k for k in _row_keys(data, None) if k != table["cols"]],
                                    table["cols"], table.get("metric", metric), style))
        elif "variants" in table:
            lines.append(variant_table(data, table["variants"], table.get("metrics") or [table.get("metric", metric)],
                                       rows, style, table.get("label", "method")))
        elif "per_class" in table:
            lines.append(per_class_table(data, table["per_class"], rows, table.get("path", "per_class"),
                                         table.get("mean"), style))
        elif "metrics" in table or "metric" in table:
            lines.append(metrics_table(data, table.get("metrics") or [table["metric"]], rows, style))
        else:
            raise FewLabelError(f"report table {i} of {spec.source} needs 'metrics', 'cols' or 'per_class'")
        lines.append("")
    data = full
    pictures = []
    for i, plot in enumerate(rep.get("plots", _default_plots(data))):
        name = plot.get("file", f"plot_{i}_{plot.get('kind', 'curve')}.png")
        p = _plot(data, plot, metric, style, out / name)
        if p:
            pictures.append(p)
    if rep.get("training_curves", True):
        p = training_curves(data, out / "training_curves.png")
        if p:
            pictures.append(p)
    ov = rep.get("overlays", {})
    if ov is not False:
        ov = ov if isinstance(ov, dict) else {}
        p = overlay_grid(data, out / "overlays.png", metric, style, ov.get("cells", 4), ov.get("examples", 3),
                         ov.get("name", "metrics"))
        if p:
            pictures.append(p)
    if pictures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})\n" for p in pictures]
    if data["missing"] or data["failed"]:
        lines += ["## Runs without results", ""]
        failed = {f["key"]: f["error"] for f in data["failed"]}
        for key in data["missing"]:
            reason = failed.get(key, "not finished")
            lines.append(f"- `{key}`: " + (reason.splitlines()[0] if reason else "failed"))
        lines.append("")
    lines += ["Each run's folder (`runs/<cell>/seed_<s>/`) holds `run.json` with the `monai.bundle run` "
              "commands that reproduce it."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(
        json.dumps(
            {
                "cells": [
                    {"cell": c["cell"], "params": c["params"], "seeds": {str(s): m for s, m in c["seeds"].items()}}
                    for c in data["cells"]
                ],
                "missing": data["missing"],
                "failed": data["failed"],
            },
            indent=2,
            default=str,
        )
    )
    logger.info("report written to %s", path)
    return path
