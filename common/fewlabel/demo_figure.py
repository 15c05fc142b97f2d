"""One picture of what a demo predicted: ``<demo output>/demo_output.png``.

:func:`overlay_figure` puts up to three of a demo's prediction overlays side by side (the 2D bundles
write ``<stem>_overlay.png`` per frame); :func:`ct_figure` shows, for a CT bundle, three axial slices of one testing
volume with the predicted outline in red and the reference outline in green. ``fewlabel demo``
writes it after each demo; each bundle's docs show the one from its full demo.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fewlabel.data.files import atomic_write  # noqa: E402

__all__ = ["overlay_figure", "ct_figure", "ct_slices_to_show"]


def _save(fig: plt.Figure, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=10, y=1.0 + 0.045 * (title.count("\n") + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def overlay_figure(overlays: Sequence[str | os.PathLike], path: str | os.PathLike, title: str,
                   count: int = 3) -> Path:
    """Write the first ``count`` overlay pictures (sorted by name) side by side, each titled with its
    input's name, under ``title``; returns ``path`` (a PNG).

    Raises:
        FileNotFoundError: ``overlays`` is empty (the demo's inference wrote no overlay).
    """
    from PIL import Image

    chosen = sorted(Path(p) for p in overlays)[:count]
    if not chosen:
        raise FileNotFoundError(f"no overlay pictures to show for {path}: did the demo's inference run?")
    fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 3.4), squeeze=False)
    for ax, p in zip(axes[0], chosen):
        with Image.open(p) as img:
            ax.imshow(np.asarray(img.convert("RGB")))
        ax.set_title(p.name.removesuffix("_overlay.png"), fontsize=9)
        ax.axis("off")
    return _save(fig, Path(path), title)


def ct_slices_to_show(label: np.ndarray, count: int = 3) -> list[int]:
    """Indices of ``count`` axial slices (last axis of ``label``, shape ``(H, W, D)``) spread over the
    slices that hold the reference structure; over the whole volume when it holds none."""
    depth = label.shape[-1]
    present = np.flatnonzero(label.reshape(-1, depth).any(axis=0))
    lo, hi = (present[0], present[-1]) if present.size else (0, depth - 1)
    picks = np.linspace(lo, hi, count + 2)[1:-1]
    return sorted({int(round(v)) for v in picks})


def ct_figure(image: str | os.PathLike, prediction: str | os.PathLike, label: str | os.PathLike | None,
              path: str | os.PathLike, title: str, window: tuple[float, float] = (-160.0, 240.0)) -> Path:
    """Three axial slices of a CT volume (``image``: NIfTI or DICOM series folder) with the predicted
    outline (``prediction``, a NIfTI segmentation on the image's grid) in red and the reference outline
    (``label``, optional) in green; all three brought to RAS so they line up. ``window``: the HU range
    shown from black to white (default a soft-tissue window)."""
    from fewlabel.data.ct import load_ct_volume

    vol = load_ct_volume(image)[0].numpy()
    pred = load_ct_volume(prediction, dtype=None)[0].numpy() > 0
    ref = load_ct_volume(label, dtype=None)[0].numpy() > 0 if label is not None else None
    if pred.shape != vol.shape or (ref is not None and ref.shape != vol.shape):
        raise ValueError(f"{prediction} or {label} is not on the grid of {image}: shapes {pred.shape}, "
                         f"{None if ref is None else ref.shape}, {vol.shape}")
    slices = ct_slices_to_show(ref if ref is not None else pred)
    fig, axes = plt.subplots(1, len(slices), figsize=(4 * len(slices), 3.6), squeeze=False)
    for ax, z in zip(axes[0], slices):
        ax.imshow(np.rot90(vol[..., z]), cmap="gray", vmin=window[0], vmax=window[1])
        ax.contour(np.rot90(pred[..., z]).astype(float), levels=[0.5], colors="red", linewidths=1)
        if ref is not None:
            ax.contour(np.rot90(ref[..., z]).astype(float), levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f"{Path(os.fspath(image)).name.split('.')[0]}, slice {z}", fontsize=9)
        ax.axis("off")
    return _save(fig, Path(path), title)
