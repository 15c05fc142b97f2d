"""Contrastive losses: InfoNCE with explicit positives / negatives, SimCLR's NT-Xent and PolyCL's triplet
loss as its special cases, and supervised contrastive learning (SupCon).

One general function, :func:`contrastive_loss`, scores every anchor against one positive and a
set of negatives with the temperature-scaled cosine similarity and takes the cross-entropy of
picking the positive::

    l_i = -log( exp(s(a_i, p_i) / t) / (exp(s(a_i, p_i) / t) + sum_n exp(s(a_i, n) / t)) )

with ``s`` the cosine similarity. The negatives ``n`` of anchor ``i`` are, as asked:

- explicit, one set per anchor (``(N, K, D)``): PolyCL's equation 4 is ``K = 1``, the negative
  slice chosen by its example-selection rule;
- explicit, one pool shared by all anchors (``(M, D)``): e.g. a memory queue;
- the rest of the batch (``in_batch=True``): the other anchors and the other anchors'
  positives, as in SimCLR.

The wrappers:

- :class:`NTXentLoss` is SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020):
  for ``N`` images seen as ``2N`` views it is the mean of ``l`` over all ``2N`` views, each view's
  positive being the other view of its image and its negatives the ``2N - 2`` other views, i.e.
  ``(contrastive_loss(z1, z2) + contrastive_loss(z2, z1)) / 2`` with in-batch negatives.
- :class:`PolyCLLoss` is PolyCL's equation 4 (Ward et al., MELBA 2025): each anchor slice ``s``
  against its own positive ``s+`` and its own single negative ``s-`` only (no in-batch negatives),
  temperature ``1 / M`` for a minibatch of ``M`` anchors, i.e.
  ``contrastive_loss(z, z_pos, z_neg[:, None], 1 / M, in_batch=False)``.
- :class:`SupConLoss` is Khosla et al. (2020)'s supervised contrastive loss ``L_out``, the SupCon
  baseline PolyCL is compared against. Its positives are *all* other samples (views) sharing the
  anchor's label, so it is not one positive per anchor and has its own masked log-softmax; with
  exactly two views per label it is NT-Xent.

Why not :class:`monai.losses.ContrastiveLoss`: it computes the same NT-Xent value (the tests
check this), but (1) it only knows SimCLR's pairing, so PolyCL's explicit positives and
negatives cannot be expressed with it; (2) it takes ``exp`` of the scaled similarities and then
``log`` of their ratio, which overflows for small temperatures or under float16 autocast
(``exp(1 / 0.01)`` is infinite in float32), where a log-sum-exp does not; (3) it builds the
``(2N, 2N, D)`` broadcast of the features for the cosine similarity instead of a ``(2N, 2N)``
matrix product. Here the features are L2-normalised once and the loss is a log-softmax in
float32, whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from fewlabel.arguments import as_optional

__all__ = ["contrastive_loss", "NTXentLoss", "PolyCLLoss", "SupConLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_features(name: str, x: torch.Tensor, ndim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a {ndim}-D tensor of features, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def _check_batch(name: str, x: torch.Tensor) -> None:
    """A non-empty batch of finite features (``_check_features`` has checked the rank and dtype)."""
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{name} is empty ({tuple(x.shape)}): a contrastive loss needs at least one sample")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")


def _check_temperature(temperature: float | None, allow_none: bool) -> float | None:
    if temperature is None and allow_none:
        return None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a float > 0{' or None' if allow_none else ''}, got {temperature!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    return float(temperature)


def contrastive_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.1,
    in_batch: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE loss of anchors against their positives and negatives (cosine similarity / temperature).

    Args:
        anchors: ``(N, D)`` features (any scale: they are L2-normalised here).
        positives: ``(N, D)`` features, ``positives[i]`` the positive of ``anchors[i]``.
        negatives: ``(N, K, D)`` negatives per anchor (PolyCL: ``K = 1``), ``(M, D)`` negatives shared
            by every anchor, or None.
        temperature: ``t > 0`` dividing the cosine similarities (SimCLR: 0.1 - 0.5; PolyCL: ``1 / N``, see
            :class:`PolyCLLoss`).
        in_batch: also use the other anchors and the other anchors' positives as negatives
            (``j != i``). Default: True when ``negatives`` is None, else False.
        reduction: ``"mean"`` (over anchors), ``"sum"`` or ``"none"`` (``(N,)``).

    Returns:
        A float32 scalar (or ``(N,)``) >= 0. An anchor without any negative (``N = 1`` with
        in-batch negatives only) has loss 0: picking the positive among one candidate is certain.

    Raises:
        ValueError: shapes that do not fit, ``temperature <= 0`` or an unknown ``reduction``.
    """
    _check_features("anchors", anchors, 2)
    _check_features("positives", positives, 2)
    if positives.shape != anchors.shape:
        raise ValueError(f"positives {tuple(positives.shape)} must have the anchors' shape {tuple(anchors.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got '{reduction}'")
    n, d = anchors.shape
    if in_batch is None:
        in_batch = negatives is None

    a = F.normalize(anchors.float(), dim=1)
    p = F.normalize(positives.float(), dim=1)
    logits = [(a * p).sum(1, keepdim=True) / temperature]  # (N, 1): the positive comes first
    if negatives is not None:
        if negatives.ndim == 3:
            _check_features("negatives", negatives, 3)
            if negatives.shape[0] != n or negatives.shape[2] != d:
                raise ValueError(f"per-anchor negatives must be (N={n}, K, D={d}), got {tuple(negatives.shape)}")
            neg = F.normalize(negatives.float(), dim=2)
            logits.append(torch.einsum("nd,nkd->nk", a, neg) / temperature)
        else:
            _check_features("negatives", negatives, 2)
            if negatives.shape[1] != d:
                raise ValueError(f"shared negatives must be (M, D={d}), got {tuple(negatives.shape)}")
            logits.append(a @ F.normalize(negatives.float(), dim=1).T / temperature)
    if in_batch and n > 1:
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=a.device)
        for other in (a, p):
            sim = a @ other.T / temperature
            logits.append(sim[off_diagonal].view(n, n - 1))
    all_logits = torch.cat(logits, dim=1)
    loss = torch.logsumexp(all_logits, dim=1) - all_logits[:, 0]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class NTXentLoss(_Loss):
    """SimCLR's NT-Xent loss over ``2N`` views of ``N`` images (see the module docstring).

    Args:
        temperature: ``t > 0`` (default 0.1).
        gather_distributed: under ``torch.distributed``, take the other ranks' projections as negatives too
            (lightly's option; default False: each rank's batch alone, as before).

    The computation is lightly's ``NTXentLoss`` (the loss of the library the baselines use; each view's
    negatives are the other ``2N - 2`` projections of the batch, as SimCLR's paper defines it).

    Call it either as MONAI's :class:`~monai.losses.ContrastiveLoss` is called,
    ``loss(z1, z2)`` with ``(N, D)`` projections of the first and second views (row ``i`` of both
    from image ``i``), or as ``loss(z)`` / ``loss(z, None)`` with the ``(2N, D)`` projections of
    both views stacked (first views, then second views), which is what a
    :class:`monai.engines.SupervisedTrainer` gives it after
    :class:`fewlabel.engines.simclr.SimCLRPairs`. Returns a float32 scalar.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        from lightly.loss import NTXentLoss as LightlyNTXent  # seconds to import (timm): only when used

        self.criterion = LightlyNTXent(temperature=self.temperature, gather_distributed=bool(gather_distributed))

    def forward(self, input: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """``input``, ``target``: ``(N, D)`` views 1 and 2; or ``input`` ``(2N, D)`` and ``target`` None."""
        if target is None:
            _check_features("input", input, 2)
            if input.shape[0] % 2:
                raise ValueError(
                    f"with no target, input must stack two views of each image ((2N, D)); got {input.shape[0]} rows"
                )
            z1, z2 = input.chunk(2, dim=0)
        else:
            z1, z2 = input, target
        _check_features("first views", z1, 2)
        _check_features("second views", z2, 2)
        _check_batch("first views", z1)
        _check_batch("second views", z2)
        if z1.shape != z2.shape:
            raise ValueError(f"the two views' projections differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
        return self.criterion(z1.float(), z2.float())

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class PolyCLLoss(_Loss):
    """PolyCL's contrastive loss, equation 4 of Ward et al. (MELBA 2025), averaged over the anchors.

    For anchor embeddings ``z = g(f(s))``, their positives ``z+ = g(f(s+))`` and negatives
    ``z- = g(f(s-))`` (``g`` the projection head, ``f`` the encoder; the example-selection rule --
    PolyCL-S, -O or -M -- picks ``s+`` and ``s-`` for every anchor ``s`` beforehand)::

        L_C = -log( exp(sim(z, z+) / tau) / (exp(sim(z, z+) / tau) + exp(sim(z, z-) / tau)) )

    with ``sim`` the cosine similarity. The denominator holds the anchor's own positive and its own
    single negative and nothing else: the other anchors of the minibatch and their positives /
    negatives are *not* negatives (unlike SimCLR's NT-Xent). This is
    ``contrastive_loss(z, z+, z-[:, None], tau, in_batch=False)``; the minibatch loss is the mean of
    ``L_C`` over the ``M`` anchors (``reduction="mean"``), as in the authors' training loop.

    Args:
        temperature: ``tau > 0``. None (default) means ``tau = 1 / M`` as the paper sets it, ``M`` being
            the minibatch size, taken here as the number of anchors ``B`` in *this* call (so a smaller
            last batch gets a larger ``tau``; pass ``1 / 20`` explicitly for the paper's fixed batch of
            20 if that is wanted; under data parallelism ``B`` is the per-device batch). A float overrides.
        reduction: ``"mean"`` (over anchors), ``"sum"`` or ``"none"`` (``(B,)``).

    Call ``loss(anchor, positive, negative)`` with three ``(B, D)`` floating tensors, row ``i`` of each
    from the ``i``-th triplet (or ``loss(stacked)`` with their ``(3B, D)`` concatenation);
    any scale (cosine similarity), any float dtype (computed in float32).
    Returns a float32 scalar (or ``(B,)``) >= 0.

    Raises:
        ValueError: not three ``(B, D)`` tensors of the same shape, ``B == 0`` or ``D == 0``, NaN / inf
            features, a temperature that is not finite and > 0, an unknown reduction.
    """

    def __init__(self, temperature: float | None = None, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got '{reduction}'")
        super().__init__(reduction=reduction)
        self.temperature = _check_temperature(as_optional(temperature, "temperature"), allow_none=True)

    def forward(
        self, anchor: torch.Tensor, positive: torch.Tensor | None = None, negative: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``anchor``, ``positive``, ``negative``: ``(B, D)`` projections of the triplets.

        Stacked form: ``loss(z)`` with one ``(3B, D)`` tensor (rows: the ``B`` anchors, their positives,
        their negatives, as :class:`fewlabel.engines.polycl.TripletBatch` stacks the images); this is how
        ``SupervisedTrainer`` calls it (``loss(pred, None)``).
        """
        if positive is None and negative is None:
            _check_features("anchor", anchor, 2)
            if anchor.shape[0] % 3:
                raise ValueError(
                    f"a stacked triplet batch needs 3B rows (anchors, positives, negatives), got {anchor.shape[0]}"
                )
            anchor, positive, negative = anchor.chunk(3)
        elif positive is None or negative is None:
            raise ValueError("pass both positive and negative, or neither (one stacked (3B, D) tensor)")
        for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
            _check_features(name, x, 2)
        if not anchor.shape == positive.shape == negative.shape:
            raise ValueError(
                "anchor, positive and negative must have the same (B, D) shape, got "
                f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
            )
        for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
            _check_batch(name, x)
        tau = self.temperature if self.temperature is not None else 1.0 / anchor.shape[0]
        return contrastive_loss(
            anchor, positive, negative.unsqueeze(1), temperature=tau, in_batch=False, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        tau = "1/M" if self.temperature is None else self.temperature
        return f"temperature={tau}, reduction={self.reduction}"


class SupConLoss(_Loss):
    """Supervised contrastive loss ``L_out`` (Khosla et al., NeurIPS 2020, eq. 2), PolyCL's SupCon baseline.

    Every sample (every view, for ``(B, V, D)`` input) ``i`` is an anchor; ``A(i)`` are all the other
    samples / views of the batch and ``P(i)`` those of ``A(i)`` with the anchor's label::

        l_i = -1 / |P(i)| * sum_{p in P(i)} log( exp(sim(z_i, z_p) / t) / sum_{a in A(i)} exp(sim(z_i, z_a) / t) )

    with ``sim`` the cosine similarity (Khosla et al. L2-normalise the projections, so their dot
    product is this). The ``1 / |P(i)|`` is outside the log (``L_out``, the form they recommend, not
    ``L_in``). Anchors without any positive (``|P(i)| = 0``, a label met once) have no defined term:
    they count 0 and are left out of the mean; if no anchor has a positive the loss is 0 (still
    attached to the graph). With two views per label and nothing else (``labels=None`` with
    ``V = 2``, or ``(2N, D)`` features whose labels pair rows ``i`` and ``i + N``), ``P(i)`` is the
    other view and ``A(i)`` the other ``2N - 1`` views: exactly :class:`NTXentLoss`. Khosla et al.'s
    reference code's extra factor ``temperature / base_temperature`` is 1 at its defaults and is left
    out.

    What the labels are in PolyCL's comparison: the paper lists "SupCon" among its contrastive
    baselines without saying which labels it was trained with or at what temperature. The labels
    PolyCL itself uses are organ presence (``T(s)``, PolyCL-O, binary), the scan id (PolyCL-S) or
    both (PolyCL-M); which one the baseline used is the caller's choice -- record it with the
    experiment.

    Args:
        temperature: ``t > 0`` (default 0.1, the value Khosla et al. report working best; their code's
            default is 0.07). No ``1 / M`` default: the PolyCL paper gives that only for its own loss.
        reduction: ``"mean"`` (over anchors that have a positive), ``"sum"``, or ``"none"`` (per anchor:
            ``(B,)`` or ``(B, V)``, 0 where there is no positive).

    Call ``loss(features, labels)``: ``features`` ``(B, D)`` (one view per sample) or ``(B, V, D)``
    (``V`` views per sample, all sharing the sample's label), any scale and float dtype; ``labels``
    ``(B,)`` integer or bool class ids, or None for each sample its own class (SimCLR, needs ``V >= 2``).
    Returns a float32 scalar (or per-anchor losses) >= 0.

    Raises:
        ValueError: features not ``(B, D)`` / ``(B, V, D)``, an empty batch, NaN / inf features, labels
            that are not ``(B,)`` integers / bools, ``labels=None`` with one view, a bad temperature or
            reduction.
    """

    def __init__(self, temperature: float = 0.1, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got '{reduction}'")
        super().__init__(reduction=reduction)
        self.temperature = _check_temperature(temperature, allow_none=False)

    def forward(self, input: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """``input``: ``(B, D)`` or ``(B, V, D)`` projections; ``target``: ``(B,)`` labels or None."""
        if not isinstance(input, torch.Tensor) or input.ndim not in (2, 3):
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"features must be (B, D) or (B, V, D), got {shape}")
        _check_features("features", input, input.ndim)
        _check_batch("features", input)
        features = input if input.ndim == 3 else input.unsqueeze(1)
        b, v, _ = features.shape
        if target is None:
            if v < 2:
                raise ValueError("labels=None (each sample its own class) needs at least two views: (B, V >= 2, D)")
            labels = torch.arange(b, device=features.device)
        else:
            labels = target
            if not isinstance(labels, torch.Tensor) or labels.shape != (b,):
                shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                raise ValueError(f"labels must be a (B={b},) tensor, got {shape}")
            if labels.is_floating_point() or labels.is_complex():
                raise ValueError(f"labels must be integer or bool class ids, got {labels.dtype}")
            labels = labels.to(features.device)

        z = F.normalize(features.float().reshape(b * v, -1), dim=1)  # sample-major: row k is sample k // v
        labels = labels.repeat_interleave(v)
        n = b * v
        not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
        positive = (labels[:, None] == labels[None, :]) & not_self
        sim = z @ z.T / self.temperature
        if n > 1:
            logits = sim.masked_fill(~not_self, float("-inf"))  # A(i): every sample / view but i
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        else:  # a single view of a single sample: no A(i), no positive; keep the graph
            log_prob = sim * 0.0
        n_pos = positive.sum(1)
        has_pos = n_pos > 0
        loss = -torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
        if self.reduction == "none":
            return loss.view(b, v) if input.ndim == 3 else loss
        if self.reduction == "sum":
            return loss.sum()
        if not bool(has_pos.any()):
            return loss.sum()  # 0, attached to the graph
        return loss[has_pos].mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction}"
