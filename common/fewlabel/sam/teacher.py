"""The frozen SAM teacher of SAM knowledge mining: image embeddings, prompted masks, pseudo-labels.

The teacher is a Segment Anything model (``segment-anything`` package) that is never trained
(paper, section 2.2: "the SAM model remains frozen throughout the entire process"): every
parameter has ``requires_grad=False``, the model stays in ``eval()`` mode whatever ``train()``
calls reach it, it runs under :func:`torch.inference_mode`, and it must never be given to an
optimizer (keep it outside the student network's module tree; the engines hold it separately).

Work is split the way ``SamPredictor`` splits it, so that the expensive part can be cached:

- :meth:`SamTeacher.embed`: resize (``ResizeLongestSide``), normalise and pad (``Sam.preprocess``),
  image encoder -> ``(B, 256, 64, 64)`` embeddings for the released models. Depends only on the
  image, so :class:`fewlabel.sam.EmbeddingCache` computes it once per unlabelled image.
- :meth:`SamTeacher.predict`: prompt encoder + mask decoder only, prompts mapped from the
  original image frame to SAM's input frame, masks brought back to the original size
  (``Sam.postprocess_masks``).
- :meth:`SamTeacher.pseudo_label`: student probabilities -> prompts (:mod:`fewlabel.sam.prompts`)
  -> binary pseudo-labels and a validity flag per image.

Pre-processing follows the checkpoint's own (``preprocessing``): SAM's (``"sam"``: longest side
resized to 1024, SAM's pixel mean/std, zero padding to the square) or MedSAM's (``"medsam"``, as
MedSAM's ``MedSAM_Inference.py`` does it: the whole image resized to 1024 x 1024 (bicubic,
anti-aliased, back to 8-bit), min-max scaled to [0, 1], no mean/std, no padding; box and point
coordinates scaled by ``1024 / W`` and ``1024 / H``; the 256 x 256 mask logits resized straight
to the image). :func:`build_sam_teacher` picks ``"medsam"`` for a checkpoint file whose name
contains ``medsam`` unless told otherwise.

Checkpoints: :func:`build_sam_teacher` loads the official SAM checkpoints (``sam_vit_b_01ec64.pth``,
``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``) and MedSAM's ``medsam_vit_b.pth`` (MedSAM is a
fine-tuned SAM ViT-B: use ``model_type="vit_b"``). Those are plain state dicts. Tests and demos use
a tiny randomly initialised SAM (:func:`save_tiny_sam`) saved as
``{"format": "fewlabel-tiny-sam", "model_type": "tiny", "config": {...}, "state_dict": {...}}``
and loaded through the same function with ``model_type="tiny"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from fewlabel.errors import CheckpointError
from fewlabel.networks.transfer import read_weights_file
from fewlabel.sam.model_type import AUTO, infer_sam_model_type
from fewlabel.sam.checkpoints import SAM_CHECKPOINT_FILES, large_files_hint
from fewlabel.sam.prompts import PREPROCESSING_FRAMES, SamPrompt, make_prompts

if TYPE_CHECKING:
    from fewlabel.sam.cache import EmbeddingCache

__all__ = [
    "MODEL_TYPES",
    "PREPROCESSING",
    "resolve_preprocessing",
    "TINY_SAM_DEFAULTS",
    "NO_PROMPT_LOGIT",
    "build_tiny_sam",
    "save_tiny_sam",
    "tiny_sam_checkpoint",
    "build_sam_teacher",
    "SamTeacher",
]

#: ``model_type`` values :func:`build_sam_teacher` accepts (``"default"`` is ``"vit_h"``, as in SAM;
#: ``"auto"`` reads the type from the checkpoint, :mod:`fewlabel.sam.model_type`).
MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h", "default", "tiny", AUTO)

#: Teacher pre-processing choices: ``"sam"``, ``"medsam"`` (see the module docstring), and ``"auto"``
#: (:func:`resolve_preprocessing`: ``"medsam"`` when the checkpoint's file name contains ``medsam``).
PREPROCESSING: tuple[str, ...] = (*PREPROCESSING_FRAMES, "auto")

#: Hyper-parameters of :func:`build_tiny_sam` (a 64 px SAM with a few thousand parameters per block).
TINY_SAM_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "patch_size": 8,
    "prompt_embed_dim": 32,
    "window_size": 4,
    "global_attn_indexes": [1],
    "decoder_num_heads": 2,
    "decoder_mlp_dim": 64,
    "mask_in_chans": 16,
}

#: Logit written where an image had no prompt (its pseudo-label is all background and invalid).
#: Finite so that losses on it never give NaN; sigmoid of it is 0 in float32.
NO_PROMPT_LOGIT = -100.0

_TINY_FORMAT = "fewlabel-tiny-sam"
_BUNDLE_LARGE_FILES = "bundles/sam_mining_polyp_segmentation/large_files.yml"
# ViT width of the released image encoders, to name the model type a mismatched checkpoint looks like.
_WIDTH_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


# --------------------------------------------------------------------------------------------
# tiny SAM for tests and demos
# --------------------------------------------------------------------------------------------


def build_tiny_sam(
    image_size: int = 64,
    embed_dim: int = 32,
    depth: int = 2,
    num_heads: int = 2,
    patch_size: int = 8,
    prompt_embed_dim: int = 32,
    window_size: int = 4,
    global_attn_indexes: Sequence[int] = (1,),
    decoder_num_heads: int = 2,
    decoder_mlp_dim: int = 64,
    mask_in_chans: int = 16,
    seed: int = 0,
) -> Sam:
    """A tiny randomly initialised SAM built from ``segment_anything``'s own classes.

    Same architecture as the released models (windowed ViT with relative positions, prompt
    encoder, two-way transformer mask decoder), scaled down: with the defaults a 64 px input,
    an ``8 x 8`` embedding grid of 32 channels and a ``32 x 32`` mask input. The global torch RNG
    is left untouched; the weights depend only on ``seed`` and the hyper-parameters.

    Args:
        image_size: square input side (``ResizeLongestSide`` target), a multiple of ``patch_size``.
        embed_dim, depth, num_heads: ViT width, blocks, heads (``embed_dim % num_heads == 0``).
        patch_size: ViT patch side (16 in the released models).
        prompt_embed_dim: channels of the image embedding and the prompt tokens (256 in the
            released models); a multiple of 8 and of ``2 * decoder_num_heads``.
        window_size: window attention side of non-global blocks (0 = all global).
        global_attn_indexes: blocks with global attention.
        decoder_num_heads, decoder_mlp_dim: two-way transformer heads and MLP width.
        mask_in_chans: hidden channels of the mask-prompt encoder (a multiple of 4).
        seed: weight initialisation seed.

    Returns:
        A :class:`segment_anything.modeling.Sam` in eval mode, on the CPU.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
    if prompt_embed_dim % 8 or (prompt_embed_dim // 2) % decoder_num_heads:
        raise ValueError(
            f"prompt_embed_dim ({prompt_embed_dim}) must be a multiple of 8 and of 2 * decoder_num_heads "
            f"({2 * decoder_num_heads})"
        )
    grid = image_size // patch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=image_size,
                patch_size=patch_size,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                mlp_ratio=4,
                out_chans=prompt_embed_dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=window_size,
                global_attn_indexes=tuple(global_attn_indexes),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(image_size, image_size),
                mask_in_chans=mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
                ),
                transformer_dim=prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=prompt_embed_dim,
            ),
        )
    return sam.eval()


