"""Holoscan operators of the fewlabel MONAI Deploy apps.

- :class:`BundleInferenceOperator`: the SDK's ``MonaiBundleInferenceOperator`` for fewlabel
  bundles. It keeps the bundle's own loaders (``LoadCTVolumed``, ``LoadImage2Dd`` accept data
  already in memory), so what the network sees is exactly what ``monai.bundle run`` gives it;
  takes config ``overrides`` (e.g. ``output_dir``); loads the network once; and sends a CT
  prediction back in the voxel order of the volume it received.
- :class:`CTSeriesSelectorOperator`: the CT series with the most images, or a clear error.
- :class:`CTSegmentationWriterOperator`: DICOM SEG (highdicom) + NIfTI of a CT prediction.
- :class:`FrameSourceOperator` / :class:`FrameResultsOperator`: frames of a folder or a video
  in, one per tick; ``results.json`` out.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.deploy.core import AppContext, Fragment, Image, IOType, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
    _load_model_from_directory_bundle,
    get_bundle_config,
)
from monai.transforms import Compose
from monai.utils import convert_to_dst_type, ensure_tuple

from fewlabel.bundle import input_kind
from fewlabel.data.ct import check_slice_geometry
from fewlabel.data.datalist import IMAGE_SUFFIXES, list_images
from fewlabel.data.image_2d import read_image_2d
from fewlabel.data.segmentation_writers import Segment, restore_original_orientation, save_nifti_and_dicom_seg
from fewlabel.data.video import VIDEO_SUFFIXES
from fewlabel.errors import DataError, failure_reason

__all__ = [
    "CT_SELECTION_RULES",
    "bundle_config",
    "bundle_metadata",
    "bundle_input_kind",
    "BundleInferenceOperator",
    "CTSeriesSelectorOperator",
    "CTSeriesToVolumeOperator",
    "CTSegmentationWriterOperator",
    "FrameSourceOperator",
    "FrameResultsOperator",
]

logger = logging.getLogger("fewlabel.deploy")

#: series selection rules of the CT app (SDK ``DICOMSeriesSelectorOperator`` format)
CT_SELECTION_RULES = json.dumps({"selections": [{"name": "CT series", "conditions": {"Modality": "(?i)^CT$"}}]})


def _check_model_path(path: str | os.PathLike) -> Path:
    """The model to use: a bundle folder (``configs/metadata.json``) or a TorchScript file.

    A folder that is not a bundle but holds exactly one bundle folder or one ``.ts`` file (a MAP's
    models folder, ``/opt/holoscan/models``) resolves to it. Anything else is a DataError saying what
    to pass.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"model not found: {p}. Pass -m (or HOLOSCAN_MODEL_PATH) a bundle folder with configs/ and "
                        "models/model.ts or model.pt, or the TorchScript file of `python -m monai.bundle ckpt_export`.")
    if p.is_dir() and not (p / "configs" / "metadata.json").is_file():
        found = [c for c in sorted(p.iterdir()) if (c.is_dir() and (c / "configs" / "metadata.json").is_file())
                 or (c.is_file() and c.suffix == ".ts")]
        if len(found) != 1:
            names = f" ({', '.join(c.name for c in found)})" if found else ""
            raise DataError(f"{p} is not a bundle (no configs/metadata.json) and holds {len(found) or 'no'} bundle "
                            f"folders / .ts files{names}; pass the bundle folder itself or its exported TorchScript.")
        p = found[0]
    return p.resolve()


def _bundle_folder(model: Path) -> Path:
    """The model's bundle: the folder itself, ``<bundle>`` of ``<bundle>/models/model.ts``, else the file's folder."""
    if model.is_dir():
        return model
    if (model.parent.parent / "configs" / "metadata.json").is_file():
        return model.parent.parent
    return model.parent


