"""SAM 2 propagation of one mask through a CT volume: seconds per slice and peak memory, vs the 2D U-Net alone.

PolyCL (Ward et al., MELBA 2025, section 3.3.2) segments a whole CT volume from one annotated
slice by letting SAM 2's video predictor propagate that slice's mask through the volume treated
as a pseudo-video (:func:`fewlabel.sam.propagate.propagate_volume`: frames written as JPEG,
``init_state``, ``add_new_mask`` on the reference slice, ``propagate_in_video`` forwards and
backwards, logits thresholded).

Volume: a ``--slices`` x ``--size`` x ``--size`` CT phantom (default 64 x 128 x 128; ``--size 256``
for the paper's slice size) from :func:`fewlabel.data.make_ct_phantom` (HU, liver label),
windowed to [0, 1] with :class:`fewlabel.transforms.CTWindow` (400 / 40 HU). Reference: the
liver mask of the middle slice. SAM 2 resizes every frame to its own input size (1024 px for the
released models), so its cost hardly depends on ``--size``.

Rows, each in a **fresh subprocess** (its own imports, model and volume; so that peak memory is
that configuration's alone):

- baseline ``"U-Net slice-by-slice"``: the 2D PolyCL U-Net
  (``build_network("polycl_unet", 1, 1, channels=[32..512])``, random init, eval,
  ``torch.inference_mode``) over the same slices with
  :class:`fewlabel.engines.SliceBySliceInferer` (``SimpleInferer``, 16 slices per call) -- what
  the pipeline costs without SAM 2;
- ``"SAM 2 tiny test model"``: :func:`fewlabel.sam.propagate.save_tiny_sam2` +
  ``build_sam2_propagator(path, "tiny")`` (64 px, ~650k parameters) over all slices, reference
  in the middle (the test suite's model; its masks mean nothing);
- ``"SAM 2.1 hiera tiny"``: the released ``sam2.1_hiera_t`` architecture (1024 px, ~39M
  parameters) built from its Hydra config (``fewlabel.sam.propagate.build_random_sam2``) with **random
  weights** -- no checkpoint is available offline; the compute cost does not depend on the weight
  values (the same layers run on every frame whatever the masks are; hole filling is off, as
  ``build_sam2_propagator`` sets it without SAM 2's CUDA extension). On 2 CPU cores one frame
  costs ~4-5 s (more under load or with 1 thread), so the default propagates through
  ``--real-slices`` slices (default 9: the middle slice
  and the 8 after it, forwards) rather than all of them. The memory bank is full (the reference +
  6 previous frames, SAM 2's ``num_maskmem=7``) from the 8th frame on, so those 9 slices
  measure every memory-bank size; the time for the whole volume with the reference in the
  middle (both directions) is then **estimated** from the per-frame times by memory-bank size
  and printed as such; ``--real-slices 64`` (any value >= ``--slices``) measures it directly
  (about 5-6 min on 2 idle cores).

Reported per row: seconds for the volume, seconds per slice, the ratio of seconds per slice to
the U-Net baseline, RSS after set-up, peak RSS during the runs (the ``VmHWM`` high-water mark,
reset via ``/proc/self/clear_refs`` after set-up; ``ru_maxrss`` of the whole subprocess too), and
for SAM 2 the time of each propagated frame. U-Net and tiny SAM 2: one warm-up run, then the
median of ``--repeats``; SAM 2.1 hiera tiny: one cold run. With CUDA present the rows are also run
on the GPU (all slices, ``torch.cuda.max_memory_allocated``). Saves
``benchmarks/results/sam2_propagation.json`` (``_quick`` with ``--quick``, ``_threads<N>`` with a
``--threads`` other than the default ``min(2, cores)`` of ``tests/conftest.py``).

Threads on a shared machine: when another process keeps a core busy, 2 torch threads make models
of many small operations wait at every OpenMP barrier: on the 2-core development machine the tiny
SAM 2 took ~0.6 s per frame with 2 threads next to one busy process and ~0.01 s with 1 thread
(the U-Net ~1.7x, SAM 2.1 hiera tiny is faster with 2). The run prints a note when the load
average is high; compare with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _timing import save_result, warn_if_loaded

RESULT_MARKER = "BENCH_RESULT_JSON "
UNET_CHANNELS = [32, 64, 128, 256, 512]  # the paper's U-Net (train.json's channels)
NUM_MASKMEM = 7  # SAM 2's memory bank: the conditioning frame + 6 previous frames
THREADS = max(1, min(2, os.cpu_count() or 1))  # as tests/conftest.py
DEFAULTS = {"slices": 64, "size": 128, "real_slices": 9, "repeats": 3}
QUICK = {"slices": 16, "size": 64, "real_slices": 3, "repeats": 1}
ROWS = {
    "unet": "U-Net slice-by-slice (baseline)",
    "sam2_tiny": "SAM 2 tiny test model",
    "sam2.1_hiera_t": "SAM 2.1 hiera tiny (random weights)",
}


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
    p.add_argument("--slices", type=int, default=d["slices"], help="slices of the volume (default 64)")
    p.add_argument("--size", type=int, default=d["size"], help="slice size in px (default 128; paper 256)")
    p.add_argument("--real-slices", type=int, default=d["real_slices"],
                   help="slices propagated by SAM 2.1 hiera tiny on the CPU (default 9; --slices for all)")
    p.add_argument("--repeats", type=int, default=d["repeats"], help="timed runs of the U-Net and tiny SAM 2")
    p.add_argument("--threads", type=int, default=THREADS,
                   help=f"torch.set_num_threads (default {THREADS}, as tests/conftest.py)")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA rows even when a GPU is present")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one row in this process
    args = p.parse_known_args(argv)[0]
    if args.slices < 8 or args.size < 16 or args.size % 16 or args.repeats < 1:
        p.error("need --slices >= 8, --size a multiple of 16 (the U-Net's 5 stages), --repeats >= 1")
    # forwards from the middle slice there are slices - slices // 2 slices; --real-slices >= --slices: all of them
    if args.real_slices < args.slices:
        args.real_slices = max(2, min(args.real_slices, args.slices - args.slices // 2))
    return args


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (``VmHWM``) to the current RSS; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# one row, in a subprocess
# ---------------------------------------------------------------------------------------------


def _volume(slices: int, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(Z, H, W)`` windowed phantom in [0, 1], its ``(Z, H, W)`` liver label and the middle slice."""
    from fewlabel.data import make_ct_phantom
    from fewlabel.transforms import CTWindow

    hu, label, _ = make_ct_phantom((slices, size, size), seed=0)
    vol = CTWindow(400.0, 40.0)(torch.from_numpy(hu.astype(np.float32))).numpy()
    ref = slices // 2
    if not label[ref].any():
        raise RuntimeError(f"the phantom's middle slice {ref} has no liver; the reference mask would be empty")
    return vol, label, ref


