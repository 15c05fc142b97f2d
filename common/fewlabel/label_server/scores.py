"""Uncertainty scores that say which image to label next (pure torch; no MONAI Label import).

The MONAI Label app (:mod:`fewlabel.label_server.activelearning`) computes them with each
bundle's own inference pipeline and keeps them in the datastore; the tests compute them here from
the same logits.

- :func:`prediction_entropy`: the mean per-pixel (per-voxel) entropy of a network's output,
  normalised to [0, 1] (1: every pixel a coin toss between the classes);
- :func:`activation_of`: how the bundle turns its logits into probabilities (sigmoid or softmax),
  read from its post-processing;
- :func:`stored_score` / :func:`score_record`: the record an image's datastore info holds, under
  :data:`SCORE_KEY`, and whether it is still valid for the weights served now (:func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SCORE_KEY", "KIND_SUFFIXES", "prediction_entropy", "activation_of", "fingerprint", "reads", "score_record",
           "stored_score"]

#: the key of an image's datastore info that holds its scores, ``{bundle: record}``
SCORE_KEY = "fewlabel_uncertainty"


def prediction_entropy(logits: torch.Tensor, activation: str) -> float:
    """Mean entropy of a prediction over its pixels (voxels), in [0, 1].

    Args:
        logits: the network's output for one image, ``(C, *spatial)`` (no batch dimension), before
            any activation.
        activation: ``"sigmoid"``: each channel is an independent yes/no (binary entropy per channel,
            divided by log 2); ``"softmax"``: the channels are exclusive classes (entropy of the
            softmax over ``C``, divided by log C).

    Returns:
        0 where the network is certain of every pixel, 1 where every pixel is a coin toss.

    Raises:
        ValueError: an unknown ``activation``, a softmax over one channel, or a non-finite output.
    """
    x = torch.as_tensor(logits).detach().float()
    if not torch.isfinite(x).all():
        raise ValueError("the network's output holds NaN or infinite values; no uncertainty can be computed")
    if activation == "sigmoid":
        # the binary cross-entropy of sigmoid(x) with itself is its entropy, computed stably from x
        h = F.binary_cross_entropy_with_logits(x, torch.sigmoid(x), reduction="none") / math.log(2.0)
        return float(h.mean().clamp(0.0, 1.0))
    if activation == "softmax":
        if x.shape[0] < 2:
            raise ValueError("a softmax over one channel is always 1; use activation='sigmoid'")
        logp = torch.log_softmax(x, dim=0)
        h = -(logp.exp() * logp).sum(dim=0) / math.log(x.shape[0])
        return float(h.mean().clamp(0.0, 1.0))
    raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


def activation_of(post_transforms: Iterable[Any], channels: int) -> str:
    """``"sigmoid"`` or ``"softmax"``: how a bundle's post-processing reads its ``channels`` logits.

    The first ``Activationsd`` decides (its ``sigmoid`` / ``softmax`` flag); without one, one channel
    is a sigmoid (a threshold follows) and several are exclusive classes (an argmax follows).
    """
    for t in post_transforms:
        if type(t).__name__ == "Activationsd":  # flags per key, e.g. (True,)
            if any(_flags(getattr(t, "sigmoid", False))):
                return "sigmoid"
            if any(_flags(getattr(t, "softmax", False))):
                return "softmax"
    return "sigmoid" if channels == 1 else "softmax"


#: file types a bundle of each input kind (:func:`fewlabel.bundle.input_kind`) reads from the studies folder
KIND_SUFFIXES = {"frame": (".png", ".jpg", ".jpeg", ".tif", ".tiff"), "volume": (".nii", ".nii.gz")}


def reads(kind: str, path: str | os.PathLike) -> bool:
    """Whether a bundle taking ``kind`` (``"frame"`` / ``"volume"``) reads the image file ``path``."""
    return os.fspath(path).lower().endswith(KIND_SUFFIXES.get(kind, ()))


def _flags(value: Any) -> tuple[bool, ...]:
    return tuple(bool(v) for v in value) if isinstance(value, (tuple, list)) else (bool(value),)


def fingerprint(weights: str | os.PathLike, config: str | os.PathLike | None = None) -> str:
    """What a score depends on: the served weights file (size and modification time, which a
    training run's atomic replace changes) and the inference config's content (not its time: the
    app rewrites it at each start)."""
    st = os.stat(weights)
    h = hashlib.sha256(f"{os.path.realpath(weights)}:{st.st_size}:{st.st_mtime_ns}".encode())
    if config is not None:
        with open(config, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def score_record(score: float, method: str, weights_fingerprint: str, ts: float) -> dict[str, Any]:
    """The record kept for one bundle in an image's info: score, method, fingerprint, time."""
    return {"score": float(score), "method": method, "weights": weights_fingerprint, "ts": float(ts)}


def stored_score(info: Mapping[str, Any], bundle: str, weights_fingerprint: str) -> float | None:
    """The score of ``bundle`` in an image's datastore ``info``, or ``None`` when there is none or it
    was computed with other weights (or another inference config)."""
    record = (info.get(SCORE_KEY) or {}).get(bundle) if isinstance(info.get(SCORE_KEY), Mapping) else None
    if not isinstance(record, Mapping) or record.get("weights") != weights_fingerprint:
        return None
    score = record.get("score")
    return float(score) if isinstance(score, (int, float)) else None