def bundle_config(path: str | os.PathLike, config_names: Sequence[str] = ("inference",)) -> Any:
    """The SDK's ``ConfigParser`` of a bundle folder, or of the configs ``ckpt_export`` embedded in a TorchScript.

    Reads the archive's ``extra/`` files without loading the model. ``parser["_meta_"]`` is ``metadata.json``.

    Raises:
        DataError: no such model, a file that is not TorchScript, or configs missing (file named, with the fix).
    """
    p = _check_model_path(path)
    try:
        return get_bundle_config(os.fspath(p), list(config_names))
    except zipfile.BadZipFile as e:
        raise DataError(f"cannot load TorchScript model {p}: {e}. Export it with `python -m monai.bundle "
                        "ckpt_export` or pass the bundle folder.") from e
    except OSError as e:
        what = "has no configs" if p.is_dir() else "has no embedded metadata.json / inference.json"
        raise DataError(f"{p} {what} ({e}); export it with `python -m monai.bundle ckpt_export` (which embeds "
                        "the bundle's metadata and inference config) or pass the bundle folder.") from e


def bundle_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``metadata.json`` of a bundle folder, or the copy ``ckpt_export`` embedded in a TorchScript file."""
    return dict(bundle_config(path)["_meta_"])


def bundle_input_kind(path: str | os.PathLike) -> str:
    """``"volume"`` or ``"frame"``: :func:`fewlabel.bundle.input_kind` of a bundle folder or TorchScript.

    Read from ``metadata.json`` (``data_type``), the bundle's own or the copy ``ckpt_export`` embedded.
    """
    return input_kind(bundle_metadata(path))


class BundleInferenceOperator(MonaiBundleInferenceOperator):
    """``MonaiBundleInferenceOperator`` for fewlabel bundles.

    Differences from the SDK operator (whose I/O conventions it keeps: ``Image`` in, ``Image``
    out, names and types from ``metadata.json``'s ``network_data_format``):

    - the bundle's pre-processing runs whole: fewlabel's loaders take the in-memory ``Image``
      (a CT volume from ``DICOMSeriesToVolumeOperator`` -> :func:`fewlabel.data.ct.as_ct_volume`;
      a channel-last frame -> ``LoadImage2D``), so orientation, windowing and scaling are the
      bundle's own; only transforms named in ``drop_transforms`` are removed (e.g. the CT saver,
      which a writer operator replaces);
    - ``overrides``: config values set before parsing (e.g. ``{"output_dir": ...}`` so a 2D
      bundle's own savers write masks / overlays / point lists to the app's output);
      ``bundle_root`` defaults to the model's bundle (the folder given, or ``<bundle>`` of
      ``<bundle>/models/model.ts``, else the TorchScript file's folder), so files the configs
      name (e.g. SAM checkpoints in ``models/``) are looked up there, not in a source checkout;
    - the network (``models/model.ts`` or ``model.pt`` of a bundle folder, or a TorchScript
      file) is loaded once, not per input;
    - an output that carries its own geometry (a CT mask after ``Invertd``) is sent in the voxel
      order of the input ``Image`` with that geometry as metadata (``affine``), so SDK writers
      and :class:`CTSegmentationWriterOperator` line it up with the source slices.

    Args:
        fragment: the application.
        app_context: the SDK app context (its ``models`` are not used: ``bundle_path`` is).
        bundle_path: bundle folder or TorchScript file.
        input_mapping, output_mapping: default one ``image`` input and one ``pred`` output.
        overrides: config ids -> values.
        drop_transforms: class names removed from pre- and post-processing.
        config_names: bundle config files to read (merged in order), default ``["inference"]``.
    """

    def __init__(self, fragment: Fragment, *args: Any, app_context: AppContext, bundle_path: str | os.PathLike,
                 input_mapping: list[IOMapping] | None = None, output_mapping: list[IOMapping] | None = None,
                 overrides: Mapping[str, Any] | None = None, drop_transforms: Sequence[str] = (),
                 config_names: Sequence[str] = ("inference",), **kwargs: Any) -> None:
        self._source = _check_model_path(bundle_path)
        self._overrides = {"bundle_root": os.fspath(_bundle_folder(self._source)), **dict(overrides or {})}
        self._drop = list(drop_transforms)
        self._network: Any = None
        self.failed: list[dict[str, str]] = []
        super().__init__(
            fragment, *args, app_context=app_context,
            input_mapping=input_mapping or [IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=output_mapping or [IOMapping("pred", Image, IOType.IN_MEMORY)],
            bundle_path=self._source, bundle_config_names=BundleConfigNames(config_names=list(config_names)), **kwargs)

    def _init_config(self, config_names: list[str]) -> None:
        """Read the bundle's configs (folder or TorchScript archive), apply the overrides, build the components."""
        parser = bundle_config(self._source, config_names)
        if self._overrides:
            parser.update(self._overrides)
        self._parser = parser
        names = self._bundle_config_names
        self._device = (parser.get_parsed_content("device") if parser.get("device") is not None
                        else torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        if parser.get(names.inferer_name) is not None:
            self._inferer = parser.get_parsed_content(names.inferer_name)
        else:
            from monai.inferers import SimpleInferer

            self._inferer = SimpleInferer()
        data_format = parser["_meta_"]["network_data_format"]
        self._inputs, self._outputs = data_format["inputs"], data_format["outputs"]
        self._preproc = self._get_compose(names.preproc_name, self._drop)
        self._postproc = self._get_compose(names.postproc_name, self._drop)
        self._meta_key_postfix = self._get_meta_key_postfix(self._preproc)

    def _get_compose(self, obj_name: str, disallowed_prefixes: Sequence[str]) -> Compose:
        if self._parser.get(obj_name) is None:
            return Compose([])
        compose = self._parser.get_parsed_content(obj_name)
        compose.transforms = tuple(t for t in compose.transforms if type(t).__name__ not in disallowed_prefixes)
        return compose

    def _ensure_ready(self) -> None:
        """Parse the configs and load the network, once."""
        if not self._init_completed:
            self._init_config(self._bundle_config_names.config_names)
            self._init_completed = True
        if self._network is None:
            if self._source.is_file():
                self._network = torch.jit.load(os.fspath(self._source), map_location=self._device).eval()
            else:
                try:
                    self._network = _load_model_from_directory_bundle(self._source, self._device, self._parser)
                except OSError as e:
                    raise DataError(f"no weights in {self._source / 'models'}: put the trained model.pt there "
                                    "(train the bundle) or export model.ts with `monai.bundle ckpt_export`.") from e
            self._model_network = self._network

    def predict(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        return self._inferer(data, self._network, *args, **kwargs)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """One input (a CT volume or a frame) -> the bundle's pre-processing, network, post-processing -> outputs.

        An input the bundle cannot segment is recorded in ``failed`` (input, reason) and sends nothing;
        the app lists it and exits non-zero at the end (:meth:`BundleApplication.run`).
        """
        self._ensure_ready()
        first, *others = list(self._inputs)
        data: dict[str, Any] = {}
        for name in self._inputs:
            value, meta = self._receive_input(name, op_input, context)
            value = convert_to_dst_type(value, dst=value)[0]
            data[name] = MetaTensor.ensure_torch_and_prune_meta(value, dict(meta or {}))
        source = os.fspath(data[first].meta.get("filename_or_obj") or "input")
        try:
            self._segment(data, first, others, op_output, context)
        except Exception as e:  # noqa: BLE001 - the input is listed with its reason, the others go on
            reason = failure_reason(e)
            logger.warning("no result for %s: %s", source, reason, exc_info=logger.isEnabledFor(logging.DEBUG))
            self.failed.append({"input": source, "reason": reason})

    def _segment(self, data: dict[str, Any], first: str, others: Sequence[str], op_output: Any, context: Any) -> None:
        with torch.no_grad():
            data = self.pre_process(data)
            extra = {k: data[k][None].to(self._device) for k in others if isinstance(data[k], torch.Tensor)}
            pred = self.predict(data[first][None].to(self._device), **extra)
            outputs = self.post_process(ensure_tuple(pred)[0], **{self.kw_preprocessed_inputs: data})
        if not isinstance(outputs, Mapping):
            outputs = dict(zip(self._outputs, ensure_tuple(outputs)))
        for name in self._outputs:
            value = outputs[name]
            meta = dict(getattr(value, "meta", {}) or data[first].meta)
            if isinstance(value, MetaTensor) and value.ndim == 4 and "original_affine" in value.meta:
                value = restore_original_orientation(value)  # back to the voxel order of the input volume
                meta = dict(value.meta)
            self._send_output(value, name, _plain(meta), op_output, context)


def _plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Meta with tensors as NumPy arrays (an SDK ``Image``'s metadata is a plain dict)."""
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in meta.items()}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class CTSeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """Select the CT series with the most images in the input studies (one series per run).

    Output ``study_selected_series_list``: one ``StudySelectedSeries`` holding that series only, so
    the volume (``DICOMSeriesToVolumeOperator``) and the DICOM SEG refer to the same series.
    ``rules`` (SDK selection-rule JSON) default :data:`CT_SELECTION_RULES` (``Modality`` CT).

    Raises:
        DataError: no series matches; the message lists what the input holds.
    """

    def __init__(self, fragment: Fragment, *args: Any, input_folder: str | os.PathLike = "",
                 rules: str = CT_SELECTION_RULES, **kwargs: Any) -> None:
        self._input_folder = os.fspath(input_folder)
        super().__init__(fragment, *args, rules=rules, all_matched=True, sort_by_sop_instance_count=True, **kwargs)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        studies = op_input.receive(self.input_name_study_list) or []
        matched = self.filter(self._load_rules(), studies, True, True)
        candidates = [(len(sel.series.get_sop_instances()), sel.series, s.study)
                      for s in matched for sel in s.selected_series]
        if not candidates:
            found = [f"{getattr(series, 'Modality', '?')} series {getattr(series, 'SeriesNumber', '?')} "
                     f"({_count(len(series.get_sop_instances()), 'image')})" for study in studies
                     for series in study.get_all_series()]
            raise DataError(f"no CT series in {self._input_folder or 'the input'}: it holds "
                            f"{', '.join(found) if found else 'no DICOM images'}. Pass -i a folder with the CT "
                            "study's DICOM files.")
        count, series, study = max(candidates, key=lambda c: c[0])
        logger.info("selected CT series %s (%d images)", series.SeriesInstanceUID, count)
        chosen = StudySelectedSeries(study)
        chosen.add_selected_series(SelectedSeries("CT series", series, None))
        op_output.emit([chosen], self.output_name_selected_series)


class CTSeriesToVolumeOperator(DICOMSeriesToVolumeOperator):
    """The SDK's ``DICOMSeriesToVolumeOperator``, on checked geometry only, also for a series of one image.

    The SDK stacks the slices sorted by position and takes the slice spacing from the first two,
    so a series with a missing slice, uneven spacing, two slices at one position or mixed
    orientation would give a volume (and a DICOM SEG) on a wrong grid. Such a series is refused
    here with a DataError naming the series, the slices and the fix
    (:func:`fewlabel.data.ct.check_slice_geometry`, the check ``load_ct_volume`` makes).

    The SDK leaves the affine of a single-slice series unset (it needs two slice positions); here
    it is built from that image's ``ImageOrientationPatient`` / ``ImagePositionPatient`` /
    ``PixelSpacing`` and, across the slice, ``SpacingBetweenSlices`` or ``SliceThickness`` (1 mm if
    neither is present), so a one-slice CT (pydicom's ``CT_small.dcm``, a single key slice) is
    segmented and written like a volume.
    """

    def prepare_series(self, series: Any) -> None:
        super().prepare_series(series)
        if len(series.get_sop_instances()) > 1:
            self._check_geometry(series)
        if len(series.get_sop_instances()) != 1:
            return
        ds = series.get_sop_instances()[0].get_native_sop_instance()
        try:
            iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
            ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
            dy, dx = (float(v) for v in ds.PixelSpacing)
        except AttributeError as e:
            raise DataError(f"single-image series {series.SeriesInstanceUID} lacks {e.name or 'a geometry tag'} "
                            "(ImageOrientationPatient / ImagePositionPatient / PixelSpacing): its position in "
                            "the patient is unknown, so no DICOM SEG can reference it.") from e
        depth = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        normal = np.cross(iop[:3], iop[3:])
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = iop[:3] * dx, iop[3:] * dy, normal * depth, ipp
        series.dicom_affine_transform = lps
        series.nifti_affine_transform = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        series.depth_pixel_spacing = depth
        series.depth_direction_cosine = normal.tolist()

    @staticmethod
    def _check_geometry(series: Any) -> None:
        """Refuse a series whose sorted slices are not one evenly spaced stack (DataError naming them)."""
        headers = []
        for sop in series.get_sop_instances():
            ds = sop.get_native_sop_instance()
            name = getattr(ds, "filename", None)
            headers.append((Path(name).name if isinstance(name, str) and name else
                            f"SOPInstanceUID {ds.get('SOPInstanceUID', '?')}", ds))
        where = f"DICOM series {series.SeriesInstanceUID}"
        geometry = check_slice_geometry(headers, where)
        if geometry.uneven:
            raise DataError(f"{where} is not evenly spaced: {geometry.uneven}. Its volume and DICOM SEG would lie on "
                            "a wrong grid. Send the whole series (re-export it with every slice).")


class CTSegmentationWriterOperator(Operator):
    """Write a CT prediction as DICOM SEG (highdicom) and NIfTI, named by the source series.

    Inputs: ``seg_image`` (an SDK ``Image``, ``(slices, rows, columns)`` label map in the voxel
    order of ``DICOMSeriesToVolumeOperator``'s volume, metadata ``affine`` RAS, as
    :class:`BundleInferenceOperator` sends it) and ``study_selected_series_list`` (the series it
    was computed from). Writes ``<output_folder>/<SeriesInstanceUID>_seg.dcm`` (references the
    source series and each frame's source image; segments, their coded concepts and the
    algorithm identification from the bundle) and ``..._seg.nii.gz`` (RAS affine of the series).

    Args:
        fragment: the application.
        output_folder: output folder (created).
        segments: the segments (:func:`fewlabel.data.segmentation_writers.segments_from_metadata`).
        algorithm_name, algorithm_version: algorithm identification (the bundle's name / version).
        omit_empty_frames: leave out slices without any segment (an empty mask keeps all).
    """

    def __init__(self, fragment: Fragment, *args: Any, output_folder: str | os.PathLike, segments: Sequence[Segment],
                 algorithm_name: str = "fewlabel", algorithm_version: str | None = None,
                 omit_empty_frames: bool = True, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        self.segments = list(segments)
        self.algorithm_name = algorithm_name
        self.algorithm_version = algorithm_version
        self.omit_empty_frames = omit_empty_frames
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg_image")
        spec.input("study_selected_series_list")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("seg_image")
        selection = op_input.receive("study_selected_series_list")
        series = selection[0].selected_series[0].series
        uid = str(series.SeriesInstanceUID)
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        mask = np.swapaxes(np.asarray(image.asnumpy()), 0, 2)  # (slices, rows, columns) -> (X, Y, Z)
        meta = image.metadata() or {}
        if "affine" not in meta:
            raise ValueError(f"the segmentation of series {uid} has no 'affine' in its metadata: send it from "
                             "BundleInferenceOperator (or an SDK operator that keeps the volume's geometry).")
        affine = np.asarray(meta["affine"], dtype=np.float64)
        reference = {"affine": affine, "original_affine": affine, "spatial_shape": np.asarray(mask.shape),
                     "filename_or_obj": uid, "space": str(meta.get("space", "RAS"))}
        dcm, nifti = self.output_folder / f"{uid}_seg.dcm", self.output_folder / f"{uid}_seg.nii.gz"
        # both or neither: the NIfTI is renamed into place only after the SEG is written (each atomically)
        save_nifti_and_dicom_seg(mask, reference, nifti, datasets, dcm, segments=self.segments,
                                 algorithm_name=self.algorithm_name, algorithm_version=self.algorithm_version,
                                 omit_empty_frames=self.omit_empty_frames)
        self.written = [dcm, nifti]
        logger.info("wrote %s", ", ".join(os.fspath(p) for p in self.written))


class FrameSourceOperator(Operator):
    """Emit the frames of a folder of images or of a video, one per tick, as SDK ``Image`` objects.

    Each ``Image`` is the frame as stored, ``(H, W)`` or channel-last ``(H, W, C)`` (RGB), with
    metadata ``filename_or_obj`` = the frame's file. A video's frames are first written as PNG
    (``<frames_dir>/<video stem>_<index:06d>.png``, the names :func:`fewlabel.data.extract_frames`
    uses) so that every mask / overlay has its frame beside it; ``every`` keeps every n-th frame,
    ``max_frames`` stops early. A progress bar counts the frames.

    Output port: ``image``. Stops itself (a ``BooleanCondition`` named ``frames_left``) after the
    last frame.

    Raises:
        DataError: the input is missing, a folder without images, an unreadable video, or not an
            image / video file.
    """

    def __init__(self, fragment: Fragment, *args: Any, input_path: str | os.PathLike, frames_dir: str | os.PathLike,
                 every: int = 1, max_frames: int | None = None, **kwargs: Any) -> None:
        self.input_path = Path(input_path)
        self.frames_dir = Path(frames_dir)
        self.every = int(every)
        self.max_frames = max_frames
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._frames = self._open()
        self._next = next(self._frames, None)
        if self._next is None:
            raise DataError(f"{self.input_path} yields no frames (empty video or max_frames=0).")
        self._bar: Any = None
        self.emitted = 0
        self.failed: list[dict[str, str]] = []
        super().__init__(fragment, *args, **kwargs)

    def _open(self) -> Any:
        p = self.input_path
        if p.is_dir():  # what bundle inference takes from a folder: skips logged, shared result names refused
            try:
                files = [Path(item["image"]) for item in list_images(p)]
            except DataError as e:
                raise DataError(f"{e} Pass -i a folder of frames or a video ({', '.join(VIDEO_SUFFIXES)}).") from e
            self.total = len(files[:: self.every][: self.max_frames])
            return (f for f in files[:: self.every][: self.max_frames])
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            return self._video_frames(p)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            self.total = 1
            return iter([p])
        raise DataError(f"{p} is neither a folder of frames, an image, nor a video ({', '.join(VIDEO_SUFFIXES)}).")

    def _video_frames(self, path: Path) -> Any:
        import cv2

        cap = cv2.VideoCapture(os.fspath(path))
        if not cap.isOpened():
            raise DataError(f"cannot open video {path}: the file is corrupt or its codec is not supported by OpenCV.")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = min(-(-count // self.every), self.max_frames or count) if count > 0 else None
        self.frames_dir.mkdir(parents=True, exist_ok=True)

        def frames() -> Any:
            index = kept = 0
            try:
                while self.max_frames is None or kept < self.max_frames:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    if index % self.every == 0:
                        out = self.frames_dir / f"{path.stem}_{index:06d}.png"
                        cv2.imwrite(os.fspath(out), bgr)
                        kept += 1
                        yield out
                    index += 1
            finally:
                cap.release()

        return frames()

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def start(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, desc="frames", unit="frame")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        path, self._next = self._next, next(self._frames, None)
        try:
            frame = np.array(read_image_2d(path))  # writable copy (PIL's arrays are read-only)
        except DataError as e:  # one unreadable frame costs that frame only
            logger.warning("no result for %s: %s", path, e)
            self.failed.append({"input": os.fspath(path), "reason": failure_reason(e)})
        else:
            op_output.emit(Image(frame, metadata={"filename_or_obj": os.fspath(path)}), "image")
            self.emitted += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._next is None:
            self.conditions["frames_left"].disable_tick()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.close()


class FrameResultsOperator(Operator):
    """Collect what the bundle wrote for each frame and write ``<output_folder>/results.json``.

    Input ``pred``: the bundle operator's output ``Image`` (metadata ``filename_or_obj`` = the
    frame). ``results.json``: ``{"bundle", "version", "frames": [{"frame", "mask", "overlay",
    "landmarks", "classes_present"}]}`` with paths relative to ``output_folder`` (a file the
    bundle does not write for that frame is ``null``).
    """

    def __init__(self, fragment: Fragment, *args: Any, output_folder: str | os.PathLike,
                 metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        self.bundle_meta = dict(metadata or {})
        self.frames: list[dict[str, Any]] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("pred")

    def _rel(self, path: Path) -> str | None:
        return os.path.relpath(path, self.output_folder) if path.is_file() else None

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("pred")
        source = Path(str((image.metadata() or {}).get("filename_or_obj", "frame")))
        stem = source.stem
        self.frames.append({
            "frame": os.fspath(source),
            "mask": self._rel(self.output_folder / f"{stem}_mask.png"),
            "overlay": self._rel(self.output_folder / f"{stem}_overlay.png"),
            "landmarks": self._rel(self.output_folder / f"{stem}_landmarks.json"),
            "classes_present": sorted(int(v) for v in np.unique(image.asnumpy()) if v > 0),
        })

    def stop(self) -> None:
        record = {"bundle": self.bundle_meta.get("name"), "version": self.bundle_meta.get("version"),
                  "frames": self.frames}
        self.output_folder.mkdir(parents=True, exist_ok=True)
        (self.output_folder / "results.json").write_text(json.dumps(record, indent=1))
