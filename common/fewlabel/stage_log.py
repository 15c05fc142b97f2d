"""Quiet stages: each stage's full output goes to a log file, the terminal shows one progress line per stage.

A stage (one ``monai.bundle run``) prints every config parse, MONAI notices and its engines' logs; a
run of many stages drowns what matters in them. :class:`StageLog` runs each stage in this process with
its standard output and error (file descriptors 1 and 2, so C libraries and warnings too) redirected to
``<log_dir>/<NN>_<stage>.log``, and shows on the terminal one line per stage: a progress bar with the
stage, its epoch and the time left (``tqdm``; on a terminal) or a start and an end line (elsewhere, e.g.
CI logs). Output outside the stages goes to ``<log_dir>/other.log``; :meth:`StageLog.say` writes to the
terminal. A failing stage shows the last lines of its log and the log's path, and raises
:class:`StageError`. ``verbose=True`` runs everything as before: all output on the terminal, no logs.

Epochs are read from the log as it grows: ignite's ``Engine run ... until N epochs`` / ``Epoch[k]
Complete`` of an engine that is not an evaluator, and MONAI's ``Epoch: k/N, Iter: i/n`` lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from fewlabel.errors import FewLabelError, failure_reason

__all__ = ["StageLog", "StageError", "EpochProgress", "log_tail"]

_RUN = re.compile(r"- (?P<engine>[\w.]+) - INFO - Engine run (?:resuming from iteration \d+, epoch \d+ until "
                  r"(?P<until>\d+) epochs|starting with max_epochs=(?P<max>\d+))")
_DONE = re.compile(r"- (?P<engine>[\w.]+) - INFO - Epoch\[(?P<epoch>\d+)\] Complete")
_ITER = re.compile(r"Epoch: (?P<epoch>\d+)/(?P<epochs>\d+), Iter: (?P<iter>\d+)/(?P<iters>\d+)")


class StageError(FewLabelError):
    """A stage failed; the message names the stage, the cause and the stage's log file."""


