"""SLiPPA's composite loss (Borgars et al., equation 2), its Table 3 presets, and class weights (equation 1).

The loss is a weighted sum of four terms on ``(B, C, H, W)`` logits and class-index targets::

    L = alpha * L_wCE + beta * L_Dice + gamma * L_Huber + delta * L_FTL

- ``L_wCE``: cross-entropy with per-class weights (:func:`class_weights`, equation 1);
- ``L_Dice``: MONAI's :class:`~monai.losses.DiceLoss` on softmax probabilities;
- ``L_Huber``: Huber loss between the softmax probabilities and the one-hot target, over all
  channels (it carries a gradient; the authors' code compared an ``argmax`` map, which has none);
- ``L_FTL``: :class:`fewlabel.losses.FocalTverskyLoss` (alpha 0.7, beta 0.3, gamma 4/3).

The coefficients the paper selected are :data:`LOSS_PRESETS` (Table 3's ten candidates and the two
fine-tuning losses of section 4.3); :data:`TABLE3_CANDIDATES` holds each candidate's architecture,
learning rate and batch size as well, for sweeps.

Class weights come from per-class pixel counts of the training label maps
(:func:`pixel_counts`), computed once and cached as JSON (:func:`cached_class_weights`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks import one_hot
from torch.nn.modules.loss import _Loss

from fewlabel.errors import DataError
from fewlabel.losses.focal_tversky import FocalTverskyLoss

__all__ = [
    "CompositeLoss",
    "Candidate",
    "TABLE3_CANDIDATES",
    "LOSS_PRESETS",
    "CLASS_WEIGHT_SCHEMES",
    "class_weights",
    "pixel_counts",
    "cached_class_weights",
]

logger = logging.getLogger("fewlabel.losses")

#: Bumped when the cached JSON layout of :func:`cached_class_weights` changes.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    """One row of SLiPPA's Table 3: a model selected from the L3D training ablation.

    ``architecture`` is the paper's name; ``arch`` the key :func:`fewlabel.networks.build_network`
    normalises it to. ``coefficients`` are ``(alpha, beta, gamma, delta)`` of equation 2.
    """

    number: int
    architecture: str
    arch: str
    learning_rate: float
    batch_size: int
    coefficients: tuple[float, float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """The row as a plain dict (for configs and JSON)."""
        return asdict(self)


def _arch_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace("+", "plus")


_TABLE3 = (  # No., architecture, learning rate, batch size, alpha/beta/gamma/delta (Table 3, verbatim)
    (1, "UNet", 0.0001, 32, (1.00, 0.00, 0.00, 0.00)),
    (2, "UNet", 0.0001, 8, (1.00, 0.00, 0.00, 0.00)),
    (3, "UNet++", 0.001, 32, (0.25, 0.25, 0.00, 0.50)),
    (4, "UNet++", 0.0005, 16, (0.50, 0.00, 0.50, 0.00)),
    (5, "UNet++", 0.0005, 16, (0.75, 0.25, 0.00, 0.00)),
    (6, "UNet3+", 0.001, 8, (0.50, 0.00, 0.00, 0.50)),
    (7, "UNet3+", 0.001, 8, (0.50, 0.25, 0.00, 0.25)),
    (8, "DeepLabV3+", 0.0001, 64, (0.25, 0.00, 0.25, 0.50)),
    (9, "ResUNet++", 0.0005, 16, (0.50, 0.00, 0.00, 0.50)),
    (10, "ResUNet++", 0.0005, 8, (0.75, 0.00, 0.00, 0.25)),
)

#: Table 3: ``"candidate<N>"`` -> :class:`Candidate` (architecture, learning rate, batch size, coefficients).
TABLE3_CANDIDATES: dict[str, Candidate] = {
    f"candidate{n}": Candidate(n, a, _arch_key(a), lr, bs, coeffs) for n, a, lr, bs, coeffs in _TABLE3
}

#: Named ``(alpha, beta, gamma, delta)`` of equation 2: Table 3's candidates, and the two fine-tuning
#: losses of section 4.3 (``finetune_ce``: cross-entropy alone, Table 5; ``finetune_ce_ftl``:
#: 0.75 cross-entropy + 0.25 focal-Tversky, Table 6).
LOSS_PRESETS: dict[str, tuple[float, float, float, float]] = {
    **{name: c.coefficients for name, c in TABLE3_CANDIDATES.items()},
    "finetune_ce": (1.0, 0.0, 0.0, 0.0),
    "finetune_ce_ftl": (0.75, 0.0, 0.0, 0.25),
}

_TERMS = ("ce", "dice", "huber", "focal_tversky")


def _preset(name: str) -> tuple[float, float, float, float]:
    if name not in LOSS_PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; expected one of {sorted(LOSS_PRESETS)}")
    return LOSS_PRESETS[name]


class CompositeLoss(_Loss):
    """SLiPPA's loss (equation 2): ``alpha * wCE + beta * Dice + gamma * Huber + delta * focal-Tversky``.

    Args:
        alpha, beta, gamma, delta: coefficients of the weighted cross-entropy, Dice, Huber and
            focal-Tversky terms (>= 0, not all 0). A term whose coefficient is 0 is not computed.
            Those not given are 0; with none given (and no ``preset`` / ``coefficients``) the loss
            is the weighted cross-entropy alone (1, 0, 0, 0).
        preset: a name in :data:`LOSS_PRESETS` (e.g. ``"candidate2"``, ``"finetune_ce_ftl"``);
            exclusive with explicit coefficients.
        coefficients: ``(alpha, beta, gamma, delta)`` in one sequence (e.g. ``LOSS_PRESETS[name]``
            in a config); exclusive with ``preset`` and the single coefficients.
        class_weights: ``C`` positive weights of the cross-entropy term (a list or tensor, e.g. from
            :func:`cached_class_weights`), or ``None`` for an unweighted cross-entropy (until
            :meth:`set_class_weights`). Only the cross-entropy term is weighted, as in the paper.
        include_background: whether the Dice and focal-Tversky terms count channel 0. Default
            ``True``: the paper does not say, and MONAI's and the focal-Tversky reference's
            defaults include it (the authors most plausibly used library defaults). The Huber term
            always covers all channels, the cross-entropy term all classes.
        ignore_index: target value whose pixels take no part in any term (``None``: none). Must not
            be a class index in ``0 .. C-1``.
        huber_delta: the ``delta`` of :func:`torch.nn.functional.huber_loss`. With probabilities
            in [0, 1] and the default 1.0 every residual is inside the quadratic zone, so the term
            equals half the mean squared error between probabilities and one-hot targets.
        ftl_alpha, ftl_beta, ftl_gamma: false-negative weight, false-positive weight and focal
            parameter of the focal-Tversky term (Abraham & Khan's defaults 0.7, 0.3, 4/3).

    Shapes: ``input`` ``(B, C, *spatial)`` logits (C >= 2); ``target`` ``(B, 1, *spatial)`` or
    ``(B, *spatial)`` integer class indices in ``0 .. C-1`` (or ``ignore_index``). Returns a scalar
    float32 tensor (each term is a mean; the cross-entropy mean is weighted by the class weights
    as :func:`torch.nn.functional.cross_entropy` does). A batch whose pixels are all ignored gives 0
    with a graph.

    After each call, :attr:`last_terms` holds the unweighted value of each computed term and the
    total (``{"ce": ..., "focal_tversky": ..., "total": ...}``) for logging.

    Raises:
        ValueError: bad coefficients or preset; labels outside ``0 .. C-1``; shape mismatch; class
            weights whose length is not ``C``.
    """

    def __init__(
        self, alpha: float | None = None, beta: float | None = None, gamma: float | None = None,
        delta: float | None = None, preset: str | None = None, coefficients: Sequence[float] | None = None,
        class_weights: Sequence[float] | torch.Tensor | None = None, include_background: bool = True,
        ignore_index: int | None = None, huber_delta: float = 1.0, ftl_alpha: float = 0.7, ftl_beta: float = 0.3,
        ftl_gamma: float = 4.0 / 3.0,
    ) -> None:
        super().__init__(reduction="mean")
        given = (alpha, beta, gamma, delta)
        if sum([preset is not None, coefficients is not None, any(c is not None for c in given)]) > 1:
            raise ValueError("give one of preset, coefficients, or alpha/beta/gamma/delta, not both")
        if preset is not None:
            coeffs = _preset(preset)
        elif coefficients is not None:
            coeffs = tuple(float(c) for c in coefficients)
            if len(coeffs) != 4:
                raise ValueError(f"coefficients must be (alpha, beta, gamma, delta), got {coefficients}")
        else:
            # nothing given: weighted cross-entropy alone; otherwise the coefficients not given are 0
            coeffs = (1.0, 0.0, 0.0, 0.0) if all(c is None for c in given) else tuple(float(c or 0.0) for c in given)
        if any(not math.isfinite(c) or c < 0 for c in coeffs):
            raise ValueError(f"loss coefficients must be finite and >= 0, got {coeffs}")
        if not any(coeffs):
            raise ValueError("all loss coefficients are 0: nothing to optimise")
        if huber_delta <= 0:
            raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
        self.preset = preset
        self.alpha, self.beta, self.gamma, self.delta = coeffs
        self.include_background = include_background
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.huber_delta = float(huber_delta)
        self.register_buffer("class_weights", _as_weight_tensor(class_weights), persistent=False)
        self.class_weights: torch.Tensor | None
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                             ignore_index=self.ignore_index)
        self.focal_tversky = FocalTverskyLoss(
            alpha=ftl_alpha, beta=ftl_beta, gamma=ftl_gamma, include_background=include_background, softmax=True,
            to_onehot_y=True, ignore_index=self.ignore_index,
        )
        self._last: dict[str, torch.Tensor] = {}

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> CompositeLoss:
        """Build the loss with the coefficients of :data:`LOSS_PRESETS` ``[name]``; ``kwargs`` as the constructor."""
        return cls(preset=name, **kwargs)

    def set_class_weights(self, class_weights: Sequence[float] | torch.Tensor | None) -> CompositeLoss:
        """Set the ``C`` cross-entropy class weights after construction (``None``: unweighted); returns ``self``.

        A bundle builds the loss without weights and sets them in its ``initialize`` steps
        (``"$@base_loss.set_class_weights(@class_weights)"``), so resolving the config does not read
        the training labels: :func:`cached_class_weights` runs when the stage runs.

        Raises:
            ValueError: weights that are not finite, negative or all 0.
        """
        self.class_weights = _as_weight_tensor(class_weights)
        return self

    @property
    def coefficients(self) -> tuple[float, float, float, float]:
        """``(alpha, beta, gamma, delta)``."""
        return self.alpha, self.beta, self.gamma, self.delta

    @property
    def last_terms(self) -> dict[str, float]:
        """Unweighted value of each term computed in the last call, and ``"total"`` (empty before the first)."""
        return {k: float(v) for k, v in self._last.items()}

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, delta={self.delta}, "
                f"include_background={self.include_background}, ignore_index={self.ignore_index}")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        input, target = _plain(input), _plain(target)
        target = self._check(input, target)
        logits = input.float()
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        if not bool(valid.any()):
            zero = logits.sum() * 0.0
            self._last = {"total": zero.detach()}
            return zero
        terms: dict[str, torch.Tensor] = {}
        if self.alpha:
            terms["ce"] = self._cross_entropy(logits, target)
        if self.beta:
            terms["dice"] = self.dice(logits, target)
        if self.gamma:
            terms["huber"] = self._huber(logits, target, valid)
        if self.delta:
            terms["focal_tversky"] = self.focal_tversky(logits, target)
        coeffs = dict(zip(_TERMS, self.coefficients))
        total = sum(coeffs[k] * v for k, v in terms.items())
        self._last = {k: v.detach() for k, v in terms.items()}
        self._last["total"] = total.detach()
        return total

    def _check(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Validate shapes and label values; return the target as ``(B, 1, *spatial)`` int64."""
        if input.ndim < 3:
            raise ValueError(f"expected input (B, C, *spatial) logits, got shape {tuple(input.shape)}")
        n = input.shape[1]
        if n < 2:
            raise ValueError(f"CompositeLoss needs C >= 2 output channels (softmax), got {n}")
        if target.ndim == input.ndim - 1:
            target = target.unsqueeze(1)
        if target.ndim != input.ndim or target.shape[1] != 1 or target.shape[0] != input.shape[0] \
                or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not fit input {tuple(input.shape)}: expected "
                f"(B, 1, *spatial) or (B, *spatial) class indices"
            )
        if target.is_floating_point():
            if not bool(torch.isfinite(target).all()) or bool((target != torch.round(target)).any()):
                raise ValueError("target must hold integer class indices; found non-integer values")
        target = target.long()
        if self.ignore_index is not None and 0 <= self.ignore_index < n:
            raise ValueError(f"ignore_index {self.ignore_index} is a class index (0..{n - 1}); use e.g. -1 or 255")
        if self.class_weights is not None and self.class_weights.numel() != n:
            raise ValueError(f"{self.class_weights.numel()} class weights given for {n} output channels")
        labels = target if self.ignore_index is None else target[target != self.ignore_index]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            allowed = f"0..{n - 1}" + ("" if self.ignore_index is None else f" or {self.ignore_index} (ignored)")
            raise ValueError(
                f"target labels must be in {allowed}; found values in [{int(labels.min())}, {int(labels.max())}]. "
                "Check num_classes / out_channels and the label maps."
            )
        return target

    def _cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return F.cross_entropy(logits, target[:, 0], weight=weight, ignore_index=ignore)

    def _huber(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        n = logits.shape[1]
        prob = torch.softmax(logits, dim=1)
        onehot = one_hot(torch.where(valid, target, torch.zeros_like(target)), num_classes=n, dtype=prob.dtype)
        per_pixel = F.huber_loss(prob, onehot, reduction="none", delta=self.huber_delta).mean(1, keepdim=True)
        validf = valid.to(prob.dtype)
        return (per_pixel * validf).sum() / validf.sum()


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A MetaTensor as a plain tensor (the loss needs no metadata)."""
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _as_weight_tensor(weights: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if w.numel() == 0 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
        raise ValueError(f"class_weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w


# ----------------------------------------------------------------------------------------------------------
# class weights


#: The weighting schemes of :func:`class_weights` (``"slippa"``: equation 1; Table 4 compares the first three).
CLASS_WEIGHT_SCHEMES = ("slippa", "log", "proportional", "none")


def class_weights(counts: Sequence[int] | np.ndarray | torch.Tensor, scheme: str = "slippa") -> list[float]:
    """Cross-entropy class weights from per-class pixel counts.

    With ``|M|`` the number of pixels in all training masks and ``|M_i|`` those of class ``i``:

    - ``"slippa"`` (SLiPPA equation 1): ``W_i = max(1, ln(|M| / |M_i|))``. The paper writes
      ``log``; the authors' code uses the natural logarithm (``numpy.log``), and so does this;
    - ``"log"`` (Table 4's "logarithmic"): ``W_i = ln(|M| / |M_i|)`` (0 for a class with every pixel);
    - ``"proportional"`` (Table 4's "proportional", inverse frequency): ``W_i = |M| / |M_i|``,
      then scaled so the ``C`` weights sum to ``C`` (cross-entropy's weighted mean does not
      depend on this scale; it keeps the numbers readable);
    - ``"none"``: all ones.

    A class with no pixels has no finite weight: it gets the largest finite weight of the other
    classes (before the proportional scaling), and a warning is issued.

    Args:
        counts: ``C`` non-negative pixel counts, class 0 first (e.g. from :func:`pixel_counts`).
        scheme: one of :data:`CLASS_WEIGHT_SCHEMES`.

    Returns:
        ``C`` float weights.

    Raises:
        ValueError: unknown scheme, negative counts, or no pixels at all.
    """
    if scheme not in CLASS_WEIGHT_SCHEMES:
        raise ValueError(f"unknown class weight scheme {scheme!r}; expected one of {CLASS_WEIGHT_SCHEMES}")
    c = np.asarray(torch.as_tensor(counts).detach().cpu() if isinstance(counts, torch.Tensor) else counts,
                   dtype=np.float64).ravel()
    if c.size == 0 or not np.isfinite(c).all() or (c < 0).any():
        raise ValueError(f"counts must be C >= 1 finite, non-negative pixel counts, got {c.tolist()}")
    if scheme == "none":
        return [1.0] * c.size
    total = c.sum()
    if total <= 0:
        raise ValueError("the label maps hold no pixels: cannot compute class weights")
    present = c > 0
    ratio = np.ones_like(c)
    ratio[present] = total / c[present]
    if scheme == "slippa":
        w = np.maximum(1.0, np.log(ratio))
    elif scheme == "log":
        w = np.log(ratio)
    else:
        w = ratio
    if not present.all():
        missing = np.flatnonzero(~present).tolist()
        w[~present] = w[present].max()
        warnings.warn(f"classes {missing} have no pixels in the label maps; they get the largest weight "
                      f"({w[present].max():.4g}). Check num_classes and the dataset.", stacklevel=2)
    if scheme == "proportional":
        w = w * (c.size / w.sum())
    return [float(x) for x in w]


def _spatial(size: Sequence[int] | None, spatial_size: Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` from ``size`` (W, H) or ``spatial_size`` (H, W); ``None`` when neither is given."""
    if size is not None and spatial_size is not None:
        raise ValueError("give size (W, H) or spatial_size (H, W), not both")
    given = size if size is not None else spatial_size
    if given is None:
        return None
    if len(given) != 2 or any(int(s) < 1 for s in given):
        raise ValueError(f"the training size must be two positive integers, got {given}")
    w_h = [int(s) for s in given] if size is not None else [int(given[1]), int(given[0])]
    return w_h[1], w_h[0]


def pixel_counts(
    label_files: Sequence[str | os.PathLike], num_classes: int, size: Sequence[int] | None = None,
    progress: bool = True, spatial_size: Sequence[int] | None = None,
) -> np.ndarray:
    """Count the pixels of each class in label map files.

    Files are read with :class:`fewlabel.transforms.LoadLabel2D` (single-channel PNG/TIFF of class
    indices). With ``size``, each map is first resized as training resizes it (MONAI's
    :class:`~monai.transforms.Resize`, ``mode="nearest"``), so the counts are those the network sees.

    Args:
        label_files: label map paths.
        num_classes: classes ``0 .. num_classes - 1``.
        size: optional training size as ``(W, H)`` (width first, as the paper's "416 x 320"); ``None``
            counts at the files' own size.
        progress: show a tqdm progress bar.
        spatial_size: the training size in MONAI's order ``(H, W)`` (as ``Resized(spatial_size=...)``
            takes it), instead of ``size``.

    Returns:
        ``(num_classes,)`` int64 counts.

    Raises:
        DataError: a file is missing, unreadable, or holds values outside ``0 .. num_classes - 1``
            (the message names the file).
    """
    from monai.transforms import Resize
    from tqdm import tqdm

    from fewlabel.transforms.io import LoadLabel2D

    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    hw = _spatial(size, spatial_size)
    resize = None if hw is None else Resize(spatial_size=hw, mode="nearest")
    loader = LoadLabel2D(num_classes=num_classes)
    counts = np.zeros(num_classes, dtype=np.int64)
    for f in tqdm(list(label_files), desc="counting label pixels", unit="file", disable=not progress):
        lab = loader(f)
        if resize is not None:
            lab = resize(lab)
        arr = np.asarray(torch.as_tensor(lab)).astype(np.int64).ravel()
        counts += np.bincount(arr, minlength=num_classes)[:num_classes]
    return counts


def _dataset_key(label_files: Sequence[str | os.PathLike], num_classes: int, hw: tuple[int, int] | None) -> str:
    entries = []
    for f in sorted(os.path.abspath(os.fspath(f)) for f in label_files):
        try:
            st = os.stat(f)
        except OSError as e:
            raise DataError(f"label file not found: {f}. Check dataset_dir and the datalist.") from e
        entries.append([f, st.st_size, st.st_mtime_ns])
    blob = json.dumps({"files": entries, "num_classes": int(num_classes),
                       "size_hw": None if hw is None else list(hw), "version": _CACHE_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_class_weights(
    label_files: Sequence[str | os.PathLike], num_classes: int, scheme: str = "slippa",
    size: Sequence[int] | None = None, cache_file: str | os.PathLike | None = None,
    spatial_size: Sequence[int] | None = None,
) -> list[float]:
    """Class weights of a training set (:func:`class_weights` of :func:`pixel_counts`), cached as JSON.

    The pixel counts are computed once and stored with a key: a hash of the files' absolute paths,
    sizes and modification times, ``num_classes`` and ``size``. A later call with the same key
    reads the counts back; a changed, added or removed file recomputes them. The JSON holds the key,
    the counts, the scheme and the weights, so people can read them. Weights are logged at INFO.

    Args:
        label_files: the training label maps.
        num_classes: number of classes (SLiPPA: 4).
        scheme: one of :data:`CLASS_WEIGHT_SCHEMES`.
        size: optional training size ``(W, H)``, see :func:`pixel_counts`.
        cache_file: JSON path; default ``<cache_dir("class_weights")>/<key prefix>.json`` under
            :func:`fewlabel.data.cache.cache_dir` (``$FEWLABEL_CACHE``).
        spatial_size: the training size as ``(H, W)`` (MONAI's order, e.g. a bundle's ``image_size``),
            instead of ``size``.

    Returns:
        ``num_classes`` float weights.

    Raises:
        DataError: a label file is missing or unusable (see :func:`pixel_counts`).
    """
    if scheme not in CLASS_WEIGHT_SCHEMES:
        raise ValueError(f"unknown class weight scheme {scheme!r}; expected one of {CLASS_WEIGHT_SCHEMES}")
    files = [os.fspath(f) for f in label_files]
    if not files:
        raise ValueError("no label files given: cannot compute class weights")
    hw = _spatial(size, spatial_size)
    key = _dataset_key(files, num_classes, hw)
    if cache_file is None:
        from fewlabel.data.cache import cache_dir

        cache_file = cache_dir("class_weights") / f"{key[:24]}.json"
    path = Path(cache_file)
    counts = _read_cached_counts(path, key, num_classes)
    if counts is None:
        counts = pixel_counts(files, num_classes, spatial_size=hw)
        source = "counted"
    else:
        source = f"cached in {path}"
    weights = class_weights(counts, scheme)
    record = {
        "key": key, "num_classes": int(num_classes), "num_files": len(files),
        "size_hw": None if hw is None else list(hw), "counts": [int(c) for c in counts],
        "shares": [float(c) / max(1, int(np.sum(counts))) for c in counts], "scheme": scheme, "weights": weights,
        "version": _CACHE_VERSION,
    }
    stored = _read_json(path)
    if stored != record:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    logger.info("class weights (%s, %d files, %s): %s; pixel counts %s", scheme, len(files), source,
                ", ".join(f"{w:.4f}" for w in weights), [int(c) for c in counts])
    return weights


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_cached_counts(path: Path, key: str, num_classes: int) -> np.ndarray | None:
    data = _read_json(path)
    if data is None:
        if path.is_file():
            logger.warning("class weight cache %s is unreadable; recounting", path)
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("version") != _CACHE_VERSION:
        return None
    counts = data.get("counts")
    if not isinstance(counts, list) or len(counts) != num_classes:
        return None
    return np.asarray(counts, dtype=np.int64)
