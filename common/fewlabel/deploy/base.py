"""What both apps share: :class:`BundleApplication` (context, model kind check, overrides from the
environment). :mod:`~fewlabel.deploy.app` picks the app for a model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from monai.deploy.core import AppContext, Application

from fewlabel.deploy.operators import bundle_input_kind, bundle_metadata
from fewlabel.engines.folder_inference import FAILURES_FILE, finish_inputs
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
    model of the other kind), and call :meth:`bundle_context` in ``compose``. ``compose`` also sets
    ``outcome_ops`` (operators whose ``failed`` lists inputs without a result) and ``count_results``
    (how many inputs got one), so :meth:`run` can write ``failures.json`` beside the results.

    Args:
        argv: command line (default ``sys.argv``): ``-i`` / ``-o`` / ``-m`` / ``-l`` of the SDK.
        overrides: bundle config overrides (default from ``$FEWLABEL_BUNDLE_OVERRIDES``).
    """

    input_kind = ""
    wrong_kind = ""

    def __init__(self, *args: Any, overrides: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.overrides = overrides_from_env() if overrides is None else dict(overrides)
        self.outcome_ops: tuple[Any, ...] = ()
        self.count_results: Any = None
        self.output_folder: Path | None = None
        super().__init__(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> None:
        """Run the graph, then write ``failures.json`` in the output folder and the summary.

        Raises:
            InputsFailed: some inputs got no result (each is listed with its reason).
        """
        super().run(*args, **kwargs)
        if self.output_folder is None or self.count_results is None:
            return
        failed = [record for op in self.outcome_ops for record in op.failed]
        finish_inputs(self.output_folder / FAILURES_FILE, int(self.count_results()), failed)

    def bundle_context(self) -> tuple[AppContext, Path, dict[str, Any], Path]:
        """The app context, the model path, the bundle's metadata and the output folder.

        Raises:
            DataError: the model is a bundle for the other kind of input (``wrong_kind``).
        """
        context = Application.init_app_context(self.argv)
        model = Path(context.model_path)
        if bundle_input_kind(model) != self.input_kind:
            raise DataError(f"{model} {self.wrong_kind}")
        self.output_folder = Path(context.output_path)
        return context, model, bundle_metadata(model), self.output_folder
