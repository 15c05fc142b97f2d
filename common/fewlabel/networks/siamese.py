"""A segmentation network's encoder in a two-view self-supervised model: BYOL, SimSiam or DINO, on lightly.

The papers' self-supervised baselines (MedSASS Tables 1-2 and Figures 2-3: BYOL, DINO, SimSiam) pre-train only
an encoder. :class:`SiameseEncoder` wraps the encoder of a segmentation network (shared, not copied, as
:class:`fewlabel.networks.ContrastiveEncoder` does) with the method's heads from ``lightly``
(``lightly.models.modules``) and, for BYOL and DINO, a momentum ("teacher") copy of encoder and projection
head updated with ``lightly.models.utils.update_momentum`` (:class:`fewlabel.handlers.MomentumUpdate`
calls :meth:`SiameseEncoder.update_momentum` after every step). Its partner loss is
:class:`fewlabel.losses.SiameseLoss` (lightly's ``NegativeCosineSimilarity`` or ``DINOLoss``).

Training it trains ``network.encoder``; saving ``network`` itself afterwards gives a checkpoint of the whole
segmentation network with the pre-trained encoder and the decoder at its seeded initialisation, which the
bundles' fine-tuning (``pretrain_mode: encoder``) and zero-label evaluation read unchanged.

A config sketch (MedSASS ``configs/pretrain_siamese.json``)::

    "ssl_network": {"_target_": "fewlabel.networks.SiameseEncoder", "network": "@network_init", "method": "byol"},
    "network": "$@ssl_network.to(@device)",
    "loss": {"_target_": "fewlabel.losses.SiameseLoss", "method": "byol"},
    "train#prepare_batch": {"_target_": "fewlabel.engines.SimCLRPairs", "seed": "@seed"},
    "train#handlers": [{"_target_": "fewlabel.handlers.MomentumUpdate", "network": "@ssl_network"}, ...]
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
from .contrastive import encoder_feature_dim, network_encoder, pooled_features

__all__ = ["SiameseEncoder", "SIAMESE_METHODS", "SIAMESE_HEAD_DEFAULTS"]

SIAMESE_METHODS = ("byol", "simsiam", "dino")
# lightly's own defaults for each method's heads (input_dim is the encoder's); the papers give none
SIAMESE_HEAD_DEFAULTS: dict[str, dict[str, int]] = {
    "byol": {"hidden_dim": 4096, "projection_dim": 256, "prediction_hidden_dim": 4096},
    "simsiam": {"hidden_dim": 2048, "projection_dim": 2048, "prediction_hidden_dim": 512},
    "dino": {"hidden_dim": 2048, "bottleneck_dim": 256, "projection_dim": 65536},
}


class SiameseEncoder(nn.Module):
    """Two views of each image through a segmentation network's encoder and a BYOL, SimSiam or DINO head.

    ``forward`` takes the views stacked as :class:`fewlabel.engines.SimCLRPairs` gives them, ``(2B, C, H, W)``
    (rows ``i`` and ``B + i`` the two views of image ``i``), pools the encoder's deepest feature map to
    ``(2B, feature_dim)`` and returns ``{"student": [s1, s2], "teacher": [t1, t2]}``, each ``(B, D)`` float:

    - ``byol``: student = prediction(projection(encoder(view))), teacher = the momentum projection of the
      momentum encoder (no gradient); D = ``projection_dim``;
    - ``simsiam``: student = prediction(projection(encoder(view))), teacher = projection(encoder(view))
      detached (the stop-gradient); D = ``projection_dim``;
    - ``dino``: student = DINO head(encoder(view)), teacher = the momentum head of the momentum encoder;
      D = ``projection_dim`` (the prototypes, 65536 by lightly's default).

    Args:
        network: the segmentation network whose ``encoder`` is pre-trained (shared with this module); for a network
            with a timm ViT as ``vit`` and no ``encoder`` (MedSASS's ``vit_unet``) the ViT is pre-trained and its
            class token (after the final norm) is the representation, as in DINO's ViTs.
        method: ``"byol"``, ``"simsiam"`` or ``"dino"``.
        projection_dim, hidden_dim, prediction_hidden_dim, bottleneck_dim: head sizes; None takes lightly's
            defaults (:data:`SIAMESE_HEAD_DEFAULTS`); ``bottleneck_dim`` is DINO's only, ``prediction_hidden_dim``
            BYOL's and SimSiam's.
        feature_dim: channels of the encoder's deepest feature map (read from ``encoder.out_channels`` when None).

    DINO's head keeps its last layer trainable from the first step (lightly's default; DINO's own recipe freezes
    it for the first epoch).

    The state dict holds ``encoder.*`` (the network's encoder), the heads, and for BYOL / DINO
    ``momentum_encoder.*`` and ``momentum_projection.*``.
    """

    def __init__(
        self,
        network: nn.Module,
        method: str = "byol",
        projection_dim: int | None = None,
        hidden_dim: int | None = None,
        prediction_hidden_dim: int | None = None,
        bottleneck_dim: int | None = None,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        method = str(method).lower()
        if method not in SIAMESE_METHODS:
            raise ValueError(f"pretrain_method must be one of {SIAMESE_METHODS}, got '{method}'")
        self.method = method
        vit = getattr(network, "vit", None)
        # a ViT U-Net (MedSASS's vit_unet): the timm ViT is the backbone, its class token the representation
        self.use_class_token = vit is not None and not hasattr(network, "encoder")
        if self.use_class_token:
            self.encoder = vit
            self.feature_dim = int(feature_dim or vit.embed_dim)
        else:
            self.encoder = network_encoder(network)
            self.feature_dim = encoder_feature_dim(self.encoder, feature_dim)
        sizes = dict(SIAMESE_HEAD_DEFAULTS[method])
        given = {"projection_dim": projection_dim, "hidden_dim": hidden_dim,
                 "prediction_hidden_dim": prediction_hidden_dim, "bottleneck_dim": bottleneck_dim}
        sizes.update({k: int(v) for k, v in given.items() if v is not None and k in sizes})
        for key, value in sizes.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.sizes = sizes
        # lightly (and the timm it imports) takes seconds to import: only the runs that use it pay for it
        from lightly.models.modules import (
            BYOLPredictionHead,
            BYOLProjectionHead,
            DINOProjectionHead,
            SimSiamPredictionHead,
            SimSiamProjectionHead,
        )
        from lightly.models.utils import deactivate_requires_grad

        self.output_dim = sizes["projection_dim"]
        self.prediction: nn.Module | None = None
        heads = {"byol": BYOLProjectionHead, "simsiam": SimSiamProjectionHead, "dino": DINOProjectionHead}
        head_sizes = [sizes["hidden_dim"], sizes["projection_dim"]]
        if method == "dino":
            head_sizes = [sizes["hidden_dim"], sizes["bottleneck_dim"], sizes["projection_dim"]]
        self.projection = heads[method](self.feature_dim, *head_sizes)
        if method in ("byol", "simsiam"):
            predictor = BYOLPredictionHead if method == "byol" else SimSiamPredictionHead
            dim = sizes["projection_dim"]
            self.prediction = predictor(dim, sizes["prediction_hidden_dim"], dim)
        self.has_momentum = method in ("byol", "dino")
        if self.has_momentum:
            self.momentum_encoder = copy.deepcopy(self.encoder)
            # built anew and loaded, not deep-copied: DINO's head holds a weight-normalised layer, which
            # torch cannot deep-copy
            self.momentum_projection = heads[method](self.feature_dim, *head_sizes)
            self.momentum_projection.load_state_dict(self.projection.state_dict())
            deactivate_requires_grad(self.momentum_encoder)
            deactivate_requires_grad(self.momentum_projection)

    def features(self, x: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        """Pooled deepest features (a ViT: the class token) ``(N, feature_dim)`` of the (momentum) encoder."""
        encoder = self.momentum_encoder if momentum else self.encoder
        if self.use_class_token:
            return encoder.forward_features(x)[:, 0]
        return pooled_features(encoder(x), self.feature_dim)

    def forward(self, views: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        if views.ndim != 4 or views.shape[0] % 2:
            raise ValueError(f"expected two stacked views (2B, C, H, W), got shape {tuple(views.shape)}")
        b = views.shape[0] // 2
        z = self.projection(self.features(views))
        if self.method == "dino":
            student = z
        else:
            student = self.prediction(z)  # type: ignore[misc]
        if self.has_momentum:
            with torch.no_grad():
                teacher = self.momentum_projection(self.features(views, momentum=True))
        else:
            teacher = z.detach()
        return {"student": [student[:b], student[b:]], "teacher": [teacher[:b], teacher[b:]]}

    @torch.no_grad()
    def update_momentum(self, momentum: float) -> None:
        """Move the momentum encoder and head towards the online ones: ``w_m <- m * w_m + (1 - m) * w``.

        ``momentum`` in [0, 1]; 1 leaves the teacher unchanged. A no-op for SimSiam (no teacher).
        """
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if not self.has_momentum:
            return
        from lightly.models.utils import update_momentum

        update_momentum(self.encoder, self.momentum_encoder, float(momentum))
        update_momentum(self.projection, self.momentum_projection, float(momentum))

    def extra_repr(self) -> str:
        details: dict[str, Any] = {"method": self.method, "feature_dim": self.feature_dim, **self.sizes}
        return ", ".join(f"{k}={v}" for k, v in details.items())
