"""The Pillow label writer of fewlabel's MONAI Label app writes the PNG MONAI Label's own (ITK) writer writes.

Both writers run in the MONAI Label environment (ITK lives there) on the same label maps, and the
files are compared as a user reads them: pixels, size and PNG mode (bit depth).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import numpy as np
import pytest
from PIL import Image

from testlib import REPO

# runs in the MONAI Label environment: writes each case with the stock Writer and with PillowLabelWriter
_SCRIPT = textwrap.dedent("""
    import json, sys, types
    import numpy as np, torch
    from monai.data import MetaTensor
    from monailabel.transform.writer import Writer
    from fewlabel.label_server.label_writer import PillowLabelWriter

    rng = np.random.default_rng(0)
    W, H = 85, 48  # (W, H) as MonaiLabelOutput hands it over: not square, so a transposed file cannot pass
    cases = {
        "uint8": (rng.integers(0, 4, (W, H)).astype(np.uint8), None),
        "uint16": (rng.integers(0, 60000, (W, H)).astype(np.uint16), None),
        "metatensor": (MetaTensor(torch.from_numpy(rng.integers(0, 3, (W, H)).astype(np.uint8))), None),
        "int64_as_uint8": (rng.integers(0, 5, (W, H)), "uint8"),
    }
    fallback_calls = []

    def stock(data, extension=None, dtype=None):
        fallback_calls.append(data.get("image_path"))
        return Writer(label="pred", json="result")(data)

    task = types.SimpleNamespace(type="segmentation", output_label_key="pred", output_json_key="result",
                                 labels={"tool": 1}, writer=stock)
    writer = PillowLabelWriter(task)
    out = {}
    for name, (pred, dtype) in cases.items():
        params = {"image_path": "/studies/frame.png", "result": {"k": name}}
        if dtype:
            params["result_dtype"] = dtype
        ref, _ = Writer(label="pred", json="result")({"pred": pred, **params})
        new, result = writer({"pred": pred, **params})
        out[name] = {"stock": ref, "pillow": new, "result": result}
    volume = rng.integers(0, 2, (1, 6, 5, 4)).astype(np.uint8)
    vol_file, _ = writer({"pred": volume, "image_path": "/studies/ct.nii.gz", "result": {}})
    out["fallback"] = {"calls": fallback_calls, "file": vol_file}
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from fewlabel.label_server import ensure_env

    env = ensure_env(log=print)
    tmp = tmp_path_factory.mktemp("writer")
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    environ.update(PYTHONPATH=os.fspath(REPO / "common"), TMPDIR=os.fspath(tmp))
    proc = subprocess.run([os.fspath(env / "bin" / "python"), "-c", _SCRIPT], capture_output=True, text=True,
                          env=environ, cwd=tmp, timeout=600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["uint8", "uint16", "metatensor", "int64_as_uint8"])
def test_pillow_writes_the_png_monai_labels_writer_writes(written, case):
    files = written[case]
    assert files["pillow"] != files["stock"] and files["pillow"].endswith(".png")
    with Image.open(files["stock"]) as ref, Image.open(files["pillow"]) as new:
        assert (new.mode, new.size) == (ref.mode, ref.size)
        np.testing.assert_array_equal(np.asarray(new), np.asarray(ref))
        assert new.size == (85, 48)  # (W, H) of the map, as the frame it labels
    assert files["result"] == {"k": case}


@pytest.mark.slow
def test_volumes_go_to_the_tasks_own_writer(written):
    fallback = written["fallback"]
    assert fallback["calls"] == ["/studies/ct.nii.gz"]  # the 2D maps never reached it
    assert fallback["file"].endswith(".nii.gz") and os.path.getsize(fallback["file"]) > 0
