"""Folders of real 2D files: discovery that says what it skipped, outputs that never collide or half-exist,
a pixel limit checked from the header, alpha handled like the channels it sits on, one readable error."""

from __future__ import annotations

import logging
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from testlib import write_png

from fewlabel.data import list_images
from fewlabel.data.files import TEMP_MARK
from fewlabel.errors import DataError
from fewlabel.transforms import LoadImage2D, LoadImage2Dd, LoadLabel2D, SaveMask2Dd
from fewlabel.transforms.io import DEFAULT_MAX_PIXELS, mask_output_name, overlay_output_name, read_image_2d

RNG = np.random.default_rng(0)
RGB = (RNG.random((12, 16, 3)) * 255).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


# --- 1. discovery ---------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    write_png(root / "case1.png", RGB)
    write_png(root / "case2.png", RGB)
    write_png(root / "case1_mask.png", RGB[..., 0])
    write_png(root / "case2_overlay.png", RGB)
    (root / "notes.txt").write_text("x")
    (root / "table.csv").write_text("x")
    (root / "dir.png").mkdir()
    os.symlink(root / "gone.png", root / "broken.png")
    (root / f".case3_mask.png{TEMP_MARK}abc.png").write_bytes(b"half")
    return root


def test_list_images_keeps_images_and_logs_every_skip_with_its_reason(folder, caplog):
    with caplog.at_level(logging.INFO, logger="fewlabel.data"):
        items = list_images(folder)
    assert items == [{"image": str(folder / "case1.png")}, {"image": str(folder / "case2.png")}]
    log = caplog.text
    assert f"skipped {folder / 'dir.png'}: a folder named like an image" in log
    assert f"skipped {folder / 'broken.png'}: a broken symbolic link" in log
    assert f"skipped {folder / 'case1_mask.png'}: a result file" in log
    assert f"skipped {folder / 'case2_overlay.png'}: a result file" in log
    assert "an unfinished temporary result file" in log
    assert "skipped 2 file(s) that are not images (1 .txt, 1 .csv)" in log or "(1 .csv, 1 .txt)" in log
    warned = {r.getMessage().split(": ")[1] for r in caplog.records if r.levelno == logging.WARNING}
    assert warned == {f"skipped {folder / 'dir.png'}", f"skipped {folder / 'broken.png'}"}


@pytest.mark.timeout(30)
def test_recursive_listing_survives_link_loops_and_broken_links(folder, caplog):
    sub = folder / "sub"
    write_png(sub / "case3.png", RGB)
    os.symlink(folder, sub / "back")  # a folder loop
    os.symlink(sub / "self.png", sub / "self.png")  # a link to itself
    with caplog.at_level(logging.INFO, logger="fewlabel.data"):
        items = list_images(folder, recursive=True)
    assert [it["image"] for it in items] == [str(folder / "case1.png"), str(folder / "case2.png"),
                                             str(sub / "case3.png")]
    assert f"skipped {sub / 'self.png'}: a symbolic link loop" in caplog.text
    assert "already searched (a symbolic link loop)" in caplog.text


def test_inputs_that_would_write_the_same_mask_are_refused_before_anything_is_written(tmp_path):
    write_png(tmp_path / "case1.png", RGB)
    write_png(tmp_path / "case1.jpg", RGB)
    with pytest.raises(DataError, match=r"case1\.jpg and .*case1\.png would both write case1_mask\.png"):
        list_images(tmp_path)


def test_same_name_in_two_sub_folders_is_refused_in_recursive_mode(tmp_path):
    write_png(tmp_path / "a" / "x.png", RGB)
    write_png(tmp_path / "b" / "x.png", RGB)
    assert len(list_images(tmp_path / "a")) == 1
    with pytest.raises(DataError, match="would both write x_mask.png"):
        list_images(tmp_path, recursive=True)


def test_the_naming_rule_is_the_one_save_mask_uses(tmp_path):
    src = write_png(tmp_path / "in" / "scan.v2.png", RGB)
    pred = LoadImage2D()(src)[:1] * 0
    SaveMask2Dd(keys="pred", output_dir=tmp_path / "out")({"pred": pred})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [mask_output_name(src), overlay_output_name(src)]) == ["scan.v2_mask.png", "scan.v2_overlay.png"]


