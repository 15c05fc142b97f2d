"""Bad input, for every bundle's inference config: each case ends in a clear error naming the file and the
problem, or follows a documented policy -- never a crash deep in a library or a silent wrong result.

Cases (the README's table lists them with the behaviour): truncated image files (PNG, JPEG; NIfTI, DICOM for
CT), a folder with no images, a ``--dataset_dir`` that does not exist, a missing checkpoint, a checkpoint of
another architecture; and inputs that must work: RGBA and 16-bit PNGs, a constant image, an image smaller
than the network's input (resized), NaN in a CT volume (error naming the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from PIL import Image

from testlib import BUNDLES, inference_checkpoint, smoke_overrides, truncate_file
from fewlabel.data import write_ct_phantom, write_ct_phantom_dicom
from fewlabel.errors import CheckpointError, DataError

CT = "polycl_liver_ct_segmentation"
ids = [b.name for b in BUNDLES]


_overrides = smoke_overrides
_checkpoint = inference_checkpoint


def _infer(bundle: Path, folder: Path | str, ckpt: Path, out: Path) -> list[Path]:
    run(config_file=str(bundle / "configs" / "inference.json"), dataset_dir=str(folder), output_dir=str(out),
        ckpt_path=str(ckpt), **_overrides(bundle))
    return sorted(out.glob("*"))


def _our_error(excinfo: pytest.ExceptionInfo) -> BaseException:
    """The fewlabel error behind MONAI's wrapping (config evaluation re-raises with ``from``)."""
    e: BaseException | None = excinfo.value
    while e is not None and not isinstance(e, (DataError, CheckpointError)):
        e = e.__cause__
    assert e is not None, f"no DataError / CheckpointError in the chain of {excinfo.value!r}"
    return e


def _rgb(path: Path, size=(48, 40), mode="RGB", value=None) -> Path:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], len(mode)) if mode != "I;16" else (size[1], size[0])
    arr = rng.integers(0, 255, shape).astype(np.uint8) if value is None else np.full(shape, value, np.uint8)
    if mode == "I;16":
        arr = (arr.astype(np.uint16) * 257)
        Image.fromarray(arr).save(path)
    else:
        Image.fromarray(arr, mode=mode).save(path)
    return path


_truncate = truncate_file


def _bad_folder(bundle: Path, case: str, root: Path) -> tuple[Path, str]:
    """A dataset folder for ``case``; returns it and the file the error must name."""
    folder = root / case
    folder.mkdir()
    if bundle.name == CT:
        if case == "truncated":
            ph = write_ct_phantom(folder / "scan.nii.gz", shape=(12, 24, 20))
            ph.label.unlink()
            return folder, str(_truncate(ph.image))
        if case == "corrupt_dicom":
            ph = write_ct_phantom_dicom(folder / "series", shape=(12, 24, 20))
            victim = sorted(Path(ph.image).glob("*.dcm"))[5]
            victim.write_bytes(victim.read_bytes()[:200])  # the file meta survives, the dataset does not
            return folder, str(victim)
        if case == "nan":
            ph = write_ct_phantom(folder / "scan.nii.gz", shape=(12, 24, 20))
            ph.label.unlink()
            img = nib.load(str(ph.image))
            arr = np.asarray(img.dataobj).astype(np.float32)
            arr[5, 5, 5] = np.nan
            nib.save(nib.Nifti1Image(arr, img.affine), str(ph.image))
            return folder, str(ph.image)
        raise ValueError(case)
    if case == "truncated":
        _rgb(folder / "good.png")
        return folder, str(_truncate(_rgb(folder / "broken.png")))
    if case == "truncated_jpeg":
        img = folder / "broken.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3)).astype(np.uint8)).save(img, quality=90)
        return folder, str(_truncate(img))
    raise ValueError(case)


ERROR_CASES = {"truncated": None, "truncated_jpeg": "2d", "corrupt_dicom": "ct", "nan": "ct"}


