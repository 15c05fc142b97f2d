"""The annotation loop on a MONAI Label server: which image next, demo weights, a real client, load.

One server (MedSASS, a 2D bundle served from a fake ``make demo`` output, and PolyCL, served as a
3D model) on a hand-made studies folder: in-distribution frames and volumes plus one flat,
out-of-distribution frame and volume on which the seeded networks see nothing (their logits are
the head's bias: every pixel a coin toss). The tests drive it over HTTP and with MONAI Label's own
Python client from the server's environment.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from labelserverlib import (
    _copy_bundle,
    _ct_volume,
    _expected,
    _free_port,
    _frame,
    _multipart,
    _own_entropy,
    _read_label,
    _request,
    _smoke,
    _stock_env,
    _wait_task,
)
from testlib import write_png

from fewlabel.errors import FewLabelError
from fewlabel.label_server.app import prepare_app
from fewlabel.label_server.server import LabelServer

FRAMES = "medsass_binary_segmentation"
VOLUMES = "polycl_liver_ct_segmentation"


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from fewlabel.label_server import ensure_env

    tmp = tmp_path_factory.mktemp("annotation_loop")
    env = ensure_env(log=print)
    bundles = tmp / "bundles"
    _copy_bundle(VOLUMES, bundles / VOLUMES, seed=1)
    # MedSASS without models/model.pt: its weights are those of a (fake) `make demo` run
    demo_dir = tmp / "outputs" / "demo"
    _copy_bundle(FRAMES, tmp / "demo_train", seed=0)
    demo_weights = demo_dir / FRAMES / "models" / "pretrained.pt"
    demo_weights.parent.mkdir(parents=True)
    os.replace(tmp / "demo_train" / "models" / "model.pt", demo_weights)
    (bundles / FRAMES / "configs").parent.mkdir(parents=True)
    (tmp / "demo_train" / "configs").rename(bundles / FRAMES / "configs")
    (bundles / FRAMES / "models").mkdir()
    (demo_dir / FRAMES / "summary.json").write_text(json.dumps(
        {"label_server": {"weights": "models/pretrained.pt", "overrides": _smoke(FRAMES)}}))
    studies = tmp / "studies"
    images = {f"frame{i}": write_png(studies / f"frame{i}.png", _frame(i)) for i in range(4)}
    images["flat"] = write_png(studies / "flat.png", np.zeros((*_frame(0).shape[:2], 3), np.uint8))
    images["ct"] = _ct_volume(studies / "ct.nii.gz")
    ct = nib.load(images["ct"])
    images["ct_flat"] = studies / "ct_flat.nii.gz"  # air only: nothing for the network to see
    nib.save(nib.Nifti1Image(np.full(ct.shape, -1000, np.int16), ct.affine), images["ct_flat"])
    app_dir = tmp / "app"
    log: list[str] = []
    served = prepare_app(app_dir, env, [FRAMES, VOLUMES], bundles_dir=bundles, overrides={VOLUMES: _smoke(VOLUMES)},
                         demo_dir=demo_dir, log=log.append)
    server = LabelServer(app_dir, studies, [b.name for b in served], env, port=_free_port())
    server.start()
    try:
        info = server.wait_ready(timeout=600)
        yield {"server": server, "info": info, "bundles": bundles, "images": images, "tmp": tmp, "log": log,
               "demo_weights": demo_weights, "served": {b.name: b for b in served}}
    finally:
        server.stop()


def test_demo_weights_serve_a_bundle_without_its_own_until_real_ones_come(tmp_path):
    """``make demo``'s record (summary.json) serves a bundle that has no models/model.pt, with the
    demo's settings; real weights replace them at the next start."""
    _stock_env(tmp_path)
    bundles, demo_dir = tmp_path / "bundles", tmp_path / "demo"
    _copy_bundle(FRAMES, bundles / FRAMES, seed=0)
    demo = demo_dir / FRAMES / "models" / "pretrained.pt"
    demo.parent.mkdir(parents=True)
    os.replace(bundles / FRAMES / "models" / "model.pt", demo)
    with pytest.raises(FewLabelError, match="make demo"):
        prepare_app(tmp_path / "app", tmp_path / "env", bundles_dir=bundles, demo_dir=demo_dir)
    (demo_dir / FRAMES / "summary.json").write_text(json.dumps(
        {"label_server": {"weights": "models/pretrained.pt", "overrides": _smoke(FRAMES)}}))
    log: list[str] = []
    served = prepare_app(tmp_path / "app", tmp_path / "env", bundles_dir=bundles, demo_dir=demo_dir, log=log.append)[0]
    assert served.demo and served.weights == demo.resolve()
    copy = served.folder / "models" / "model.pt"
    assert copy.read_bytes() == demo.read_bytes()
    config = json.loads((served.folder / "configs" / "inference.json").read_text())
    assert config["encoder_name"] == _smoke(FRAMES)["encoder_name"]  # the demo's settings
    meta = json.loads((served.folder / "configs" / "metadata.json").read_text())
    assert meta["description"].startswith(f"DEMO WEIGHTS ({demo.resolve()})")
    assert any("DEMO WEIGHTS" in line for line in log)
    _copy_bundle(FRAMES, tmp_path / "real", seed=3)
    real = bundles / FRAMES / "models" / "model.pt"
    os.replace(tmp_path / "real" / "models" / "model.pt", real)
    os.utime(real, (1e9, 1e9))  # older than the app copy, still the user's own weights: they win
    served = prepare_app(tmp_path / "app", tmp_path / "env", bundles_dir=bundles, demo_dir=demo_dir,
                         overrides={FRAMES: _smoke(FRAMES)}, log=log.append)[0]
    assert not served.demo and copy.read_bytes() == real.read_bytes()
    meta = json.loads((served.folder / "configs" / "metadata.json").read_text())
    assert not meta["description"].startswith("DEMO")
    assert list(copy.parent.glob("model.before-*.pt.bak")), "the demo copy is kept aside"


