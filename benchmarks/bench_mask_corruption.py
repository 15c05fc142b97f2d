"""Mask corruption on the device vs a per-image NumPy loop, and its share of a training step.

Baseline: for each image of the batch in turn, NumPy paints random 64 px squares (free
placement) until 40 % of the pixels are masked, then blacks them out - what a per-sample
CPU data pipeline does. Measured: :class:`fewlabel.transforms.MaskCorruption` on the whole
``16 x 3 x 480 x 854`` batch (CPU, and CUDA when present), in the same run. The share: mask time
over the time of one DeepLabV3+ (ResNet-101) AdamW step with an MSE loss on a batch of the same
size; on a CPU the step runs at a smaller batch (``STEP_BATCH``) and the masking is timed at that
batch too, so the share compares like with like. Saves ``benchmarks/results/mask_corruption.json``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from _timing import median_seconds, save_result

from fewlabel.networks import build_network
from fewlabel.transforms import MaskCorruption, mask_ratio

BATCH, H, W = 16, 480, 854
RATIO, SIZE = 0.4, 64
STEP_BATCH = int(os.environ.get("FEWLABEL_BENCH_STEP_BATCH", "16" if torch.cuda.is_available() else "2"))


def numpy_loop(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: returns the corrupted batch and each image's masked share (it overshoots rho:
    the last patch is not trimmed)."""
    out = images.copy()
    shares = []
    for img in out:
        h, w = img.shape[1:]
        masked = np.zeros((h, w), bool)
        while masked.mean() < RATIO:
            cy, cx = rng.integers(h), rng.integers(w)
            masked[max(cy - SIZE // 2, 0): cy + SIZE // 2, max(cx - SIZE // 2, 0): cx + SIZE // 2] = True
        img[:, masked] = 0
        shares.append(masked.mean())
    return out, np.array(shares)


def main() -> dict:
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, 3, H, W), dtype=np.float32)
    batch = torch.from_numpy(images)
    corrupt = MaskCorruption(RATIO, SIZE, generator=torch.Generator().manual_seed(0))
    result = {
        "batch_shape": [BATCH, 3, H, W], "ratio": RATIO, "patch_size": SIZE,
        "baseline": "per-image NumPy loop painting 64 px squares until 40 % is masked",
        "baseline_ms": 1e3 * median_seconds(lambda: numpy_loop(images, rng), 5),
        "fewlabel_cpu_ms": 1e3 * median_seconds(lambda: corrupt(batch), 5),
        "torch_threads": torch.get_num_threads(),
    }
    shares = numpy_loop(images, np.random.default_rng(1))[1]
    ours = mask_ratio(corrupt(batch)[1]).numpy()
    result["baseline_share_max_error"] = float(np.abs(shares - RATIO).max())  # no trimming: overshoots
    result["fewlabel_share_max_error"] = float(np.abs(ours - RATIO).max())
    result["speedup_cpu"] = result["baseline_ms"] / result["fewlabel_cpu_ms"]
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        gpu_batch = batch.to(device)
        result["fewlabel_cuda_ms"] = 1e3 * median_seconds(lambda: corrupt(gpu_batch), 20, sync)
        result["speedup_cuda"] = result["baseline_ms"] / result["fewlabel_cuda_ms"]
        result["gpu"] = torch.cuda.get_device_name()

    # one pre-training step (DeepLabV3+ needs sides divisible by 16: 480 x 864)
    net = build_network("deeplabv3plus", encoder_name="resnet101", out_channels=3).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.rand(STEP_BATCH, 3, H, 864, device=device)

    def step():
        inputs, _ = corrupt(x)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = torch.nn.functional.mse_loss(net(inputs).float(), x)
        loss.backward()
        opt.step()

    result["step_batch"] = STEP_BATCH
    if STEP_BATCH != BATCH:
        result["step_batch_note"] = (
            f"a {BATCH}-image ResNet-101 step takes well over 60 s on a {torch.get_num_threads()}-thread "
            f"{device.type} (about {BATCH // STEP_BATCH}x the batch-{STEP_BATCH} step): step and masking are both "
            f"timed at batch {STEP_BATCH} so the share compares like with like")
    result["train_step_ms"] = 1e3 * median_seconds(step, 3 if device.type == "cpu" else 10, sync)
    result["mask_at_step_batch_ms"] = 1e3 * median_seconds(lambda: corrupt(x), 5, sync)
    result["mask_share_of_step"] = result["mask_at_step_batch_ms"] / result["train_step_ms"]
    result["step_device"] = device.type

    print(
        f"NumPy per-image loop: {result['baseline_ms']:.1f} ms; "
        f"MaskCorruption (CPU): {result['fewlabel_cpu_ms']:.1f} ms"
        f" -> {result['speedup_cpu']:.1f}x"
    )
    if "fewlabel_cuda_ms" in result:
        print(f"MaskCorruption (CUDA): {result['fewlabel_cuda_ms']:.2f} ms -> {result['speedup_cuda']:.0f}x")
    print(f"masked share, max error over the batch: NumPy loop {result['baseline_share_max_error']:.4f}, "
          f"MaskCorruption {result['fewlabel_share_max_error']:.6f}")
    if "step_batch_note" in result:
        print(f"note: {result['step_batch_note']}")
    print(f"training step ({device.type}, batch {STEP_BATCH}): {result['train_step_ms']:.0f} ms; masking "
          f"{result['mask_at_step_batch_ms']:.1f} ms = {100 * result['mask_share_of_step']:.2f} % of the step")
    save_result("mask_corruption", result)
    return result


if __name__ == "__main__":
    main()
