"""Damaged 2D image files: each gives either a proper image or a DataError naming the file, nothing else.

Valid small PNG (grey, 16-bit grey, RGB, grey + alpha), JPEG, TIFF and BMP files are written here, then truncated,
bit-flipped and header-mangled copies (``testlib.corrupt_variants``, fixed seeds) are fed to
:class:`LoadImage2D` (files and the same bytes read as in-memory frames) and :class:`LoadLabel2D`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from testlib import corrupt_variants

from fewlabel.errors import DataError
from fewlabel.transforms import LoadImage2D, LoadLabel2D

VARIANTS = 12
SEEDS = (0, 1, 2, 3)
_RNG = np.random.default_rng(7)
_RGB = (_RNG.random((24, 32, 3)) * 255).astype(np.uint8)

# (name, Pillow image, save format, suffix)
FORMATS = [
    ("grey_png", Image.fromarray(_RGB[..., 0]), "PNG", ".png"),
    ("grey16_png", Image.fromarray(_RGB[..., 0].astype(np.uint16) * 257), "PNG", ".png"),
    ("rgb_png", Image.fromarray(_RGB), "PNG", ".png"),
    ("la_png", Image.fromarray(np.dstack([_RGB[..., 0], _RGB[..., 1]]), mode="LA"), "PNG", ".png"),
    ("rgb_jpeg", Image.fromarray(_RGB), "JPEG", ".jpg"),
    ("rgb_tiff", Image.fromarray(_RGB), "TIFF", ".tif"),
    ("grey_tiff_deflate", Image.fromarray(_RGB[..., 0]), "TIFF", ".tif"),
    ("rgb_bmp", Image.fromarray(_RGB), "BMP", ".bmp"),
]


def _encode(image: Image.Image, fmt: str, name: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"compression": "tiff_adobe_deflate"} if "deflate" in name else {}))
    return buf.getvalue()


def _check_image(out: torch.Tensor, channels: int) -> None:
    assert out.dtype == torch.float32 and out.ndim == 3 and out.shape[0] == channels
    assert out.shape[1] >= 1 and out.shape[2] >= 1
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,image,fmt,suffix", FORMATS, ids=[f[0] for f in FORMATS])
def test_damaged_files_give_an_image_or_a_data_error_naming_the_file(tmp_path, name, image, fmt, suffix):
    data = _encode(image, fmt, name)
    channels = 3 if image.mode.startswith("RGB") else 1
    outcomes = {"image": 0, "error": 0}
    for seed in SEEDS:
        for variant, damaged in corrupt_variants(data, seed, VARIANTS):
            path = tmp_path / f"{name}_{seed}_{variant}{suffix}"
            path.write_bytes(damaged)
            loaders = [LoadImage2D(channels=channels, channel_policy="convert", max_pixels=1_000_000),
                       LoadLabel2D(num_classes=2**16, max_pixels=1_000_000)]
            for loader in loaders:
                try:
                    out = loader(path)
                except DataError as e:
                    assert path.name in str(e), f"{variant}: the error does not name the file: {e}"
                    outcomes["error"] += 1
                    continue
                if isinstance(loader, LoadImage2D):
                    _check_image(out, channels)
                    # the same pixels, handed over as an in-memory frame, load the same way
                    frame = np.moveaxis((out.numpy() * 255).round().astype(np.uint8), 0, -1)
                    _check_image(LoadImage2D(channels=channels)(frame[..., 0] if channels == 1 else frame), channels)
                else:
                    assert out.ndim == 3 and out.shape[0] == 1 and out.min() >= 0 and out.max() < 2**16
                outcomes["image"] += 1
    assert outcomes["error"] > 0  # the damage was seen (the empty and header-cut variants are never images)