def test_polycl_is_a_3d_model_for_monai_label_only(tmp_path):
    """The app's copy of PolyCL's metadata has a slice axis (MONAI Label: dimension 3); the bundle's own
    metadata, which exports and deploy read, keeps the slice-wise network's 2D input."""
    from testlib import REPO

    _stock_env(tmp_path)
    _copy_bundle(VOLUMES, tmp_path / "bundles" / VOLUMES, seed=1)
    served = prepare_app(tmp_path / "app", tmp_path / "env", bundles_dir=tmp_path / "bundles",
                         overrides={VOLUMES: _smoke(VOLUMES)}, log=lambda s: None)[0]
    app_meta = json.loads((served.folder / "configs" / "metadata.json").read_text())
    own = json.loads((REPO / "bundles" / VOLUMES / "configs" / "metadata.json").read_text())
    shape = own["network_data_format"]["inputs"]["image"]["spatial_shape"]
    assert len(shape) == 2
    assert app_meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [*shape, "*"]


def _weights(loop, bundle: str) -> Path | None:
    return loop["demo_weights"] if bundle == FRAMES else None


def _sample(url: str, strategy: str, params: dict | None = None) -> dict:
    return json.loads(_request(f"{url}/activelearning/{strategy}", "POST", json.dumps(params or {}).encode(),
                               {"Content-Type": "application/json"}))


def _scores(url: str, bundle: str) -> dict[str, dict]:
    objects = json.loads(_request(f"{url}/datastore/?output=all"))["objects"]
    return {i: o["image"]["info"]["fewlabel_uncertainty"][bundle] for i, o in objects.items()
            if bundle in o["image"]["info"].get("fewlabel_uncertainty", {})}