class _Timeline:
    """Times SAM 2's ``init_state``, ``add_new_mask`` and every frame ``propagate_in_video`` yields,
    by wrapping the predictor instance's methods (the library code is unchanged)."""

    def __init__(self, predictor: Any, sync: Any) -> None:
        self.sync = sync
        self.reset()
        for name in ("init_state", "add_new_mask"):
            setattr(predictor, name, self._phase(name, getattr(predictor, name)))
        original = predictor.propagate_in_video

        def propagate_in_video(state: Any, *args: Any, **kwargs: Any) -> Any:
            last = time.perf_counter()
            for out in original(state, *args, **kwargs):
                self.sync()
                now = time.perf_counter()
                self.frames.append({"reverse": bool(kwargs.get("reverse", False)), "frame": int(out[0]),
                                    "seconds": now - last, "rss_mib": _status_mib("VmRSS")})
                yield out
                last = time.perf_counter()  # the caller's thresholding is not the frame's

        predictor.propagate_in_video = propagate_in_video

    def reset(self) -> None:
        self.phases: dict[str, float] = {}
        self.frames: list[dict[str, Any]] = []
        self.state: dict[str, Any] | None = None  # the last inference state (to size what it holds)

    def state_mib(self) -> dict[str, float] | None:
        """MiB the inference state holds per frame: the resized frame images, and SAM 2's outputs
        (memory features, masks, object pointers) per tracked frame."""
        if self.state is None:
            return None
        images = self.state["images"]
        n = int(self.state["num_frames"])
        image_bytes = sum(t.nbytes for t in images) if isinstance(images, (list, tuple)) else images.nbytes
        seen: set[int] = set()
        frames = 0
        for obj in self.state["output_dict_per_obj"].values():
            for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
                frames += len(obj[key])
        output_bytes = _tensor_bytes(self.state["output_dict_per_obj"], seen)
        return {"frames": n, "tracked_frames": frames, "image_per_frame": image_bytes / n / 2**20,
                "outputs_per_tracked_frame": output_bytes / max(frames, 1) / 2**20}

    def _phase(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0
            if name == "init_state":
                self.phases["rss_after_init_state_mib"] = _status_mib("VmRSS") or 0.0
                self.state = out
            return out

        return timed


def _tensor_bytes(obj: Any, seen: set[int]) -> int:
    """Bytes of the distinct tensors in nested dicts / lists / tuples."""
    if isinstance(obj, torch.Tensor):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def _build_sam2(kind: str, device: torch.device, tmp: Path) -> Any:
    from fewlabel.sam.propagate import build_random_sam2, build_sam2_propagator, save_tiny_sam2

    if kind == "sam2_tiny":
        return build_sam2_propagator(save_tiny_sam2(tmp / "tiny_sam2.pt"), "tiny", device)
    torch.manual_seed(0)
    return build_random_sam2(kind, device)  # the released architecture, random weights


def _worker(cfg: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    kind = cfg["kind"]
    vol, label, ref = _volume(cfg["slices"], cfg["size"])
    out: dict[str, Any] = {"kind": kind, "device": cfg["device"], "threads": torch.get_num_threads(),
                           "reference_slice": ref}
    with tempfile.TemporaryDirectory(prefix="bench-sam2-") as tmp:
        if kind == "unet":
            from monai.inferers import SimpleInferer

            from fewlabel.engines import SliceBySliceInferer
            from fewlabel.networks import build_network

            torch.manual_seed(0)
            net = build_network("polycl_unet", in_channels=1, out_channels=1, channels=UNET_CHANNELS).to(device).eval()
            inferer = SliceBySliceInferer(SimpleInferer(), slice_batch=16)
            x = torch.from_numpy(vol).permute(1, 2, 0)[None, None].to(device)  # (1, 1, H, W, Z), axial last
            n_slices = vol.shape[0]

            def run() -> None:
                with torch.inference_mode():
                    logits = inferer(x, net)
                sync()
                assert logits.shape == (1, 1, *vol.shape[1:], vol.shape[0])

            runs = {"warmup": 1, "repeats": cfg["repeats"]}
            timeline = None
        else:
            from fewlabel.sam.propagate import propagate_volume

            predictor = _build_sam2(kind, device, Path(tmp))
            timeline = _Timeline(predictor, sync)
            out["parameters"] = sum(p.numel() for p in predictor.parameters())
            out["image_size"] = int(predictor.image_size)
            if kind == "sam2_tiny" or cuda or cfg["real_slices"] >= vol.shape[0]:
                slices, n_slices = None, vol.shape[0]  # all slices, reference in the middle
                runs = {"warmup": 1, "repeats": cfg["repeats"]} if kind == "sam2_tiny" or cuda else \
                    {"warmup": 0, "repeats": 1}
            else:  # the reference and the slices after it: forwards only, every memory-bank size
                slices = list(range(ref, ref + cfg["real_slices"]))
                n_slices = len(slices)
                runs = {"warmup": 0, "repeats": 1}
            out["propagated_slices"] = "all" if slices is None else [slices[0], slices[-1]]
            masks: list[np.ndarray] = []

            def run() -> None:
                timeline.reset()
                masks[:] = [propagate_volume(predictor, vol, ref, label[ref], slices=slices, tmp_dir=tmp)]
                sync()

        out["n_slices"] = n_slices
        out["rss_after_setup_mib"] = _status_mib("VmRSS")
        out["peak_rss_reset"] = _reset_peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            out["cuda_memory_allocated_after_setup_mib"] = torch.cuda.memory_allocated() / 2**20
        for _ in range(runs["warmup"]):
            run()
        times = []
        for _ in range(runs["repeats"]):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        out["runs"] = runs
        out["seconds_per_volume"] = statistics.median(times)
        out["min_seconds_per_volume"] = min(times)
        out["load_average_1min_after_runs"] = os.getloadavg()[0]
        out["seconds_per_slice"] = out["seconds_per_volume"] / n_slices
        out["raw_seconds"] = times
        out["peak_rss_during_runs_mib"] = _status_mib("VmHWM") if out["peak_rss_reset"] else None
        if out["peak_rss_during_runs_mib"] is not None and out["rss_after_setup_mib"] is not None:
            out["peak_rss_increase_over_setup_mib"] = out["peak_rss_during_runs_mib"] - out["rss_after_setup_mib"]
        out["ru_maxrss_process_mib"] = _maxrss_mib()
        if cuda:
            out["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if timeline is not None:  # the last run's phases and frames
            out["phases_seconds"] = dict(timeline.phases)
            out["frames"] = timeline.frames
            out["state_mib"] = timeline.state_mib()
            out["reference_mask_kept"] = bool(np.array_equal(masks[0][ref], label[ref] != 0))
            timeline.reset()
    return out


def _run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one row in a fresh Python process; return its result dict."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = (proc.stderr or proc.stdout)[-3000:]
    raise RuntimeError(f"worker {cfg['kind']} on {cfg['device']} failed (exit {proc.returncode}):\n{tail}")


# ---------------------------------------------------------------------------------------------
# the whole-volume estimate for SAM 2.1 hiera tiny on the CPU
# ---------------------------------------------------------------------------------------------


def _bank(step: int) -> int:
    """Non-conditioning memories a frame ``step`` frames from the reference attends to (0 .. 6)."""
    return min(step - 1, NUM_MASKMEM - 1)


def _estimate_full(row: dict[str, Any], slices: int, ref: int) -> dict[str, Any]:
    """Whole-volume time of a forwards-only partial run, from its per-frame times by memory-bank size.

    Frame ``k`` steps after the reference attends to ``min(k - 1, 6)`` earlier frames besides the
    reference; with the reference in the middle each direction has frames ``k = 1 .. n``. The
    fixed part (``init_state``, ``add_new_mask``) is kept as measured (``init_state`` also decodes
    every frame: a few tens of ms per extra frame) and the reference frame's own yields (memory
    encoding of the prompt) are kept as measured; the rest outside the frames (JPEG writing,
    thresholding) is scaled with the number of frames.
    """
    forward = [f for f in row["frames"] if not f["reverse"]]
    propagated = forward[1:]  # forward[0] is the reference frame itself (prompted, not propagated)
    by_bank: dict[int, list[float]] = {}
    for k, f in enumerate(propagated, start=1):
        by_bank.setdefault(_bank(k), []).append(f["seconds"])
    t_bank = {b: statistics.mean(v) for b, v in by_bank.items()}
    top = max(t_bank)
    per_step = lambda k: t_bank.get(_bank(k), t_bank[top])  # noqa: E731
    n_fwd, n_bwd = slices - 1 - ref, ref
    frames_s = sum(per_step(k) for k in range(1, n_fwd + 1)) + sum(per_step(k) for k in range(1, n_bwd + 1))
    reference_yields = forward[0]["seconds"] + sum(f["seconds"] for f in row["frames"] if f["reverse"])
    fixed = (row["phases_seconds"].get("init_state", 0.0) + row["phases_seconds"].get("add_new_mask", 0.0)
             + reference_yields)
    rest = row["seconds_per_volume"] - fixed - sum(f["seconds"] for f in propagated)
    total = fixed + frames_s + rest * slices / row["n_slices"]
    # memory: the inference state holds every frame's resized image from init_state on, and SAM 2's
    # outputs (memory features etc.) of every tracked frame
    per_frame = row["state_mib"]["image_per_frame"] + row["state_mib"]["outputs_per_tracked_frame"]
    peak = row["peak_rss_during_runs_mib"] or row["ru_maxrss_process_mib"]
    return {
        "slices": slices,
        "reference_slice": ref,
        "seconds_per_volume": total,
        "seconds_per_slice": total / slices,
        "seconds_per_frame_by_memory_bank_size": {str(b): t for b, t in sorted(t_bank.items())},
        "is_lower_bound": top < NUM_MASKMEM - 1,
        "peak_rss_mib": peak + (slices - row["n_slices"]) * per_frame,
        "state_mib_per_frame": per_frame,
        "method": "measured per-frame times by memory-bank size (0..6 earlier frames), summed over both directions "
                  "from the middle slice; init_state + add_new_mask + the reference frame's yields as measured; other "
                  "time (JPEG writing, thresholding) scaled with the frame count. Memory: measured peak + per extra "
                  "frame what the inference state holds per frame (its resized float32 image and SAM 2's outputs, "
                  "summed from the state's tensors).",
    }


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _print(dev: str, rows: dict[str, dict[str, Any]], estimate: dict[str, Any] | None) -> None:
    base = rows["unet"]["seconds_per_slice"]
    cuda = dev == "cuda"
    mem_head = "cuda peak MiB" if cuda else "peak RSS MiB"
    print(f"[{dev}] {'configuration':<38}{'slices':>7}{'s/volume':>10}{'s/slice':>10}{'x U-Net':>10}"
          f"{'RSS set-up':>12}{mem_head:>15}{'+ over set-up':>15}")
    for kind, name in ROWS.items():
        r = rows.get(kind)
        if r is None:
            continue
        mem = r.get("cuda_max_memory_allocated_mib") if cuda else r["peak_rss_during_runs_mib"]
        mem = r["ru_maxrss_process_mib"] if mem is None else mem
        extra = mem - (r.get("cuda_memory_allocated_after_setup_mib", 0.0) if cuda else r["rss_after_setup_mib"])
        print(f"[{dev}] {name:<38}{r['n_slices']:>7}{r['seconds_per_volume']:>10.2f}{r['seconds_per_slice']:>10.3f}"
              f"{r['seconds_per_slice'] / base:>10.1f}{r['rss_after_setup_mib']:>12.0f}{mem:>15.0f}{extra:>15.0f}")
        if kind != "unet" and r.get("frames"):
            f = [x["seconds"] for x in r["frames"] if not x["reverse"]][1:]
            ph = r["phases_seconds"]
            if f:
                print(f"[{dev}]   init_state {ph.get('init_state', 0):.2f} s, "
                      f"add_new_mask {ph.get('add_new_mask', 0):.2f}"
                      f" s, forward frames (s): {' '.join(f'{t:.2f}' for t in f[:12])}{' ...' if len(f) > 12 else ''}")
    if estimate is not None:
        e = estimate
        bound = " (lower bound: memory bank not full in the run)" if e["is_lower_bound"] else ""
        print(f"[{dev}] {'SAM 2.1 hiera tiny, ESTIMATED':<38}{e['slices']:>7}{e['seconds_per_volume']:>10.1f}"
              f"{e['seconds_per_slice']:>10.3f}{e['seconds_per_slice'] / base:>10.1f}{'':>12}"
              f"{e['peak_rss_mib']:>15.0f}{bound}")
        bank = ", ".join(f"{b}: {t:.2f}" for b, t in e["seconds_per_frame_by_memory_bank_size"].items())
        print(f"[{dev}]   s/frame by number of earlier frames in the memory bank: {bank}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker is not None:
        print(RESULT_MARKER + json.dumps(_worker(json.loads(args.worker))), flush=True)
        return {}
    torch.set_num_threads(args.threads)
    warn_if_loaded(args.threads)
    start = time.perf_counter()
    ref = args.slices // 2
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "default",
        "volume": {"slices": args.slices, "size": [args.size, args.size], "reference_slice": ref,
                   "source": "make_ct_phantom(seed=0) windowed 400/40 HU to [0, 1]; reference = liver mask of the "
                             "middle slice"},
        "baseline": f"U-Net slice-by-slice: build_network('polycl_unet', channels={UNET_CHANNELS}) random init, "
                    "SliceBySliceInferer(SimpleInferer(), slice_batch=16), inference_mode",
        "measured": {
            "sam2_tiny": "save_tiny_sam2 + build_sam2_propagator(path, 'tiny') (64 px), propagate_volume over all "
                         "slices",
            "sam2.1_hiera_t": "sam2.1_hiera_t architecture from its config (build_random_sam2), RANDOM weights (no "
                              "checkpoint offline; compute cost does not depend on weight values), 1024 px, "
                              f"propagate_volume over {args.real_slices} slices from the middle one on the CPU",
        },
        "memory": "per configuration in a fresh subprocess: RSS after set-up, peak RSS (VmHWM reset after set-up) "
                  "over the runs, ru_maxrss of the subprocess",
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    for dev in devices:
        rows = {}
        for kind in ROWS:
            cfg = {"kind": kind, "device": dev, "slices": args.slices, "size": args.size, "threads": args.threads,
                   "repeats": args.repeats, "real_slices": args.real_slices}
            rows[kind] = _run_worker(cfg)
            print(f"[{dev}] {ROWS[kind]}: {rows[kind]['seconds_per_volume']:.2f} s", flush=True)
        base = rows["unet"]["seconds_per_slice"]
        for r in rows.values():
            r["ratio_seconds_per_slice_to_unet"] = r["seconds_per_slice"] / base
        real = rows["sam2.1_hiera_t"]
        estimate = None
        if real["n_slices"] < args.slices:
            estimate = _estimate_full(real, args.slices, ref)
            estimate["ratio_seconds_per_slice_to_unet"] = estimate["seconds_per_slice"] / base
        result[dev] = {"rows": rows, "sam2.1_hiera_t_estimate_whole_volume": estimate}
        if dev == "cuda":
            result["gpu"] = torch.cuda.get_device_name()
    if "cuda" not in result:
        result["cuda"] = "not available" if not torch.cuda.is_available() else "skipped (--no-cuda)"
    result["total_runtime_seconds"] = time.perf_counter() - start
    result["load_average_1min_at_end"] = os.getloadavg()[0]

    print(f"SAM 2 propagation of one mask through a {args.slices} x {args.size} x {args.size} CT phantom "
          f"(reference slice {ref}); SAM 2.1 hiera tiny has RANDOM weights (no checkpoint offline; compute cost "
          "does not depend on weight values)")
    for dev in ("cpu", "cuda"):
        r = result[dev]
        if isinstance(r, dict):
            _print(dev, r["rows"], r["sam2.1_hiera_t_estimate_whole_volume"])
        else:
            print(f"[{dev}] {r}")
    print(f"total runtime {result['total_runtime_seconds']:.0f} s")
    suffix = ("_quick" if args.quick else "") + (f"_threads{args.threads}" if args.threads != THREADS else "")
    save_result("sam2_propagation" + suffix, result)
    return result


if __name__ == "__main__":
    main()
