"""Which SAM a checkpoint holds (ViT-B, ViT-L or ViT-H), read from its tensor shapes.

``sam_model_type="auto"`` (PolyCL's default) lets the checkpoint decide, so a ViT-H file passed
as ``--sam_checkpoint`` is built as ViT-H instead of failing as the default ViT-B. The released
image encoders differ in width (the patch embedding's output channels) and depth (number of
transformer blocks)::

    vit_b   768 wide, 12 blocks   (MedSAM's medsam_vit_b.pth too)
    vit_l  1024 wide, 24 blocks
    vit_h  1280 wide, 32 blocks

Only key names and shapes are read, so the check costs nothing beyond loading the file. This
module imports neither ``segment_anything`` nor ``sam2``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fewlabel.errors import CheckpointError

__all__ = ["AUTO", "SAM_ENCODER_SHAPES", "sam_model_type_of", "infer_sam_model_type"]

#: The ``sam_model_type`` value that means "read it from the checkpoint".
AUTO = "auto"
#: ``model_type -> (width, depth)`` of the released SAM image encoders (``segment_anything.build_sam``).
SAM_ENCODER_SHAPES: dict[str, tuple[int, int]] = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}

_PATCH_KEY = "image_encoder.patch_embed.proj.weight"
_BLOCK_PREFIX = "image_encoder.blocks."


def _encoder_shape(state_dict: Mapping[str, Any]) -> tuple[int | None, int]:
    """``(width, depth)`` of the state dict's image encoder; width None without a 4-D patch embedding."""
    weight = state_dict.get(_PATCH_KEY)
    shape = getattr(weight, "shape", None)
    width = int(shape[0]) if shape is not None and len(shape) == 4 else None
    blocks = set()
    for key in state_dict:
        if isinstance(key, str) and key.startswith(_BLOCK_PREFIX):
            index = key[len(_BLOCK_PREFIX):].split(".", 1)[0]
            if index.isdigit():
                blocks.add(int(index))
    return width, (max(blocks) + 1 if blocks else 0)


def sam_model_type_of(state_dict: Mapping[str, Any]) -> str | None:
    """The released SAM type (``"vit_b"``, ``"vit_l"``, ``"vit_h"``) whose image encoder ``state_dict`` has.

    Args:
        state_dict: ``name -> tensor`` (any object with ``.shape`` works), as ``Sam.state_dict()`` names them.

    Returns:
        The type whose width and depth both match, or None.
    """
    width, depth = _encoder_shape(state_dict)
    for model_type, shape in SAM_ENCODER_SHAPES.items():
        if (width, depth) == shape:
            return model_type
    return None


def infer_sam_model_type(state_dict: Any, path: str | os.PathLike) -> str:
    """:func:`sam_model_type_of`, or a :class:`CheckpointError` naming ``path`` when no released type fits.

    Args:
        state_dict: the (unwrapped) state dict read from ``path``.
        path: the checkpoint file, for the message.

    Raises:
        CheckpointError: ``state_dict`` is not a mapping, or its image encoder is none of ViT-B/L/H.
    """
    path = Path(path)
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"cannot tell the SAM model type of {path}: it does not hold a state dict "
            f"(got {type(state_dict).__name__})."
        )
    found = sam_model_type_of(state_dict)
    if found is not None:
        return found
    width, depth = _encoder_shape(state_dict)
    seen = (
        f"its image encoder is {width} wide with {depth} blocks" if width is not None
        else f"it has no '{_PATCH_KEY}' tensor (not a SAM image encoder)"
    )
    known = ", ".join(f"{t} {w} wide / {d} blocks" for t, (w, d) in SAM_ENCODER_SHAPES.items())
    raise CheckpointError(
        f"cannot tell the SAM model type of {path}: {seen}, and the released types are {known}. "
        "Pass the SAM / MedSAM checkpoint file (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth, "
        "medsam_vit_b.pth), or set --sam_model_type to the type it was trained as."
    )
