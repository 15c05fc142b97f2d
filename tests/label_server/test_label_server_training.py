"""``POST /train/<bundle>`` runs each bundle's own few-label protocol on the MONAI Label datastore.

One server (smoke sizes: the user's ``--overrides``) serves every bundle on a datastore of frames
and CT volumes, some with saved labels, some without. Each bundle's ``/train`` ends ``DONE``, its
images-only or unlabelled stage names the unlabelled images it used, the served weights change
and ``/infer`` still equals the bundle's own pipeline on them. Too few labels, or a SAM teacher
that is not there, end ``ERROR`` with the reason and the weights unchanged. A server killed during
``/train`` and started again still has its saved labels and served weights, whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from label_server.test_label_server import (  # the server tests' helpers
    _copy_bundle,
    _ct_volume,
    _expected,
    _free_port,
    _frame,
    _multipart,
    _parent_pid,
    _processes_mentioning,
    _read_label,
    _request,
    _smoke,
)
from testlib import BUNDLES, REPO, write_png
from fewlabel.bundle import input_kind
from fewlabel.label_server.app import available_bundles, check_weights, prepare_app
from fewlabel.label_server.guard import TaskHistory
from fewlabel.label_server.server import LabelServer
from fewlabel.label_server.training import image_fingerprint, load_server_protocol, write_datalists
from fewlabel.networks.transfer import load_state_file

FRAMES, FRAME_LABELS = 6, 3  # frame0..2 labelled, frame3..5 not
VOLUMES, VOLUME_LABELS = 3, 2  # ct0..1 labelled, ct2 not
SURGICAL = "surgical_semiseg_laparoscopy_segmentation"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _frame_label() -> np.ndarray:
    label = np.zeros((72, 96), np.uint8)  # the frames' blob, value 1: a label of every 2D bundle
    yy, xx = np.mgrid[:72, :96]
    label[((yy - 72 * 0.4) ** 2 / (72 * 0.3) ** 2 + (xx - 96 * 0.6) ** 2 / (96 * 0.25) ** 2) < 1] = 1
    return label


def _save_label(url: str, image_id: str, content: bytes, suffix: str) -> None:
    _request(f"{url}/datastore/label?image={image_id}&tag=final", "PUT",
             *_multipart({"params": "{}"}, {"label": (f"{image_id}{suffix}", content)}))


def _volume_label(image: Path, tmp: Path) -> bytes:
    img = nib.load(image)
    path = tmp / f"label_{image.name}"
    nib.save(nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), img.affine), path)
    return path.read_bytes()


def _train(server: LabelServer, bundle: str, wait: bool = True, **params) -> dict:
    body = json.dumps({"device": "cpu", **params}).encode()
    _request(f"{server.url}/train/{bundle}", "POST", body, {"Content-Type": "application/json"})
    deadline, status = time.monotonic() + 900, {}
    while wait and time.monotonic() < deadline:
        status = json.loads(_request(f"{server.url}/train/"))
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(2)
    return status


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A server of every bundle (seeded tiny weights, smoke sizes) on 6 frames (3 labelled) and
    3 CT volumes (2 labelled), labels saved through the server as a client does."""
    from fewlabel.label_server import ensure_env

    tmp = tmp_path_factory.mktemp("label_train")
    env = ensure_env(log=print)
    bundles, names = tmp / "bundles", available_bundles()
    for i, name in enumerate(names):
        folder = _copy_bundle(name, bundles / name, seed=i)
        if name.startswith("slippa"):  # its fine-tuning starts from stage-1 weights
            (folder / "models" / "stage1.pt").write_bytes((folder / "models" / "model.pt").read_bytes())
    studies = tmp / "studies"
    for i in range(FRAMES):
        write_png(studies / f"frame{i}.png", _frame(i))
    for i in range(VOLUMES):
        _ct_volume(studies / f"ct{i}.nii.gz")
    app_dir = tmp / "app"
    served = prepare_app(app_dir, env, names, bundles_dir=bundles, overrides={n: _smoke(n) for n in names})
    server = LabelServer(app_dir, studies, names, env, port=_free_port())
    server.start()
    try:
        server.wait_ready(timeout=600)
        for i in range(FRAME_LABELS):
            _save_label(server.url, f"frame{i}", _png(_frame_label()), ".png")
        for i in range(VOLUME_LABELS):
            _save_label(server.url, f"ct{i}", _volume_label(studies / f"ct{i}.nii.gz", tmp), ".nii.gz")
        yield {"server": server, "tmp": tmp, "bundles": bundles, "served": {b.name: b for b in served}}
    finally:
        server.stop()


