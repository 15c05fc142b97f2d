"""Helpers of the MONAI Label server tests (tests/label_server/): seeded bundle copies, study images,
the bundle's own pipeline as the reference, and HTTP requests as a client sends them."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, Resize
from PIL import Image

from testlib import REPO

FRAME_HW = (72, 96)  # not square: a transposed label map cannot pass
CT_SHAPE = (40, 36, 12)  # stored (X, Y, Z), in LPS voxel order so the loader reorients it


def _smoke(bundle: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / "smoke.json").read_text())


def _copy_bundle(name: str, dest: Path, seed: int = 0, **network_overrides) -> Path:
    """A copy of bundle ``name`` (configs only) with seeded tiny weights in models/model.pt."""
    shutil.copytree(REPO / "bundles" / name / "configs", dest / "configs")
    (dest / "models").mkdir(parents=True)
    parser = ConfigParser()
    parser.read_config([os.fspath(dest / "configs" / "inference.json"), os.fspath(dest / "configs" / "smoke.json")])
    for k, v in network_overrides.items():
        parser[k] = v
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def", instantiate=True)
    state = net.state_dict()
    for k in state:  # a random head's bias outweighs its features: sharpen it so the map is not constant
        if k.startswith("segmentation_head") and k.endswith("weight"):
            state[k] = state[k] * 30
    torch.save({"model": state}, dest / "models" / "model.pt")
    return dest


def _frame(seed: int, hw: tuple[int, int] = FRAME_HW, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - h * 0.4) ** 2 / (h * 0.3) ** 2 + (xx - w * 0.6) ** 2 / (w * 0.25) ** 2) < 1
    img = rng.integers(20, 90, size=(h, w, 3)).astype(np.uint8)
    img[blob] = (200, 120, 110)
    img[:, : w // 6] //= 3  # a darker left border: the map is not symmetric
    return img[..., 0] if gray else img


def _ct_volume(path: Path) -> Path:
    rng = np.random.default_rng(3)
    x, y, z = np.mgrid[: CT_SHAPE[0], : CT_SHAPE[1], : CT_SHAPE[2]]
    hu = rng.normal(-80, 30, CT_SHAPE)
    hu[((x - 14) ** 2 / 100 + (y - 20) ** 2 / 64 + (z - 6) ** 2 / 16) < 1] = 60
    affine = np.diag([-1.5, -1.2, 3.0, 1.0])
    affine[:3, 3] = (30.0, 20.0, -10.0)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), path)
    return path


def _own_logits(bundle_dir: Path, image: Path, weights: Path | None = None, **overrides) -> tuple[dict, Compose]:
    """The bundle's own pipeline (its inference.json + smoke.json) on ``image`` up to the network's
    output: the data (``pred``: the logits) and the post-processing."""
    parser = ConfigParser()
    parser.read_config([os.fspath(bundle_dir / "configs" / "inference.json"),
                        os.fspath(bundle_dir / "configs" / "smoke.json")])
    parser["bundle_root"] = os.fspath(bundle_dir)
    parser["ckpt_dir"] = os.fspath(bundle_dir / "models")
    parser["device"] = "cpu"
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def", instantiate=True)
    net.load_state_dict(torch.load(weights or bundle_dir / "models" / "model.pt", weights_only=True)["model"])
    net.eval()
    pre = parser.get_parsed_content("preprocessing", instantiate=True)
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    d = pre({"image": os.fspath(image)})
    with torch.no_grad():
        d["pred"] = inferer(d["image"][None], net)[0]
    return d, parser.get_parsed_content("postprocessing", instantiate=True)


def _expected(bundle_dir: Path, image: Path, weights: Path | None = None, **overrides) -> np.ndarray:
    """The bundle's own pipeline on ``image`` (its inference.json + smoke.json, up to its saver): the
    label map MONAI Label should return, as a user sees the file: 2D (H, W); 3D in the file's voxel order."""
    d, post = _own_logits(bundle_dir, image, weights, **overrides)
    d = Compose(post.transforms[:-1])(d)  # all but the saver
    pred = d["pred"]
    if pred.ndim == 4:
        from fewlabel.transforms import restore_original_orientation

        return np.asarray(restore_original_orientation(pred).as_tensor()[0]).astype(np.uint8)
    hw = tuple(int(s) for s in np.asarray(Image.open(image)).shape[:2])
    if tuple(pred.shape[-2:]) != hw:  # SLiPPA keeps the network size; MONAI Label restores the frame's
        pred = Resize(hw, mode="nearest")(pred)
    return np.asarray(torch.as_tensor(pred)[0]).round().astype(np.uint8)


def _request(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
             timeout: float = 300) -> bytes:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback)
            return r.read()
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {url} -> {e.code}: {e.read().decode(errors='replace')[:3000]}") from e


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _http(url: str, method: str = "GET", data: bytes | None = None,
          headers: dict | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a request, whatever the status."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:  # noqa: S310 (loopback)
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_label(content: bytes, suffix: str, tmp: Path) -> tuple[np.ndarray, np.ndarray | None]:
    path = tmp / f"label_{uuid.uuid4().hex}{suffix}"
    path.write_bytes(content)
    if suffix == ".png":
        return np.asarray(Image.open(path)), None
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def _own_entropy(bundle_dir: Path, image: Path, weights: Path | None = None, **overrides) -> float:
    """The uncertainty score of ``image`` computed here: the mean entropy of the bundle's own logits
    (:func:`_own_logits`), read with its post-processing's activation."""
    from fewlabel.label_server.scores import activation_of, prediction_entropy

    d, post = _own_logits(bundle_dir, image, weights, **overrides)
    return prediction_entropy(d["pred"], activation_of(post.transforms, int(d["pred"].shape[0])))


def _stock_env(tmp: Path) -> Path:
    """A stand-in for the MONAI Label environment: only the stock app's main.py (enough for prepare_app)."""
    app = tmp / "env" / "monailabel" / "sample-apps" / "monaibundle"
    app.mkdir(parents=True, exist_ok=True)
    (app / "main.py").write_text("# stock app\n")
    return tmp / "env"


def _serve_demo(bundle: str, demo_dir: Path, tmp: Path):
    """The app ``make label-server`` prepares after ``make demo`` wrote ``demo_dir``, for ``bundle`` without
    its own models/model.pt: the demo's weights, loaded strictly into the network its settings give."""
    from fewlabel.label_server.app import prepare_app

    bundles = tmp / "bundles"
    shutil.copytree(REPO / "bundles" / bundle / "configs", bundles / bundle / "configs")
    return prepare_app(tmp / "app", _stock_env(tmp), [bundle], bundles_dir=bundles, demo_dir=demo_dir,
                       log=lambda s: None)[0]


def _wait_task(url: str, method: str = "train", timeout: float = 600) -> dict:
    """Poll ``GET /<method>/`` (``train``, ``scoring``) until the latest task is neither SUBMITTED nor
    RUNNING; its status record."""
    import time

    deadline, status = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        status = json.loads(_request(f"{url}/{method}/"))
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    return status
