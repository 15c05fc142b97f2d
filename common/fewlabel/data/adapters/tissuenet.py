"""TissueNet (v1.1 npz release) → per-image PNGs + datalist, keeping the official split.

Expected layout::

    SRC_DIR/
      tissuenet_v1.1_train.npz   X: (N, H, W, 2) float  [0 nuclear, 1 membrane/cytoplasm]
      tissuenet_v1.1_val.npz     y: (N, H, W, 2) int    [0 whole-cell, 1 nuclear] instance labels
      tissuenet_v1.1_test.npz

Any ``*train*.npz`` / ``*val*.npz`` / ``*test*.npz`` in ``SRC_DIR`` (or one folder below it)
is accepted as well. Images are written as 3-channel uint8 PNGs, each source channel rescaled by
its own 0.5–99.5 percentiles to 0–255; labels as binary 0/1 uint8 PNGs of the chosen target.

- ``channel="nuclear"`` (default) or ``"membrane"``: the one channel is written as a grey
  picture, the same values in R, G and B. MedSASS's grey conversion (BT.601 luma, weights summing
  to 1) then gives back the channel itself, so Otsu and the adaptive thresholds (offset 2/255)
  see its full 0–255 range. (Written into the blue slot alone, as DeepCell displays it, the luma
  would scale it by 0.114: at most 29 grey levels, and the adaptive offset of 2/255 would be
  worth about 17 levels of the channel.)
- ``channel="both"``: nuclear in blue, membrane in green (DeepCell's display convention). The
  grey conversion weighs them 0.114 and 0.587: thresholding then mostly sees the membrane.

Output::

    OUT_DIR/{train,val,test}/images_<channel>/<split>_00000.png
    OUT_DIR/{train,val,test}/labels_<target>/<split>_00000.png

The arrays are read one image at a time straight from the npz archive (``np.load`` cannot
memory-map npz members), so memory stays at one image whatever the split size.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.errors import DataError

__all__ = ["build_tissuenet", "rescale_to_uint8", "TISSUENET_CHANNELS", "TISSUENET_TARGETS"]

logger = logging.getLogger("fewlabel.data")

#: option value -> (channel index of X, the RGB slots it is written to) pairs; a single channel goes to
#: all three slots (a grey picture, see the module docstring)
TISSUENET_CHANNELS: dict[str, tuple[tuple[int, tuple[int, ...]], ...]] = {
    "nuclear": ((0, (0, 1, 2)),),
    "membrane": ((1, (0, 1, 2)),),
    "both": ((0, (2,)), (1, (1,))),
}
#: option value -> channel index of y
TISSUENET_TARGETS = {"whole_cell": 0, "nuclear": 1}
#: datalist split -> (short name used in file names, official file name)
_SPLITS = {
    "training": ("train", "tissuenet_v1.1_train.npz"),
    "validation": ("val", "tissuenet_v1.1_val.npz"),
    "testing": ("test", "tissuenet_v1.1_test.npz"),
}

_LAYOUT = (
    "Expected the TissueNet v1.1 release: SRC_DIR/tissuenet_v1.1_train.npz, tissuenet_v1.1_val.npz, "
    "tissuenet_v1.1_test.npz (or any *train*.npz / *val*.npz / *test*.npz), each holding arrays "
    "X (N, H, W, 2) [nuclear, membrane] and y (N, H, W, 2) [whole-cell, nuclear] instance labels."
)


def rescale_to_uint8(
    image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), channel_axis: int | None = None
) -> np.ndarray:
    """Rescale intensities to uint8 between the image's own low/high percentiles.

    Values below the low percentile map to 0, above the high one to 255. A constant image
    (or channel) maps to all zeros; NaN/inf values are treated as 0 first.

    Args:
        image: any real array.
        percentiles: the (low, high) percentiles, in [0, 100].
        channel_axis: when given, each slice along this axis is rescaled by its own percentiles.
    """
    image = np.asarray(image)
    if channel_axis is not None:
        moved = np.moveaxis(image, channel_axis, 0)
        out = np.stack([rescale_to_uint8(c, percentiles) for c in moved])
        return np.moveaxis(out, 0, channel_axis)
    data = np.nan_to_num(image.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if data.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(data, percentiles)
    if not hi > lo:
        return np.zeros(image.shape, np.uint8)
    scaled = (data - lo) / (hi - lo)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


class _NpzArrayStream:
    """Reads the leading-axis items of one array inside an ``.npz`` archive, in order."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"TissueNet file {path} is not a readable .npz archive ({e}). {_LAYOUT}") from e
        member = f"{key}.npy"
        if member not in self._zip.namelist():
            names = sorted(n[:-4] for n in self._zip.namelist() if n.endswith(".npy"))
            self._zip.close()
            raise DataError(f"TissueNet file {path} has no array '{key}' (it has: {names}). {_LAYOUT}")
        self._fh = self._zip.open(member)
        version = np.lib.format.read_magic(self._fh)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(self._fh)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(self._fh)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._full: np.ndarray | None = None
        if fortran_order or self.dtype.hasobject or len(self.shape) == 0:
            # not streamable item by item: load this one array whole
            self._fh.close()
            with np.load(path, allow_pickle=False) as npz:
                self._full = np.asarray(npz[key])
        self._item_shape = self.shape[1:]
        self._item_bytes = int(np.prod(self._item_shape, dtype=np.int64)) * self.dtype.itemsize
        self._next = 0

    def read(self) -> np.ndarray:
        """The next item along axis 0."""
        index = self._next
        self._next += 1
        if self._full is not None:
            return self._full[index]
        chunks, remaining = [], self._item_bytes
        while remaining:
            chunk = self._fh.read(remaining)
            if not chunk:
                raise DataError(f"TissueNet file {self.path}: array '{self.key}' is truncated at item {index}.")
            chunks.append(chunk)
            remaining -= len(chunk)
        return np.frombuffer(b"".join(chunks), dtype=self.dtype).reshape(self._item_shape)

    def close(self) -> None:
        if self._full is None:
            self._fh.close()
        self._zip.close()

    def __enter__(self) -> _NpzArrayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _find_split_file(src: Path, word: str, official: str) -> Path:
    if (src / official).is_file():
        return src / official
    for pattern in (f"*{word}*.npz", f"*/*{word}*.npz"):
        matches = sorted(p for p in src.glob(pattern) if p.is_file())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DataError(
                f"Several TissueNet '{word}' files match {src / pattern}: {[str(m) for m in matches]}. "
                f"Keep one, or name it {src / official}."
            )
    raise DataError(f"TissueNet '{word}' split not found: expected {src / official}. {_LAYOUT}")