def test_every_bundle_says_how_the_server_trains_it():
    for b in BUNDLES:
        protocol = load_server_protocol(REPO / "bundles" / b.name)
        assert protocol is not None, f"{b.name}: configs/protocol.json has no label_server section"
        assert protocol.kind == input_kind(REPO / "bundles" / b.name)
    uses = {b.name: {s.uses for s in load_server_protocol(REPO / "bundles" / b.name).stages} for b in BUNDLES}
    # the methods that learn from images nobody labelled have a stage that reads them
    for name in ("surgical_semiseg_laparoscopy_segmentation", "medsass_binary_segmentation",
                 "polycl_liver_ct_segmentation"):
        assert "images" in uses[name], name
    sam = load_server_protocol(REPO / "bundles" / "sam_mining_polyp_segmentation")
    assert any(s.unlabelled for s in sam.stages) and "sam_checkpoint" in sam.paths


def test_datalists_hold_the_saved_labels_and_the_unlabelled_images(tmp_path):
    frames = {f"f{i}": os.fspath(write_png(tmp_path / f"f{i}.png", _frame(i))) for i in range(6)}
    labels = {i: os.fspath(write_png(tmp_path / f"{i}_label.png", _frame_label())) for i in ("f0", "f1", "f2")}
    labelled = {i: (frames[i], labels[i]) for i in labels}
    unlabelled = {i: p for i, p in frames.items() if i not in labels}
    datalist, images = write_datalists(labelled, unlabelled, tmp_path / "run", val_split=0.2)
    d, im = json.loads(datalist.read_text()), json.loads(images.read_text())
    assert [it["patient"] for it in d["training"]] == ["f0", "f1"]
    assert [it["patient"] for it in d["validation"]] == ["f2"]
    assert all("label" in it for it in d["training"] + d["validation"])
    assert [it["patient"] for it in d["unlabelled"]] == ["f3", "f4", "f5"] and "label" not in d["unlabelled"][0]
    # the images-only list does not depend on which images are labelled
    assert sorted(it["patient"] for it in im["training"] + im["validation"]) == sorted(frames)
    assert not any("label" in it for it in im["training"] + im["validation"])
    again = write_datalists({}, frames, tmp_path / "other")[1]
    assert json.loads(again.read_text()) == im
    before = image_fingerprint(list(frames.values()))
    assert image_fingerprint(sorted(frames.values(), reverse=True)) == before
    write_png(tmp_path / "f5.png", _frame(11))
    os.utime(tmp_path / "f5.png", ns=(1, 1))
    assert image_fingerprint(list(frames.values())) != before  # an image changed: pre-training runs again


class _Datastore:
    """The part of MONAI Label's datastore the trainer reads."""

    def __init__(self, images: dict[str, str], labels: dict[str, str]) -> None:
        self.images, self.labels = images, labels

    def list_images(self) -> list[str]:
        return list(self.images)

    def get_image_uri(self, image_id: str) -> str:
        return self.images[image_id]

    def get_label_uri(self, image_id: str, tag: str) -> str:
        return self.labels.get(image_id, "") if tag == "final" else ""


