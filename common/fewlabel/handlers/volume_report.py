"""Per-volume Dice / Hausdorff report of an evaluation run (:class:`fewlabel.metrics.VolumeScores`), with a plot."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine

from fewlabel.handlers.report import ReportHandler
from fewlabel.metrics.volume import VolumeScores, format_volume_table, volume_name

__all__ = ["VolumeReport"]


class VolumeReport(ReportHandler):
    """Ignite handler: score every volume and write ``<name>.json`` / ``<name>.md`` (and a plot) at the end.

    Args:
        output_dir: folder for the report (created).
        output_transform: ``engine.state.output`` -> ``(preds, labels)`` lists of binary volumes;
            default ``from_engine(["pred", "label"])``. Volumes are named after the image's (else the
            prediction's) ``filename_or_obj``.
        name: file stem and key prefix in ``engine.state.metrics`` (``<name>_mean_dice`` ...).
        title: heading of the Markdown table and the plot.
        percentile: see :func:`fewlabel.metrics.volume_scores`.
        spacing: voxel size for the Hausdorff distance: ``"auto"`` (default) reads each volume's
            from its label's (else prediction's) header (``pixdim`` of a MONAI ``MetaTensor``,
            after any resizing, so millimetres); a volume without one is measured in pixels /
            voxels; a sequence gives it for every volume; None measures all in pixels / voxels.
        protocol, directed: ``"slice_2d"`` (2D per slice, the paper's released evaluation) or
            ``"volume_3d"`` (3D per volume), and the Hausdorff direction; see
            :class:`fewlabel.metrics.VolumeScores`. The report states both and the unit.
        plot: also write ``<name>.png``: Dice and Hausdorff per volume.
        examples: volumes whose most-labelled slice (image, label, prediction) is kept in
            ``<name>_examples.npz`` (see :class:`ReportHandler`).
    """

    metric_keys = ("mean_dice", "mean_hausdorff")

    def __init__(self, output_dir: str | os.PathLike, output_transform: Callable | None = None, name: str = "metrics",
                 title: str = "", percentile: float | None = None, spacing: Sequence[float] | str | None = "auto",
                 plot: bool = True, examples: int = 4, protocol: str = "volume_3d",
                 directed: bool | None = None) -> None:
        if isinstance(spacing, str) and spacing != "auto":
            raise ValueError(f"spacing must be 'auto', a list of voxel sizes or null, got {spacing!r}")
        self.auto_spacing = spacing == "auto"
        fixed = None if self.auto_spacing else spacing
        super().__init__(output_dir, VolumeScores(percentile, fixed, protocol, directed), output_transform, name,
                         title, examples)
        self.plot = bool(plot)

    def _update(self, engine: Engine) -> None:
        preds, labels = self.output_transform(engine.state.output)
        if isinstance(preds, torch.Tensor) and preds.ndim == 5:
            preds, labels = list(preds), list(labels)
        output = engine.state.output
        images = [o.get("image") for o in output] if isinstance(output, list) and output and isinstance(
            output[0], dict) else [None] * len(preds)
        for p, t, image in zip(preds, labels, images):
            spacing = (_spacing(t) or _spacing(p)) if self.auto_spacing else None
            self.scores.update(p, t, volume_name(image) or volume_name(p), spacing=spacing)

    def _table(self, result: dict[str, Any]) -> str:
        return format_volume_table(result, self.title)

    def _write(self, engine: Engine) -> None:
        super()._write(engine)
        if self.plot:
            self._plot()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.result["per_volume"] if self.result else []
        names = [r["volume"] for r in rows]
        fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.35 * len(rows) + 4), 3.2))
        axes[0].bar(range(len(rows)), [r["dice"] for r in rows], color="tab:blue")
        axes[0].set_ylim(0, 1)
        axes[0].set_ylabel("Dice")
        axes[1].bar(range(len(rows)), [r["hausdorff"] if r["hausdorff"] is not None else 0.0 for r in rows],
                    color="tab:orange")
        axes[1].set_ylabel(f"Hausdorff ({self.result['distance_unit'] if self.result else 'voxel'})")
        axes[0].set_title(self.result["protocol"] if self.result else "", fontsize=8)
        for ax in axes:
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(names, rotation=90, fontsize=6)
        fig.suptitle(self.title, fontsize=9)
        fig.tight_layout()
        fig.savefig(self.output_dir / f"{self.name}.png", dpi=110)
        plt.close(fig)


def _spacing(x: Any) -> list[float] | None:
    """The voxel size of a ``MetaTensor`` (``pixdim``, one value per spatial axis), or None without a header."""
    pixdim = getattr(x, "pixdim", None)
    meta = getattr(x, "meta", None)
    if pixdim is None or not isinstance(meta, dict) or "affine" not in meta:
        return None
    values = [float(v) for v in torch.as_tensor(pixdim).flatten().tolist()]
    return values if values and all(v > 0 for v in values) else None
