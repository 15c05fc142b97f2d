"""MONAI Deploy app: a DICOM CT study -> a fewlabel CT bundle (PolyCL) -> DICOM SEG + NIfTI.

Graph: ``DICOMDataLoaderOperator`` (every DICOM file under the input folder) ->
:class:`~fewlabel.deploy.operators.CTSeriesSelectorOperator` (the CT series with the most images)
-> :class:`~fewlabel.deploy.operators.CTSeriesToVolumeOperator` (the SDK's
``DICOMSeriesToVolumeOperator``, also for one-image series: HU volume, RAS affine) ->
:class:`~fewlabel.deploy.operators.BundleInferenceOperator` (the bundle's ``inference`` config:
its own loader, windowing, slice-wise network and inferer, ``Invertd``) ->
:class:`~fewlabel.deploy.operators.CTSegmentationWriterOperator` (``<SeriesInstanceUID>_seg.dcm``
and ``_seg.nii.gz`` in the output folder; segments and coded concepts from the bundle's
``metadata.json`` ``segment_descriptions``, algorithm = the bundle's name and version).

Run::

    python -m fewlabel.deploy.ct_app -i STUDY_DIR -o OUT_DIR -m BUNDLE_DIR_OR_MODEL_TS
    export HOLOSCAN_INPUT_PATH=STUDY_DIR HOLOSCAN_OUTPUT_PATH=OUT_DIR HOLOSCAN_MODEL_PATH=MODEL
    python -m fewlabel.deploy.ct_app

``FEWLABEL_BUNDLE_OVERRIDES`` (JSON) sets config values of the bundle, e.g.
``'{"refine": "sam"}'`` for SAM box refinement (its checkpoint must be in the bundle's models/).
"""

from __future__ import annotations

import sys
from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from fewlabel.deploy.base import BundleApplication
from fewlabel.errors import install_error_hook
from fewlabel.deploy.operators import (
    BundleInferenceOperator,
    CTSegmentationWriterOperator,
    CTSeriesSelectorOperator,
    CTSeriesToVolumeOperator,
)
from fewlabel.data.segmentation_writers import segments_from_metadata

__all__ = ["CTSegmentationApp", "main"]


class CTSegmentationApp(BundleApplication):
    """DICOM CT study in, DICOM SEG + NIfTI out, through a fewlabel CT bundle.

    Args:
        argv: command line (default ``sys.argv``): ``-i`` / ``-o`` / ``-m`` / ``-l`` of the SDK.
        overrides: bundle config overrides (default from ``$FEWLABEL_BUNDLE_OVERRIDES``).
    """

    input_kind = "volume"
    wrong_kind = "is not a CT bundle (its inference reads 2D frames); use fewlabel.deploy.frames_app."

    def compose(self) -> None:
        context, model, metadata, output = self.bundle_context()
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path),
                                         name="dicom_loader")
        selector = CTSeriesSelectorOperator(self, input_folder=context.input_path, name="ct_series_selector")
        to_volume = CTSeriesToVolumeOperator(self, name="series_to_volume")
        infer = BundleInferenceOperator(self, app_context=context, bundle_path=model, overrides=self.overrides,
                                        drop_transforms=("SaveCTSegmentationd",), name="bundle_inference")
        writer = CTSegmentationWriterOperator(
            self, output_folder=output, segments=segments_from_metadata(metadata, f"{model} metadata.json"),
            algorithm_name=str(metadata.get("name", model.name)), algorithm_version=str(metadata.get("version", "")),
            name="seg_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, infer, {("image", "image")})
        self.add_flow(infer, writer, {("pred", "seg_image")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        self.outcome_ops, self.count_results = (infer,), lambda: int(bool(writer.written))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m fewlabel.deploy.ct_app``; ``argv`` like ``sys.argv`` (default ``sys.argv``)."""
    install_error_hook()  # a failed input or a bad argument prints one line, not a traceback
    CTSegmentationApp(None if argv is None else [sys.executable, *argv]).run()  # Holoscan wants the interpreter first


if __name__ == "__main__":
    main()