def log_tail(path: str | os.PathLike, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file (``""`` when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").rstrip().splitlines()[-lines:])


class EpochProgress:
    """Training progress of one stage from its log lines: ``epochs`` (``None`` until a trainer starts) and
    ``done``, the epochs finished so far (fractional within an epoch when iterations are logged)."""

    def __init__(self) -> None:
        self.epochs: int | None = None
        self.done = 0.0

    @staticmethod
    def _trainer(engine: str) -> bool:
        return not any(word in engine for word in ("Evaluator", "Inferer", "Inference"))

    def feed(self, line: str) -> None:
        """Update from one log line."""
        if m := _RUN.search(line):
            if self._trainer(m["engine"]):
                self.epochs = int(m["until"] or m["max"])
                self.done = 0.0
        elif m := _DONE.search(line):
            if self._trainer(m["engine"]) and self.epochs:
                self.done = float(min(int(m["epoch"]), self.epochs))
        elif m := _ITER.search(line):
            self.epochs = int(m["epochs"])
            self.done = min(int(m["epoch"]) - 1 + int(m["iter"]) / max(int(m["iters"]), 1), float(self.epochs))


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 (and ``sys.stdout`` / ``sys.stderr``) to ``path`` (appended)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved_fds = (os.dup(1), os.dup(2))
    saved_streams = (sys.stdout, sys.stderr)
    fh = open(path, "a", buffering=1)
    try:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        # not closed afterwards: logging handlers made meanwhile keep these; they write to whatever fd 1/2 is
        sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        sys.stdout, sys.stderr = saved_streams
        fh.close()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class StageLog:
    """Run stages quietly (see the module docstring); a context manager.

    Args:
        log_dir: where the logs go (created).
        title: what the stages belong to (a bundle name), shown before each stage name.
        verbose: no logs, no progress lines: all output on the terminal, as without this class.
        terminal: where progress lines and :meth:`say` write (default: the process's standard error for
            progress, standard output for :meth:`say`, as they are when the context is entered).

    Attributes:
        logs: the stage logs written so far, in order.
    """

    def __init__(self, log_dir: str | os.PathLike, title: str = "", verbose: bool = False,
                 terminal: TextIO | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.title = title
        self.verbose = verbose
        self.logs: list[Path] = []
        self._terminal = terminal
        self._out: TextIO | None = terminal
        self._err: TextIO | None = terminal
        self._stack = contextlib.ExitStack()

    @property
    def other_log(self) -> Path:
        """The log of output outside the stages."""
        return self.log_dir / "other.log"

    def __enter__(self) -> StageLog:
        if self.verbose:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        if self._terminal is None:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            # copies of today's fds 1 and 2, which the redirection below does not touch
            self._out = self._stack.enter_context(open(os.dup(1), "w", buffering=1, errors="replace"))
            self._err = self._stack.enter_context(open(os.dup(2), "w", buffering=1, errors="replace"))
        self._stack.enter_context(_output_to(self.other_log))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def say(self, text: str = "") -> None:
        """Print ``text`` on the terminal (also in verbose mode)."""
        print(text, file=self._out or sys.stdout, flush=True)

    def stage(self, bundle: str, configs: tuple[str, ...] | list[str], **overrides: Any) -> None:
        """:func:`fewlabel.protocols.run_stage`, quietly; named after its ``output_dir``'s folder."""
        from fewlabel.protocols import run_stage

        name = Path(str(overrides.get("output_dir", "stage"))).name
        self.run(name, run_stage, bundle, configs, **overrides)

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` as the stage ``name``: output to its log, one progress line.

        Raises:
            StageError: ``fn`` raised; chained to its exception. The last lines of the log and its path are
                on the terminal first.
        """
        if self.verbose:
            return fn(*args, **kwargs)
        index = len(self.logs) + 1
        safe = re.sub(r"[^\w.-]+", "_", name)
        log = self.log_dir / f"{index:02d}_{safe}.log"
        self.logs.append(log)
        log.write_text("")
        label = f"{self.title} [{index}] {name}".strip()
        progress = _Progress(label, log, self._err or sys.stderr)
        t0 = time.time()
        try:
            with progress, _output_to(log):
                result = fn(*args, **kwargs)
        except BaseException as e:
            progress.finish(f"FAILED after {_clock(time.time() - t0)}")
            with open(log, "a") as fh:  # the log ends with what went wrong
                fh.write("\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
            tail = log_tail(log, 25)
            reason = failure_reason(e)
            self.say(f"\n{label} failed: {reason}\n--- last lines of {log} ---\n{tail}\n---")
            if isinstance(e, KeyboardInterrupt):
                raise
            raise StageError(f"stage '{name}' of {self.title or 'the run'} failed: {reason}\n  its log: {log} "
                             "(last lines above)") from e
        progress.finish(f"done in {_clock(time.time() - t0)}")
        return result


class _Progress:
    """One stage's line: a tqdm bar fed from the log on a terminal; a start and an end line elsewhere."""

    def __init__(self, label: str, log: Path, stream: TextIO) -> None:
        self.label, self.log, self.stream = label, log, stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.epochs = EpochProgress()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._bar: Any = None
        self._pos = 0  # how far the log has been read
        self._rest = ""  # an unfinished last line

    def __enter__(self) -> _Progress:
        if self.tty:
            from tqdm import tqdm

            try:  # a terminal that reports no width (a pseudo-terminal of a script) would get an empty line
                width = {"dynamic_ncols": True} if os.get_terminal_size(self.stream.fileno()).columns else {}
            except (OSError, ValueError, AttributeError):
                width = {}
            self._bar = tqdm(total=None, desc=self.label, file=self.stream, leave=True, bar_format="{desc} {elapsed}",
                             **(width or {"ncols": 100}))
        else:
            print(f"{self.label} ... (log {self.log})", file=self.stream, flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self._read()

    def _read(self) -> None:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as fh:
                fh.seek(self._pos)
                text = fh.read()
                self._pos = fh.tell()
        except OSError:
            return
        lines = (self._rest + text).split("\n")
        self._rest = lines.pop()
        for line in lines:
            self.epochs.feed(line)
        self._show()

    def _show(self) -> None:
        if self._bar is None:
            return
        e = self.epochs
        if e.epochs and self._bar.total != e.epochs:
            self._bar.total = e.epochs
            self._bar.bar_format = "{desc} epoch {n:.1f}/{total} |{bar:20}| {elapsed}<{remaining}"
        if e.epochs:
            self._bar.n = e.done
        self._bar.refresh()

    def finish(self, status: str) -> None:
        """End the line with ``status`` (``done in 1:02``, ``FAILED ...``)."""
        e = self.epochs
        epochs = f", {e.done:g}/{e.epochs} epochs" if e.epochs else ""
        if self._bar is not None:
            self._bar.bar_format = "{desc} " + status.replace("{", "{{").replace("}", "}}") + epochs
            self._bar.close()
        else:
            print(f"{self.label}: {status}{epochs}", file=self.stream, flush=True)
