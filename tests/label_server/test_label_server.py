"""MONAI Label: every bundle served from a local MONAI Label 0.8.5 server (fewlabel.label_server).

The integration test builds (or reuses) MONAI Label's own environment, places every bundle with
tiny seeded weights in the stock ``monaibundle`` app, starts the server on loopback and uses its
REST API as a client does: ``/info/``, ``/infer/<bundle>`` on a study image of each bundle's
modality (compared with the bundle's own pipeline run here), labels saved with
``/datastore/label``, and a stop that leaves no process behind (``/train`` runs are in
``test_label_server_training.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from labelserverlib import (
    CT_SHAPE,
    FRAME_HW,
    _copy_bundle,
    _ct_volume,
    _expected,
    _frame,
    _free_port,
    _http,
    _multipart,
    _read_label,
    _request,
    _smoke,
)
from testlib import BUNDLES, REPO, write_png
from fewlabel.bundle import input_kind
from fewlabel.data.ct import load_ct_volume
from fewlabel.errors import CheckpointError, FewLabelError
from fewlabel.label_server.app import TRAIN_OVERLAY, available_bundles, prepare_app
from fewlabel.label_server.env import env_requirements
from fewlabel.label_server.server import LabelServer, _group_alive
from fewlabel.transforms import MonaiLabelOutput, MonaiLabelOutputd

TRAIN_BUNDLE = "surgical_semiseg_laparoscopy_segmentation"
GRAY_HW = (60, 84)


# ----------------------------------------------------------------------------- helpers
def _channel_def(bundle: str) -> dict[str, str]:
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    return meta["network_data_format"]["outputs"]["pred"]["channel_def"]


def _label_values(bundle: str) -> dict[str, int]:
    return {v.lower(): int(k) for k, v in _channel_def(bundle).items() if v.lower() != "background"}


















def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) with a hash of its content or link target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def outside(served):
    """A folder beside the studies folder (files a request must not reach), checked unchanged after the test."""
    folder = served["server"].studies.parent / f"outside_{uuid.uuid4().hex[:8]}"
    (folder / "labels" / "final").mkdir(parents=True)
    write_png(folder / "secret.png", _frame(7))
    (folder / "keep.png").write_bytes((folder / "secret.png").read_bytes())
    (folder / "labels" / "final" / "keep.png").write_bytes(b"label")
    before = _tree(folder)
    yield folder
    assert _tree(folder) == before, "a request changed files outside the studies folder"


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _no_new_files(folder: Path, before: set[str], wait: float = 10.0) -> bool:
    """Whether ``folder`` holds no file beyond ``before`` (within ``wait`` s: the sweep follows the response)."""
    deadline = time.monotonic() + wait
    while _files(folder) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _files(folder) - before






# ----------------------------------------------------------------------------- fast checks
def test_monai_label_output_gives_the_writers_layout():
    pred = torch.zeros(1, 3, 5)
    pred[0, 0, 4] = 2
    out = MonaiLabelOutput()(pred)
    assert out.dtype == np.uint8 and out.shape == (5, 3) and out[4, 0] == 2  # (W, H): x first
    image = MetaTensor(torch.zeros(3, 3, 5), meta={"spatial_shape": np.array([3, 5])})
    d = MonaiLabelOutputd(keys="pred")({"pred": pred, "image": image})
    assert d["pred"].shape == (5, 3) and tuple(d["image"].meta["spatial_shape"]) == (5, 3)
    assert MonaiLabelOutput("uint16")(pred).dtype == np.uint16
    for bad in (torch.full((1, 3, 5), 0.4), torch.full((1, 3, 5), -1.0), torch.full((1, 3, 5), float("nan"))):
        with pytest.raises(ValueError, match="class-index map"):
            MonaiLabelOutput()(bad)
    with pytest.raises(ValueError, match="shape"):
        MonaiLabelOutput()(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="dtype"):
        MonaiLabelOutput("float32")


def test_monai_label_output_3d_is_in_the_files_voxel_order(tmp_path):
    path = _ct_volume(tmp_path / "ct.nii.gz")
    vol = load_ct_volume(path)  # RAS: x and y flipped from the file
    mask = MetaTensor((vol > 0).to(torch.float32), meta=dict(vol.meta))
    out = MonaiLabelOutput()(mask)
    stored = np.asarray(nib.load(path).dataobj)
    assert out.shape == (1, *CT_SHAPE) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], (stored > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="meta"):
        MonaiLabelOutput()(torch.zeros(1, *CT_SHAPE))


def test_every_bundle_has_a_monai_label_overlay_and_labels():
    assert available_bundles() == sorted(b.name for b in BUNDLES)
    for b in BUNDLES:
        labels = _label_values(b.name)
        assert labels and 0 not in labels.values(), f"{b.name}: channel_def must name the label values"
    assert (REPO / "bundles" / TRAIN_BUNDLE / "configs" / TRAIN_OVERLAY).is_file()


def test_env_requirements_keep_pydicom_2_out_of_fewlabels_pins():
    reqs = env_requirements()
    assert reqs["first"][0].startswith("torch==") and "monailabel==0.8.5" in reqs["monailabel"]
    assert "pydicom<3" in reqs["monailabel"] and "dicomweb-client==0.59.3" in reqs["monailabel"]
    assert not any(r.startswith(("pydicom", "highdicom")) for r in reqs["rest"])
    assert any(r.startswith("segmentation-models-pytorch==") for r in reqs["rest"])


def test_check_training_data_says_how_to_get_enough_labels():
    from fewlabel.data import check_training_data
    from fewlabel.errors import DataError

    check_training_data([{}, {}], [{}])
    check_training_data([{}, {}], None)
    with pytest.raises(DataError, match="1 labelled training image.*at least 2"):
        check_training_data([{}], [{}])
    with pytest.raises(DataError, match="no validation images.*val_split"):
        check_training_data([{}, {}, {}], [])


@pytest.fixture
def stock_env(tmp_path):
    """A stand-in for the MONAI Label environment: only the stock app's files."""
    app = tmp_path / "env" / "monailabel" / "sample-apps" / "monaibundle"
    app.mkdir(parents=True)
    (app / "main.py").write_text("# stock app\n")
    return tmp_path / "env"