def build_tissuenet(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    channel: str = "nuclear",
    target: str = "nuclear",
    splits: Iterable[str] = ("training", "validation", "testing"),
) -> dict[str, Any]:
    """Write TissueNet npz splits as PNG pairs and return their datalist.

    Args:
        src_dir: folder holding the three npz files.
        out_dir: where the PNGs go; defaults to ``<src_dir>/fewlabel_png``.
        channel: image channel(s): ``"nuclear"`` or ``"membrane"`` (written as grey: the same
            0-255 values in R, G and B), or ``"both"`` (nuclear blue, membrane green).
        target: label: ``"nuclear"`` or ``"whole_cell"`` instances, binarised (instance > 0).
        splits: which official splits to convert; the others stay empty and need not exist.

    Returns:
        A datalist dict; ``patient`` is ``"<split>_<index>"`` (``train_0``, ``val_12``, ...).

    Raises:
        DataError: ``src_dir`` or a split file is missing, or its arrays do not have the
            published shapes.
        ValueError: unknown ``channel``, ``target`` or split name.
    """
    if channel not in TISSUENET_CHANNELS:
        raise ValueError(f"channel must be one of {list(TISSUENET_CHANNELS)}, got {channel!r}")
    if target not in TISSUENET_TARGETS:
        raise ValueError(f"target must be one of {list(TISSUENET_TARGETS)}, got {target!r}")
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in splits if s not in _SPLITS]
    if unknown:
        raise ValueError(f"unknown TissueNet split(s) {unknown}; choose from {list(_SPLITS)}")
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"TissueNet source folder not found: {src}. {_LAYOUT}")
    files = {split: _find_split_file(src, *_SPLITS[split]) for split in splits}
    out = Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_png"

    datalist: dict[str, Any] = {
        "name": "TissueNet",
        "labels": {"0": "background", "1": "nucleus" if target == "nuclear" else "cell"},
        "training": [],
        "validation": [],
        "testing": [],
    }
    channel_slots = TISSUENET_CHANNELS[channel]
    target_index = TISSUENET_TARGETS[target]
    for split, path in files.items():
        short = _SPLITS[split][0]
        image_dir = out / short / f"images_{channel}"
        label_dir = out / short / f"labels_{target}"
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        items = []
        with _NpzArrayStream(path, "X") as xs, _NpzArrayStream(path, "y") as ys:
            _check_shapes(path, xs.shape, ys.shape, channel_slots, target_index)
            for index in range(xs.shape[0]):
                x, y = xs.read(), ys.read()
                rgb = np.zeros((*x.shape[:2], 3), np.uint8)
                for source, slots in channel_slots:
                    rgb[..., list(slots)] = rescale_to_uint8(x[..., source])[..., None]
                mask = (y[..., target_index] > 0).astype(np.uint8)
                name = f"{short}_{index:05d}.png"
                Image.fromarray(rgb).save(image_dir / name, compress_level=1)
                Image.fromarray(mask).save(label_dir / name, compress_level=1)
                items.append({
                    "image": str((image_dir / name).resolve()),
                    "label": str((label_dir / name).resolve()),
                    "patient": f"{short}_{index}",
                })
        datalist[split] = items
        logger.info("TissueNet %s: %d items from %s written to %s", split, len(items), path, out / short)

    logger.info(
        "TissueNet datalist (channel=%s, target=%s): %d training, %d validation, %d testing items",
        channel, target, len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
    )
    return datalist


def _check_shapes(
    path: Path, x_shape: tuple[int, ...], y_shape: tuple[int, ...],
    channel_slots: tuple[tuple[int, tuple[int, ...]], ...], target_index: int,
) -> None:
    need_x = max(source for source, _ in channel_slots) + 1
    if len(x_shape) != 4 or x_shape[-1] < need_x:
        raise DataError(
            f"TissueNet file {path}: X has shape {x_shape}, expected (N, H, W, 2) with at least {need_x} channel(s). "
            f"{_LAYOUT}"
        )
    if len(y_shape) != 4 or y_shape[-1] <= target_index:
        raise DataError(
            f"TissueNet file {path}: y has shape {y_shape}, expected (N, H, W, 2) [whole-cell, nuclear]. {_LAYOUT}"
        )
    if x_shape[:3] != y_shape[:3]:
        raise DataError(f"TissueNet file {path}: X {x_shape} and y {y_shape} differ in N, H or W. {_LAYOUT}")