@pytest.mark.slow
def test_info_lists_polycl_as_3d_and_names_the_demo_weights(loop):
    models = loop["info"]["models"]
    assert models[VOLUMES]["dimension"] == 3 and models[FRAMES]["dimension"] == 2
    description = models[FRAMES]["description"]
    assert description.startswith("DEMO WEIGHTS") and str(loop["demo_weights"]) in description
    assert not models[VOLUMES]["description"].startswith("DEMO")
    assert f"serves DEMO WEIGHTS {loop['demo_weights']}" in loop["server"].log_file.read_text()
    assert any("DEMO WEIGHTS" in line and str(loop["demo_weights"]) in line for line in loop["log"])
    app_copy = loop["served"][FRAMES].folder / "models" / "model.pt"
    assert app_copy.read_bytes() == loop["demo_weights"].read_bytes()
    strategies = set(loop["info"]["strategies"])
    assert {"random", "first", f"uncertainty_{FRAMES}", f"uncertainty_{VOLUMES}"} <= strategies
    assert {f"uncertainty_{FRAMES}", f"uncertainty_{VOLUMES}"} <= set(loop["info"]["scoring"])


@pytest.mark.slow
def test_uncertainty_gives_the_hardest_image_first_and_scores_survive_a_restart(loop):
    server, url = loop["server"], loop["server"].url
    for bundle, hardest, kind in ((FRAMES, "flat", ".png"), (VOLUMES, "ct_flat", ".nii.gz")):
        first = _sample(url, f"uncertainty_{bundle}")
        assert first["id"] == hardest, first
        scores = _scores(url, bundle)
        assert set(scores) == {i for i, p in loop["images"].items() if p.name.endswith(kind)}
        for image_id, record in scores.items():  # the score is the entropy of the bundle's own prediction
            own = _own_entropy(loop["bundles"] / bundle, loop["images"][image_id], _weights(loop, bundle),
                               **_smoke(bundle))
            assert record["score"] == pytest.approx(own, abs=1e-4), image_id
        others = max(r["score"] for i, r in scores.items() if i != hardest)
        assert scores[hardest]["score"] > others + 0.2, scores
    assert _sample(url, "first")["id"] == "ct"  # MONAI Label's own strategies are still there
    assert _sample(url, "random")["id"] in loop["images"]
    before = {b: _scores(url, b) for b in (FRAMES, VOLUMES)}
    server.stop()
    server.start()
    server.wait_ready(timeout=600)
    assert {b: _scores(url, b) for b in (FRAMES, VOLUMES)} == before  # kept in the datastore
    again = _sample(url, f"uncertainty_{FRAMES}")  # 'flat' was just given out: the next hardest comes
    ranked = sorted((r["score"], i) for i, r in before[FRAMES].items() if i != "flat")
    assert again["id"] == ranked[-1][1]
    assert _scores(url, FRAMES) == before[FRAMES], "scores of unchanged weights were computed again"
    # MONAI Label's scoring endpoint runs the scoring in a task process, as rescore() runs in a /train
    # task: what it writes reaches the server's datastore, and the labels saved there are kept
    _request(f"{url}/scoring/uncertainty_{VOLUMES}", "POST", json.dumps({"force": True}).encode(),
             {"Content-Type": "application/json"})
    status = _wait_task(url, "scoring", timeout=300)
    assert status.get("status") == "DONE", f"{status}\n{server.log_tail(40)}"
    deadline, rescored = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        rescored = _scores(url, VOLUMES)
        if all(rescored[i]["ts"] > before[VOLUMES][i]["ts"] for i in before[VOLUMES]):
            break
        time.sleep(0.5)
    assert {i: r["score"] for i, r in rescored.items()} == pytest.approx(
        {i: r["score"] for i, r in before[VOLUMES].items()}, abs=1e-6)
    assert all(rescored[i]["ts"] > before[VOLUMES][i]["ts"] for i in before[VOLUMES]), rescored
    assert _scores(url, FRAMES) == before[FRAMES]


