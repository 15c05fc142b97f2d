"""What both apps share: :class:`BundleApplication` (context, model kind check, overrides from the
environment). :mod:`~fewlabel.deploy.app` picks the app for a model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from monai.deploy.core import AppContext, Application

from fewlabel.deploy.operators import bundle_input_kind, bundle_metadata
from fewlabel.errors import DataError

__all__ = ["overrides_from_env", "OVERRIDES_ENV", "BundleApplication"]

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


class BundleApplication(Application):
    """An SDK application around one fewlabel bundle, for one kind of input.

    Subclasses set ``input_kind`` (``"volume"`` / ``"frame"``, see
    :func:`~fewlabel.deploy.operators.bundle_input_kind`) and ``wrong_kind`` (the error for a
    model of the other kind), and call :meth:`bundle_context` in ``compose``.

    Args:
        argv: command line (default ``sys.argv``): ``-i`` / ``-o`` / ``-m`` / ``-l`` of the SDK.
        overrides: bundle config overrides (default from ``$FEWLABEL_BUNDLE_OVERRIDES``).
    """

    input_kind = ""
    wrong_kind = ""

    def __init__(self, *args: Any, overrides: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.overrides = overrides_from_env() if overrides is None else dict(overrides)
        super().__init__(*args, **kwargs)

    def bundle_context(self) -> tuple[AppContext, Path, dict[str, Any], Path]:
        """The app context, the model path, the bundle's metadata and the output folder.

        Raises:
            DataError: the model is a bundle for the other kind of input (``wrong_kind``).
        """
        context = Application.init_app_context(self.argv)
        model = Path(context.model_path)
        if bundle_input_kind(model) != self.input_kind:
            raise DataError(f"{model} {self.wrong_kind}")
        return context, model, bundle_metadata(model), Path(context.output_path)
