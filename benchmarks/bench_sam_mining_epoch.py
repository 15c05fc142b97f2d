"""Training-epoch time of SAM knowledge mining: one-time vs continuous pseudo-labels, same run.

SAM knowledge mining (paper, sections 2.4-2.5) trains a student on labelled images plus SAM
pseudo-labels of unlabelled ones. With the **one-time** schedule the pseudo-labels are mined
once (:func:`fewlabel.engines.sam_mining.mine_pseudo_labels`: student -> prompts -> SAM, image
encoder once per unlabelled image) and training then reads them like ground truth. With the
**continuous** schedule every visit of an unlabelled image asks the current student and SAM
again, inside :class:`fewlabel.engines.sam_mining.MinedBatches` (``mode="continuous"``); an
:class:`fewlabel.sam.EmbeddingCache` on the teacher removes the image encoder from every visit
after the first.

Baseline: one epoch of the one-time schedule, ``MinedBatches(mode="one_time")`` over labelled +
pseudo-labelled items whose masks were mined beforehand (no teacher call in the epoch).
Measured against it, in the same run and from the same student weights and batch order:

- a continuous epoch without a cache (``teacher.cache = None``): SAM's image encoder runs on
  every unlabelled image of every batch;
- a continuous epoch with a warm cache (the cache already holds the unlabelled images'
  embeddings, as in every epoch after the first): student forward + prompt encoder + mask
  decoder per unlabelled image;
- the one-time mining pass itself (``mine_pseudo_labels``: student + SAM with the image encoder
  once per unlabelled image, masks written as PNG), which the one-time schedule pays once. Its
  teacher carries an empty cache, so the pass also fills the cache the warm continuous epochs use.

Setup: student U-Net++ / ResNet-34 (``build_network("unetplusplus")``, random weights), input
3 x 224 x 224, Adam (lr 5e-5), ``MiningLoss(k=0.2, lam=0.25)``, batch size 4; teacher SAM ViT-B
from ``segment_anything.sam_model_registry["vit_b"]()`` (random weights: no checkpoint is needed
for timing), which resizes each 224 px image to its 1024 px input. One epoch = 4 labelled + 4
unlabelled synthetic images = 2 iterations of 4 shuffled mixed items (the same shuffle for every
schedule). An epoch's time covers batch preparation (pseudo-labels, augmentation), forward,
loss, backward and the optimizer step; the student is reset to the same weights and a fresh Adam
before every timed epoch. Runs on the CPU and, when present, on CUDA (synchronised).

Reported: seconds per epoch, the ratios to the one-time epoch, the extra time per unlabelled
image visit of continuous mining (cached and uncached), and the break-even: after how many
cached continuous epochs the extra time adds up to one mining pass. Saves JSON to
``benchmarks/results/sam_mining_epoch.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from segment_anything import sam_model_registry
from torch.utils.data import DataLoader

from _timing import save_result

from fewlabel.data import mixed_items
from fewlabel.engines.sam_mining import MinedBatches, mine_pseudo_labels
from fewlabel.losses import MiningLoss
from fewlabel.networks import build_network
from fewlabel.sam import EmbeddingCache, SamPrompter, SamTeacher
from fewlabel.transforms import PlaceholderLabeld

SIZE = 224  # the paper's training size; SAM resizes to 1024 internally
N_LABELLED = 4
N_UNLABELLED = 4
BATCH = 4
LR = 5e-5
NUM_POINTS = 3
# vit_b at 1024 px takes tens of seconds per image on 2 CPU cores: the uncached runs are timed once there
REPEATS_UNCACHED = {"cpu": 1, "cuda": 3}  # continuous epoch without cache, and the mining pass
REPEATS_CHEAP = {"cpu": 3, "cuda": 10}  # one-time epoch and continuous epoch with a warm cache

Item = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _synthetic(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` (image (3, H, W) in [0, 1], mask (1, H, W) in {0, 1}) pairs: a bright ellipse on noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = (0.3 + 0.4 * torch.rand(2, generator=g)) * SIZE
        ry, rx = (0.1 + 0.15 * torch.rand(2, generator=g)) * SIZE
        mask = ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1.0).float()[None]
        image = (0.25 * torch.rand(3, SIZE, SIZE, generator=g) + 0.6 * mask * torch.rand(3, 1, 1, generator=g))
        out.append((image.clamp(0.0, 1.0), mask))
    return out


def _loader(items: list[Item]) -> DataLoader:
    """A shuffled loader over in-memory item dicts; the same seed gives every schedule the same batches."""
    return DataLoader(items, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def _seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


class _Trainer:
    """Runs one training epoch of the student from a fixed starting point (weights, Adam, RNG draws)."""

    def __init__(self, device: torch.device, teacher: SamTeacher) -> None:
        torch.manual_seed(0)
        self.device = device
        self.teacher = teacher
        self.student = build_network("unetplusplus", in_channels=3, out_channels=1, encoder_name="resnet34").to(device)
        self.initial = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        self.loss_fn = MiningLoss(k=0.2, lam=0.25)
        self.last_mined: MinedBatches | None = None
        self.last_loss = float("nan")

    def reset(self) -> None:
        self.student.load_state_dict(self.initial)
        self.student.train()

    def epoch(self, items: list[Item], mode: str) -> Callable[[], None]:
        """Reset the student, build Adam and ``MinedBatches(mode=mode)``; return one epoch over ``items`` to time."""
        self.reset()
        optimizer = torch.optim.Adam(self.student.parameters(), lr=LR)
        teacher = self.teacher if mode == "continuous" else None
        mined = MinedBatches(self.student, teacher, mode=mode, prompter=SamPrompter(num_points=NUM_POINTS))
        loader = _loader(items)

        def run() -> None:
            loss = torch.zeros(())
            for batch in loader:
                images, targets = mined(batch, self.device)
                loss = self.loss_fn(self.student(images), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            self.last_mined, self.last_loss = mined, float(loss.detach())

        return run


def _measure(device: torch.device, sam_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    kind = device.type
    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)
    sam = sam_model_registry["vit_b"]()
    sam.load_state_dict(sam_state)
    teacher = SamTeacher(sam, model_type="vit_b", checkpoint_id="random-init-vit_b").to(device)
    trainer = _Trainer(device, teacher)

    labelled = [{"image": img, "label": lab} for img, lab in _synthetic(N_LABELLED, seed=1)]
    unlabelled_images = [img for img, _ in _synthetic(N_UNLABELLED, seed=2)]
    placeholder = PlaceholderLabeld()
    continuous_items = [placeholder(it) for it in mixed_items(labelled, [{"image": im} for im in unlabelled_images])]

    # first calls (allocations; on CUDA kernel and cuBLAS set-up) out of the timed mining pass
    with torch.no_grad():
        trainer.student.eval()(torch.stack(unlabelled_images).to(device))
    trainer.reset()
    if kind == "cuda":
        teacher.embed(unlabelled_images[0][None])
    sync()

    # -- the one-time mining pass (fills `cache` as a side effect) -----------------------------
    by_name = {f"unlabelled_{i}": im for i, im in enumerate(unlabelled_images)}
    to_mine = [{"image": name} for name in by_name]
    t_mining: list[float] = []
    cache = EmbeddingCache()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(REPEATS_UNCACHED[kind]):
            cache = EmbeddingCache()
            teacher.cache = cache
            out_dir = Path(tmp) / f"mined_{r}"
            trainer.reset()
            t_mining.append(_seconds(lambda out_dir=out_dir: mine_pseudo_labels(
                trainer.student, teacher, to_mine, out_dir, transform=lambda it: {"image": by_name[it["image"]]},
                batch_size=BATCH, num_points=NUM_POINTS, seed=0, device=device,
            ), sync))
        mined_list = json.loads((out_dir / "pseudo_datalist.json").read_text())["training"]
        pseudo = []
        for entry in mined_list:
            mask = np.asarray(Image.open(out_dir / entry["label"]), dtype=np.float32)
            pseudo.append({"image": by_name[entry["image"]], "label": torch.from_numpy(mask)[None],
                           "valid": entry["valid"]})
    teacher.cache = None
    assert cache.misses == N_UNLABELLED, f"the mining pass should embed each image once, got {cache.stats()}"
    one_time_items = mixed_items(labelled, pseudo=pseudo)
    n_valid = sum(int(p["valid"]) for p in pseudo)

    def one_time() -> float:
        return _seconds(trainer.epoch(one_time_items, "one_time"), sync)

    def continuous(with_cache: bool) -> float:
        teacher.cache = cache if with_cache else None
        try:
            return _seconds(trainer.epoch(continuous_items, "continuous"), sync)
        finally:
            teacher.cache = None

    def check_mined() -> None:
        m = trainer.last_mined
        assert m is not None and m.seen == N_UNLABELLED, "every unlabelled image should be visited once per epoch"
        assert m.skipped == 0, f"{m.skipped} unlabelled images got no prompt: SAM was not asked for them"

    # warm-ups (the student's first train steps; SAM's decoder already ran in the mining pass)
    one_time()
    continuous(True)
    check_mined()
    sync()

    t_nocache = []
    for _ in range(REPEATS_UNCACHED[kind]):
        t_nocache.append(continuous(False))
        check_mined()
    hits_before = cache.hits
    t_one, t_cached = [], []
    for _ in range(REPEATS_CHEAP[kind]):  # alternate, so a change of machine load hits both alike
        t_one.append(one_time())
        t_cached.append(continuous(True))
        check_mined()
    assert cache.misses == N_UNLABELLED and cache.hits - hits_before == N_UNLABELLED * REPEATS_CHEAP[kind], (
        f"the warm cache should answer every visit, got {cache.stats()}"
    )

    one, cached, nocache, mining = (statistics.median(t) for t in (t_one, t_cached, t_nocache, t_mining))
    extra_cached, extra_nocache = cached - one, nocache - one
    # break-even: cumulative extra time of continuous mining (first epoch fills the cache, i.e. runs
    # uncached; later epochs hit it) against one-time mining's single pass
    after_first = max(mining - extra_nocache, 0.0)
    return {
        "seconds_per_epoch": {"one_time": one, "continuous_cached": cached, "continuous_nocache": nocache},
        "seconds_one_time_mining_pass": mining,
        "ratio_continuous_nocache_to_one_time": nocache / one,
        "ratio_continuous_cached_to_one_time": cached / one,
        "ratio_mining_pass_to_one_time_epoch": mining / one,
        "extra_seconds_per_unlabelled_visit": {"cached": extra_cached / N_UNLABELLED,
                                               "nocache": extra_nocache / N_UNLABELLED},
        "epochs_cached_extra_equals_mining_pass": mining / extra_cached if extra_cached > 0 else None,
        "break_even_epochs_incl_cache_filling_epoch": 1 + after_first / extra_cached if extra_cached > 0 else None,
        "pseudo_labels_valid": f"{n_valid}/{N_UNLABELLED}",
        "cache_stats": cache.stats(),
        "final_loss_continuous_cached": trainer.last_loss,
        "raw_seconds": {"one_time": t_one, "continuous_cached": t_cached, "continuous_nocache": t_nocache,
                        "mining_pass": t_mining},
    }


def _print(dev: str, r: dict[str, Any]) -> None:
    s = r["seconds_per_epoch"]
    rows = [("one-time (baseline)", s["one_time"], 1.0),
            ("continuous, warm cache", s["continuous_cached"], r["ratio_continuous_cached_to_one_time"]),
            ("continuous, no cache", s["continuous_nocache"], r["ratio_continuous_nocache_to_one_time"])]
    print(f"[{dev}] {'epoch schedule':<26}{'s/epoch':>10}{'x one-time':>12}")
    for name, sec, ratio in rows:
        print(f"[{dev}] {name:<26}{sec:>10.2f}{ratio:>12.2f}")
    print(f"[{dev}] {'one-time mining pass':<26}{r['seconds_one_time_mining_pass']:>10.2f}"
          f"{r['ratio_mining_pass_to_one_time_epoch']:>12.2f}   (once per training run)")
    v = r["extra_seconds_per_unlabelled_visit"]
    print(f"[{dev}] continuous extra per unlabelled-image visit: {v['cached']:.3f} s cached, "
          f"{v['nocache']:.3f} s uncached")
    n, b = r["epochs_cached_extra_equals_mining_pass"], r["break_even_epochs_incl_cache_filling_epoch"]
    if n is None:
        print(f"[{dev}] the warm-cache continuous epoch was not slower than the one-time epoch: no break-even")
    else:
        print(f"[{dev}] cached continuous extra = one mining pass after {n:.1f} epochs "
              f"({b:.1f} counting the first, cache-filling epoch as uncached)")


def main() -> dict[str, Any]:
    start = time.perf_counter()
    torch.manual_seed(0)
    sam_state = sam_model_registry["vit_b"]().state_dict()  # one set of random weights for every device
    result: dict[str, Any] = {
        "student": "U-Net++ / ResNet-34 (build_network('unetplusplus'), random init), Adam lr 5e-5, "
                   "MiningLoss(k=0.2, lam=0.25)",
        "teacher": "SAM vit_b (segment_anything.sam_model_registry['vit_b'](), random weights), 1024 px input",
        "input": [3, SIZE, SIZE],
        "epoch": f"{N_LABELLED} labelled + {N_UNLABELLED} unlabelled items, batch {BATCH} "
                 f"({(N_LABELLED + N_UNLABELLED) // BATCH} iterations)",
        "prompts": f"{NUM_POINTS} points + box",
        "baseline": "one-time epoch: MinedBatches(mode='one_time') over pre-mined pseudo-labels, no teacher call",
        "measured": "continuous epochs (MinedBatches(mode='continuous')) without and with a warm EmbeddingCache; "
                    "the one-time mining pass (mine_pseudo_labels)",
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
    }
    result["cpu"] = _measure(torch.device("cpu"), sam_state)
    if torch.cuda.is_available():
        result["cuda"] = _measure(torch.device("cuda"), sam_state)
        result["gpu"] = torch.cuda.get_device_name()
    else:
        result["cuda"] = "not available"
    result["total_runtime_seconds"] = time.perf_counter() - start
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    for dev in ("cpu", "cuda"):
        r = result[dev]
        if isinstance(r, dict):
            _print(dev, r)
        else:
            print(f"[{dev}] {r}")
    print(f"total runtime {result['total_runtime_seconds']:.0f} s")
    save_result("sam_mining_epoch", result)
    return result


if __name__ == "__main__":
    main()
