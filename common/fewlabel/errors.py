"""Exceptions raised on bad user input. Each message names the offending file and the fix."""

from __future__ import annotations


class FewLabelError(Exception):
    """Base class of the errors fewlabel raises on purpose."""


class DataError(FewLabelError, ValueError):
    """An input file or dataset folder cannot be used as it is (missing, corrupt, wrong shape)."""


class CheckpointError(FewLabelError, FileNotFoundError):
    """A weights file is missing or does not fit the network it is loaded into."""
