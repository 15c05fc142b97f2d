"""Batched on-device Otsu thresholds vs scikit-image in a per-image loop, in the same run.

Baseline: ``skimage.filters.threshold_otsu`` called on each image of the batch in turn (what a
per-image CPU pipeline does). Measured: ``fewlabel.transforms.otsu_threshold`` on the whole
``16 x 1 x 224 x 224`` batch, on the CPU and, when present, on CUDA (synchronised). Reports the
median of repeated runs and the speed-up ratio; saves JSON to ``benchmarks/results/otsu.json``.
"""

from __future__ import annotations

import platform

import numpy as np
import torch
from skimage.filters import threshold_otsu

from _timing import median_seconds, save_result

from fewlabel.transforms import otsu_threshold

SHAPE = (16, 1, 224, 224)
REPEATS = 30


def main() -> dict:
    rng = np.random.default_rng(0)
    # bimodal images with noise, the kind Otsu is for
    fg = rng.random(SHAPE) < 0.3
    images = np.where(fg, rng.normal(0.7, 0.08, SHAPE), rng.normal(0.25, 0.08, SHAPE)).astype(np.float32)
    batch_cpu = torch.from_numpy(images)

    baseline = median_seconds(lambda: [threshold_otsu(images[i, 0]) for i in range(SHAPE[0])], REPEATS)
    ours_cpu = median_seconds(lambda: otsu_threshold(batch_cpu), REPEATS)
    ref = np.array([threshold_otsu(images[i, 0]) for i in range(SHAPE[0])])
    max_diff_bins = float(np.max(np.abs(otsu_threshold(batch_cpu).numpy() - ref)
                                 / ((images.max((1, 2, 3)) - images.min((1, 2, 3))) / 256)))
    result = {
        "batch_shape": list(SHAPE),
        "baseline": "skimage.filters.threshold_otsu, per-image loop (CPU)",
        "baseline_ms": baseline * 1e3,
        "fewlabel_cpu_ms": ours_cpu * 1e3,
        "speedup_cpu": baseline / ours_cpu,
        "max_difference_in_bins": max_diff_bins,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        batch_gpu = batch_cpu.cuda()
        ours_gpu = median_seconds(lambda: otsu_threshold(batch_gpu), REPEATS, torch.cuda.synchronize)
        result |= {"fewlabel_cuda_ms": ours_gpu * 1e3, "speedup_cuda": baseline / ours_gpu,
                   "gpu": torch.cuda.get_device_name()}
    print(f"skimage per-image loop: {result['baseline_ms']:.2f} ms")
    print(f"fewlabel batched (CPU): {result['fewlabel_cpu_ms']:.2f} ms  -> {result['speedup_cpu']:.1f}x")
    if "fewlabel_cuda_ms" in result:
        print(f"fewlabel batched (CUDA): {result['fewlabel_cuda_ms']:.3f} ms  -> {result['speedup_cuda']:.1f}x")
    print(f"largest threshold difference: {max_diff_bins:.3f} bins")
    save_result("otsu", result)
    return result


if __name__ == "__main__":
    main()
