"""Annotation latency: one MONAI Label ``/infer`` request per bundle, split into read, network, post-processing, write.

A local MONAI Label server (``fewlabel.label_server``: its own environment, built once) serves every
bundle with seeded random weights of its full-size network (``--smoke``: the smoke-sized one; the
weights do not change the time). Each bundle gets one study image of its kind: a full-size frame
(``--frame``, default 854x480, SurgicalSemiSeg's) or a CT volume (``--ct``). ``--requests`` requests
per bundle follow one warm-up request (the first loads the network and, with MONAI Label's own
writer, ITK's IO modules); the median of each part is reported, from MONAI Label's own latencies
(``pre`` = read and pre-processing, ``infer`` = network, ``invert`` + ``post`` = post-processing,
``write`` = writing the label file) and the client's wall time of the request (``other`` = the rest:
HTTP, the response). Goal (issue 23): ``write_share = write / request <= 0.10``, first request included.

Baseline for the writer: MONAI Label 0.8.5's own (ITK) writer against fewlabel's
:class:`~fewlabel.label_server.label_writer.PillowLabelWriter` on the same ``(W, H)`` label map of
the frame size, each in a fresh process of the MONAI Label environment (first call: with the
library's load; then the median of 5 calls); the files are checked to hold the same pixels.

Saves ``benchmarks/results/label_server.json``.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from _timing import save_result

REPO = Path(__file__).resolve().parents[1]

# runs in the MONAI Label environment: one writer, first call and the median of the next ones
_WRITER_SCRIPT = textwrap.dedent("""
    import json, statistics, sys, time, types
    import numpy as np
    t0 = time.perf_counter()
    from monailabel.transform.writer import Writer
    from fewlabel.label_server.label_writer import PillowLabelWriter
    import_s = time.perf_counter() - t0
    kind, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    yy, xx = np.mgrid[:w, :h]  # (W, H), as MonaiLabelOutput hands it over: a few blobs of 3 classes
    label = (((xx - h * 0.4) ** 2 + (yy - w * 0.6) ** 2) < (h * 0.3) ** 2).astype(np.uint8)
    label[(xx // 40 + yy // 60) % 7 == 0] = 2
    stock = Writer(label="pred", json="result")
    task = types.SimpleNamespace(type="segmentation", output_label_key="pred", output_json_key="result",
                                 labels=None, writer=lambda d, e=None, t=None: stock(d))
    writer = stock if kind == "stock" else PillowLabelWriter(task)
    times, files = [], []
    for _ in range(6):
        t0 = time.perf_counter()
        f, _ = writer({"pred": label, "image_path": "/studies/frame.png"})
        times.append(time.perf_counter() - t0)
        files.append(f)
    print("RESULT " + json.dumps({"import_s": import_s, "first_s": times[0],
                                  "steady_s": statistics.median(times[1:]), "file": files[0]}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_subprocess(env: Path, script: str, args: list[str], tmp: Path) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    environ.update(PYTHONPATH=os.fspath(REPO / "common"), TMPDIR=os.fspath(tmp))
    proc = subprocess.run([os.fspath(env / "bin" / "python"), "-c", script, *args], capture_output=True,
                          text=True, env=environ, cwd=tmp, timeout=900)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"writer benchmark failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def writers(env: Path, w: int, h: int, tmp: Path) -> dict[str, Any]:
    """Stock (ITK) vs Pillow writer on a ``(W, H)`` label map, each in a fresh process; same pixels checked."""
    import numpy as np
    from PIL import Image

    out: dict[str, Any] = {"baseline": "MONAI Label 0.8.5's own writer (ITK), in a fresh process", "size_wh": [w, h]}
    for kind in ("stock", "pillow"):
        out[kind] = _env_subprocess(env, _WRITER_SCRIPT, [kind, str(w), str(h)], tmp)
    with Image.open(out["stock"]["file"]) as a, Image.open(out["pillow"]["file"]) as b:
        out["same_pixels"] = bool(a.mode == b.mode and a.size == b.size
                                  and np.array_equal(np.asarray(a), np.asarray(b)))
    for kind in ("stock", "pillow"):
        out[kind].pop("file")
    out["first_call_ratio"] = out["stock"]["first_s"] / out["pillow"]["first_s"]
    out["steady_ratio"] = out["stock"]["steady_s"] / out["pillow"]["steady_s"]
    return out


def _place_bundle(name: str, dest: Path, smoke: bool) -> dict[str, Any]:
    """Copy the bundle's configs to ``dest`` with seeded random weights; return its overrides (smoke or none)."""
    import torch
    from monai.bundle import ConfigParser

    shutil.copytree(REPO / "bundles" / name / "configs", dest / "configs")
    (dest / "models").mkdir(parents=True)
    overrides = json.loads((dest / "configs" / "smoke.json").read_text()) if smoke else {}
    parser = ConfigParser()
    parser.read_config(os.fspath(dest / "configs" / "inference.json"))
    for k, v in overrides.items():
        parser[k] = v
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def", instantiate=True)
    torch.save({"model": net.state_dict()}, dest / "models" / "model.pt")
    return overrides


def _study(kind: str, folder: Path, frame_wh: tuple[int, int], ct_shape: tuple[int, int, int]) -> Path:
    import nibabel as nib
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "volume":
        path = folder / "ct.nii.gz"
        if not path.exists():
            hu = rng.normal(-80, 30, ct_shape).astype(np.int16)
            nib.save(nib.Nifti1Image(hu, np.diag([-0.8, -0.8, 2.5, 1.0])), path)
        return path
    path = folder / "frame.png"
    if not path.exists():
        w, h = frame_wh
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _infer(url: str) -> tuple[float, dict[str, Any]]:
    """POST ``url`` (multipart response); return the wall time and the response's params."""
    boundary = uuid.uuid4().hex
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{}}\r\n--{boundary}--\r\n'.encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=900) as r:  # noqa: S310 (loopback)
        content, ctype = r.read(), r.headers.get("Content-Type", "")
    wall = time.perf_counter() - t0
    if ctype.startswith("application/json"):
        return wall, json.loads(content)
    msg = email.parser.BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + content)
    for part in msg.walk():
        if part.get_param("name", header="content-disposition") == "params":
            return wall, json.loads(part.get_payload(decode=True))
    raise RuntimeError(f"no params in the response of {url}")


def _split(wall: float, params: dict[str, Any]) -> dict[str, float]:
    lat = params.get("latencies", {})
    parts = {"read": float(lat.get("pre", 0.0)), "network": float(lat.get("infer", 0.0)),
             "post": float(lat.get("invert", 0.0)) + float(lat.get("post", 0.0)), "write": float(lat.get("write", 0.0))}
    parts["other"] = max(0.0, wall - sum(parts.values()))
    parts["request"] = wall
    return parts


def requests(env: Path, names: list[str], smoke: bool, n: int, frame_wh: tuple[int, int],
             ct_shape: tuple[int, int, int], tmp: Path) -> dict[str, Any]:
    from fewlabel.bundle import input_kind
    from fewlabel.label_server.app import prepare_app
    from fewlabel.label_server.server import LabelServer

    bundles, studies = tmp / "bundles", tmp / "studies"
    overrides = {name: _place_bundle(name, bundles / name, smoke) for name in names}
    images = {name: _study(input_kind(bundles / name), studies, frame_wh, ct_shape) for name in names}
    served = prepare_app(tmp / "app", env, names, bundles_dir=bundles, overrides=overrides, log=lambda s: None)
    server = LabelServer(tmp / "app", studies, [b.name for b in served], env, port=_free_port())
    out: dict[str, Any] = {}
    server.start()
    try:
        server.wait_ready(timeout=900)
        for name in names:
            image_id = images[name].name.split(".")[0]
            url = f"{server.url}/infer/{name}?image={image_id}&output=all"
            first = _split(*_infer(url))
            runs = [_split(*_infer(url)) for _ in range(n)]
            steady = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            out[name] = {"baseline": "the whole /infer request (client's wall time)", "image": images[name].name,
                         "first": first, "steady": steady,
                         "write_share_first": first["write"] / first["request"],
                         "write_share": steady["write"] / steady["request"]}
            print(f"{name}: first request {first['request']:.2f} s (write {first['write']:.2f} s), then "
                  + ", ".join(f"{k} {v:.2f}" for k, v in steady.items())
                  + f" s -> write {100 * out[name]['write_share']:.1f} %", flush=True)
    finally:
        server.stop()
    return out


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", default="", help="comma-separated bundle names (default: all MONAI Label serves)")
    p.add_argument("--smoke", action="store_true", help="the bundles' smoke-sized networks")
    p.add_argument("--requests", type=int, default=3, help="timed requests per bundle after a warm-up (default 3)")
    p.add_argument("--frame", default="854x480", help="frame size WxH (default 854x480)")
    p.add_argument("--ct", default="256x256x24", help="CT volume shape XxYxZ (default 256x256x24)")
    p.add_argument("--writers_only", action="store_true", help="only the stock vs Pillow writer comparison")
    args = p.parse_args()
    from fewlabel.label_server import ensure_env
    from fewlabel.label_server.app import available_bundles

    frame_wh = tuple(int(s) for s in args.frame.lower().split("x"))
    ct_shape = tuple(int(s) for s in args.ct.lower().split("x"))
    names = [b for b in args.bundles.split(",") if b] or available_bundles()
    env = ensure_env(log=print)
    out: dict[str, Any] = {
        "measured": "writers: fewlabel's PillowLabelWriter; bundles: the parts of /infer requests to the fewlabel app",
        "goal_write_share": 0.10, "network": "smoke" if args.smoke else "full", "frame_wh": list(frame_wh),
        "ct_shape": list(ct_shape)}
    with tempfile.TemporaryDirectory(prefix="fewlabel-label-bench-") as tmp:
        out["writers"] = w = writers(env, *frame_wh, Path(tmp))
        print(f"writer {frame_wh[0]}x{frame_wh[1]}: ITK first {w['stock']['first_s']:.3f} s (import "
              f"{w['stock']['import_s']:.1f} s before it), then {w['stock']['steady_s'] * 1e3:.1f} ms; Pillow first "
              f"{w['pillow']['first_s']:.3f} s, then {w['pillow']['steady_s'] * 1e3:.1f} ms; same pixels: "
              f"{w['same_pixels']}", flush=True)
        if not args.writers_only:
            out["bundles"] = requests(env, names, args.smoke, args.requests, frame_wh, ct_shape, Path(tmp))
    save_result("label_server", out)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