def test_prepare_app_says_which_weights_file_to_put_where(tmp_path, stock_env):
    bundles = tmp_path / "bundles"
    shutil.copytree(REPO / "bundles" / TRAIN_BUNDLE / "configs", bundles / TRAIN_BUNDLE / "configs")
    with pytest.raises(FewLabelError) as e:
        prepare_app(tmp_path / "app", stock_env, bundles_dir=bundles)
    msg = str(e.value)
    assert str(bundles / TRAIN_BUNDLE / "models" / "model.pt") in msg and "configs/train.json" in msg
    with pytest.raises(FewLabelError, match="unknown bundle"):
        prepare_app(tmp_path / "app", stock_env, ["no_such_bundle"], bundles_dir=bundles)


def test_prepare_app_rejects_weights_of_another_network(tmp_path, stock_env):
    bundles = tmp_path / "bundles"
    _copy_bundle(TRAIN_BUNDLE, bundles / TRAIN_BUNDLE, encoder_name="resnet18")
    with pytest.raises(CheckpointError, match="(?s)does not fit the network.*--overrides"):
        prepare_app(tmp_path / "app", stock_env, bundles_dir=bundles)  # inference.json says resnet101
    served = prepare_app(tmp_path / "app", stock_env, bundles_dir=bundles,
                         overrides={TRAIN_BUNDLE: {"encoder_name": "resnet18"}}, log=lambda s: None)
    assert [b.name for b in served] == [TRAIN_BUNDLE] and served[0].trains
    config = json.loads((served[0].folder / "configs" / "inference.json").read_text())
    assert config["encoder_name"] == "resnet18"
    assert config["postprocessing"]["transforms"][-1]["_target_"] == "fewlabel.transforms.MonaiLabelOutputd"
    train = json.loads((served[0].folder / "configs" / "train.json").read_text())
    assert train["encoder_name"] == "resnet18" and train["num_workers"] == 0
    saver = train["validate"]["handlers"][2]  # the served weights are written whole or not at all
    assert saver["_target_"] == "fewlabel.handlers.AtomicCheckpointSaver"
    assert saver["key_metric_filename"] == "@ckpt_name"