def save_tiny_sam(path: str | os.PathLike, seed: int = 0, **config: Any) -> Path:
    """Build a tiny SAM (:func:`build_tiny_sam`) and save it where :func:`build_sam_teacher` loads it.

    The file holds ``{"format": "fewlabel-tiny-sam", "model_type": "tiny", "config": <the
    hyper-parameters>, "state_dict": <CPU tensors>}``, so ``build_sam_teacher(path, "tiny")``
    rebuilds the same architecture and loads the weights through the real loading path.

    Args:
        path: file to write (parent folders are created).
        seed: weight seed (two seeds give two different "checkpoints").
        config: overrides of :data:`TINY_SAM_DEFAULTS`.

    Returns:
        The path written.
    """
    unknown = set(config) - set(TINY_SAM_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown tiny SAM options {sorted(unknown)}; valid: {sorted(TINY_SAM_DEFAULTS)}")
    cfg = {**TINY_SAM_DEFAULTS, **config}
    cfg["global_attn_indexes"] = [int(i) for i in cfg["global_attn_indexes"]]
    sam = build_tiny_sam(**cfg, seed=seed)
    from fewlabel.networks import write_weights_file

    payload = {"format": _TINY_FORMAT, "model_type": "tiny", "config": cfg, "state_dict": sam.state_dict()}
    return write_weights_file(payload, path)  # atomic: ranks that make it at once never read half a file


def tiny_sam_checkpoint(path: str | os.PathLike, seed: int = 0) -> str:
    """The path of a tiny random-weight SAM file, written with :func:`save_tiny_sam` if it is not there.

    For demos and smoke tests (``sam_model_type: "tiny"``): the bundle then loads it through
    :func:`build_sam_teacher` like a real checkpoint. Its masks come from random weights and mean
    nothing; a real run passes a SAM / MedSAM checkpoint instead.
    """
    path = Path(path)
    if not path.is_file():
        save_tiny_sam(path, seed=seed)
    return str(path)


# --------------------------------------------------------------------------------------------
# loading checkpoints
# --------------------------------------------------------------------------------------------


def _missing_checkpoint_message(path: Path, model_type: str) -> str:
    hint = large_files_hint(path, f"the bundle's large_files.yml ({_BUNDLE_LARGE_FILES})")
    official = SAM_CHECKPOINT_FILES.get(model_type)
    expected = f" (the released SAM '{model_type}' file is {official})" if official else ""
    return (
        f"SAM checkpoint not found: {path}{expected}. Download it as listed in {hint}; or pass the file's path "
        "as the checkpoint (--sam_checkpoint PATH; MedSAM: medsam_vit_b.pth with model_type 'vit_b')."
    )


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _few(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def state_dict_mismatch(sd: Mapping[str, Any], model: torch.nn.Module, path: Path, what: str) -> list[str]:
    """How a checkpoint's state dict ``sd`` fails to fit ``model``: a few shape mismatches, missing and
    unexpected keys, one sentence each (empty when it fits). Shared by the SAM and SAM 2 loaders.

    Raises:
        CheckpointError: ``sd`` is not a ``name -> tensor`` mapping (``what`` names the model in the message).
    """
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{path} is not a state dict (name -> tensor); cannot load it as {what}")
    model_sd = model.state_dict()
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    shapes = [
        f"{k} {tuple(sd[k].shape)} in the file vs {tuple(v.shape)} in the model"
        for k, v in model_sd.items()
        if k in sd and sd[k].shape != v.shape
    ]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} tensors differ in shape: {_few(shapes, 3)}")
    if missing:
        parts.append(f"{len(missing)} model keys are missing from the file: {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} file keys are not in the model: {_few(unexpected)}")
    return parts


def _check_state_dict(sd: Mapping[str, Any], sam: Sam, path: Path, model_type: str) -> None:
    """Raise a :class:`CheckpointError` naming a few mismatched keys when ``sd`` does not fit ``sam``."""
    parts = state_dict_mismatch(sd, sam, path, f"SAM '{model_type}'")
    if not parts:
        return
    guess = ""
    w = sd.get("image_encoder.patch_embed.proj.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 4 and int(w.shape[0]) in _WIDTH_TO_TYPE:
        guess = f" The file looks like a SAM '{_WIDTH_TO_TYPE[int(w.shape[0])]}' checkpoint."
    raise CheckpointError(
        f"{path} does not fit a SAM of model_type '{model_type}': " + "; ".join(parts) + "." + guess
        + " Pass the model_type the checkpoint was trained as (vit_b, vit_l, vit_h; MedSAM is vit_b)."
    )


def _unwrap_state_dict(payload: Any) -> Any:
    """Plain state dicts pass through; ``{"model": sd}`` / ``{"state_dict": sd}`` training checkpoints
    (as MedSAM's training script writes) are unwrapped; a DDP ``module.`` prefix is removed."""
    if isinstance(payload, Mapping) and not any(isinstance(v, torch.Tensor) for v in payload.values()):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if isinstance(payload, Mapping) and payload and all(str(k).startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return payload


def resolve_preprocessing(preprocessing: str, checkpoint: str | os.PathLike | None) -> str:
    """The teacher pre-processing for a setting and a checkpoint path.

    Args:
        preprocessing: ``"sam"``, ``"medsam"`` or ``"auto"`` (``"medsam"`` when the checkpoint's
            file name contains ``medsam``, e.g. the released ``medsam_vit_b.pth``; else ``"sam"``).
        checkpoint: the weights file (only its name is looked at).

    Raises:
        ValueError: an unknown setting.
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"SAM teacher preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
    if preprocessing != "auto":
        return preprocessing
    name = Path(str(checkpoint)).name.lower() if checkpoint else ""
    return "medsam" if "medsam" in name else "sam"


def build_sam_teacher(
    checkpoint: str | os.PathLike | None,
    model_type: str = "vit_b",
    device: str | torch.device = "cpu",
    cache: EmbeddingCache | None = None,
    multimask_output: bool = False,
    preprocessing: str = "auto",
) -> SamTeacher:
    """Load a SAM (or MedSAM) checkpoint as a frozen :class:`SamTeacher`.

    The model is built with ``segment_anything.sam_model_registry[model_type](checkpoint=None)``
    and the weights are read with ``torch.load(checkpoint, map_location="cpu", weights_only=True)``
    and loaded strictly. MedSAM checkpoints have SAM ViT-B's architecture: use ``model_type="vit_b"``.

    Args:
        checkpoint: path of the weights file. Real checkpoints are plain state dicts (a
            ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper and a DDP ``module.`` prefix are
            accepted too); ``model_type="tiny"`` files come from :func:`save_tiny_sam`.
        model_type: one of :data:`MODEL_TYPES`; ``"auto"`` builds the type the checkpoint holds (ViT-B,
            ViT-L or ViT-H from its image encoder's width and depth; ``"tiny"`` for a tiny test file).
        device: where the teacher runs.
        cache: optional :class:`fewlabel.sam.EmbeddingCache` used by :meth:`SamTeacher.pseudo_label`.
        multimask_output: default of :meth:`SamTeacher.predict` (see there).
        preprocessing: ``"sam"``, ``"medsam"`` or ``"auto"`` (default: ``"medsam"`` when the file
            name contains ``medsam``), see :func:`resolve_preprocessing` and :class:`SamTeacher`.

    Returns:
        The frozen teacher (eval mode, no parameter requires grad).

    Raises:
        CheckpointError: the file is missing (the message points at the bundle's
            ``large_files.yml``), unreadable, or does not fit ``model_type`` (the message names
            the file, the model type and a few mismatched keys); with ``"auto"``, a file that is
            none of the released types (the message names it and the shapes found).
        ValueError: unknown ``model_type``.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown SAM model_type '{model_type}', expected one of {MODEL_TYPES}")
    frame = resolve_preprocessing(preprocessing, checkpoint)
    if checkpoint is None or str(checkpoint) == "":
        raise CheckpointError(
            f"no SAM checkpoint given for model_type '{model_type}' (it has no release file to default to): pass "
            "sam_checkpoint, e.g. fewlabel.sam.tiny_sam_checkpoint(path) for a tiny test model."
        )
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(_missing_checkpoint_message(path, model_type))
    identity = _file_identity(path)
    payload = read_weights_file(path, "SAM checkpoint")

    is_tiny_file = isinstance(payload, Mapping) and payload.get("format") == _TINY_FORMAT
    if model_type == AUTO:
        model_type = "tiny" if is_tiny_file else infer_sam_model_type(_unwrap_state_dict(payload), path)
    if model_type == "tiny":
        if not is_tiny_file:
            raise CheckpointError(
                f"{path} is not a tiny SAM file (no 'config' saved with the weights); model_type='tiny' loads only "
                "files written by fewlabel.sam.save_tiny_sam. For a real checkpoint pass vit_b, vit_l or vit_h."
            )
        config = dict(payload["config"])
        unknown = set(config) - set(TINY_SAM_DEFAULTS)
        if unknown:
            raise CheckpointError(f"{path} has unknown tiny SAM options {sorted(unknown)}")
        sam = build_tiny_sam(**config)
        state_dict = payload["state_dict"]
    else:
        if is_tiny_file:
            raise CheckpointError(
                f"{path} holds a tiny test SAM (model_type 'tiny'), not a SAM '{model_type}' checkpoint; "
                "pass model_type='tiny' or the path of a real SAM / MedSAM checkpoint."
            )
        sam = sam_model_registry[model_type](checkpoint=None)
        state_dict = _unwrap_state_dict(payload)
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state_dict).__name__})")
    _check_state_dict(state_dict, sam, path, model_type)
    try:
        sam.load_state_dict(state_dict)
    except RuntimeError as e:  # e.g. dtype problems the key/shape check cannot see
        raise CheckpointError(f"cannot load {path} into SAM '{model_type}': {' '.join(str(e).split())[:300]}") from e
    return SamTeacher(sam, model_type=model_type, checkpoint_id=identity, cache=cache,
                      multimask_output=multimask_output, preprocessing=frame).to(device)


# --------------------------------------------------------------------------------------------
# the teacher
# --------------------------------------------------------------------------------------------


def _medsam_preprocess(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """MedSAM's image pre-processing of ``(B, 3, H, W)`` float images in 0-255 units.

    Resize to ``size`` (bicubic, anti-aliased), clip to each image's own range, round down to whole
    levels (MedSAM casts its resized image to ``uint8``), then ``(x - min) / max(max - min, 1e-8)``
    per image. Returns ``(B, 3, *size)`` float32 in [0, 1].
    """
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size, mode="bicubic", align_corners=False, antialias=True)
    # floor as uint8 casting does; the 1e-3 keeps a flat 40 that interpolates to 39.99998 at 40
    x = (torch.maximum(torch.minimum(x, hi), lo) + 1e-3).floor()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def _state_dict_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    tensors = dict(module.state_dict())
    for name, buf in module.named_buffers():  # non-persistent buffers (pixel mean/std) too
        tensors.setdefault(name, buf)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


class SamTeacher(torch.nn.Module):
    """A frozen Segment Anything model that turns student predictions into pseudo-labels.

    Images given to :meth:`embed` and :meth:`pseudo_label` are ``(B, 3, H, W)`` RGB batches,
    either float in [0, 1] (MONAI's ``ScaleIntensity`` range; values are multiplied by 255 to
    SAM's pixel units) or uint8 in [0, 255]. A single-channel ``(B, 1, H, W)`` batch (X-ray) is
    repeated to three channels. All images of a batch share one size (the student's input size).

    ``preprocessing="sam"`` (SAM's checkpoints): the longest side is resized to ``image_size``,
    pixels are normalised with SAM's mean/std and the input is padded to the square.
    ``preprocessing="medsam"`` (MedSAM's checkpoint, as its ``MedSAM_Inference.py``): the image is
    resized to ``image_size x image_size`` whatever its aspect ratio (bicubic, anti-aliased, rounded
    down to 8-bit as MedSAM's ``astype(np.uint8)``), min-max scaled to [0, 1] per image, and given
    to the encoder as it is (no mean/std, no padding); prompts are scaled per axis, and the mask
    logits are resized (bilinear) from the decoder's low-resolution output straight to ``(H, W)``.

    Args:
        sam: a :class:`segment_anything.modeling.Sam`; it is frozen in place.
        model_type: its type, part of the embedding-cache key.
        checkpoint_id: identity of the weights (path + size + mtime of the file); None for an
            in-memory model, whose identity is then a hash of its state dict (computed once).
        cache: optional :class:`fewlabel.sam.EmbeddingCache` used by :meth:`pseudo_label`.
        multimask_output: default of :meth:`predict`.
        preprocessing: ``"sam"`` (default) or ``"medsam"``, see above.
    """

    def __init__(
        self,
        sam: Sam,
        model_type: str = "custom",
        checkpoint_id: str | None = None,
        cache: EmbeddingCache | None = None,
        multimask_output: bool = False,
        preprocessing: str = "sam",
    ) -> None:
        super().__init__()
        if preprocessing not in PREPROCESSING_FRAMES:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING_FRAMES}, got {preprocessing!r}")
        self.preprocessing = preprocessing
        self.sam = sam
        self.model_type = model_type
        self.cache = cache
        self.multimask_output = multimask_output
        self._identity = checkpoint_id
        sam.requires_grad_(False)
        super().train(False)

    # -- frozen ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> SamTeacher:
        """The teacher stays in eval mode: ``train(True)`` (e.g. from a parent module) is ignored."""
        return super().train(False)

    # -- properties --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    @property
    def image_size(self) -> int:
        """Side of SAM's square model input (1024 for the released models)."""
        return int(self.sam.image_encoder.img_size)

    @property
    def mask_input_size(self) -> int:
        """Side of SAM's low-resolution mask input and output (256 for the released models)."""
        return int(self.sam.prompt_encoder.mask_input_size[0])

    @property
    def embedding_dim(self) -> int:
        """Channels of the image embedding (256 for the released models)."""
        return int(self.sam.prompt_encoder.embed_dim)

    @property
    def identity(self) -> str:
        """Identity of the weights for cache keys: file path + size + mtime, or a state-dict hash."""
        if self._identity is None:
            self._identity = _state_dict_hash(self.sam)
        # MedSAM's pre-processing gives other embeddings from the same weights: keep cache keys apart
        return self._identity if self.preprocessing == "sam" else f"{self._identity}|{self.preprocessing}"

    # -- image side --------------------------------------------------------------------------
    def input_size(self, original_size: Sequence[int]) -> tuple[int, int]:
        """``(h, w)`` of an ``original_size`` image in the model input: after
        ``ResizeLongestSide(image_size)`` (SAM), or ``(image_size, image_size)`` (MedSAM)."""
        h, w = int(original_size[0]), int(original_size[1])
        if self.preprocessing == "medsam":
            return self.image_size, self.image_size
        return ResizeLongestSide.get_preprocess_shape(h, w, self.image_size)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> the model input, as ``ResizeLongestSide`` + ``Sam.preprocess`` (SAM) or as
        MedSAM's ``MedSAM_Inference.py`` (``preprocessing="medsam"``).

        SAM: the longest side is resized (bilinear, antialiased: ``apply_image_torch``'s interpolation)
        to ``image_size``, pixels are normalised with SAM's mean/std (in 0-255 units) and the
        image is zero-padded at the bottom/right to a square.
        MedSAM: resized to ``image_size x image_size`` (bicubic, anti-aliased, clipped to the
        image's range and rounded down to whole 0-255 levels), then min-max scaled to [0, 1] per
        image over all channels (a constant image gives zeros); no mean/std, no padding.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1] or uint8, or ``(B, 1, H, W)`` gray.

        Returns:
            ``(B, 3, image_size, image_size)`` float32 on the teacher's device.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 3, H, W) RGB or (B, 1, H, W) gray images, got shape {tuple(images.shape)}")
        x = images.detach().to(self.device)
        if x.dtype == torch.uint8:
            x = x.float()
        elif x.is_floating_point():
            x = x.float()
            lo, hi = float(x.amin()), float(x.amax())
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise ValueError(
                    f"float images must be in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); scale them "
                    "(e.g. monai.transforms.ScaleIntensity) or pass uint8 images in [0, 255]"
                )
            x = x.clamp(0.0, 1.0) * 255.0
        else:
            raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {x.dtype}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        target = self.input_size(x.shape[-2:])
        if self.preprocessing == "medsam":
            return _medsam_preprocess(x, target)
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, target, mode="bilinear", align_corners=False, antialias=True)
        return self.sam.preprocess(x)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """SAM image embeddings of a batch (the image encoder: the expensive, cacheable part).

        Args:
            images: see :meth:`preprocess`.

        Returns:
            ``(B, C, g, g)`` float32 on the teacher's device: C = 256 and g = 64 for the released
            models (``embedding_dim`` and ``image_size / patch_size`` in general). A normal
            tensor (not an inference tensor), safe to store and reuse.
        """
        with torch.inference_mode():
            out = self.sam.image_encoder(self.preprocess(images))
        return out.clone()

    # -- prompt side -------------------------------------------------------------------------
    def to_input_coords(self, coords: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        """(x, y) pixel coordinates of an ``original_size`` image -> SAM's input frame, as
        ``ResizeLongestSide.apply_coords_torch`` (boxes: reshape ``(..., 4)`` to ``(..., 2, 2)``).

        Args:
            coords: ``(..., 2)`` (x, y) coordinates.
            original_size: ``(H, W)`` of the image they belong to.

        Returns:
            float32 coordinates of the same shape.
        """
        old_h, old_w = int(original_size[0]), int(original_size[1])
        new_h, new_w = self.input_size(original_size)
        scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float32, device=coords.device)
        return coords.to(torch.float32) * scale

    def predict(
        self,
        embeddings: torch.Tensor,
        prompts: Sequence[SamPrompt | None],
        original_size: Sequence[int],
        multimask_output: bool | None = None,
        output: Literal["logits", "probs"] = "logits",
    ) -> torch.Tensor:
        """Masks from image embeddings and prompts: prompt encoder + mask decoder only.

        Point and box coordinates are in the original image's pixels (see
        :mod:`fewlabel.sam.prompts`) and are scaled to SAM's input frame as
        ``ResizeLongestSide.apply_coords`` does; a mask prompt must be
        ``(1, mask_input_size, mask_input_size)`` logits already in SAM's padded frame
        (:func:`fewlabel.sam.mask_prompt_from_probability`). Masks are upsampled, un-padded and
        resized to ``original_size`` with ``Sam.postprocess_masks``.

        Args:
            embeddings: ``(B, C, g, g)`` from :meth:`embed` (any float dtype; computed in float32).
            prompts: B prompts; None (or an empty prompt) for an image without one.
            original_size: ``(H, W)`` of the images the embeddings and prompts belong to.
            multimask_output: when True SAM predicts its three masks (whole / part / subpart) and
                the one with the highest predicted IoU is kept; when False (the default set at
                construction, False unless changed) its single-mask output is used, which SAM
                recommends for unambiguous prompts such as a box with points.
            output: ``"logits"`` (threshold 0 = SAM's ``mask_threshold``) or ``"probs"`` (sigmoid).

        Returns:
            ``(B, 1, H, W)`` float32 on the teacher's device. Images without a prompt get
            :data:`NO_PROMPT_LOGIT` (probability 0).
        """
        if output not in ("logits", "probs"):
            raise ValueError(f"output must be 'logits' or 'probs', got '{output}'")
        if embeddings.ndim != 4 or embeddings.shape[0] != len(prompts):
            raise ValueError(
                f"expected (B, C, g, g) embeddings and B prompts, got shape {tuple(embeddings.shape)} and "
                f"{len(prompts)} prompts"
            )
        multimask = self.multimask_output if multimask_output is None else multimask_output
        h, w = int(original_size[0]), int(original_size[1])
        input_size = self.input_size((h, w))
        dtype = self.sam.pixel_mean.dtype
        out = torch.full((len(prompts), 1, h, w), NO_PROMPT_LOGIT, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            pe = self.sam.prompt_encoder.get_dense_pe()
            for b, prompt in enumerate(prompts):
                if prompt is None or prompt.is_empty():
                    continue
                prompt = prompt.to(self.device)
                points = boxes = masks = None
                if prompt.points is not None:
                    labels = prompt.point_labels
                    if labels is None:
                        labels = torch.ones(prompt.points.shape[0], dtype=torch.int64, device=self.device)
                    points = (self.to_input_coords(prompt.points, (h, w))[None], labels[None])
                if prompt.box is not None:
                    boxes = self.to_input_coords(prompt.box.reshape(2, 2), (h, w)).reshape(1, 4)
                if prompt.mask is not None:
                    m = self.mask_input_size
                    if tuple(prompt.mask.shape) != (1, m, m):
                        raise ValueError(
                            f"mask prompt of image {b} has shape {tuple(prompt.mask.shape)}; "
                            f"this SAM takes (1, {m}, {m}) "
                            f"(use mask_prompt_from_probability(prob, mask_size={m}))"
                        )
                    masks = prompt.mask[None].to(dtype)
                sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
                low_res, iou = self.sam.mask_decoder(
                    image_embeddings=embeddings[b : b + 1].to(self.device, dtype),
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
                if multimask:
                    best = iou[0].argmax()
                    low_res = low_res[:, best : best + 1]
                if self.preprocessing == "medsam":  # MedSAM: low-res logits straight to the image size
                    out[b] = F.interpolate(low_res.float(), (h, w), mode="bilinear", align_corners=False)[0]
                else:
                    out[b] = self.sam.postprocess_masks(low_res, input_size, (h, w))[0].float()
        out = out.clone()
        return torch.sigmoid(out) if output == "probs" else out

    # -- pseudo-labels -----------------------------------------------------------------------
    def pseudo_label(
        self,
        images: torch.Tensor,
        probs: torch.Tensor,
        num_points: int,
        threshold: float = 0.5,
        mode: str = "points+box",
        cache_keys: Sequence[str | os.PathLike | bytes | None] | None = None,
        generator: torch.Generator | None = None,
        multimask_output: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM pseudo-labels of unlabelled images prompted by the student's probabilities.

        Prompts come from :func:`fewlabel.sam.make_prompts` (``mode``, ``num_points``,
        ``threshold``); images whose prediction is empty get no prompt and are not embedded.
        Embeddings come from ``self.cache`` when the teacher has one (keyed by ``cache_keys``,
        or by image content), else are computed.

        Args:
            images: ``(B, 3, H, W)`` (see :meth:`preprocess`), the images the student saw.
            probs: ``(B, 1, H, W)`` or ``(B, H, W)`` student foreground probabilities in [0, 1]
                (sigmoid outputs) at the images' size; detached here.
            num_points: point prompts per image.
            threshold: foreground threshold of the box prompt and of the empty test.
            mode: prompt combination, one of :data:`fewlabel.sam.MODES`.
            cache_keys: B cache key sources for ``self.cache`` (file paths, content bytes, or None to
                key by the image tensor's content). A path key is right only when the image given
                here is a deterministic function of that file (no random augmentation before
                the teacher). Needs ``self.cache``.
            generator: tie-breaking generator of the point prompts.
            multimask_output: see :meth:`predict`.

        Returns:
            ``(masks, valid)``: ``masks`` ``(B, 1, H, W)`` float32 in {0, 1} on ``probs``' device
            (all zero where invalid), ``valid`` ``(B,)`` bool, False where the student predicted
            nothing and there was no prompt.
        """
        if images.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
        p = probs.detach()
        if p.ndim == 3:
            p = p[:, None]
        if p.ndim != 4 or p.shape[1] != 1 or p.shape[0] != images.shape[0] or p.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"probabilities must be (B, 1, H, W) with the images' batch and size {tuple(images.shape[-2:])}; "
                f"got {tuple(probs.shape)} for images {tuple(images.shape)}"
            )
        if cache_keys is not None:
            if self.cache is None:
                raise ValueError("cache_keys given but the teacher has no cache: pass cache=EmbeddingCache(...) to it")
            if len(cache_keys) != images.shape[0]:
                raise ValueError(f"got {len(cache_keys)} cache keys for {images.shape[0]} images")
        b, _, h, w = images.shape
        prompts = make_prompts(p[:, 0], num_points, threshold, generator, mode, self.mask_input_size,
                               frame=self.preprocessing)
        valid = torch.tensor([q is not None for q in prompts], dtype=torch.bool)
        masks = torch.zeros((b, 1, h, w), dtype=torch.float32, device=p.device)
        idx = valid.nonzero().flatten().tolist()
        if idx:
            sub = images[idx]
            if self.cache is not None:
                keys = [None] * len(idx) if cache_keys is None else [cache_keys[i] for i in idx]
                emb = self.cache.get_or_compute_batch(keys, sub, self)
            else:
                emb = self.embed(sub)
            logits = self.predict(emb, [prompts[i] for i in idx], (h, w), multimask_output=multimask_output)
            masks[idx] = (logits > self.sam.mask_threshold).float().to(p.device)
        return masks, valid.to(p.device)

    def forward(self, images: torch.Tensor, probs: torch.Tensor, num_points: int, **kwargs: Any):
        """Same as :meth:`pseudo_label`."""
        return self.pseudo_label(images, probs, num_points, **kwargs)

    def extra_repr(self) -> str:
        return (f"model_type={self.model_type!r}, image_size={self.image_size}, "
                f"preprocessing={self.preprocessing!r}, frozen=True")
