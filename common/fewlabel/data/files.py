"""Result files of folder inference: one output name per input, written whole or not at all.

:func:`refuse_shared_outputs` checks, before anything is written, that no two inputs map to the same
output file (``case1.png`` and ``case1.jpg``, or ``ct1.nii`` and a DICOM folder ``ct1/``).
:func:`atomic_write` writes a file under a temporary name in the same folder and renames it into
place only when the write finished, so a run killed mid-write leaves no half-written file that
looks like a result.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fewlabel.errors import DataError

__all__ = ["TEMP_MARK", "atomic_write", "refuse_shared_outputs"]

#: part of every temporary result name (``.<name>.partial-XXXX<suffix>``); such files are never results
TEMP_MARK = ".partial-"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it.

    The temporary file keeps ``path``'s full suffix (``.nii.gz``, ``.png``), so writers that choose
    the format from the name work unchanged. Parents of ``path`` are created.

    Example::

        with atomic_write(out / "case1_mask.png") as tmp:
            Image.fromarray(mask).save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith((".nii.gz", ".tar.gz")) else path.suffix
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def refuse_shared_outputs(
    items: Iterable[Mapping[str, Any]],
    output_name: Callable[[str], str],
    key: str = "image",
) -> None:
    """Raise before any result is written when two inputs would write the same output file.

    Args:
        items: datalist items; ``item[key]`` is the input's path (file or DICOM folder).
        output_name: maps an input path to the name of its result (e.g. the stem plus ``_mask.png``).
        key: the item key holding the input path.

    Raises:
        DataError: names every pair of inputs that share an output, and the fix.
    """
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for item in items:
        source = str(item[key])
        name = output_name(source)
        if name in seen:
            clashes.append(f"{seen[name]} and {source} would both write {name}")
        else:
            seen[name] = source
    if clashes:
        raise DataError(
            "inputs share an output name, so one result would overwrite the other: " + "; ".join(clashes)
            + ". Rename or move one of each pair (results are named after the input's name without its suffix)."
        )