@pytest.mark.parametrize("case", list(ERROR_CASES))
@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_broken_files_stop_with_an_error_naming_the_file(bundle, case, tmp_path):
    kind = ERROR_CASES[case]
    if kind == "ct" and bundle.name != CT or kind == "2d" and bundle.name == CT:
        pytest.skip(f"{case} is not an input of {bundle.name}")
    folder, culprit = _bad_folder(bundle, case, tmp_path)
    ckpt = _checkpoint(bundle, tmp_path / "model.pt")
    with pytest.raises(Exception) as excinfo:
        _infer(bundle, folder, ckpt, tmp_path / "out")
    err = _our_error(excinfo)
    assert isinstance(err, DataError) and culprit in str(err), str(err)


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_empty_or_missing_dataset_folder_is_an_error_naming_it(bundle, tmp_path):
    ckpt = _checkpoint(bundle, tmp_path / "model.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    for folder in (tmp_path / "empty", tmp_path / "does_not_exist"):
        with pytest.raises(Exception) as excinfo:
            _infer(bundle, folder, ckpt, tmp_path / "out")
        err = _our_error(excinfo)
        assert isinstance(err, DataError) and str(folder) in str(err), str(err)


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_missing_or_foreign_checkpoint_is_an_error_naming_it(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    if bundle.name == CT:
        write_ct_phantom(folder / "scan.nii.gz", shape=(12, 24, 20)).label.unlink()
    else:
        _rgb(folder / "a.png")
    with pytest.raises(Exception) as excinfo:
        _infer(bundle, folder, tmp_path / "missing.pt", tmp_path / "out")
    err = _our_error(excinfo)
    assert isinstance(err, CheckpointError) and "missing.pt" in str(err)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.nn.Conv2d(3, 2, 3).state_dict()}, foreign)
    with pytest.raises(Exception) as excinfo:
        _infer(bundle, folder, foreign, tmp_path / "out")
    err = _our_error(excinfo)
    assert "foreign.pt" in str(err)


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name != CT], ids=[i for i in ids if i != CT])
def test_16_bit_grey_image_in_an_rgb_bundle_is_an_error_naming_it_and_the_fix(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    grey = _rgb(folder / "grey16.png", mode="I;16")
    with pytest.raises(Exception) as excinfo:
        _infer(bundle, folder, _checkpoint(bundle, tmp_path / "model.pt"), tmp_path / "out")
    err = _our_error(excinfo)
    assert isinstance(err, DataError) and str(grey) in str(err) and "channel_policy" in str(err)


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name != CT], ids=[i for i in ids if i != CT])
def test_rgba_constant_and_tiny_images_are_segmented(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    _rgb(folder / "rgba.png", mode="RGBA")
    _rgb(folder / "constant.png", value=128)
    _rgb(folder / "tiny.png", size=(9, 7))
    ckpt = _checkpoint(bundle, tmp_path / "model.pt")
    written = _infer(bundle, folder, ckpt, tmp_path / "out")
    for stem in ("rgba", "constant", "tiny"):
        masks = [p for p in written if p.name.startswith(stem) and p.name.endswith("_mask.png")]
        assert masks, f"no mask for {stem}.png (wrote {[p.name for p in written]})"
        mask = np.asarray(Image.open(masks[0]))
        source = Image.open(folder / f"{stem}.png")
        assert mask.shape[:2] == (source.height, source.width)  # back at the input's size


def test_constant_ct_volume_is_segmented(tmp_path):
    bundle = next(b for b in BUNDLES if b.name == CT)
    folder = tmp_path / "data"
    folder.mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(np.full((20, 24, 12), -50, np.int16), affine), str(folder / "flat.nii.gz"))
    written = _infer(bundle, folder, _checkpoint(bundle, tmp_path / "model.pt"), tmp_path / "out")
    seg = nib.load(str(next(p for p in written if p.name == "flat_seg.nii.gz")))
    assert seg.shape == (20, 24, 12) and np.allclose(seg.affine, affine)


def _demo_copy(bundle: Path, root: Path) -> Path:
    """The bundle's own demo dataset (smoke size), written into ``root`` so that the test may break it."""
    from fewlabel.data import write_ct_demo_dataset, write_demo_dataset

    train = json.loads((bundle / "configs" / "train.json").read_text())
    kwargs = json.loads((bundle / "configs" / "smoke.json").read_text()).get("demo_kwargs", train.get("demo_kwargs"))
    if train["demo_dataset"] == "ct":
        return write_ct_demo_dataset(root, **kwargs)
    return write_demo_dataset(train["demo_dataset"], root, **kwargs)


