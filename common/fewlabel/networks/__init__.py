"""Networks: a by-name factory over segmentation_models_pytorch and the architectures no library provides
(including the encoder + projection head of contrastive pre-training, ``ContrastiveEncoder``)."""

from .contrastive import ContrastiveEncoder
from .factory import ARCHITECTURES, build_network, medsass_unet
from .polycl import PolyCLUNet, build_polycl_unet
from .resunetpp import ResUNetPlusPlus
from .transfer import (
    encoder_prefixes,
    encoder_state_dict,
    freeze_non_encoder,
    head_prefixes,
    init_from_pretrained,
    prepare_pretraining,
    load_pretrained,
    load_state_file,
    read_weights_file,
    write_weights_file,
    trainable_parameters,
)
from .unet3plus import UNet3Plus
from .siamese import SIAMESE_METHODS, SiameseEncoder
from .masked_image import MASKED_IMAGE_METHODS, MaskedImageModel

__all__ = [
    "MaskedImageModel",
    "MASKED_IMAGE_METHODS",
    "SiameseEncoder",
    "SIAMESE_METHODS",
    "ContrastiveEncoder",
    "ARCHITECTURES",
    "build_network",
    "medsass_unet",
    "UNet3Plus",
    "ResUNetPlusPlus",
    "PolyCLUNet",
    "build_polycl_unet",
    "encoder_prefixes",
    "encoder_state_dict",
    "freeze_non_encoder",
    "head_prefixes",
    "init_from_pretrained",
    "prepare_pretraining",
    "load_pretrained",
    "load_state_file",
    "read_weights_file",
    "write_weights_file",
    "trainable_parameters",
]
