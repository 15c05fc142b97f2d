"""Engine overhead: each bundle's ``SupervisedTrainer`` with its handlers vs a bare PyTorch loop.

For each bundle the main training stage (``train.json``; ``smoke.json`` on top unless ``--full``) is
initialised as ``monai.bundle run`` does (``ConfigWorkflow``: its ``initialize`` steps, so the
training-state handler is attached; see ``_trainer.py``). Then, in the same process, on the same data
loader, network, loss, optimizer, inferer and ``prepare_batch``:

- **engine**: ``trainer.run()`` for ``--epochs`` epochs, with every handler of ``train#handlers``
  except ``ValidationHandler`` (validation is its own cost, not the engine's) and those the
  ``initialize`` steps attach (training state: :class:`fewlabel.handlers.TrainingState`);
- **engine, save with checksums** (before issue 23): the same with the training state written as it
  was, with the CRC-32 of every zip record (``torch.load`` never checks them);
- **engine without training state**: the same with the training-state save detached, to name what
  the per-epoch save (everything a crashed run needs to resume bit for bit) costs;
- **bare** (baseline): a ``for`` loop over the loader doing what ``SupervisedTrainer._iteration``
  does (``prepare_batch``, ``zero_grad``, forward through the inferer, ``loss.mean()``,
  ``backward``, ``step``; autocast and the grad scaler when the trainer uses AMP) and nothing else.

One warm-up epoch of the bare loop runs first; then engine, engine without state and bare alternate
``--rounds`` times and the fastest run of each is compared (on a shared machine other processes only
ever add time). ``state_save_s`` / ``state_save_checksums_s``: the fastest of ``--rounds`` direct
calls of the save, now and as it was.
Goal (issue 23): ``ratio = engine / bare <= 1.05``.

The data pipeline's throughput is ``bench_data_pipeline.py``'s. Saves
``benchmarks/results/engine_overhead.json`` (``_full`` with ``--full``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from _trainer import STAGE, bare_loop, load_trainer, sync
from _trainer import main as trainer_main


def child(bundle: str, full: bool, epochs: int, rounds: int, threads: int) -> dict[str, Any]:
    import fewlabel.networks
    from ignite.engine import Events

    wf, trainer, handlers = load_trainer(bundle, full, epochs, threads)
    state = wf.parser.get_parsed_content("training_state")
    bare = bare_loop(trainer)
    write = fewlabel.networks.write_weights_file

    def with_checksums(obj: Any, path: Any, checksums: bool = True) -> Any:
        return write(obj, path)  # the save as it was before (CRC-32 of every record)

    def engine(variant: str) -> float:
        if variant == "without_state":
            trainer.remove_event_handler(state.save, Events.EPOCH_COMPLETED)
        if variant == "checksums":
            fewlabel.networks.write_weights_file = with_checksums
        trainer.state.max_epochs = trainer.state.epoch + epochs  # ignite continues from the epoch it reached
        t0 = time.perf_counter()
        trainer.run()
        sync()
        seconds = time.perf_counter() - t0
        fewlabel.networks.write_weights_file = write
        if variant == "without_state":
            trainer.add_event_handler(Events.EPOCH_COMPLETED(every=state.every), state.save)
        return seconds

    def save(variant: str) -> float:
        if variant == "checksums":
            fewlabel.networks.write_weights_file = with_checksums
        t0 = time.perf_counter()
        state.save()
        seconds = time.perf_counter() - t0
        fewlabel.networks.write_weights_file = write
        return seconds

    bare(1)  # warm-up: caches, allocator, lazy imports
    runs: dict[str, list[float]] = {k: [] for k in ("engine", "checksums", "without_state", "bare", "save",
                                                    "save_checksums")}
    steps = 0
    for _ in range(rounds):
        for variant in ("engine", "checksums", "without_state"):
            runs[variant].append(engine(variant))
        t0 = time.perf_counter()
        steps = bare(epochs)
        runs["bare"].append(time.perf_counter() - t0)
        runs["save"].append(save("engine"))
        runs["save_checksums"].append(save("checksums"))
    best = {k: min(v) for k, v in runs.items()}  # the least disturbed run: other processes only ever add time
    e, b = best["engine"], best["bare"]
    return {"bundle": bundle, "stage": STAGE, "size": "full" if full else "smoke", "epochs": epochs,
            "iterations_per_run": steps, "device": str(trainer.state.device), "amp": bool(trainer.amp),
            "handlers": [str(h.get("_target_")) for h in handlers if isinstance(h, dict)],
            "engine_s": e, "bare_s": b, "ratio": e / b,
            "engine_checksums_s": best["checksums"], "ratio_before": best["checksums"] / b,
            "engine_without_state_s": best["without_state"], "ratio_without_state": best["without_state"] / b,
            "state_save_s": best["save"], "state_save_checksums_s": best["save_checksums"],
            "state_file_mb": state.path.stat().st_size / 1e6, "runs_s": runs,
            "per_iteration_overhead_ms": 1e3 * (e - b) / max(steps, 1)}


def main() -> dict[str, Any]:
    def report(name: str, r: dict[str, Any]) -> None:
        print(f"{name}: engine {r['engine_s']:.2f} s (before: {r['engine_checksums_s']:.2f} s; without the training-"
              f"state save: {r['engine_without_state_s']:.2f} s) vs bare {r['bare_s']:.2f} s over "
              f"{r['iterations_per_run']} iterations -> {r['ratio']:.3f}x (before {r['ratio_before']:.3f}x, without "
              f"the save {r['ratio_without_state']:.3f}x); save {r['state_save_s']:.2f} s/epoch (before "
              f"{r['state_save_checksums_s']:.2f} s, {r['state_file_mb']:.0f} MB)", flush=True)

    return trainer_main(__file__, __doc__.splitlines()[0], child, "engine_overhead",
                        {"baseline": "bare PyTorch loop: prepare_batch, zero_grad, forward, loss, backward, step",
                         "measured": "the bundle's SupervisedTrainer.run() with its handlers (no validation)",
                         "goal_ratio": 1.05},
                        report)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