# --- 2. atomic outputs ----------------------------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_no_result_file(tmp_path, monkeypatch):
    src = write_png(tmp_path / "in" / "case1.png", RGB)
    pred = LoadImage2D()(src)[:1] * 0
    real_save = Image.Image.save

    def save_half_then_fail(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as f:  # a half-written file, then the process "dies"
            f.truncate(os.path.getsize(fp) // 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", save_half_then_fail)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        SaveMask2Dd(keys="pred", output_dir=out)({"pred": pred})
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    SaveMask2Dd(keys="pred", output_dir=out)({"pred": pred})
    assert np.asarray(Image.open(out / "case1_mask.png")).shape == (12, 16)


# --- 3. bounded memory ----------------------------------------------------------------------------------------


def test_a_header_claiming_ten_gigapixels_is_refused_with_the_size_and_the_fix(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(huge_png_header(100_000, 100_000))
    for load in (LoadImage2D(channels=1), lambda p: LoadImage2Dd("image", channels=1)({"image": p})):
        with pytest.raises(DataError) as err:
            load(path)
        msg = str(err.value)
        assert "bomb.png is 100000x100000 pixels" in msg and f"{DEFAULT_MAX_PIXELS:,}" in msg
        assert "Resize the image" in msg and "max_pixels" in msg and "truncated" not in msg
        assert not isinstance(err.value.__cause__, Image.DecompressionBombError)


def test_max_pixels_is_configurable_and_none_lifts_it(tmp_path):
    path = write_png(tmp_path / "img.png", RGB)  # 12 x 16 = 192 pixels
    with pytest.raises(DataError, match=r"img\.png is 16x12 pixels \(192\), over the limit of 100 pixels"):
        LoadImage2D(max_pixels=100)(path)
    with pytest.raises(DataError, match="over the limit of 100"):
        LoadImage2Dd("image", 3, "error", "error", False, max_pixels=100)({"image": path})
    assert LoadImage2Dd("image", max_pixels=192)({"image": path})["image"].shape == (3, 12, 16)
    assert LoadImage2D(max_pixels=None)(path).shape == (3, 12, 16)
    # past Pillow's own guard, max_pixels=None still reads the header and reports the damage, not a "bomb"
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png_header(100_000, 100_000))
    with pytest.raises(DataError, match=r"bomb\.png: the file is (truncated|damaged)"):
        read_image_2d(bomb, max_pixels=None)
    with pytest.raises(ValueError, match="max_pixels"):
        LoadImage2D(max_pixels=0)


# --- 4. alpha -------------------------------------------------------------------------------------------------


@pytest.fixture
def alpha_files(tmp_path):
    grey = RGB[..., 0]
    Image.fromarray(np.dstack([grey, np.full_like(grey, 200)]), mode="LA").save(tmp_path / "la.png")
    Image.fromarray(np.dstack([RGB, np.full_like(grey, 10)])).save(tmp_path / "rgba.png")
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal_alpha.png", transparency=0)
    Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "pal.png")
    return tmp_path


def test_grey_plus_alpha_is_grey_and_follows_the_grey_policy(alpha_files):
    la = alpha_files / "la.png"
    img = LoadImage2D(channels=1)(la)
    assert img.shape == (1, 12, 16)
    np.testing.assert_allclose(img[0].numpy(), RGB[..., 0] / 255.0, atol=1e-6)  # alpha dropped, not blended
    with pytest.raises(DataError, match=r"la\.png is a grayscale image but this bundle expects RGB"):
        LoadImage2D(channels=3)(la)
    converted = LoadImage2D(channels=3, channel_policy="convert")(la)
    assert converted.shape == (3, 12, 16) and torch.equal(converted[0], converted[2])


def test_rgba_and_palette_images_drop_alpha_and_count_as_rgb(alpha_files):
    rgba = LoadImage2D(channels=3)(alpha_files / "rgba.png")
    np.testing.assert_allclose(rgba.numpy(), np.moveaxis(RGB, -1, 0) / 255.0, atol=1e-6)
    with pytest.raises(DataError, match=r"rgba\.png is a RGB image"):
        LoadImage2D(channels=1)(alpha_files / "rgba.png")
    for name in ("pal.png", "pal_alpha.png"):
        assert LoadImage2D(channels=3)(alpha_files / name).shape == (3, 12, 16)
        with pytest.raises(DataError, match=rf"{name} is a RGB image"):
            LoadImage2D(channels=1)(alpha_files / name)


def test_label_alpha_is_no_class(tmp_path):
    mask = np.zeros((12, 16), np.uint8)
    mask[2:5, 3:9] = 255
    Image.fromarray(np.dstack([mask, np.full_like(mask, 255)]), mode="LA").save(tmp_path / "m.png")
    lab = LoadLabel2D(binary=True)(tmp_path / "m.png")
    assert lab.sum().item() == 18  # the opaque alpha does not make every pixel foreground


# --- 5. one readable error ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,content,reason", [
    ("empty.png", b"", "an empty file"),
    ("text.png", b"hello, not an image\n" * 10, "not an image file"),
    ("cut.png", None, "truncated"),
])
def test_every_read_failure_is_a_data_error_naming_file_reason_and_fix(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is None:
        whole = write_png(tmp_path / "whole.png", RGB).read_bytes()
        content = whole[: len(whole) - 30]
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        LoadImage2D()(path)
    msg = str(err.value)
    assert name in msg and reason in msg and ("re-export" in msg.lower() or "remove" in msg)


def test_a_folder_given_as_image_is_named_as_such(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(DataError, match=r"x\.png is a folder, not an image file"):
        LoadImage2D()(tmp_path / "x.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_permission(tmp_path):
    path = write_png(tmp_path / "locked.png", RGB)
    path.chmod(0)
    with pytest.raises(DataError, match=r"locked\.png: permission denied"):
        LoadImage2D()(path)


def test_overlays_of_alpha_images_draw_the_picture_without_its_alpha(alpha_files, tmp_path):
    from fewlabel.transforms import overlay_mask

    la = read_image_2d(alpha_files / "la.png")
    assert la.shape == (12, 16, 2)  # grey + alpha is read as grey + alpha, not as colour
    mask = np.zeros((12, 16), np.uint8)
    out = overlay_mask(la, mask)
    assert out.shape == (12, 16, 3) and (out[..., 0] == RGB[..., 0]).all()
    assert (overlay_mask(read_image_2d(alpha_files / "rgba.png"), mask) == RGB).all()
    pred = LoadImage2D(channels=1)(alpha_files / "la.png")[:1] * 0
    SaveMask2Dd(keys="pred", output_dir=tmp_path / "out")({"pred": pred})
    assert (np.asarray(Image.open(tmp_path / "out" / "la_overlay.png")) == np.dstack([RGB[..., 0]] * 3)).all()


def test_a_file_given_as_input_folder_is_named_as_such(tmp_path):
    path = write_png(tmp_path / "one.png", RGB)
    with pytest.raises(DataError, match=r"one\.png is a file, not a folder"):
        list_images(path)
