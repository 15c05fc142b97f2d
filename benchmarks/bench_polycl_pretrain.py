"""PolyCL pre-training: triplet step vs a SimCLR step, and triplet batches from the slice cache vs re-read volumes.

PolyCL (Ward et al., MELBA 2025, sections 3.1 and 4) pre-trains an encoder on (anchor, positive,
negative) CT-slice triplets, batch 20 triplets, 256 x 256 slices, U-Net encoder with channels
32..512, ``g`` = global average pooling + one fully connected layer to 256-d, Adam lr 1e-4, the
loss of eq. 4 with ``tau = 1 / M``. This benchmark builds that pipeline from fewlabel's pieces,
as ``bundles/polycl_liver_ct_segmentation/configs/pretrain.json`` wires them:

- data: CT phantoms (:func:`fewlabel.data.write_ct_demo_dataset`, NIfTI volumes in HU with a liver
  label) cached as slices (:func:`fewlabel.data.cache_ct_slices`: middle 30 %, resized to
  ``size``), a MONAI ``Dataset`` with ``LoadCTSliced`` + ``CTWindowd`` (400 / 40 HU) +
  ``EnsureTyped``, :class:`fewlabel.data.TripletSampler` (strategy ``"M"``),
  :class:`fewlabel.data.TripletDataset`, MONAI ``DataLoader`` (``num_workers=0``) and
  :class:`fewlabel.engines.TripletBatch` (the ``(3B, 1, H, W)`` stack);
- step: ``ContrastiveEncoder(build_network("polycl_unet", channels=...), projection_dim=256,
  hidden_dim=0)``, forward of the ``3B`` images, :class:`fewlabel.losses.PolyCLLoss` (``tau = 1/B``),
  backward, Adam (lr 1e-4).

Measured, in the same run:

1. **Step time.** Baseline ``"SimCLR step"``: the same encoder (own copy, same initial weights)
   and optimiser on ``B`` slices from the same slice cache (shuffled ``DataLoader``),
   :class:`fewlabel.engines.simclr.SimCLRPairs` (two augmented views, ``2B`` images) and
   :class:`fewlabel.losses.NTXentLoss` (temperature 0.5, as ``pretrain_simclr.json``). Measured:
   the PolyCL triplet step (``3B`` images, no augmentation). Per iteration: data time (the
   ``DataLoader``'s next batch), prepare time (``TripletBatch`` / ``SimCLRPairs``) and compute
   time (forward + loss + backward + Adam step); the two methods alternate, so a change of
   machine load hits both alike. Ratio: PolyCL / SimCLR.
2. **Data loading of one triplet batch.** Baseline ``"volume re-read"``: the same sampler, triplets
   and ``TripletDataset`` / ``DataLoader`` / ``TripletBatch``, but every one of the ``3B`` slices
   is produced by loading its whole phantom volume (:class:`fewlabel.transforms.LoadCTVolume`,
   NIfTI .nii.gz), taking the slice, resizing it (antialiased bilinear, as the cache does) and
   windowing it -- what the cache avoids. Measured: the slice-cache loader. Ratio: re-read /
   cache (speed-up). Both read files the run has just written, i.e. from the OS page cache; a
   cold disk favours the cache more. The two loaders' batches are compared (same triplets; the
   cache stores HU rounded to int16, so they agree to ~1e-3 after windowing).

Options (``python benchmarks/bench_polycl_pretrain.py --help``): ``--batch`` (default 20, the
paper's), ``--size`` (default 128 to keep CPU time low; the paper uses 256), ``--channels``
(default 32 64 128 256 512, the paper's U-Net), ``--steps`` / ``--warmup`` (timed / untimed
iterations per method), ``--scans`` / ``--volume`` (phantoms: count and ``Z Y X`` shape; the
re-read cost grows with the volume: LiTS scans are 512 x 512 x ~450), ``--data-batches`` /
``--reread-batches``, ``--threads`` (``torch.set_num_threads``, default ``min(2, cores)`` as
``tests/conftest.py``), ``--quick`` (a smoke run with small settings). Runs on the CPU and also on
CUDA when present (steps only; data loading is CPU work). Saves
``benchmarks/results/polycl_pretrain.json`` (``_quick`` with ``--quick``, ``_threads<N>`` with
another ``--threads``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped

from _timing import save_result, warn_if_loaded

from fewlabel.data import (
    TripletDataset,
    TripletSampler,
    cache_ct_slices,
    load_datalist,
    slice_tables,
    write_ct_demo_dataset,
)
from fewlabel.engines import TripletBatch
from fewlabel.engines.simclr import SimCLRPairs
from fewlabel.networks import ContrastiveEncoder
from fewlabel.losses import NTXentLoss, PolyCLLoss
from fewlabel.networks import build_network
from fewlabel.transforms import CTWindow, CTWindowd, LoadCTSliced, LoadCTVolume

PAPER = {"batch_triplets": 20, "slice_size": 256, "channels": [32, 64, 128, 256, 512], "projection_dim": 256,
         "lr": 1e-4, "temperature": "1/M"}
LR = 1e-4
WINDOW = (400.0, 40.0)  # width, level (HU)
SIMCLR_TEMPERATURE = 0.5  # pretrain_simclr.json

THREADS = max(1, min(2, os.cpu_count() or 1))  # as tests/conftest.py
DEFAULTS = {"batch": 20, "size": 128, "channels": [32, 64, 128, 256, 512], "steps": 3, "warmup": 1, "scans": 10,
            "volume": [48, 256, 256], "data_batches": 10, "reread_batches": 2}
QUICK = {"batch": 4, "size": 64, "channels": [8, 16, 32, 64, 128], "steps": 3, "warmup": 1, "scans": 4,
         "volume": [24, 96, 96], "data_batches": 3, "reread_batches": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; ``--quick`` changes the defaults (explicit options still win). Unknown arguments are
    ignored, so that ``benchmarks/run.py NAME`` (which leaves its own arguments in ``sys.argv``) works."""
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--quick", action="store_true")
    quick = pre.parse_known_args(argv)[0].quick
    d = QUICK if quick else DEFAULTS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run with small settings (saved as *_quick.json)")
    p.add_argument("--batch", type=int, default=d["batch"], help="triplets per batch (paper: 20)")
    p.add_argument("--size", type=int, default=d["size"], help="slice size in px (paper: 256; default 128 for CPU)")
    p.add_argument("--channels", type=int, nargs="+", default=d["channels"], help="encoder channels (paper: 32..512)")
    p.add_argument("--steps", type=int, default=d["steps"], help="timed iterations per method")
    p.add_argument("--warmup", type=int, default=d["warmup"], help="untimed iterations per method first")
    p.add_argument("--scans", type=int, default=d["scans"], help="CT phantoms in the slice cache (>= 3)")
    p.add_argument("--volume", type=int, nargs=3, default=d["volume"], metavar=("Z", "Y", "X"),
                   help="phantom volume shape")
    p.add_argument("--data-batches", type=int, default=d["data_batches"], help="timed slice-cache triplet batches")
    p.add_argument("--reread-batches", type=int, default=d["reread_batches"], help="timed volume re-read batches")
    p.add_argument("--threads", type=int, default=THREADS,
                   help=f"torch.set_num_threads (default {THREADS}, as tests/conftest.py)")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA run even when a GPU is present")
    args = p.parse_known_args(argv)[0]
    if args.batch < 2 or args.steps < 1 or args.warmup < 0 or args.data_batches < 1 or args.reread_batches < 1:
        p.error("need batch >= 2, steps >= 1, warmup >= 0, data/reread batches >= 1")
    if args.size % 2 ** (len(args.channels) - 1) or args.size < 2 ** len(args.channels):
        p.error(f"size must be a multiple of {2 ** (len(args.channels) - 1)} and >= {2 ** len(args.channels)} "
                f"for {len(args.channels)} encoder stages")
    return args


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