_CLIENT_LOOP = """
import json, sys
from monailabel.client import MONAILabelClient
url, frame, volume, frames_bundle, volumes_bundle = sys.argv[1:6]
client = MONAILabelClient(url)
out = {"models": {k: v["dimension"] for k, v in client.info()["models"].items()}}
for bundle, path, image_id in ((frames_bundle, frame, "uploaded_frame"), (volumes_bundle, volume, "uploaded_ct")):
    client.upload_image(path, image_id=image_id)
    label, params = client.infer(bundle, image_id, {})
    client.save_label(image_id, label, tag="final")
    nxt = client.next_sample(f"uncertainty_{bundle}", {})
    out[bundle] = {"label": label, "label_names": params.get("label_names"), "next": nxt.get("id")}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_monai_label_client_uploads_infers_saves_and_asks_for_the_next_image(loop, tmp_path):
    server = loop["server"]
    frame = write_png(tmp_path / "new_frame.png", _frame(11))
    volume = _ct_volume(tmp_path / "new_ct.nii.gz")
    proc = subprocess.run([os.fspath(server.env_dir / "bin" / "python"), "-c", _CLIENT_LOOP, server.url,
                           os.fspath(frame), os.fspath(volume), FRAMES, VOLUMES],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["models"] == {FRAMES: 2, VOLUMES: 3}
    for bundle, image, image_id in ((FRAMES, frame, "uploaded_frame"), (VOLUMES, volume, "uploaded_ct")):
        got = out[bundle]
        label = Path(got["label"]).read_bytes()
        label, _ = _read_label(label, ".png" if bundle == FRAMES else ".nii.gz", tmp_path)
        np.testing.assert_array_equal(label, _expected(loop["bundles"] / bundle, image, _weights(loop, bundle),
                                                       **_smoke(bundle)))
        saved = server.studies / "labels" / "final" / (image_id + (".png" if bundle == FRAMES else ".nii.gz"))
        assert saved.is_file(), f"{bundle}: the label was not saved"
        assert got["next"] and got["next"] != image_id  # labelled now: not offered again


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.slow
def test_four_clients_at_once_are_all_answered_as_alone(loop):
    """4 clients x 10 /infer requests at the same time on loopback: every answer equals the same
    request sent alone; the server's memory stays bounded (its peak RSS is printed)."""
    url, pid = loop["server"].url, loop["server"].process.pid
    requests = [(FRAMES, f"frame{i % 4}") if i % 5 else (VOLUMES, "ct") for i in range(10)]

    def infer(bundle: str, image: str) -> bytes:
        return _request(f"{url}/infer/{bundle}?image={image}&output=image", "POST", *_multipart({"params": "{}"}, {}))

    def label(bundle: str, content: bytes) -> np.ndarray:
        return _read_label(content, ".png" if bundle == FRAMES else ".nii.gz", loop["tmp"])[0]

    alone = {r: label(r[0], infer(*r)) for r in set(requests)}
    rss_before = _rss_mb(pid)
    peak = [rss_before]

    def client(k: int) -> list[tuple[tuple[str, str], np.ndarray]]:
        out = []
        for r in requests[k:] + requests[:k]:  # each client in its own order
            out.append((r, label(r[0], infer(*r))))
            peak.append(_rss_mb(pid))
        return out

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = [a for f in [pool.submit(client, k) for k in range(4)] for a in f.result()]
    assert len(results) == 40
    for r, got in results:
        np.testing.assert_array_equal(got, alone[r], err_msg=str(r))
    hwm = _rss_mb(pid, "VmHWM")
    print(f"\nserver RSS: {rss_before:.0f} MB before, {max(peak):.0f} MB peak sampled, {hwm:.0f} MB high-water mark")
    assert max(peak) - rss_before < 1024, f"the server grew from {rss_before:.0f} to {max(peak):.0f} MB under load"
