"""Exceptions raised on bad user input. Each message names the offending file and the fix.

:func:`failure_reason` turns any exception into the one line a user needs (the project's own
message when one is in the chain, else the innermost cause). :func:`install_error_hook` makes an
uncaught fewlabel error print that one line instead of MONAI's and ignite's nested tracebacks; the
full traceback goes to a log file (and to the terminal with ``FEWLABEL_VERBOSE=1``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

__all__ = [
    "FewLabelError",
    "DataError",
    "CheckpointError",
    "InputsFailed",
    "failure_reason",
    "own_error",
    "report_error",
    "install_error_hook",
    "VERBOSE_ENV",
]

#: set to 1 to print full tracebacks of fewlabel errors (the default is one line plus a log file)
VERBOSE_ENV = "FEWLABEL_VERBOSE"


class FewLabelError(Exception):
    """Base class of the errors fewlabel raises on purpose."""


class DataError(FewLabelError, ValueError):
    """An input file or dataset folder cannot be used as it is (missing, corrupt, wrong shape)."""


class CheckpointError(FewLabelError, FileNotFoundError):
    """A weights file is missing or does not fit the network it is loaded into."""


class InputsFailed(DataError):
    """Folder inference finished, but some inputs got no result (listed in the failures file)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def failure_reason(exc: BaseException) -> str:
    """One line saying what went wrong: the first :class:`FewLabelError` in ``exc``'s chain of causes,
    else the innermost cause as ``Type: message`` (MONAI wraps transform errors in RuntimeErrors)."""
    chain = list(_chain(exc))
    own = next((e for e in chain if isinstance(e, FewLabelError)), None)
    if own is not None:
        return str(own)
    last = chain[-1]
    return f"{type(last).__name__}: {last}".strip().rstrip(":")


def own_error(exc: BaseException) -> FewLabelError | None:
    """The first :class:`FewLabelError` in ``exc``'s chain of causes (MONAI and ignite wrap them), or ``None``."""
    return next((e for e in _chain(exc) if isinstance(e, FewLabelError)), None)


def _log_path() -> Path:
    return Path(tempfile.gettempdir()) / f"fewlabel-error-{os.getpid()}.log"


def report_error(exc: BaseException) -> None:
    """Print ``fewlabel: error: <message>`` for ``exc`` (its fewlabel error, else itself) on stderr, and
    keep its full traceback in a log file named on that line."""
    own = own_error(exc) or exc
    try:
        path = _log_path()
        path.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        where = f" (traceback in {path}; {VERBOSE_ENV}=1 prints it)"
    except OSError:
        where = f" ({VERBOSE_ENV}=1 prints the traceback)"
    print(f"fewlabel: error: {own}{where}", file=sys.stderr)


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None,
          fallback: object = sys.__excepthook__) -> None:
    if own_error(exc) is None or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        fallback(kind, exc, tb)  # type: ignore[operator]
        return
    report_error(exc.with_traceback(tb))


def install_error_hook() -> None:
    """Print uncaught fewlabel errors as one line (``fewlabel: error: <message>``), exit status 1.

    Other exceptions keep Python's usual traceback. Installed when a bundle runs through
    ``python -m monai.bundle``; idempotent.
    """
    if getattr(sys.excepthook, "_fewlabel", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _hook(kind, exc, tb, previous)

    hook._fewlabel = True  # type: ignore[attr-defined]
    sys.excepthook = hook