def test_prepare_app_never_overwrites_weights_trained_from_monai_label(tmp_path, stock_env):
    bundles = tmp_path / "bundles"
    src = _copy_bundle(TRAIN_BUNDLE, bundles / TRAIN_BUNDLE) / "models" / "model.pt"
    kw = dict(bundles_dir=bundles, overrides={TRAIN_BUNDLE: _smoke(TRAIN_BUNDLE)}, log=lambda s: None)
    served = prepare_app(tmp_path / "app", stock_env, **kw)[0]
    copy = served.folder / "models" / "model.pt"
    assert copy.read_bytes() == src.read_bytes()
    trained = torch.load(copy, weights_only=True)
    trained["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in trained["model"].items()}
    torch.save(trained, copy)  # as a /train run does: newer than the bundle's file
    os.utime(copy, (time.time() + 5, time.time() + 5))
    prepare_app(tmp_path / "app", stock_env, **kw)
    assert copy.read_bytes() != src.read_bytes()  # kept
    os.utime(src, (time.time() + 60, time.time() + 60))  # the user retrained the bundle: served, old copy kept
    prepare_app(tmp_path / "app", stock_env, **kw)
    assert copy.read_bytes() == src.read_bytes()
    assert len(list(copy.parent.glob("model.before-*.pt.bak"))) == 1


def test_cli_names_the_missing_weights_before_building_anything(tmp_path):
    bundles = tmp_path / "bundles"
    shutil.copytree(REPO / "bundles" / TRAIN_BUNDLE / "configs", bundles / TRAIN_BUNDLE / "configs")
    env = {**os.environ, "FEWLABEL_LABEL_ENV": os.fspath(tmp_path / "no_env")}
    proc = subprocess.run([sys.executable, "-m", "fewlabel.cli", "label-server", "--studies", os.fspath(tmp_path / "s"),
                           "--bundles_dir", os.fspath(bundles)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(bundles / TRAIN_BUNDLE / "models" / "model.pt") in proc.stderr
    assert not (tmp_path / "no_env").exists()


def test_cli_says_the_port_is_taken_before_anything_else(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = {**os.environ, "FEWLABEL_LABEL_ENV": os.fspath(tmp_path / "no_env")}
        proc = subprocess.run([sys.executable, "-m", "fewlabel.cli", "label-server", "--studies",
                               os.fspath(tmp_path / "s"), "--port", str(port), "--bundles_dir", os.fspath(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "no_env").exists() and not (tmp_path / "s").exists()


def test_cli_takes_cors_origins_as_scheme_host_port_only(tmp_path):
    env = {**os.environ, "FEWLABEL_LABEL_ENV": os.fspath(tmp_path / "no_env")}
    proc = subprocess.run([sys.executable, "-m", "fewlabel.cli", "label-server", "--studies", os.fspath(tmp_path / "s"),
                           "--port", str(_free_port()), "--bundles_dir", os.fspath(tmp_path),
                           "--cors_origins", "http://localhost:3000,localhost:3001,http://x.org/page"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "['localhost:3001', 'http://x.org/page']" in proc.stderr and "scheme://host[:port]" in proc.stderr
    assert not (tmp_path / "no_env").exists()


@pytest.mark.parametrize(("args", "reason"), [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 makes the server reachable from other machines"),
    (["--host", "10.1.2.3", "--auth_enable"], "--auth_enable --auth_realm_uri"),  # a login needs its realm
    (["--host", "labels.example.org", "--auth_realm_uri", "https://kc.example.org/realms/r"], "--auth_enable"),
    (["--auth_enable", "--auth_realm_uri", "kc.example.org"], "is not a URL"),
    (["--server_names", "labels.example.org:8000"], "without scheme or port"),
])
def test_cli_refuses_a_server_beyond_loopback_without_a_login(tmp_path, args, reason):
    """Checked before the port, the weights or the environment: nothing is built or started."""
    env = {**os.environ, "FEWLABEL_LABEL_ENV": os.fspath(tmp_path / "no_env")}
    proc = subprocess.run([sys.executable, "-m", "fewlabel.cli", "label-server", "--studies", os.fspath(tmp_path / "s"),
                           "--port", str(_free_port()), "--bundles_dir", os.fspath(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and reason in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "no_env").exists() and not (tmp_path / "s").exists()


def test_team_server_settings_reach_monai_label_and_the_guard(tmp_path):
    kw = dict(auth_realm_uri="https://kc.example.org/realms/labels", auth_client_id="fewlabel-team")
    with pytest.raises(FewLabelError, match="reachable from other machines"):
        LabelServer(tmp_path / "app", tmp_path / "s", ["b"], tmp_path / "env", port=8123, host="0.0.0.0").start()
    server = LabelServer(tmp_path / "app", tmp_path / "s", ["b"], tmp_path / "env", port=8123, host="0.0.0.0",
                         server_names=["labels.example.org", "10.1.2.3"], auth_enable=True, **kw)
    env = server.environment()
    assert env["MONAI_LABEL_AUTH_ENABLE"] == "true"
    assert env["MONAI_LABEL_AUTH_REALM_URI"] == kw["auth_realm_uri"]
    assert env["MONAI_LABEL_AUTH_CLIENT_ID"] == "fewlabel-team"
    hosts = json.loads(env["FEWLABEL_LABEL_HOSTS"])
    assert {"labels.example.org:8123", "labels.example.org", "10.1.2.3:8123", "127.0.0.1:8123"} <= set(hosts)
    assert "http://labels.example.org:8123" in json.loads(env["FEWLABEL_LABEL_ORIGINS"])
    local = LabelServer(tmp_path / "app", tmp_path / "s", ["b"], tmp_path / "env", port=8123).environment()
    assert local["MONAI_LABEL_AUTH_ENABLE"] == "false" and "MONAI_LABEL_AUTH_REALM_URI" not in local
    assert json.loads(local["FEWLABEL_LABEL_HOSTS"]) == ["127.0.0.1:8123", "localhost:8123", "[::1]:8123"]


def test_server_dies_with_its_launcher(tmp_path):
    """A launcher killed outright (no Ctrl-C, no cleanup) takes its server with it."""
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "monailabel").touch()
    fake = env_dir / "bin" / "python"  # stands in for the server: runs until it is signalled
    fake.write_text("#!/bin/sh\nexec sleep 300\n")
    fake.chmod(0o755)
    code = ("import sys, time; from fewlabel.label_server.server import LabelServer; "
            f"s = LabelServer({os.fspath(tmp_path / 'app')!r}, {os.fspath(tmp_path / 's')!r}, ['b'], "
            f"{os.fspath(env_dir)!r}, port={_free_port()}); s.start(); print(s.process.pid, flush=True); "
            "time.sleep(300)")
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(launcher.stdout.readline())
        assert _group_alive(pid)
    finally:
        launcher.kill()
        launcher.wait(30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    assert not _group_alive(pid), "the server outlived its launcher"


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


# ----------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from fewlabel.label_server import ensure_env

    tmp = tmp_path_factory.mktemp("label_server")
    env = ensure_env(log=print)
    bundles = tmp / "bundles"
    names = available_bundles()
    for i, name in enumerate(names):
        _copy_bundle(name, bundles / name, seed=i)
    studies = tmp / "studies"
    images = {}
    for i in range(4):
        images[f"frame{i}"] = write_png(studies / f"frame{i}.png", _frame(i))
    images["gray"] = write_png(studies / "gray.png", _frame(9, GRAY_HW, gray=True))
    images["ct"] = _ct_volume(studies / "ct.nii.gz")
    app_dir = tmp / "app"
    served = prepare_app(app_dir, env, names, bundles_dir=bundles,
                         overrides={n: _smoke(n) for n in names})
    server = LabelServer(app_dir, studies, [b.name for b in served], env, port=_free_port())
    server.start()
    try:
        info = server.wait_ready(timeout=600)
        yield {"server": server, "info": info, "bundles": bundles, "images": images, "tmp": tmp,
               "served": {b.name: b for b in served}}
    finally:
        server.stop()


@pytest.mark.slow
def test_info_lists_every_bundle_with_its_labels(served):
    models = served["info"]["models"]
    assert sorted(models) == available_bundles()
    for name, m in models.items():
        assert m["type"] == "segmentation", name
        assert m["labels"] == _label_values(name), name
    assert sorted(served["info"]["trainers"]) == available_bundles()  # each its own protocol


@pytest.mark.slow
@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_infer_returns_the_bundles_label_map(served, bundle):
    volume = input_kind(REPO / "bundles" / bundle) == "volume"
    image = served["images"]["ct" if volume else "frame1"]
    image_id = image.name.split(".")[0]
    url = f"{served['server'].url}/infer/{bundle}?image={image_id}&output=image"
    content = _request(url, "POST", *_multipart({"params": "{}"}, {}))
    label, affine = _read_label(content, ".nii.gz" if volume else ".png", served["tmp"])
    expected = _expected(served["bundles"] / bundle, image)
    values = {0, *_label_values(bundle).values()}
    assert set(np.unique(label).tolist()) <= values
    if volume:
        assert label.shape == CT_SHAPE
        np.testing.assert_allclose(affine, nib.load(image).affine, atol=1e-3)
    else:
        assert label.shape == FRAME_HW
    np.testing.assert_array_equal(label, expected)
    assert len(np.unique(expected)) > 1 or bundle.startswith("slippa"), "a constant map proves little"


@pytest.mark.slow
def test_medsass_takes_an_uploaded_grayscale_image(served):
    png = served["images"]["gray"].read_bytes()
    url = f"{served['server'].url}/infer/medsass_binary_segmentation?output=image"
    content = _request(url, "POST", *_multipart({"params": "{}"}, {"file": ("upload.png", png)}))
    label, _ = _read_label(content, ".png", served["tmp"])
    assert label.shape == GRAY_HW and set(np.unique(label).tolist()) <= {0, 1}
    np.testing.assert_array_equal(label, _expected(served["bundles"] / "medsass_binary_segmentation",
                                                   served["images"]["gray"], channel_policy="convert"))


# ----------------------------------------------------------------------------- what the server accepts
def _detail(body: bytes) -> str:
    return json.loads(body)["detail"]


@pytest.mark.slow
def test_datastore_writes_and_deletes_only_inside_the_studies_folder(served, outside):
    url, studies = served["server"].url, served["server"].studies
    png = served["images"]["frame0"].read_bytes()
    buf = io.BytesIO()
    Image.fromarray(np.ones((17, 33), np.uint8)).save(buf, format="PNG")
    small = buf.getvalue()  # a label of another size than its image
    buf = io.BytesIO()
    Image.fromarray(np.full(FRAME_HW, 9, np.uint8)).save(buf, format="PNG")
    nine = buf.getvalue()  # no served bundle has label 9
    rel = f"../{outside.name}"
    studies_before = _tree(studies)
    temp, temp_before = served["server"].temp_dir, _files(served["server"].temp_dir)
    link = studies / "linked.png"  # a link in the studies folder that leads out
    link.symlink_to(outside / "keep.png")
    try:
        refused = [
            ("PUT", f"/datastore/image?image={rel}/keep", {"file": ("x.png", png)}, 400, "path separator"),
            ("PUT", f"/datastore/image?image={outside}/new", {"file": ("x.png", png)}, 400, "path separator"),
            ("PUT", "/datastore/image?image=..", {"file": ("x.png", png)}, 400, "names a folder"),
            ("PUT", "/datastore/image?image=linked", {"file": ("x.png", png)}, 403, "outside the studies folder"),
            ("PUT", "/datastore/image?image=datastore_v2", {"file": ("x.json", b"{}")}, 415, "file types"),
            ("PUT", f"/datastore/label?image=frame0&tag=../{rel}", {"label": ("frame0.png", png)}, 400, "separator"),
            ("PUT", "/datastore/label?image=frame0&tag=..", {"label": ("frame0.png", png)}, 400, "names a folder"),
            ("PUT", f"/datastore/label?image={rel}/keep&tag=final", {"label": ("k.png", png)}, 400, "separator"),
            ("PUT", "/datastore/label?image=linked&tag=final", {"label": ("k.png", png)}, 404, "no image"),
            ("DELETE", f"/datastore/image?id={rel}/keep", None, 400, "path separator"),
            ("DELETE", "/datastore/image?id=linked", None, 404, "no image"),
            ("DELETE", f"/datastore/label?id={rel}/keep&tag=final", None, 400, "path separator"),
            ("DELETE", f"/datastore/label?id=keep&tag=../{rel}/labels/final", None, 400, "path separator"),
            ("GET", f"/datastore/image?image={rel}/secret", None, 400, "path separator"),
            ("PUT", "/datastore/image?image=text", {"file": ("t.png", b"just text")}, 422, "not a readable image"),
            ("PUT", "/datastore/label?image=frame0&tag=final", {"label": ("frame0.png", small)}, 422,
             "is 17x33 but the image is 72x96"),
            ("PUT", "/datastore/label?image=frame0&tag=final", {"label": ("frame0.png", b"text")}, 422, "readable"),
            ("PUT", "/datastore/label?image=frame0&tag=final", {"label": ("frame0.png", nine)}, 422,
             "[9] are no label values of a served bundle"),
            ("PUT", "/datastore/label?image=frame0&tag=final", {"label": ("frame0.png", png)}, 422, "3 channels"),
        ]
        for method, path, files, status, reason in refused:
            data, headers = _multipart({"params": "{}"}, files) if files else (None, {})
            got, body, _ = _http(url + path, method, data, headers)
            assert got == status and reason in _detail(body), f"{method} {path} -> {got} {body[:300]!r}"
        assert _no_new_files(temp, temp_before), f"refused uploads left {_files(temp) - temp_before} in {temp}"
        listed = json.loads(_request(f"{url}/datastore/?output=all"))["objects"]
        assert "linked" not in listed and "frame0" in listed
    finally:
        link.unlink()
    # what belongs is still served: an image added, read back and deleted by its id
    _request(f"{url}/datastore/image?image=added", "PUT", *_multipart({"params": "{}"}, {"file": ("a.png", png)}))
    assert (studies / "added.png").read_bytes() == png
    assert _request(f"{url}/datastore/image?image=added") == png
    _request(f"{url}/datastore/image?id=added", "DELETE")
    bookkeeping = ("datastore_v2.json", ".lock")
    assert {k: v for k, v in _tree(studies).items() if k not in bookkeeping} == \
        {k: v for k, v in studies_before.items() if k not in bookkeeping}


@pytest.mark.slow
def test_infer_reads_only_images_of_the_studies_folder(served, outside):
    url, bundle = served["server"].url, "medsass_binary_segmentation"
    for image, status, reason in [(outside / "secret.png", 400, "path separator"), ("/etc/passwd", 400, "separator"),
                                  (f"../{outside.name}/secret", 400, "separator"), ("..", 400, "names a folder"),
                                  ("no_such_image", 404, "no image 'no_such_image'")]:
        got, body, _ = _http(f"{url}/infer/{bundle}?image={image}&output=json", "POST",
                             *_multipart({"params": "{}"}, {}))
        assert got == status and reason in _detail(body), f"{image} -> {got} {body[:300]!r}"
    params = json.dumps({"image": os.fspath(outside / "secret.png")})
    got, body, _ = _http(f"{url}/infer/{bundle}?output=json", "POST", *_multipart({"params": params}, {}))
    assert got == 400 and "params may not set ['image']" in _detail(body)
    got, body, _ = _http(f"{url}/infer/{bundle}?image=frame2&output=json", "POST", *_multipart({"params": "{}"}, {}))
    assert got == 200 and json.loads(body)["label_names"] == {"foreground": 1}
    got, body, _ = _http(f"{url}/infer/no_such_model?image=frame2&output=json", "POST",
                         *_multipart({"params": "{}"}, {}))
    assert got == 404 and "no model 'no_such_model'" in _detail(body)
    # an upload inference fails on leaves no temporary file behind
    temp = served["server"].temp_dir
    before = _files(temp)
    junk = f"not an image {uuid.uuid4().hex}".encode()
    for model in (bundle, "no_such_model"):
        got, _, _ = _http(f"{url}/infer/{model}?output=json", "POST", *_multipart({"params": "{}"},
                                                                                  {"file": ("u.png", junk)}))
        assert got >= 400
        assert _no_new_files(temp, before), f"/infer/{model} left its upload in {temp}: {_files(temp) - before}"
    assert not [p for p in Path(tempfile.gettempdir()).glob("tmp*.png") if p.is_file() and p.read_bytes() == junk]


_CLIENT_PROBE = """
import json, sys
from monailabel.client import MONAILabelClient
url, outside, name = sys.argv[1:4]
client = MONAILabelClient(url)
calls = {
    "upload_image": lambda: client.upload_image(f"{outside}/secret.png", image_id=f"../{name}/new"),
    "save_label": lambda: client.save_label("frame0", f"{outside}/keep.png", tag=f"../../{name}"),
    "infer": lambda: client.infer("medsass_binary_segmentation", f"{outside}/secret.png", {}),
}
out = {}
for what, call in calls.items():
    try:
        call()
        out[what] = "accepted"
    except Exception as e:  # MONAILabelClientException: 'Status: <code>; Response: <body>'
        out[what] = str(getattr(e, "msg", e))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_monai_label_client_cannot_reach_outside_the_studies(served, outside):
    """MONAI Label's own client (from the server's environment), as a 3D Slicer plugin uses it."""
    server = served["server"]
    proc = subprocess.run([os.fspath(server.env_dir / "bin" / "python"), "-c", _CLIENT_PROBE, server.url,
                           os.fspath(outside), outside.name], capture_output=True, text=True, timeout=300,
                          cwd=served["tmp"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for what, result in results.items():
        assert result.startswith("Status: 400") and "path separator" in result, f"{what}: {result}"


@pytest.mark.slow
def test_server_answers_its_own_host_and_pages_only(served):
    server = served["server"]
    own = f"http://localhost:{server.port}"
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        assert _http(f"{server.url}/info/", headers={"Host": host})[0] == 200
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1:1"):
        got, body, _ = _http(f"{server.url}/info/", headers={"Host": host})
        assert got == 421 and "DNS rebinding" in _detail(body), host
    got, body, headers = _http(f"{server.url}/info/", headers={"Origin": "http://evil.example"})
    assert got == 403 and "--cors_origins" in _detail(body) and "access-control-allow-origin" not in headers
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"}
    assert _http(f"{server.url}/datastore/image", "OPTIONS", headers=preflight)[0] == 403
    got, _, headers = _http(f"{server.url}/info/", headers={"Origin": own})
    assert got == 200 and headers.get("access-control-allow-origin") == own
    assert f"fewlabel: answering Host ['127.0.0.1:{server.port}'" in server.log_file.read_text()
    got, body, _ = _http(f"{server.url}/datastore/image?image=big", "PUT", headers={"Content-Length": str(2**40)})
    assert got == 413 and "--max_upload_mb" in _detail(body)


@pytest.mark.slow
def test_model_endpoints_cannot_replace_or_take_away_the_served_weights(served):
    server, bundle = served["server"], served["served"]["medsass_binary_segmentation"]
    weights = bundle.folder / "models"
    before = _tree(weights)
    got, body, _ = _http(f"{server.url}/model/{bundle.name}", "PUT",
                         *_multipart({}, {"file": ("model.pt", b"not a checkpoint, 21B")}))
    assert got == 403 and "served weights" in _detail(body)
    got, body, _ = _http(f"{server.url}/model/{bundle.name}", "DELETE")
    assert got == 403 and "served weights" in _detail(body)
    assert _tree(weights) == before
    got, _, _ = _http(f"{server.url}/infer/{bundle.name}?image=frame3&output=json", "POST",
                      *_multipart({"params": "{}"}, {}))
    assert got == 200


@pytest.mark.slow
def test_cli_serves_then_stops_on_ctrl_c(served, tmp_path):
    """``fewlabel label-server`` as a user runs it: prints the URL and labels, serves, Ctrl-C stops all."""
    name = "medsass_binary_segmentation"
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({name: _smoke(name)}))
    app, port = tmp_path / "app", _free_port()
    cmd = [sys.executable, "-m", "fewlabel.cli", "label-server", "--studies", os.fspath(served["server"].studies),
           "--port", str(port), "--bundles", name, "--bundles_dir", os.fspath(served["bundles"]),
           "--app_dir", os.fspath(app), "--overrides", os.fspath(overrides), "--cors_origins", "http://localhost:3000",
           "--allow_model_upload"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not any("Stop the server" in line for line in lines):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
        out = "".join(lines)
        assert f"http://127.0.0.1:{port}" in out and f"{name}: labels foreground" in out, out
        info = json.loads(_request(f"http://127.0.0.1:{port}/info/"))
        assert list(info["models"]) == [name]
        rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:")))
        assert rss_kb < 300_000, f"the launcher holds {rss_kb // 1024} MB while it only waits on the server"
        got, _, headers = _http(f"http://127.0.0.1:{port}/info/", headers={"Origin": "http://localhost:3000"})
        assert got == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"  # the page named
        assert _http(f"http://127.0.0.1:{port}/info/", headers={"Origin": "http://localhost:3001"})[0] == 403
        # --allow_model_upload: an upload replaces the served weights only if it is this network's weights
        weights = app / "model" / name / "models" / "model.pt"
        before = weights.read_bytes()
        got, body, _ = _http(f"http://127.0.0.1:{port}/model/{name}", "PUT",
                             *_multipart({}, {"file": ("model.pt", b"not a checkpoint, 21B")}))
        assert got == 422 and "served weights are unchanged" in _detail(body) and weights.read_bytes() == before
        new = (_copy_bundle(name, tmp_path / "retrained", seed=5) / "models" / "model.pt").read_bytes()
        got, body, _ = _http(f"http://127.0.0.1:{port}/model/{name}", "PUT", *_multipart({}, {"file": ("m.pt", new)}))
        assert got == 200 and weights.read_bytes() == new, body
        assert sorted(p.name for p in weights.parent.iterdir() if p.name.startswith(".upload")) == []
        got, body, _ = _http(f"http://127.0.0.1:{port}/infer/{name}?image=frame0&output=json", "POST",
                             *_multipart({"params": "{}"}, {}))
        assert got == 200, body
        assert _processes_mentioning(os.fspath(app))
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + rest
    assert "stopping the server" in rest
    assert not _processes_mentioning(os.fspath(app))


@pytest.mark.slow
def test_monai_label_reads_the_team_server_settings(served):
    """The names the launcher sets are MONAI Label 0.8.5's own settings (read in its environment)."""
    server = served["server"]
    team = LabelServer(server.app_dir, server.studies, server.bundles, server.env_dir, port=server.port,
                       host="0.0.0.0", auth_enable=True, auth_realm_uri="https://kc.example.org/realms/labels",
                       auth_client_id="fewlabel-team")
    code = ("from monailabel.config import settings as s; "
            "print(s.MONAI_LABEL_AUTH_ENABLE, s.MONAI_LABEL_AUTH_REALM_URI, s.MONAI_LABEL_AUTH_CLIENT_ID)")
    out = subprocess.run([os.fspath(server.env_dir / "bin" / "python"), "-c", code], env=team.environment(),
                         cwd=served["tmp"], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "https://kc.example.org/realms/labels", "fewlabel-team"], out.stderr


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_stop_leaves_no_process_behind(served):
    server = served["server"]
    pgid = server.process.pid
    server.stop()
    assert not _group_alive(pgid)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