def _train(bundle: Path, datalist: Path, tmp_path: Path) -> None:
    smoke = json.loads((bundle / "configs" / "smoke.json").read_text())
    run(config_file=str(bundle / "configs" / "train.json"), **smoke, dataset_dir=str(datalist.parent),
        ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"), slice_cache=str(tmp_path / "slices"))


@pytest.mark.parametrize("case", ["truncated_image", "label_out_of_range", "label_size", "missing_datalist"])
@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_training_on_a_broken_dataset_stops_naming_the_file(bundle, case, tmp_path):
    datalist = _demo_copy(bundle, tmp_path / "data")
    item = json.loads(datalist.read_text())["training"][0]
    image, label = datalist.parent / item["image"], datalist.parent / item["label"]
    if case == "truncated_image":
        culprit = image if image.is_file() else sorted(image.glob("*.dcm"))[3]
        _truncate(culprit) if culprit.suffix != ".dcm" else culprit.write_bytes(culprit.read_bytes()[:200])
    elif case == "label_out_of_range":
        if bundle.name == CT:
            pytest.skip("CT labels are read as organ / not organ (organ_labels); other values are background")
        if '"binary": true' in (bundle / "configs" / "train.json").read_text():
            pytest.skip("binary masks: any non-zero value is foreground (LoadLabel2D binary=True, for 0/255 masks)")
        culprit = label
        arr = np.asarray(Image.open(label)).copy()
        arr[0, 0] = 200
        Image.fromarray(arr).save(label)
    elif case == "label_size":
        culprit = label
        if bundle.name == CT:
            write_ct_phantom(tmp_path / "other.nii.gz", shape=(12, 24, 20), label_path=label)
        else:
            arr = np.asarray(Image.open(label))
            Image.fromarray(arr[: arr.shape[0] // 2]).save(label)
    else:
        culprit = datalist
        datalist.unlink()
    with pytest.raises(Exception) as excinfo:
        _train(bundle, datalist, tmp_path)
    err = _our_error(excinfo)
    assert isinstance(err, DataError), repr(err)
    assert str(culprit) in str(err) or culprit.name in str(err), str(err)


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_evaluation_on_a_broken_test_image_stops_naming_the_file(bundle, tmp_path):
    from fewlabel.protocols import PROTOCOLS

    datalist = _demo_copy(bundle, tmp_path / "data")
    item = json.loads(datalist.read_text())["testing"][0]
    image = datalist.parent / item["image"]
    culprit = image if image.is_file() else sorted(image.glob("*.dcm"))[3]
    _truncate(culprit) if culprit.suffix != ".dcm" else culprit.write_bytes(culprit.read_bytes()[:200])
    configs = next((s.configs for s in reversed(PROTOCOLS.get(bundle.name, ())) if "evaluate.json" in s.configs
                    and not s.overrides), ("train.json", "evaluate.json"))
    files = [str(bundle / "configs" / c) for c in configs]
    smoke = json.loads((bundle / "configs" / "smoke.json").read_text())
    models = tmp_path / "models"
    models.mkdir()
    parser = ConfigParser()
    parser.read_config(files)
    data = {"dataset_dir": str(datalist.parent), "finetune_dataset_dir": str(datalist.parent)}  # SLiPPA's stage 2
    parser.update({**smoke, "ckpt_dir": str(models), **data})
    net = parser.get_parsed_content("network_def", instantiate=True)
    torch.save({"model": net.state_dict()}, models / parser.get_parsed_content("ckpt_name"))
    with pytest.raises(Exception) as excinfo:
        run(config_file=files, **smoke, **data, ckpt_dir=str(models), output_dir=str(tmp_path / "out"))
    err = _our_error(excinfo)
    assert isinstance(err, DataError) and (str(culprit) in str(err) or culprit.name in str(err)), str(err)
