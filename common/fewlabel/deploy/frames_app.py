"""MONAI Deploy app: a folder of frames or a video -> any fewlabel 2D bundle -> masks, overlays, point lists.

Graph: :class:`~fewlabel.deploy.operators.FrameSourceOperator` (one frame per tick; a video's
frames are written to ``<output>/frames/`` first) ->
:class:`~fewlabel.deploy.operators.BundleInferenceOperator` (the bundle's ``inference`` config
with ``output_dir`` set to the output folder, so the bundle's own savers write
``<frame>_mask.png`` and ``<frame>_overlay.png``, and for SLiPPA ``<frame>_landmarks.json`` with
the landmark point lists) -> :class:`~fewlabel.deploy.operators.FrameResultsOperator`
(``results.json``: the files of every frame and the classes found).

Works with every 2D bundle: SurgicalSemiSeg (laparoscopy), SAM knowledge mining (endoscopy),
MedSASS (microscopy / dermoscopy) and SLiPPA (liver landmarks).

Run::

    python -m fewlabel.deploy.frames_app -i FRAMES_DIR_OR_VIDEO -o OUT_DIR -m BUNDLE_DIR_OR_MODEL_TS
    HOLOSCAN_INPUT_PATH=... HOLOSCAN_OUTPUT_PATH=... HOLOSCAN_MODEL_PATH=... python -m fewlabel.deploy.frames_app

``FEWLABEL_BUNDLE_OVERRIDES`` (JSON) sets bundle config values; ``FEWLABEL_FRAME_EVERY`` keeps
every n-th frame of a video (default 1: all).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from holoscan.conditions import BooleanCondition

from fewlabel.deploy.base import BundleApplication
from fewlabel.errors import install_error_hook
from fewlabel.deploy.operators import BundleInferenceOperator, FrameResultsOperator, FrameSourceOperator

__all__ = ["FrameSegmentationApp", "main"]

EVERY_ENV = "FEWLABEL_FRAME_EVERY"


class FrameSegmentationApp(BundleApplication):
    """Frames (a folder or a video) in; masks, overlays (and landmark point lists) out.

    Args:
        argv: command line (default ``sys.argv``): ``-i`` / ``-o`` / ``-m`` / ``-l`` of the SDK.
        overrides: bundle config overrides (default from ``$FEWLABEL_BUNDLE_OVERRIDES``);
            ``output_dir`` is always the app's output folder.
        every: keep every n-th video frame (default from ``$FEWLABEL_FRAME_EVERY``, else 1).
    """

    input_kind = "frame"
    wrong_kind = "is not a 2D bundle (its inference reads CT volumes); use fewlabel.deploy.ct_app."

    def __init__(self, *args: Any, every: int | None = None, **kwargs: Any) -> None:
        self.every = int(os.environ.get(EVERY_ENV, "1")) if every is None else int(every)
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        context, model, metadata, output = self.bundle_context()
        source = FrameSourceOperator(self, BooleanCondition(self, name="frames_left"), input_path=context.input_path,
                                     frames_dir=output / "frames", every=self.every, name="frames")
        infer = BundleInferenceOperator(self, app_context=context, bundle_path=model,
                                        overrides={**self.overrides, "output_dir": os.fspath(output)},
                                        name="bundle_inference")
        results = FrameResultsOperator(self, output_folder=output, metadata=metadata, name="results")
        self.add_flow(source, infer, {("image", "image")})
        self.add_flow(infer, results, {("pred", "pred")})
        self.outcome_ops, self.count_results = (source, infer), lambda: len(results.frames)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m fewlabel.deploy.frames_app``; ``argv`` like ``sys.argv`` (default ``sys.argv``)."""
    # Holoscan wants the interpreter first
    install_error_hook()  # a failed input or a bad argument prints one line, not a traceback
    FrameSegmentationApp(None if argv is None else [sys.executable, *argv]).run()


if __name__ == "__main__":
    main()
