"""Former home of :class:`fewlabel.handlers.CheckpointLoader`; the names stay importable from here."""

from fewlabel.handlers.checkpoint_loader import CheckpointLoader, missing_weights_message

__all__ = ["CheckpointLoader", "missing_weights_message"]