def test_trainer_refuses_too_few_labels_and_a_missing_teacher_before_running(tmp_path):
    from fewlabel.errors import FewLabelError
    from fewlabel.label_server.training import ProtocolTraining

    frames = {f"f{i}": os.fspath(write_png(tmp_path / f"f{i}.png", _frame(i))) for i in range(4)}
    frames["ct"] = os.fspath(_ct_volume(tmp_path / "ct.nii.gz"))  # not a frame: not this bundle's
    labels = {"f0": os.fspath(write_png(tmp_path / "l0.png", _frame_label()))}
    folder = tmp_path / "app" / "model" / "b"
    for name, request, reason in [
        (SURGICAL, {}, f"{SURGICAL} needs at least 3 saved labels (tag 'final') of its images to train; "
                       "the datastore has 1 of 4. Save labels for 2 more images"),
        ("sam_mining_polyp_segmentation", {"sam_checkpoint": os.fspath(tmp_path / "none.pth")},
         f"the SAM teacher's weights (e.g. sam_vit_b_01ec64.pth) not found: {tmp_path / 'none.pth'}"),
    ]:
        training = ProtocolTraining(load_server_protocol(REPO / "bundles" / name), REPO / "bundles" / name, folder,
                                    log=lambda s: None)
        with pytest.raises(FewLabelError) as e:
            training(request, _Datastore(frames, labels))
        assert reason in str(e.value)
        assert not (folder / "train" / "run").exists()  # nothing ran
    polycl = load_server_protocol(REPO / "bundles" / "polycl_liver_ct_segmentation")
    split = ProtocolTraining(polycl, REPO / "bundles" / polycl.bundle, folder).split(_Datastore(frames, labels))
    assert split == ({}, {"ct": frames["ct"]})


@pytest.mark.slow
def test_info_lists_a_trainer_for_every_bundle(loop):
    info = loop["server"].get("/info/")
    assert sorted(info["trainers"]) == available_bundles()
    assert "sam_checkpoint" in info["trainers"]["sam_mining_polyp_segmentation"]["config"]


@pytest.mark.slow
def test_too_few_labels_no_teacher_or_a_failing_stage_end_in_error_and_keep_the_weights(loop):
    server = loop["server"]
    url = server.url
    weights = {n: _digest(b.folder / "models" / "model.pt") for n, b in loop["served"].items()}
    label = server.studies / "labels" / "final" / "frame2.png"
    kept = label.read_bytes()
    _request(f"{url}/datastore/label?id=frame2&tag=final", "DELETE")
    try:
        status = _train(server, SURGICAL)
        assert status["status"] == "ERROR", status
        assert (f"{SURGICAL} needs at least 3 saved labels (tag 'final') of its images to train; the datastore "
                "has 2 of 6") in server.log_file.read_text()
    finally:
        _save_label(url, "frame2", kept, ".png")
    status = _train(server, "sam_mining_polyp_segmentation", sam_checkpoint=os.fspath(loop["tmp"] / "no_sam.pth"))
    assert status["status"] == "ERROR", status
    assert f"the SAM teacher's weights (e.g. sam_vit_b_01ec64.pth) not found: {loop['tmp'] / 'no_sam.pth'}" \
        in server.log_file.read_text()
    slippa = "slippa_liver_landmark_segmentation"  # a stage that fails: the task says which and why
    status = _train(server, slippa, overrides={"learning_rate": "$float('no rate')"})
    assert status["status"] == "ERROR", status
    log = server.log_file.read_text()
    assert f"{slippa}: stage 'finetune' failed (exit status 1); the served weights are unchanged" in log
    assert "could not convert string to float: 'no rate'" in log
    assert {n: _digest(b.folder / "models" / "model.pt") for n, b in loop["served"].items()} == weights


