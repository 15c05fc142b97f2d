"""SLiPPA per-frame latency: landmark post-processing (fewlabel vs a straightforward baseline) and inference.

SLiPPA (section 4.4) reports 9-15 ms of inference plus 9-12 ms of post-processing per 416x320 frame on
an RTX 4070. This benchmark measures, in the same run:

- post-processing of realistic predicted label maps (320 x 416: a thick noisy silhouette arc broken
  into fragments, a ridge, a ligament, blobs on the curves, a stray ligament blob above both, specks
  in the dark corners of a circular field of view), per step and in total, for
  :class:`fewlabel.postprocess.LandmarkPostprocessor` and for the baseline of
  ``benchmarks/_landmark_baseline.py`` (the same steps written directly: Python BFS over pixels,
  full pairwise distance matrices, textbook Zhang-Suen in pure Python, recursive RDP), and their ratio;
- inference of the UNet / ResNet-34 (``build_network("unet", 3, 4)``, eval, ``torch.inference_mode``) on
  a ``1 x 3 x 320 x 416`` frame on the CPU, and on CUDA when present (fp32, AMP autocast, and a
  ``torch.jit.trace`` module, as separate rows). Inference time includes the argmax and the copy of
  the label map to the CPU, what a pipeline pays before post-processing;
- end-to-end frames per second: inference + post-processing, with fewlabel and with the baseline.

Saves ``benchmarks/results/slippa_latency.json``. Stays under about two minutes on a 2-core CPU.
"""

from __future__ import annotations

import platform
import statistics
import time
import warnings

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

import _landmark_baseline as baseline
from _timing import median_seconds, save_result

from fewlabel.networks import build_network
from fewlabel.postprocess import LandmarkPostprocessor

H, W = 320, 416
NUM_FRAMES = 4
REPEATS_FEWLABEL = 20
REPEATS_BASELINE = 2  # the pure-Python baseline takes seconds per frame
REPEATS_CPU_INFERENCE = 5
REPEATS_GPU = 50
PAPER = {"inference_ms": [9, 15], "postprocess_ms": [9, 12], "gpu": "NVIDIA RTX 4070", "frame": "416x320"}


def _noisy_curve(rng: np.random.Generator, points: np.ndarray, n: int = 80) -> np.ndarray:
    """A smooth curve through ``points`` ((x, y) control points) with a slow random wobble, ``(n, 2)``."""
    t = np.linspace(0.0, 1.0, n)
    k = np.linspace(0.0, 1.0, len(points))
    xy = np.stack([np.interp(t, k, points[:, 0]), np.interp(t, k, points[:, 1])], axis=1)
    xy = cv2.GaussianBlur(xy.reshape(-1, 1, 2).astype(np.float32), (1, 15), 0).reshape(-1, 2)
    xy[0], xy[-1] = points[0], points[-1]
    wobble = np.cumsum(rng.normal(0, 0.6, (n, 2)), axis=0)
    return xy + wobble - np.linspace(0, 1, n)[:, None] * wobble[-1]


def _stroke(labels: np.ndarray, rng: np.random.Generator, curve: np.ndarray, value: int, width: tuple[int, int],
            gaps: int) -> None:
    """Draw ``curve`` as segments of varying width with ``gaps`` breaks of 4-11 px, plus blobs."""
    n = len(curve)
    cuts = sorted(rng.choice(np.arange(10, n - 10), size=gaps, replace=False)) if gaps else []
    keep = np.ones(n, bool)
    for c in cuts:
        seg = np.cumsum(np.r_[0, np.hypot(*np.diff(curve[c:], axis=0).T)])
        keep[c: c + int(np.searchsorted(seg, rng.uniform(4, 11))) + 1] = False
    for i in range(n - 1):
        if keep[i] and keep[i + 1]:
            p, q = np.round(curve[i]).astype(int), np.round(curve[i + 1]).astype(int)
            cv2.line(labels, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), value, int(rng.integers(*width)))
    for _ in range(2):  # blobs stuck on the curve
        x, y = curve[int(rng.integers(5, n - 5))] + rng.normal(0, 2, 2)
        cv2.circle(labels, (int(x), int(y)), int(rng.integers(4, 8)), value, -1)


