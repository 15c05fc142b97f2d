"""A segmentation network's encoder with a projection head, for contrastive pre-training (SimCLR, PolyCL).

:class:`ContrastiveEncoder` is the trainer's ``network`` of SimCLR pre-training
(:class:`fewlabel.engines.SimCLRPairs`) and of PolyCL's (:class:`fewlabel.engines.TripletBatch`);
its state dict keeps the encoder under ``encoder.*``, so
``fewlabel.networks.load_pretrained(student, ckpt, part="encoder")`` takes it and drops the head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ContrastiveEncoder", "network_encoder", "encoder_feature_dim", "pooled_features"]


def network_encoder(network: nn.Module) -> nn.Module:
    """``network.encoder``: what pre-training trains and encoder-only transfer copies (a clear error without one)."""
    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(network).__name__} has no `encoder` module to pre-train")
    return encoder


def encoder_feature_dim(encoder: nn.Module, feature_dim: int | None = None) -> int:
    """Channels of the encoder's deepest feature map: ``feature_dim`` when given, else ``encoder.out_channels[-1]``."""
    if feature_dim is None:
        channels = getattr(encoder, "out_channels", None)
        if not channels:
            raise ValueError(
                f"cannot tell the encoder's feature channels ({type(encoder).__name__} has no `out_channels`); "
                "pass feature_dim"
            )
        feature_dim = int(channels[-1]) if isinstance(channels, (list, tuple)) else int(channels)
    return int(feature_dim)


def pooled_features(out: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...], feature_dim: int
                    ) -> torch.Tensor:
    """Global-average pool an encoder's output (a feature map, or a list of them with the deepest last).

    Returns ``(B, feature_dim)``; a clear error when the deepest map is not ``(B, feature_dim, ...)``.
    """
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if out.ndim < 3 or out.shape[1] != feature_dim:
        raise ValueError(f"the encoder's deepest output has shape {tuple(out.shape)}; expected (B, {feature_dim}, ...)")
    return out.flatten(2).mean(-1)


class ContrastiveEncoder(nn.Module):
    """A segmentation network's encoder with SimCLR's projection head, for contrastive pre-training.

    ``forward`` runs ``network.encoder`` (any segmentation_models_pytorch model, or a network
    with an ``encoder`` returning a feature map or a list of them, deepest last), global-average
    pools the deepest feature map and applies the head ``Linear -> ReLU -> Linear``.

    The encoder module is *shared* with ``network`` (not copied): training this wrapper trains
    ``network.encoder``. The state dict holds ``encoder.*`` (exactly the keys of
    ``network.state_dict()`` under ``encoder.``) and ``projection.*``, so
    ``fewlabel.networks.load_pretrained(student, checkpoint, part="encoder")`` takes the encoder
    from a checkpoint of this module and ignores the head.

    Args:
        network: the segmentation network (e.g. ``build_network("unetplusplus", 3, 1)``).
        projection_dim: output features (SimCLR: 128).
        hidden_dim: hidden width of the head (default None: the encoder's deepest channels, as SimCLR);
            0: no hidden layer, the head is one linear layer (PolyCL's ``g``, ``projection_dim=256``).
        feature_dim: channels of the deepest feature map; read from ``network.encoder.out_channels``
            when None.

    Shapes: input ``(B, C, H, W)``; output ``(B, projection_dim)`` float (not normalised: the
    loss normalises).
    """

    def __init__(
        self, network: nn.Module, projection_dim: int = 128, hidden_dim: int | None = None,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        encoder = network_encoder(network)
        feature_dim = encoder_feature_dim(encoder, feature_dim)
        if projection_dim < 1 or feature_dim < 1:
            raise ValueError(f"projection_dim and feature_dim must be >= 1, got {projection_dim}, {feature_dim}")
        self.encoder = encoder
        self.feature_dim = int(feature_dim)
        if hidden_dim == 0:  # PolyCL's g: one fully connected layer after the pooling
            self.projection = nn.Sequential(nn.Linear(self.feature_dim, int(projection_dim)))
        else:
            hidden = int(hidden_dim or feature_dim)
            self.projection = nn.Sequential(
                nn.Linear(self.feature_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, int(projection_dim))
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled deepest encoder features ``(B, feature_dim)`` (the representation SimCLR evaluates)."""
        return pooled_features(self.encoder(x), self.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under ``encoder.*``, as ``load_pretrained(..., part="encoder")`` takes them."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("encoder.")}