class VolumeRereadSliced:
    """Baseline loader of one cached slice record: load its whole volume, take the slice, resize, window.

    ``record["source"]`` is the volume the cache was built from and ``record["slice"]`` the slice's
    position along the axial (last) axis of the RAS-oriented volume; the output is the ``(1, size,
    size)`` float32 image the cache + ``CTWindowd`` give for the same record (resize on HU first, as
    :func:`fewlabel.data.cache_ct_slices` does, then the window).
    """

    def __init__(self, size: int) -> None:
        self.size = (int(size), int(size))
        self.load = LoadCTVolume()  # (1, X, Y, Z) float32 HU, RAS
        self.window = CTWindow(*WINDOW, check_hu=False)

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        vol = self.load(record["source"])
        hu = vol.as_tensor()[:, :, :, int(record["slice"])]  # (1, X, Y)
        if tuple(hu.shape[-2:]) != self.size:
            hu = F.interpolate(hu[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]
        out = {k: v for k, v in record.items() if k not in ("image", "label")}
        out["image"] = self.window(hu)
        return out


def _slice_records(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    datalist = write_ct_demo_dataset(root / "ct", num_scans=args.scans, shape=tuple(args.volume), seed=0)
    items = [it for split in ("training", "validation", "testing") for it in load_datalist(datalist, split)]
    return cache_ct_slices(items, root / "slices", size=(args.size, args.size), progress=False)


def _cached_dataset(records: list[dict[str, Any]]) -> Dataset:
    """The bundle's slice dataset: ``LoadCTSliced`` + ``CTWindowd`` + ``EnsureTyped`` (train.json's ``load``)."""
    return Dataset(records, transform=Compose([
        LoadCTSliced(["image", "label"], allow_missing_keys=True),
        CTWindowd("image", *WINDOW, check_hu=False),
        EnsureTyped(["image", "label"], track_meta=False, allow_missing_keys=True),
    ]))


def _triplet_loader(dataset: Any, records: list[dict[str, Any]], batch: int) -> DataLoader:
    scans, organ = slice_tables(records)
    sampler = TripletSampler(scans, organ, strategy="M", seed=0)
    if len(sampler) < batch:
        raise SystemExit(f"only {len(sampler)} valid anchors for a batch of {batch}: use more --scans or a longer "
                         "--volume")
    return DataLoader(TripletDataset(dataset), batch_size=batch, sampler=sampler, num_workers=0, drop_last=True)


def _forever(loader: DataLoader) -> Iterator[Any]:
    """Batches without end: a new epoch (a new triplet draw / shuffle) when one runs out."""
    while True:
        yield from loader


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _measure_loading(args: argparse.Namespace, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Triplet batches from the slice cache vs the volume re-read baseline (same triplets, CPU)."""
    prepare = TripletBatch()
    cached_dataset = _cached_dataset(records)
    # two samplers seeded alike: their epochs 0, 1, ... give the same triplets
    cached_it = _forever(_triplet_loader(cached_dataset, records, args.batch))
    reread_it = _forever(_triplet_loader(Dataset(records, transform=VolumeRereadSliced(args.size)), records,
                                         args.batch))

    def one(it: Iterator[Any]) -> tuple[torch.Tensor, torch.Tensor, float]:
        t0 = time.perf_counter()
        batch = next(it)
        x, _ = prepare(batch, "cpu")
        return x, batch["index"], time.perf_counter() - t0

    # first calls (NIfTI reader set-up, memory maps) out of the timing, on loaders of their own
    VolumeRereadSliced(args.size)(records[0])
    one(iter(_triplet_loader(cached_dataset, records, args.batch)))
    t_cached, t_reread, max_diff = [], [], 0.0
    n_cached = max(args.data_batches, args.reread_batches)
    for i in range(n_cached):  # re-read batches interleaved with the cached ones (the same triplets)
        x_c, idx_c, t = one(cached_it)
        t_cached.append(t)
        if i < args.reread_batches:
            x_r, idx_r, t = one(reread_it)
            t_reread.append(t)
            if not torch.equal(idx_c, idx_r) or x_c.shape != x_r.shape:
                raise AssertionError("the cached and the re-read loaders should give the same triplets")
            max_diff = max(max_diff, float((x_c - x_r).abs().max()))
    if max_diff > 0.01:
        raise AssertionError(f"the re-read baseline differs from the slice cache by {max_diff:.4f} (windowed)")
    n_slices = 3 * args.batch
    cached, reread = statistics.median(t_cached), statistics.median(t_reread)
    return {
        "slices_per_batch": n_slices,
        "seconds_per_batch": {"volume_reread": reread, "slice_cache": cached},
        "ms_per_slice": {"volume_reread": 1e3 * reread / n_slices, "slice_cache": 1e3 * cached / n_slices},
        "speedup_slice_cache_vs_volume_reread": reread / cached,
        "max_abs_difference_windowed": max_diff,
        "raw_seconds": {"volume_reread": t_reread, "slice_cache": t_cached},
    }


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------


def _encoder(channels: list[int]) -> ContrastiveEncoder:
    torch.manual_seed(0)  # both methods start from the same weights
    net = build_network("polycl_unet", in_channels=1, out_channels=1, channels=list(channels))
    return ContrastiveEncoder(net, projection_dim=PAPER["projection_dim"], hidden_dim=0)


class _Method:
    """One pre-training method: loader, prepare_batch, network, loss and Adam; ``iteration()`` times one step."""

    def __init__(self, name: str, loader: DataLoader, prepare: Any, loss: torch.nn.Module, channels: list[int],
                 device: torch.device) -> None:
        self.name = name
        self.batches = _forever(loader)
        self.prepare = prepare
        self.loss_fn = loss
        self.device = device
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.model = _encoder(channels).to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.times: dict[str, list[float]] = {"data": [], "prepare": [], "compute": []}
        self.images_per_step = 0
        self.last_loss = float("nan")

    def iteration(self, record: bool) -> None:
        batch, t_data = _timed(lambda: next(self.batches))
        (x, _), t_prep = _timed(lambda: (self.prepare(batch, self.device), self.sync())[0])
        self.sync()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x))
        loss.backward()
        self.optimizer.step()
        self.sync()
        t_compute = time.perf_counter() - t0
        self.images_per_step = int(x.shape[0])
        self.last_loss = float(loss.detach())
        if record:
            for key, t in (("data", t_data), ("prepare", t_prep), ("compute", t_compute)):
                self.times[key].append(t)

    def summary(self) -> dict[str, Any]:
        med = {k: statistics.median(v) for k, v in self.times.items()}
        return {
            "images_per_step": self.images_per_step,
            "seconds": {"data": med["data"], "prepare": med["prepare"], "compute": med["compute"],
                        "total": med["data"] + med["prepare"] + med["compute"]},
            "compute_ms_per_image": 1e3 * med["compute"] / self.images_per_step,
            "last_loss": self.last_loss,
            "raw_seconds": self.times,
        }


def _measure_steps(args: argparse.Namespace, records: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    dataset = _cached_dataset(records)
    simclr_loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=0, drop_last=True,
                               generator=torch.Generator().manual_seed(0))
    simclr = _Method("SimCLR step", simclr_loader, SimCLRPairs(seed=0), NTXentLoss(SIMCLR_TEMPERATURE),
                     args.channels, device)
    polycl = _Method("PolyCL triplet step", _triplet_loader(dataset, records, args.batch), TripletBatch(),
                     PolyCLLoss(), args.channels, device)
    for i in range(args.warmup + args.steps):  # alternate, so a change of machine load hits both alike
        for method in (simclr, polycl) if i % 2 == 0 else (polycl, simclr):
            method.iteration(record=i >= args.warmup)
    s, p = simclr.summary(), polycl.summary()
    return {
        "simclr_step": s,
        "polycl_triplet_step": p,
        "ratio_compute_polycl_to_simclr": p["seconds"]["compute"] / s["seconds"]["compute"],
        "ratio_total_polycl_to_simclr": p["seconds"]["total"] / s["seconds"]["total"],
        "ratio_compute_per_image_polycl_to_simclr": p["compute_ms_per_image"] / s["compute_ms_per_image"],
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _print_steps(dev: str, r: dict[str, Any], batch: int) -> None:
    print(f"[{dev}] {'step, B=' + str(batch):<30}{'images':>7}{'data ms':>9}{'prep ms':>9}{'compute s':>11}"
          f"{'total s':>9}{'x SimCLR':>10}")
    for key, name, ratio in (("simclr_step", "SimCLR step (baseline)", 1.0),
                             ("polycl_triplet_step", "PolyCL triplet step", r["ratio_compute_polycl_to_simclr"])):
        m = r[key]
        s = m["seconds"]
        print(f"[{dev}] {name:<30}{m['images_per_step']:>7}{1e3 * s['data']:>9.1f}{1e3 * s['prepare']:>9.1f}"
              f"{s['compute']:>11.3f}{s['total']:>9.3f}{ratio:>10.2f}")
    print(f"[{dev}] PolyCL / SimCLR: compute x{r['ratio_compute_polycl_to_simclr']:.2f}, whole iteration "
          f"x{r['ratio_total_polycl_to_simclr']:.2f}, "
          f"compute per image x{r['ratio_compute_per_image_polycl_to_simclr']:.2f}")


def _print_loading(r: dict[str, Any]) -> None:
    s, ms = r["seconds_per_batch"], r["ms_per_slice"]
    print(f"[data] one triplet batch ({r['slices_per_batch']} slices)     s/batch  ms/slice  speed-up")
    print(f"[data] volume re-read (baseline)        {s['volume_reread']:>9.3f}{ms['volume_reread']:>10.2f}{1.0:>10.1f}")
    print(f"[data] slice cache                      {s['slice_cache']:>9.3f}{ms['slice_cache']:>10.2f}"
          f"{r['speedup_slice_cache_vs_volume_reread']:>10.1f}")
    print(f"[data] max |cache - re-read| after windowing: {r['max_abs_difference_windowed']:.2e}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warn_if_loaded(args.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "default",
        "paper": PAPER,
        "settings": {"batch_triplets": args.batch, "slice_size": args.size, "channels": args.channels,
                     "steps": args.steps, "warmup": args.warmup, "scans": args.scans, "volume_zyx": args.volume},
        "network": "ContrastiveEncoder(build_network('polycl_unet', 1, 1, channels), projection_dim=256, "
                   "hidden_dim=0), random init, Adam lr 1e-4",
        "data": "write_ct_demo_dataset phantoms (NIfTI, HU) -> cache_ct_slices (middle 30 %, resized) -> MONAI "
                "Dataset(LoadCTSliced + CTWindowd 400/40 + EnsureTyped) -> TripletSampler('M') + TripletDataset "
                "-> monai DataLoader(num_workers=0) -> TripletBatch",
        "baselines": {
            "SimCLR step": "same encoder and Adam; B slices from the same cache, SimCLRPairs (2B views), "
                           f"NTXentLoss(temperature={SIMCLR_TEMPERATURE})",
            "volume re-read": "same triplets and loader, each of the 3B slices loaded by reading its whole NIfTI "
                              "volume (LoadCTVolume), then resize + window",
        },
        "measured": "PolyCL triplet step (3B images, PolyCLLoss tau=1/B); slice-cache triplet batch loading",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-polycl-") as tmp:
        t0 = time.perf_counter()
        records = _slice_records(args, Path(tmp))
        scans, organ = slice_tables(records)
        sampler = TripletSampler(scans, organ, strategy="M", seed=0)
        result["setup"] = {"seconds_write_phantoms_and_cache": time.perf_counter() - t0, "slices": len(records),
                           "slices_with_organ": int(organ.sum()) if organ is not None else None,
                           "valid_anchors": len(sampler), "anchors_skipped": int(sampler.skipped)}
        result["data_loading"] = _measure_loading(args, records)
        result["cpu"] = _measure_steps(args, records, torch.device("cpu"))
        if torch.cuda.is_available() and not args.no_cuda:
            result["cuda"] = _measure_steps(args, records, torch.device("cuda"))
            result["gpu"] = torch.cuda.get_device_name()
        else:
            result["cuda"] = "not available" if not torch.cuda.is_available() else "skipped (--no-cuda)"
    result["total_runtime_seconds"] = time.perf_counter() - start
    result["load_average_1min_at_end"] = os.getloadavg()[0]

    print(f"PolyCL pre-training, B={args.batch} triplets, {args.size} px slices (paper: 20, 256 px), channels "
          f"{args.channels}, {torch.get_num_threads()} torch threads, {len(records)} cached slices")
    _print_loading(result["data_loading"])
    for dev in ("cpu", "cuda"):
        r = result[dev]
        if isinstance(r, dict):
            _print_steps(dev, r, args.batch)
        else:
            print(f"[{dev}] {r}")
    print(f"total runtime {result['total_runtime_seconds']:.0f} s")
    suffix = ("_quick" if args.quick else "") + (f"_threads{args.threads}" if args.threads != THREADS else "")
    save_result("polycl_pretrain" + suffix, result)
    return result


if __name__ == "__main__":
    main()