def make_frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A realistic predicted label map ``(H, W)`` uint8 and its frame ``(H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    # the frame: reddish tissue in a circular view, dark corners, speckle
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy, r = W / 2 + rng.normal(0, 8), H / 2 + rng.normal(0, 6), 0.53 * W
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    shade = 0.55 + 0.35 * np.cos((xx - cx) / W * 2.0) * np.cos((yy - cy) / H * 1.5)
    image = np.zeros((H, W, 3), np.float32)
    image[..., 0] = 200 * shade
    image[..., 1] = 90 * shade
    image[..., 2] = 80 * shade
    image = np.clip(image * inside[..., None] + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    labels = np.zeros((H, W), np.uint8)
    # silhouette: a wide arc over the liver, 2 gaps
    t = np.linspace(0, 1, 7)
    sil = np.stack([40 + 330 * t + rng.normal(0, 4, 7), 250 - 160 * np.sin(np.pi * t) + rng.normal(0, 5, 7)], 1)
    _stroke(labels, rng, _noisy_curve(rng, sil, 90), 1, (5, 10), gaps=2)
    # ridge: a shallower curve inside the arc, 1 gap
    rid = np.array([[100, 215], [170, 180], [250, 175], [320, 200]], float) + rng.normal(0, 5, (4, 2))
    _stroke(labels, rng, _noisy_curve(rng, rid, 70), 2, (4, 8), gaps=1)
    # ligament: roughly vertical between them, 1 gap
    lig = np.array([[205, 100], [212, 140], [222, 185]], float) + rng.normal(0, 3, (3, 2))
    _stroke(labels, rng, _noisy_curve(rng, lig, 40), 3, (3, 6), gaps=1)
    # a stray ligament blob above both landmarks, and specks in the dark corners
    cv2.ellipse(labels, (int(rng.integers(60, 350)), int(rng.integers(20, 45))), (9, 5), 20, 0, 360, 3, -1)
    for x, y in ((8, 8), (W - 10, 6), (6, H - 8)):
        cv2.circle(labels, (x, y), 3, int(rng.integers(1, 4)), -1)
    return labels, image


def _step_medians(run, repeats: int) -> tuple[dict[str, float], float]:
    """Run ``run()`` (returns a LandmarkResult) ``repeats`` times after a warm-up; median ms per step and
    the median wall time in ms."""
    run()
    per_step: dict[str, list[float]] = {}
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = run()
        walls.append(time.perf_counter() - t0)
        for k, v in res.timings.items():
            per_step.setdefault(k, []).append(v)
    return {k: 1e3 * statistics.median(v) for k, v in per_step.items()}, 1e3 * statistics.median(walls)


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def _inference_ms(net: torch.nn.Module, device: torch.device, repeats: int, amp: bool = False,
                  traced: bool = False) -> float:
    x = torch.rand(1, 3, H, W, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = net
    if traced:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.compile / export
            model = torch.jit.trace(net, x)

    def step():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            return model(x).argmax(dim=1).to("cpu", torch.uint8)
    for _ in range(3 if device.type == "cuda" else 0):  # let cuDNN pick its kernels
        step()
    return 1e3 * median_seconds(step, repeats, sync)


def main() -> dict:
    torch.manual_seed(0)
    frames = [make_frame(seed) for seed in range(NUM_FRAMES)]
    post = LandmarkPostprocessor()
    ours_steps, base_steps, ours_wall, base_wall, agree = [], [], [], [], []
    for labels, image in frames:
        s, wall = _step_medians(lambda labels=labels, image=image: post(labels, image), REPEATS_FEWLABEL)
        ours_steps.append(s)
        ours_wall.append(wall)
        s, wall = _step_medians(
            lambda labels=labels, image=image: baseline.postprocess(labels, image), REPEATS_BASELINE
        )
        base_steps.append(s)
        base_wall.append(wall)
        a, b = post(labels, image), baseline.postprocess(labels, image)
        for k, name in enumerate(a.paths):
            ours_px, base_px = np.argwhere(a.masks[k]), np.argwhere(b.masks[k])
            gap = cKDTree(ours_px).query(base_px)[0].max() if len(ours_px) and len(base_px) else 0.0
            agree.append({"paths_fewlabel": len(a.paths[name]), "paths_baseline": len(b.paths[name]),
                          "baseline_px_to_fewlabel_max": float(gap)})
    ours, base = _mean_dicts(ours_steps), _mean_dicts(base_steps)
    steps = {k: {"fewlabel_ms": ours[k], "baseline_ms": base[k], "speedup": base[k] / max(ours[k], 1e-9)}
             for k in ours}
    post_ms, base_ms = float(np.mean(ours_wall)), float(np.mean(base_wall))

    net = build_network("unet", 3, 4).eval()
    inference = [{"device": "cpu", "mode": "fp32", "ms": _inference_ms(net, torch.device("cpu"),
                                                                      REPEATS_CPU_INFERENCE)}]
    result: dict = {
        "frame_shape": [H, W],
        "num_frames": NUM_FRAMES,
        "paper": PAPER,
        "network": "UNet / ResNet-34 (segmentation_models_pytorch), 4 classes, random weights",
        "baseline": "benchmarks/_landmark_baseline.py: Python BFS components, pairwise distance matrices, "
                    "textbook Zhang-Suen in pure Python, heapq Dijkstra tracing, recursive RDP",
        "postprocess_steps": steps,
        "postprocess_fewlabel_ms": post_ms,
        "postprocess_baseline_ms": base_ms,
        "postprocess_speedup": base_ms / post_ms,
        "agreement": {
            "same_number_of_paths": all(x["paths_fewlabel"] == x["paths_baseline"] for x in agree),
            "baseline_px_to_fewlabel_max": max(x["baseline_px_to_fewlabel_max"] for x in agree),
            "note": "every pixel of the baseline's curves lies within this distance of fewlabel's; fewlabel's "
                    "curves can be longer at their ends (scikit-image's Zhang-Suen table spares ends the "
                    "textbook rules erode)",
        },
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        dev = torch.device("cuda:0")
        net_gpu = build_network("unet", 3, 4).to(dev).eval()
        inference += [
            {"device": "cuda", "mode": "fp32", "ms": _inference_ms(net_gpu, dev, REPEATS_GPU)},
            {"device": "cuda", "mode": "amp", "ms": _inference_ms(net_gpu, dev, REPEATS_GPU, amp=True)},
            {"device": "cuda", "mode": "torchscript", "ms": _inference_ms(net_gpu, dev, REPEATS_GPU, traced=True)},
        ]
        result["cuda"] = torch.cuda.get_device_name()
    else:
        result["cuda"] = "not available"
    for row in inference:
        row["fps_fewlabel"] = 1e3 / (row["ms"] + post_ms)
        row["fps_baseline"] = 1e3 / (row["ms"] + base_ms)
    result["inference"] = inference

    print(f"post-processing of a {H}x{W} label map (mean of {NUM_FRAMES} frames, median of repeats):")
    print(f"  {'step':10s} {'fewlabel ms':>12s} {'baseline ms':>12s} {'ratio':>8s}")
    for k, v in steps.items():
        print(f"  {k:10s} {v['fewlabel_ms']:12.2f} {v['baseline_ms']:12.1f} {v['speedup']:7.0f}x")
    print(f"  wall time: fewlabel {post_ms:.2f} ms, baseline {base_ms:.0f} ms -> {result['postprocess_speedup']:.0f}x"
          f" (paper: {PAPER['postprocess_ms'][0]}-{PAPER['postprocess_ms'][1]} ms)")
    ag = result["agreement"]
    print(f"  agreement: same number of curves {ag['same_number_of_paths']}, baseline curve pixels within "
          f"{ag['baseline_px_to_fewlabel_max']:.2f} px of fewlabel's")
    print("inference (1x3x320x416, argmax and copy to CPU included) and end-to-end fps:")
    for row in inference:
        print(f"  {row['device']:5s} {row['mode']:12s} {row['ms']:8.2f} ms -> {row['fps_fewlabel']:6.1f} fps with "
              f"fewlabel, {row['fps_baseline']:5.2f} fps with the baseline")
    if result["cuda"] == "not available":
        print("  cuda: not available")
    save_result("slippa_latency", result)
    return result


if __name__ == "__main__":
    main()