@pytest.mark.slow
@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_train_runs_the_bundles_protocol_on_the_datastore(loop, bundle):
    server, served = loop["server"], loop["served"][bundle]
    protocol = load_server_protocol(served.source)
    weights = served.folder / "models" / "model.pt"
    before, source = weights.read_bytes(), (served.source / "models" / "model.pt").read_bytes()
    log_start = len(server.log_file.read_text())
    status = _train(server, bundle)
    log = server.log_file.read_text()[log_start:]
    assert status.get("status") == "DONE", f"{status}\n{server.log_tail(80)}"
    volume = protocol.kind == "volume"
    unlabelled = [f"ct{i}" for i in range(VOLUME_LABELS, VOLUMES)] if volume else \
        [f"frame{i}" for i in range(FRAME_LABELS, FRAMES)]
    for stage in protocol.stages:
        assert f"stage {protocol.stages.index(stage) + 1}/{len(protocol.stages)} '{stage.name}'" in log, stage.name
        if stage.uses == "images" or stage.unlabelled:  # the method's unlabelled stage names what it used
            assert f"'{stage.name}'" in log and f"{', '.join(unlabelled)}" in log
            used = json.loads((served.folder / "train" / "run" / ("datalist.json" if stage.unlabelled
                                                                    else "images.json")).read_text())
            listed = {Path(it["image"]).name.split(".")[0] for s in ("training", "validation", "unlabelled")
                      for it in used.get(s, []) if "label" not in it}
            assert set(unlabelled) <= listed
    stats = server.get("/info/")["train_stats"][bundle]  # per-stage status, as train/status.json holds it
    assert stats["state"] == "done" and stats["stages"] == {s.name: "done" for s in protocol.stages}
    assert stats["unlabelled"] == unlabelled
    assert weights.read_bytes() != before, "the served weights did not change"
    assert (served.source / "models" / "model.pt").read_bytes() == source, "the bundle's own weights were touched"
    check_weights(served)
    # /infer serves the new weights, as the bundle's own pipeline computes with them
    mirror = loop["tmp"] / f"mirror_{bundle}"
    (mirror / "models").mkdir(parents=True, exist_ok=True)
    if not (mirror / "configs").exists():
        (mirror / "configs").symlink_to(loop["bundles"] / bundle / "configs")
    torch.save({"model": load_state_file(weights)}, mirror / "models" / "model.pt")  # as _expected reads it
    image = server.studies / ("ct0.nii.gz" if volume else "frame4.png")
    content = _request(f"{server.url}/infer/{bundle}?image={image.name.split('.')[0]}&output=image", "POST",
                       *_multipart({"params": "{}"}, {}))
    label, _ = _read_label(content, ".nii.gz" if volume else ".png", loop["tmp"])
    np.testing.assert_array_equal(label, _expected(mirror, image))


@pytest.mark.slow
def test_a_server_killed_during_train_keeps_labels_and_weights(loop):
    """Killed outright while a stage runs: the run dies with it; started again, the server has the
    saved labels and the served weights as they were, and lists the run as INTERRUPTED. The images-only
    stage is reused, since the images have not changed since the last /train."""
    server, served = loop["server"], loop["served"][SURGICAL]
    labels = {p.name: _digest(p) for p in (server.studies / "labels" / "final").iterdir() if p.is_file()}
    weights = served.folder / "models" / "model.pt"
    before = _digest(weights)
    log_start = len(server.log_file.read_text())
    _train(server, SURGICAL, wait=False, max_epochs=500)
    deadline, tasks, status = time.monotonic() + 600, [], {}
    while time.monotonic() < deadline:
        tasks = [p for p in _processes_mentioning("monailabel.interfaces.utils.app")
                 if _parent_pid(p) == server.process.pid]
        status = json.loads(_request(f"{server.url}/train/"))
        if tasks and status.get("status") == "RUNNING" and "[finetune]" in server.log_file.read_text()[log_start:]:
            break
        time.sleep(1)
    log = server.log_file.read_text()[log_start:]
    assert "'pretrain': reused (the image set is unchanged" in log, log[-3000:]
    assert tasks and status.get("status") == "RUNNING", f"{status}\n{server.log_tail(40)}"
    stages = _processes_mentioning(os.fspath(served.folder / "train" / "run"))
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(30)
    deadline = time.monotonic() + 30
    left = tasks + stages
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if p in _processes_mentioning("monai")]
    assert not left, "the training run outlived the server"
    server.process = None
    server.start()
    server.wait_ready(timeout=600)
    assert {p.name: _digest(p) for p in (server.studies / "labels" / "final").iterdir() if p.is_file()} == labels
    assert _digest(weights) == before
    check_weights(served)  # whole: it loads strictly
    restored = TaskHistory(server.app_dir / "logs" / "tasks.json").load()
    assert restored[-1]["id"] == status["id"] and restored[-1]["status"] == "INTERRUPTED"
    content = _request(f"{server.url}/infer/{SURGICAL}?image=frame1&output=image", "POST",
                       *_multipart({"params": "{}"}, {}))
    assert _read_label(content, ".png", loop["tmp"])[0].shape == (72, 96)
