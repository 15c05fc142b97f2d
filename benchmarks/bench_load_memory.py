"""Peak memory of loading + preprocessing a large 2D image vs a normal one, in the same run.

Baseline: a normal photograph-sized RGB image (default 1 megapixel). Measured: a large one
(default 40 megapixels, under the loader's 50-megapixel ``max_pixels`` default). Each case runs
in its own Python process what MedSASS inference does to an input: ``LoadImage2Dd`` then
``Resized`` to 224 x 224 (bilinear); the peak resident memory is reset after the imports and a
warm-up (``/proc/self/clear_refs``, Linux) and the resident size then is subtracted from the peak
(``VmHWM``) after the transforms, so the figure is what the image itself costs.
Reports both figures, bytes per pixel and the ratio large / normal next to the pixel ratio; saves
JSON to ``benchmarks/results/load_memory.json``.

Usage: ``python benchmarks/bench_load_memory.py [--large_mp 40] [--normal_mp 1]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from _timing import save_result

REPO = Path(__file__).resolve().parents[1]

# run in a fresh process per case: peak resident memory is per process and never goes down
_CHILD = r"""
import json, sys
from monai.transforms import Compose, Resized
from fewlabel.transforms import LoadImage2Dd


def status_kib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


pipeline = Compose([LoadImage2Dd("image", channels=3), Resized("image", spatial_size=(224, 224), mode="bilinear")])
pipeline({"image": sys.argv[2]})  # warm-up on a tiny image: lazy imports and allocator pools
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current size: ru_maxrss would keep the parent's peak across exec
before = status_kib("VmRSS")
out = pipeline({"image": sys.argv[1]})["image"]
after = status_kib("VmHWM")
assert tuple(out.shape) == (3, 224, 224), out.shape
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


def _write_rgb(path: Path, megapixels: float) -> tuple[int, int]:
    """A smooth RGB picture (compresses like a photograph, not like noise) of about ``megapixels``, as PNG."""
    w = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    h = int(megapixels * 1e6 / w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / w, y / h, (x + y) / (w + h)], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path, compress_level=1)
    return w, h


def _peak_kib(image: Path, tiny: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'common'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(image), str(tiny)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(large_mp: float = 40.0, normal_mp: float = 1.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = tmp / "tiny.png"
        _write_rgb(tiny, 0.01)
        cases = {}
        for name, mp in (("normal", normal_mp), ("large", large_mp)):
            path = tmp / f"{name}.png"
            w, h = _write_rgb(path, mp)
            peak = _peak_kib(path, tiny)
            extra = max(peak["after_kib"] - peak["before_kib"], 0) * 1024
            cases[name] = {"width": w, "height": h, "pixels": w * h,
                           "peak_after_imports_mib": peak["before_kib"] / 1024, "extra_peak_mib": extra / 2**20,
                           "extra_bytes_per_pixel": extra / (w * h)}
    normal, large = cases["normal"], cases["large"]
    result = {
        "pipeline": "LoadImage2Dd(channels=3) + Resized(224x224, bilinear), PNG input, one process per case",
        "baseline": f"normal image, {normal['width']}x{normal['height']}",
        "cases": cases,
        "pixel_ratio": large["pixels"] / normal["pixels"],
        "memory_ratio": large["extra_peak_mib"] / max(normal["extra_peak_mib"], 1e-9),
        "machine": platform.processor() or platform.machine(),
    }
    for name, c in cases.items():
        print(f"{name}: {c['width']}x{c['height']} -> +{c['extra_peak_mib']:.0f} MiB peak "
              f"({c['extra_bytes_per_pixel']:.1f} bytes/pixel)")
    print(f"large / normal: {result['memory_ratio']:.1f}x memory for {result['pixel_ratio']:.1f}x pixels")
    save_result("load_memory", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large_mp", type=float, default=40.0, help="megapixels of the large image")
    parser.add_argument("--normal_mp", type=float, default=1.0, help="megapixels of the normal image (baseline)")
    args = parser.parse_args()
    main(args.large_mp, args.normal_mp)
