"""The picture a demo writes (``demo_output.png``): which slices it shows, and what it refuses."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fewlabel.demo_figure import ct_figure, ct_slices_to_show, overlay_figure


def test_ct_slices_are_spread_over_the_reference_structure():
    label = np.zeros((4, 4, 30), dtype=np.uint8)
    label[..., 10:21] = 1
    shown = ct_slices_to_show(label)
    assert len(shown) == 3 and all(10 <= z <= 20 for z in shown) and shown == sorted(shown)
    assert ct_slices_to_show(np.zeros((4, 4, 9))) == [2, 4, 6]  # no structure: spread over the volume


def test_overlay_figure_shows_the_first_pictures_by_name(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 255)]
    for i, colour in reversed(list(enumerate(colours))):  # written last to first: the order is by name
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"f{i}_overlay.png")
    out = overlay_figure(tmp_path.glob("*_overlay.png"), tmp_path / "fig" / "demo_output.png", "a title")
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 2 * picture.height
        shown = {tuple(c) for c in np.asarray(picture.convert("RGB")).reshape(-1, 3)}
    assert set(colours[:3]) <= shown and colours[3] not in shown  # f0, f1, f2 shown; f3 is the fourth
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["demo_output.png"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="no overlay pictures .*demo's inference"):
        overlay_figure([], tmp_path / "none.png", "t")


def test_ct_figure_refuses_a_prediction_on_another_grid(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 6), np.uint8), affine), tmp_path / "seg.nii.gz")
    with pytest.raises(ValueError, match="seg.nii.gz .*not on the grid of .*ct.nii.gz"):
        ct_figure(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", None, tmp_path / "f.png", "t")
    assert not (tmp_path / "f.png").exists()
