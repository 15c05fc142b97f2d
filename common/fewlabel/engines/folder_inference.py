"""Folder inference that gives every input a result or a named reason.

:class:`FolderEvaluator` is MONAI's :class:`~monai.engines.SupervisedEvaluator` for inference
over a list of inputs. With :class:`~fewlabel.data.InputsDataset` and
:func:`~fewlabel.data.collate_inputs` as its data, an input that cannot be loaded, run or written
is recorded with its reason and the run goes on with the next one. At the end it writes the
failures file (JSON, beside the results), logs a short summary, and raises
:class:`~fewlabel.errors.InputsFailed` when any input failed, so the process exits non-zero.
``on_error="stop"`` keeps the behaviour of a plain evaluator: the first failure ends the run.

The failures file::

    {"inputs": 10, "results": 9,
     "failed": [{"input": "/data/case7.png", "reason": "/data/case7.png is truncated ..."}]}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.engines import SupervisedEvaluator

from fewlabel.data.files import atomic_write
from fewlabel.data.inputs import FAILED_KEY, input_name
from fewlabel.errors import InputsFailed, failure_reason

__all__ = ["FolderEvaluator", "FAILURES_FILE", "finish_inputs"]

#: default name of the failures file, in the output folder
FAILURES_FILE = "failures.json"
_SHOWN = 10  # failures named in the summary; the file holds all

logger = logging.getLogger(__name__)


def _batch_inputs(batch: Mapping[str, Any], key: str) -> list[str]:
    value = batch.get(key)
    names = getattr(value, "meta", {}).get("filename_or_obj") if value is not None else None
    if isinstance(names, (list, tuple)):
        return [input_name(n) for n in names]
    if names is not None:
        return [input_name(names)]
    size = len(value) if value is not None and hasattr(value, "__len__") else 1
    return [f"batch item {i}" for i in range(size)]


class FolderEvaluator(SupervisedEvaluator):
    """A :class:`~monai.engines.SupervisedEvaluator` that lists failed inputs and goes on.

    Args:
        failures_file: where the failures list is written (JSON; the folder is created), usually
            ``<output_dir>/failures.json``; ``None`` writes none.
        on_error: ``"continue"`` (default) or ``"stop"`` (the first failure ends the run, as before).
        input_key: batch key whose meta ``filename_or_obj`` names the inputs.
        args, kwargs: those of :class:`~monai.engines.SupervisedEvaluator`.

    After :meth:`run`, ``results`` is the number of inputs that got a result and ``failed`` the
    failure records ``[{"input": str, "reason": str}]``.
    """

    def __init__(self, *args: Any, failures_file: str | os.PathLike | None = None, on_error: str = "continue",
                 input_key: str = "image", **kwargs: Any) -> None:
        if on_error not in ("continue", "stop"):
            raise ValueError(f"on_error must be 'continue' or 'stop', got {on_error!r}")
        super().__init__(*args, **kwargs)
        self.failures_file = None if failures_file in (None, "") else Path(failures_file)
        self.on_error = on_error
        self.input_key = input_key
        self.results = 0
        self.failed: list[dict[str, str]] = []

    def _iteration(self, engine: Any, batchdata: dict[str, Any]) -> dict:
        batch = dict(batchdata)
        for record in batch.pop(FAILED_KEY, []):
            self._fail(record["input"], record["reason"])
        if not batch:
            return {}
        names = _batch_inputs(batch, self.input_key)
        if self.on_error == "stop":
            output = super()._iteration(engine, batch)
        else:
            try:
                output = super()._iteration(engine, batch)
            except Exception as e:  # noqa: BLE001 - one input's failure must not cost the others their results
                reason = failure_reason(e)
                logger.debug("input failed", exc_info=True)
                for name in names:
                    self._fail(name, reason)
                return {}
        self.results += len(names)
        return output

    def _fail(self, name: str, reason: str) -> None:
        if self.on_error == "stop":
            raise InputsFailed(reason)
        logger.warning("no result for %s: %s", name, reason)
        self.failed.append({"input": name, "reason": reason})

    def run(self, global_epoch: int = 1) -> None:
        """Run over every input, then write the failures file and the summary.

        Raises:
            InputsFailed: some inputs got no result (after all others got theirs).
        """
        self.results, self.failed = 0, []
        super().run(global_epoch)
        finish_inputs(self.failures_file, self.results, self.failed)


def finish_inputs(failures_file: str | os.PathLike | None, results: int, failed: list[dict[str, str]]) -> None:
    """End of a folder run: write the failures file, log the summary, raise when any input failed.

    Args:
        failures_file: the JSON file to write (``None``: none).
        results: how many inputs got a result.
        failed: ``[{"input": str, "reason": str}]`` of the inputs that did not.

    Raises:
        InputsFailed: ``failed`` is not empty; the message names the first ten and the file.
    """
    total = results + len(failed)
    path = None if failures_file in (None, "") else Path(failures_file)
    if path is not None:
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps({"inputs": total, "results": results, "failed": failed}, indent=2) + "\n")
    where = f" (all listed in {path})" if path is not None else ""
    logger.info("%d of %d inputs have results; %d failed%s", results, total, len(failed), where if failed else "")
    if failed:
        shown = "; ".join(f"{f['input']}: {f['reason']}" for f in failed[:_SHOWN])
        more = f"; and {len(failed) - _SHOWN} more" if len(failed) > _SHOWN else ""
        raise InputsFailed(f"{len(failed)} of {total} inputs got no result{where}: {shown}{more}")
