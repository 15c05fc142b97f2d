"""``POST /train/<bundle>``: the bundle's own few-label protocol on the MONAI Label datastore.

MONAI Label's stock trainers see only labelled images. :class:`ProtocolTrainTask` (a MONAI Label
``TrainTask``, added by fewlabel's app for every bundle whose ``configs/protocol.json`` has a
``label_server`` section) runs the stages that section names, with the datastore's saved labels
(tag ``final``) as the labelled set and its other images as the unlabelled set::

    "label_server": {
        "min_labels": 3,                     # fewer saved labels: the task ends ERROR, weights unchanged
        "stages": [
            {"stage": "pretrain", "uses": "images"},            # a stage of the protocol
            {"stage": "finetune", "uses": "labels", "weights": "models/model.pt"},
            {"name": "extra", "configs": ["train.json"], "uses": "labels",   # or one of its own
             "min_labels": 3, "writes": ["models/model.pt"], "weights": "models/model.pt"}
        ],
        "paths": {"sam_checkpoint": "the SAM teacher's weights"},  # request parameters naming files
        "overrides": {"channel_policy": "convert"}                 # config values of every stage
    }

- ``uses: images``: the stage reads the images only (every image of the bundle's kind, labelled or
  not; its datalist ``images.json`` has no label). It runs once per image set: while the list of
  images (ids, sizes, times) is unchanged (:func:`image_fingerprint`), a later request reuses it.
- ``uses: labels``: the stage reads ``datalist.json``: ``training`` / ``validation`` (the saved labels,
  ``val_split`` of them held out) and ``unlabelled`` (the images without a label); it runs every time.
  A stage with its own ``min_labels`` is left out when there are fewer labels.
- ``weights``: the served weights come from the last stage run that names them; they replace the
  app's ``models/model.pt`` (checked to load strictly into the served network, then an atomic
  rename) only when every stage finished. A failing stage ends the task ``ERROR`` with its reason.

Each stage is a ``python -m monai.bundle run`` child process (:meth:`fewlabel.sweep.spec.Run.command`)
of the bundle's own configs, with the user's overrides (``label-server --overrides``, e.g. smoke
sizes), the section's, the stage's and the request's; its output goes to the task's log (the
server log and ``GET /train/``) and to ``<app>/model/<bundle>/train/run/<stage>.log``; per-stage
status is kept in ``train/status.json`` (``/info/``'s ``train_stats``).

Request parameters: ``max_epochs`` (or ``epochs``; 0 keeps the bundle's), ``val_split`` (default
0.2), ``device`` (``cpu`` / ``cuda``), ``overrides`` (config ids for every stage) and the section's
``paths`` (checked to exist before anything runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fewlabel.bundle import PROTOCOL_FILE
from fewlabel.errors import DataError, FewLabelError
from fewlabel.label_server.server_protocol import (
    PLAN_FILE,
    SECTION,
    ServerProtocol,
    ServerStage,
    load_server_protocol,
)

try:  # the server's environment
    from monailabel.interfaces.tasks.train import TrainTask
except ImportError:  # fewlabel's main environment: everything but serving
    class TrainTask:  # type: ignore[no-redef]
        """Stand-in for MONAI Label's ``TrainTask`` where MONAI Label is not installed."""

        def __init__(self, description: str) -> None:
            self.description = description

__all__ = ["SECTION", "PLAN_FILE", "ServerStage", "ServerProtocol", "load_server_protocol", "image_fingerprint",
           "write_datalists", "ProtocolTraining", "ProtocolTrainTask", "protocol_trainers"]

_VOLUME_TYPES = (".nii", ".nii.gz")
_FRAME_TYPES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _takes(path: str, kind: str) -> bool:
    name = path.lower()
    return name.endswith(_VOLUME_TYPES if kind == "volume" else _FRAME_TYPES)


