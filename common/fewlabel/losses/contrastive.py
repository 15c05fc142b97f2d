"""Contrastive losses: InfoNCE with explicit positives / negatives, and SimCLR's NT-Xent as its special case.

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

:class:`NTXentLoss` is SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020):
for ``N`` images seen as ``2N`` views it is the mean of ``l`` over all ``2N`` views, each view's
positive being the other view of its image and its negatives the ``2N - 2`` other views, i.e.
``(contrastive_loss(z1, z2) + contrastive_loss(z2, z1)) / 2`` with in-batch negatives.

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

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["contrastive_loss", "NTXentLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_features(name: str, x: torch.Tensor, ndim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a {ndim}-D tensor of features, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


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
        temperature: ``t > 0`` dividing the cosine similarities (SimCLR: 0.1 - 0.5; PolyCL: ``1 / N``).
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

    Call it either as MONAI's :class:`~monai.losses.ContrastiveLoss` is called,
    ``loss(z1, z2)`` with ``(N, D)`` projections of the first and second views (row ``i`` of both
    from image ``i``), or as ``loss(z)`` / ``loss(z, None)`` with the ``(2N, D)`` projections of
    both views stacked (first views, then second views), which is what a
    :class:`monai.engines.SupervisedTrainer` gives it after
    :class:`fewlabel.engines.simclr.SimCLRPairs`. Returns a float32 scalar.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

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
        return 0.5 * (
            contrastive_loss(z1, z2, temperature=self.temperature, in_batch=True)
            + contrastive_loss(z2, z1, temperature=self.temperature, in_batch=True)
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
