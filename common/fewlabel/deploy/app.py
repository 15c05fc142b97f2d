"""One entry point for both apps: the model decides (a CT bundle -> :mod:`~fewlabel.deploy.ct_app`, else
:mod:`~fewlabel.deploy.frames_app`). This is what a MONAI Application Package (``deploy/map``) runs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from monai.deploy.core import Application

from fewlabel.deploy.operators import bundle_input_kind

__all__ = ["main", "overrides_from_env", "OVERRIDES_ENV"]

OVERRIDES_ENV = "FEWLABEL_BUNDLE_OVERRIDES"


def overrides_from_env() -> dict[str, Any]:
    """Bundle config overrides from ``$FEWLABEL_BUNDLE_OVERRIDES`` (a JSON object; empty when unset)."""
    text = os.environ.get(OVERRIDES_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{OVERRIDES_ENV} is not valid JSON ({e}): {text!r}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{OVERRIDES_ENV} must be a JSON object of config ids -> values, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Parse ``-i/-o/-m`` (or the HOLOSCAN_* variables) and run the app for the model's kind of input.

    ``argv``: like ``sys.argv`` (program name first; default ``sys.argv``).
    """
    argv = list(sys.argv if argv is None else argv)
    context = Application.init_app_context(argv)
    if bundle_input_kind(context.model_path) == "volume":
        from fewlabel.deploy.ct_app import CTSegmentationApp as App
    else:
        from fewlabel.deploy.frames_app import FrameSegmentationApp as App  # type: ignore[assignment]
    App([sys.executable, *argv]).run()  # Holoscan wants the interpreter first
