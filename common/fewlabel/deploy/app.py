"""One entry point for both apps: the model decides (a CT bundle -> :mod:`~fewlabel.deploy.ct_app`, else
:mod:`~fewlabel.deploy.frames_app`). This is what a MONAI Application Package (``deploy/map``) runs."""

from __future__ import annotations

import sys

from monai.deploy.core import Application

from fewlabel.deploy.base import OVERRIDES_ENV, BundleApplication, overrides_from_env
from fewlabel.deploy.ct_app import CTSegmentationApp
from fewlabel.deploy.frames_app import FrameSegmentationApp
from fewlabel.deploy.operators import bundle_input_kind

__all__ = ["main", "overrides_from_env", "OVERRIDES_ENV", "BundleApplication"]


def main(argv: list[str] | None = None) -> None:
    """Parse ``-i/-o/-m`` (or the HOLOSCAN_* variables) and run the app for the model's kind of input.

    ``argv``: like ``sys.argv`` (program name first; default ``sys.argv``).
    """
    argv = list(sys.argv if argv is None else argv)
    context = Application.init_app_context(argv)
    app = CTSegmentationApp if bundle_input_kind(context.model_path) == "volume" else FrameSegmentationApp
    app([sys.executable, *argv]).run()  # Holoscan wants the interpreter first