def image_fingerprint(images: Sequence[str]) -> str:
    """A short hash of the image files (sorted paths, sizes, modification times): what an
    images-only stage depends on."""
    h = hashlib.sha256()
    for p in sorted(images):
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def write_datalists(labelled: Mapping[str, tuple[str, str]], unlabelled: Mapping[str, str], folder: Path,
                    val_split: float = 0.2) -> tuple[Path, Path]:
    """Write ``folder/datalist.json`` (labelled stages) and ``folder/images.json`` (images-only stages).

    Args:
        labelled: ``{image id: (image path, label path)}``.
        unlabelled: ``{image id: image path}``.
        folder: where the files go (paths in them are absolute).
        val_split: the share of the labelled images held out for validation (at least one when
            there are two or more; the last ones in id order).

    ``images.json`` depends on the image list only: every image, without labels, in ``training``,
    except one in five (at least one; the last in id order) in ``validation``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ids = sorted(labelled)
    n_val = min(max(1, round(len(ids) * val_split)), len(ids) - 1) if len(ids) > 1 and val_split > 0 else 0
    item = {i: {"image": labelled[i][0], "label": labelled[i][1], "patient": i, "scan": i} for i in ids}
    datalist = {"training": [item[i] for i in ids[:len(ids) - n_val]],
                "validation": [item[i] for i in ids[len(ids) - n_val:]],
                "unlabelled": [{"image": unlabelled[i], "patient": i, "scan": i} for i in sorted(unlabelled)]}
    every = {**{i: labelled[i][0] for i in ids}, **unlabelled}
    names = sorted(every)
    n_img_val = max(1, len(names) // 5) if len(names) > 1 else 0
    images = {"training": [{"image": every[i], "patient": i, "scan": i} for i in names[:len(names) - n_img_val]],
              "validation": [{"image": every[i], "patient": i, "scan": i} for i in names[len(names) - n_img_val:]]}
    out = []
    for name, content in (("datalist.json", datalist), ("images.json", images)):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(json.dumps(content, indent=2))
        os.replace(tmp, folder / name)
        out.append(folder / name)
    return out[0], out[1]


def _write_json(path: Path, content: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    os.replace(tmp, path)


class ProtocolTraining:
    """One ``/train`` request: the bundle's server stages on the datastore's images and labels.

    Args:
        protocol: the bundle's section (:func:`load_server_protocol`).
        source: the bundle's folder (its configs are run; ``bundle_root``).
        folder: the served bundle's app folder (``<app>/model/<bundle>``): ``models/model.pt`` is
            the served weights; the work goes to ``folder/train``.
        overrides: the user's overrides for this bundle (``label-server --overrides``).
        log: receives the progress lines (the task's output).
    """

    def __init__(self, protocol: ServerProtocol, source: str | os.PathLike, folder: str | os.PathLike,
                 overrides: Mapping[str, Any] | None = None, log: Callable[[str], None] = print) -> None:
        self.protocol = protocol
        self.source = Path(source)
        self.folder = Path(folder)
        self.work = self.folder / "train"
        self.user_overrides = dict(overrides or {})
        self.log = log
        self.status: dict[str, Any] = {}

    # ------------------------------------------------------------------ the request
    def request_overrides(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Config values the request sets, its ``paths`` checked.

        Raises:
            FewLabelError: a file named in ``paths`` (e.g. the SAM teacher's weights) does not exist.
        """
        out: dict[str, Any] = dict(request.get("overrides") or {})
        epochs = request.get("epochs", request.get("max_epochs"))
        if epochs not in (None, "", 0, "0"):
            out["epochs"] = int(epochs)
        device = request.get("device")
        if isinstance(device, list):
            device = device[0] if device else None
        if device and device != "auto":
            out["device"] = f"$torch.device({str(device)!r})"
        for key, what in self.protocol.paths.items():
            value = request.get(key)
            if value in (None, ""):
                continue
            if not Path(str(value)).is_file():
                raise FewLabelError(f"{self.protocol.bundle}: {what} not found: {value} (request parameter "
                                    f"'{key}'). Give the path of the file on the server's machine.")
            out[key] = str(Path(str(value)).resolve())
        return out

    def split(self, datastore: Any) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
        """``({id: (image, label)}, {id: image})`` of the datastore's images of the bundle's kind."""
        labelled, unlabelled = {}, {}
        for image_id in sorted(datastore.list_images()):
            image = datastore.get_image_uri(image_id)
            if not image or not _takes(image, self.protocol.kind):
                continue
            label = datastore.get_label_uri(image_id, "final")
            if label and os.path.isfile(label):
                labelled[image_id] = (image, label)
            else:
                unlabelled[image_id] = image
        return labelled, unlabelled

    # ------------------------------------------------------------------ running
    def __call__(self, request: Mapping[str, Any], datastore: Any) -> dict[str, Any]:
        """Run the stages; return ``{"stages": ..., "weights": ...}``.

        Raises:
            FewLabelError: too few saved labels, a missing file of ``paths``, a failing stage, or
                weights that do not load into the served network; the served weights are unchanged.
        """
        p = self.protocol
        extra = self.request_overrides(request)
        labelled, unlabelled = self.split(datastore)
        kind = "volumes" if p.kind == "volume" else "images"
        if len(labelled) < p.min_labels:
            raise FewLabelError(
                f"{p.bundle} needs at least {p.min_labels} saved labels (tag 'final') of its {kind} to train; "
                f"the datastore has {len(labelled)} of {len(labelled) + len(unlabelled)}. Save labels for "
                f"{p.min_labels - len(labelled)} more {kind} (PUT /datastore/label?image=<id>&tag=final); "
                "the served weights are unchanged.")
        stages = p.planned(len(labelled))
        self.work.mkdir(parents=True, exist_ok=True)
        run = self.work / "run"
        if run.exists():
            shutil.rmtree(run)
        (run / "models").mkdir(parents=True)
        datalist, images = write_datalists(labelled, unlabelled, run, float(request.get("val_split", 0.2)))
        every = sorted([v[0] for v in labelled.values()] + list(unlabelled.values()))
        fingerprint = image_fingerprint(every)
        shared = self.work / "images" / fingerprint
        self._drop_other_image_sets(fingerprint)
        self._link_inputs(run / "models", stages)
        self.status = {"bundle": p.bundle, "state": "running", "labelled": sorted(labelled),
                       "unlabelled": sorted(unlabelled), "fingerprint": fingerprint,
                       "stages": {s.name: "pending" for s in stages}, "started": time.time()}
        self._save_status()
        self.log(f"fewlabel: training {p.bundle} with its protocol ({p.description}): {len(labelled)} labelled "
                 f"and {len(unlabelled)} unlabelled {kind}; stages {', '.join(s.name for s in stages)}")
        if len(stages) < len(p.stages):
            left = [s.name for s in p.stages if s not in stages]
            self.log(f"fewlabel: left out {left}: they need more saved labels "
                     f"({', '.join(f'{s.name}: {s.min_labels}' for s in p.stages if s not in stages)})")
        weights = None
        try:
            for i, stage in enumerate(stages, 1):
                head = f"fewlabel: stage {i}/{len(stages)} '{stage.name}'"
                if stage.uses == "images":
                    self.log(f"{head} (images only, labels not read) on {len(every)} {kind}, "
                             f"{len(unlabelled)} of them unlabelled: {', '.join(sorted(unlabelled)) or '-'}")
                    self._run_images_stage(stage, shared, run, images, extra, head)
                else:
                    used = (f"; unlabelled {kind} used: {', '.join(sorted(unlabelled)) or '-'}"
                            if stage.unlabelled else "")
                    self.log(f"{head} on the saved labels: {len(labelled)} labelled {kind} "
                             f"({', '.join(sorted(labelled))}){used}")
                    self._run_stage(stage, run, datalist, extra, head)
                if stage.weights:
                    weights = run / stage.weights
        except BaseException:
            self.status["state"] = "failed"
            self._save_status()
            raise
        served = self._swap_weights(weights)
        self.status.update(state="done", finished=time.time(), weights=str(weights))
        self._save_status()
        self.log(f"fewlabel: {p.bundle} trained; serving {served} (from stage output {weights})")
        return {"bundle": p.bundle, "stages": [s.name for s in stages], "labelled": len(labelled),
                "unlabelled": len(unlabelled), "weights": str(served)}

    def _save_status(self) -> None:
        _write_json(self.work / "status.json", self.status)

    def _drop_other_image_sets(self, keep: str) -> None:
        root = self.work / "images"
        if root.is_dir():
            for f in root.iterdir():
                if f.name != keep:
                    shutil.rmtree(f, ignore_errors=True)

    def _link_inputs(self, models: Path, stages: Sequence[ServerStage]) -> None:
        """Link the app's input weights (stage-1, SAM, ... files; not ``model.pt``, nor files a stage writes)."""
        written = {Path(w).name for s in self.protocol.stages for w in (*s.writes, *([s.weights] if s.weights else []))}
        src = self.folder / "models"
        for f in sorted(src.iterdir()) if src.is_dir() else []:
            if f.name == "model.pt" or f.name in written or f.name.startswith(".") or f.name.endswith(".bak"):
                continue
            if f.is_file():
                (models / f.name).symlink_to(f.resolve())

    def _overrides(self, stage: ServerStage, folder: Path, datalist: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.user_overrides, "dataset_dir": str(datalist.parent), "datalist": datalist.name,
                **self.protocol.overrides, **stage.overrides, **extra,
                "ckpt_dir": str(folder / "models"), "output_dir": str(folder / stage.name)}

    def _run_images_stage(self, stage: ServerStage, shared: Path, run: Path, images: Path,
                          extra: Mapping[str, Any], head: str) -> None:
        from fewlabel.sweep.execute import adopt_shared

        if (shared / stage.name / ".done").is_file():
            self.log(f"{head}: reused (the image set is unchanged since it ran: {shared})")
            self.status["stages"][stage.name] = "reused"
        else:
            (shared / "models").mkdir(parents=True, exist_ok=True)
            kept = shared / "images.json"
            shutil.copyfile(images, kept)
            self._run_stage(stage, shared, kept, extra, head)
        adopt_shared(run, stage.name, shared)

    def _run_stage(self, stage: ServerStage, folder: Path, datalist: Path, extra: Mapping[str, Any],
                   head: str) -> None:
        from fewlabel.sweep.execute import die_with_parent, log_tail
        from fewlabel.sweep.spec import Run, SweepStage

        runner = Run(str(self.source), "label_server", {}, 0, folder, (), {})
        sweep_stage = SweepStage(stage.name, stage.configs)
        _write_json(folder / f"{stage.name}.overrides.json", self._overrides(stage, folder, datalist, extra))
        command = runner.command(sweep_stage, self.source)
        log_path = folder / f"{stage.name}.log"
        self.status["stages"][stage.name] = "running"
        self._save_status()
        t0 = time.time()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        die = die_with_parent if sys.platform.startswith("linux") else None  # no stage outlives its task
        with open(log_path, "w") as log:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    cwd=folder, preexec_fn=die)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                self.log(f"[{stage.name}] {line.rstrip()}")
            rc = proc.wait()
        if rc != 0:
            self.status["stages"][stage.name] = "failed"
            raise FewLabelError(f"{self.protocol.bundle}: stage '{stage.name}' failed (exit status {rc}); the served "
                                f"weights are unchanged. Log: {log_path}. Last lines:\n{log_tail(log_path, 15)}")
        (folder / stage.name).mkdir(parents=True, exist_ok=True)
        _write_json(folder / stage.name / ".done", {"duration": time.time() - t0})
        self.status["stages"][stage.name] = "done"
        self._save_status()
        self.log(f"{head}: done in {time.time() - t0:.0f} s")

    def _swap_weights(self, weights: Path | None) -> Path:
        """Check ``weights`` against the served network, then make them the served ``models/model.pt`` at once."""
        from fewlabel.label_server.app import ServedBundle, check_weights

        if weights is None or not weights.is_file():
            raise FewLabelError(f"{self.protocol.bundle}: the protocol finished but left no weights at {weights}; "
                                "the served weights are unchanged.")
        check_weights(ServedBundle(self.protocol.bundle, self.source, self.folder, True), weights)
        target = self.folder / "models" / "model.pt"
        tmp = target.with_name(f".model.pt.{os.getpid()}.tmp")
        shutil.copyfile(weights, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target


class ProtocolTrainTask(TrainTask):
    """MONAI Label's ``TrainTask`` running a bundle's protocol (:class:`ProtocolTraining`).

    Args:
        folder: the served bundle's app folder (``<app>/model/<bundle>``), with ``configs/label_server.json``
            (the bundle's source folder and the user's overrides) written by
            :func:`fewlabel.label_server.app.prepare_app`.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        plan = json.loads((self.folder / "configs" / PLAN_FILE).read_text())
        self.source = Path(plan["source"])
        self.overrides = dict(plan.get("overrides") or {})
        protocol = load_server_protocol(self.source)
        if protocol is None:
            raise DataError(f"{self.source / 'configs' / PROTOCOL_FILE} has no '{SECTION}' section")
        self.protocol = protocol
        super().__init__(f"{protocol.bundle}: {protocol.description}")

    def config(self) -> dict[str, Any]:
        return {"max_epochs": 0, "val_split": 0.2, "device": ["auto", "cpu", "cuda"],
                **{k: "" for k in self.protocol.paths}}

    def stats(self) -> dict[str, Any]:
        path = self.folder / "train" / "status.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def __call__(self, request: Mapping[str, Any], datastore: Any) -> dict[str, Any]:
        training = ProtocolTraining(self.protocol, self.source, self.folder, self.overrides,
                                    log=lambda s: print(s, flush=True))
        try:
            return training(request, datastore)
        except FewLabelError as e:
            print(f"fewlabel: training {self.protocol.bundle} failed: {e}", flush=True)
            raise


def protocol_trainers(app_dir: str | os.PathLike, models: Sequence[str]) -> dict[str, ProtocolTrainTask]:
    """A :class:`ProtocolTrainTask` for each of ``models`` whose app folder has ``configs/label_server.json``."""
    out = {}
    for name in models:
        folder = Path(app_dir) / "model" / name
        if (folder / "configs" / PLAN_FILE).is_file():
            out[name] = ProtocolTrainTask(folder)
    return out
