"""The SurgicalSemiSeg mask-parameter search (the paper's Figure 4): pre-train and fine-tune over a
grid of masking ratio and patch size (and shape / fill variants), several seeds, then plot.

Every cell is an independent job: ``<output_dir>/<bundle>/<cell>/seed_<s>/cell.json`` holds the
``python -m monai.bundle run`` command lines that produce it, so a cluster scheduler can run cells
anywhere; rerunning the search skips finished cells and only collects and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fewlabel.plots import plot_bars, plot_curves, plot_heatmap  # noqa: E402
from fewlabel.protocols import run_grid  # noqa: E402

__all__ = ["mask_search"]

BUNDLE = "surgical_semiseg_laparoscopy_segmentation"


def _floats(v: Any) -> list[float]:
    return [float(x) for x in (v.split(",") if isinstance(v, str) else v)]


def mask_search(
    ratios: Any = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), sizes: Any = (8, 16, 32, 64, 128, 256),
    variants: Any = ("square/black", "circle/black", "square/component", "square/pixel"),
    variant_at: Any = (0.4, 64), seeds: Any = (0, 1, 2, 3, 4), output_dir: str | Path = "outputs/mask_search",
    metric: str = "mean_iou", bundle: str = BUNDLE, **overrides: Any,
) -> Path:
    """Run the grid ``ratios x sizes`` (black squares) and the shape/fill ``variants`` at ``variant_at``
    (ratio, size), each over ``seeds``; save ``figure4.png`` (curves with seed bands, heat map,
    variant bars) and the summaries. ``overrides`` go to every stage (e.g. ``dataset_dir``, ``epochs``).

    Returns the figure's path.
    """
    ratios, sizes = _floats(ratios), [int(s) for s in _floats(sizes)]
    variants = variants.split(",") if isinstance(variants, str) else list(variants)
    at_ratio, at_size = _floats(variant_at)
    out = Path(output_dir)
    grid = run_grid(bundle, {"mask_ratio": ratios, "mask_size": sizes}, seeds, out / "grid", **overrides)
    shape_fill = [v.split("/") for v in variants]
    var = {"cells": []}
    for shape, fill in shape_fill:
        res = run_grid(bundle, {"mask_shape": [shape], "mask_fill": [fill]}, seeds, out / "variants",
                       **{**overrides, "mask_ratio": at_ratio, "mask_size": int(at_size)})
        var["cells"] += res["cells"]

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    plot_curves(axes[0], grid, "mask_ratio", group="mask_size", metric=metric)
    axes[0].set_title("(a) masking ratio")
    plot_curves(axes[1], grid, "mask_size", group="mask_ratio", metric=metric)
    axes[1].set_xscale("log", base=2)
    axes[1].set_title("(b) patch size")
    plot_heatmap(axes[2], grid, "mask_size", "mask_ratio", metric=metric)
    axes[2].set_title("(c) ratio x size")
    plot_bars(axes[3], var, ["mask_shape", "mask_fill"], metric=metric)
    axes[3].set_title(f"(d) shape/fill at ratio {at_ratio:g}, size {int(at_size)}")
    fig.tight_layout()
    path = out / bundle / "figure4.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"mask search: {len(grid['cells'])} grid cells, {len(var['cells'])} variants, seeds {grid['seeds']}; figure {path}")
    return path
