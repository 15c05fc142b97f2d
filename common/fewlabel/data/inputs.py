"""Folder inference datasets: an input that cannot be loaded becomes a named failure, not the end of the run.

:class:`InputsDataset` is MONAI's :class:`~monai.data.Dataset` whose items never raise: an item
whose transform fails is returned as a failure record (the input and the reason). :func:`collate_inputs`
batches the loaded items as MONAI does and carries the failure records beside them under
:data:`FAILED_KEY`, so :class:`~fewlabel.engines.FolderEvaluator` can list them and go on with the
next input. Works with ``num_workers > 0`` (the records travel inside the batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.data import Dataset, list_data_collate

from fewlabel.errors import failure_reason

__all__ = ["FAILED_KEY", "InputsDataset", "collate_inputs", "input_name"]

#: batch key holding the failure records ``[{"input": str, "reason": str}, ...]`` of the batch's items
FAILED_KEY = "failed_inputs"
_MARK = "__fewlabel_failed__"


def input_name(item: Any, key: str = "image") -> str:
    """The path that names an item in logs and failure lists: ``item[key]`` (first file of a list)."""
    value = item.get(key, item) if isinstance(item, Mapping) else item
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else str(value)


class InputsDataset(Dataset):
    """A :class:`~monai.data.Dataset` that returns a failure record instead of raising.

    Args:
        data: datalist items (``{"image": path, ...}``).
        transform: the preprocessing (loader first).
        key: item key that names the input in the failure record.
        on_error: ``"continue"`` (default: failed items become records) or ``"stop"`` (raise, as
            a plain Dataset does).
    """

    def __init__(self, data: Sequence, transform: Callable | None = None, key: str = "image",
                 on_error: str = "continue") -> None:
        if on_error not in ("continue", "stop"):
            raise ValueError(f"on_error must be 'continue' or 'stop', got {on_error!r}")
        super().__init__(data, transform)
        self.key = key
        self.on_error = on_error

    def _transform(self, index: int) -> Any:
        if self.on_error == "stop":
            return super()._transform(index)
        try:
            return super()._transform(index)
        except Exception as e:  # noqa: BLE001 - every failure of one input is recorded, the run goes on
            return {_MARK: {"input": input_name(self.data[index], self.key), "reason": failure_reason(e)}}


def collate_inputs(batch: Sequence[Any]) -> dict[str, Any]:
    """MONAI's ``list_data_collate`` of the loaded items, plus their failure records under :data:`FAILED_KEY`.

    A batch whose items all failed is ``{FAILED_KEY: [...]}`` only.
    """
    failed = [b[_MARK] for b in batch if isinstance(b, Mapping) and _MARK in b]
    good = [b for b in batch if not (isinstance(b, Mapping) and _MARK in b)]
    out = list_data_collate(good) if good else {}
    out[FAILED_KEY] = failed
    return out
