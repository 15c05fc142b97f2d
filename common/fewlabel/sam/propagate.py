"""SAM 2 mask propagation through a CT volume treated as a pseudo-video (PolyCL, section 3.3.2).

For one volume and its 3D label the paper takes the informative slices ``S`` (slices with any
foreground, sorted), the reference slice ``s_r = S[floor(|S| / 2)]`` and its ground-truth mask as
the only prompt, writes the slices of ``S`` as frames normalised to 0-255, and lets SAM 2's video
predictor propagate the mask forwards and backwards; the logits are thresholded and the masks are
put back into a 3D mask with the volume's geometry.

- :func:`informative_slices`, :func:`reference_slice`: the slice rules.
- :func:`propagate_volume`: one volume, one reference slice and its mask -> ``(Z, H, W)`` bool mask.
- :func:`propagate_from_label`: the paper's whole procedure from a 3D label (any slice axis).
- :func:`build_sam2_propagator`: load a SAM 2 / SAM 2.1 checkpoint as a ``SAM2VideoPredictor``.
- :func:`save_tiny_sam2` / :func:`tiny_sam2_checkpoint`: a tiny random-weight SAM 2 for tests
  and demos (its masks mean nothing).

Axis order. Volumes here are ``(Z, H, W)``: slices along the *first* axis, each slice an
``H x W`` image (row, column). A MONAI channel-first volume ``(1, X, Y, Z)`` (``LoadImage`` +
``EnsureChannelFirst``, slices along the last axis) becomes ``(Z, X, Y)`` with
``np.moveaxis(vol[0], -1, 0)`` and the result goes back with ``np.moveaxis(mask, 0, -1)[None]``;
:func:`propagate_from_label` does this for you with ``slice_axis=-1``. Each frame is the
``X x Y`` array as stored (no transpose), so a mask prompt and its propagated masks share the
same in-plane orientation whatever it is.

SAM 2's ``init_state`` only reads a folder of JPEG frames (``<index>.jpg``) or an MP4 file
(``sam2.utils.misc.load_video_frames``); frames held in memory are not accepted. The frames are
therefore written to a fresh temporary folder (prefix :data:`TEMP_PREFIX`) that is removed in a
``finally`` block, after success and after any exception. JPEG is lossy: frames differ from the
0-255 values by a few grey levels (quality 95).

CPU. Pass ``device="cpu"``. The package was installed without its CUDA extension
(``SAM2_BUILD_CUDA=0``), which only the hole-filling post-processing (``fill_hole_area``) uses;
:func:`build_sam2_propagator` sets ``fill_hole_area = 0`` when ``sam2._C`` is absent (otherwise
SAM 2 warns on every frame and skips it anyway). Everything else runs in plain PyTorch.

Checkpoints. Real files are Meta's ``{"model": state_dict}`` files (``sam2.1_hiera_tiny.pt``,
``sam2.1_hiera_small.pt``, ``sam2.1_hiera_base_plus.pt``, ``sam2.1_hiera_large.pt`` and the
``sam2_hiera_*.pt`` of SAM 2.0), each paired with its Hydra config (:data:`SAM2_CONFIGS`). The model
is built from the config with ``sam2.build_sam.build_sam2_video_predictor(config, None, device)``
and the weights read with ``torch.load(..., weights_only=True)`` and loaded strictly, so a missing,
unreadable or mismatched file gives a :class:`fewlabel.errors.CheckpointError` naming the file.
Tiny files (:func:`save_tiny_sam2`) have the same ``"model"`` key plus the Hydra overrides that
shrink the ``sam2.1_hiera_t`` config; they load through the same function with ``config="tiny"``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewlabel.errors import CheckpointError
from fewlabel.networks.transfer import read_weights_file
from fewlabel.sam.checkpoints import SAM2_CHECKPOINT_FILES, large_files_hint
from fewlabel.sam.teacher import state_dict_mismatch

__all__ = [
    "PROMPT_SOURCES",
    "Sam2Propagation",
    "build_sam2_propagation",
    "SAM2_CONFIGS",
    "TINY_SAM2_OVERRIDES",
    "TEMP_PREFIX",
    "informative_slices",
    "reference_slice",
    "frames_to_uint8",
    "propagate_volume",
    "propagate_from_label",
    "build_sam2_propagator",
    "build_random_sam2",
    "save_tiny_sam2",
    "tiny_sam2_checkpoint",
]

#: Short config names -> the Hydra config inside the ``sam2`` package. A name ending in ``.yaml``
#: (e.g. ``"configs/sam2.1/sam2.1_hiera_t.yaml"``) is passed through unchanged.
SAM2_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}

# checkpoint file of each config (to name it in error messages)
_CONFIG_FILES = SAM2_CHECKPOINT_FILES
# (trunk width, trunk blocks) of the released image encoders -> size letter
_TRUNK_TO_SIZE = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}

#: Prefix of the temporary frame folders :func:`propagate_volume` creates (and always removes).
TEMP_PREFIX = "fewlabel-sam2-frames-"

_TINY_FORMAT = "fewlabel-tiny-sam2"
_TINY_BASE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"

#: Hydra overrides that shrink ``sam2.1_hiera_t`` to a 64 px SAM 2 (Hiera of width 8 with 5 blocks,
#: 32-channel features, 16-channel memory, one memory-attention layer; ~650k parameters, most of
#: them in the mask decoder's fixed 2048-wide MLP). Same classes and wiring as the released models.
TINY_SAM2_OVERRIDES: tuple[str, ...] = (
    "++model.image_size=64",
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_spec=[4,4,2,2]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[2,2]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "++model.memory_attention.d_model=32",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.d_model=32",
    "++model.memory_attention.layer.dim_feedforward=64",
    "++model.memory_attention.layer.self_attention.embedding_dim=32",
    "++model.memory_attention.layer.self_attention.feat_sizes=[4,4]",
    "++model.memory_attention.layer.cross_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[4,4]",
    "++model.memory_attention.layer.cross_attention.kv_in_dim=16",
    "++model.memory_encoder.out_dim=16",
    "++model.memory_encoder.in_dim=32",
    "++model.memory_encoder.position_encoding.num_pos_feats=16",
    "++model.memory_encoder.mask_downsampler.embed_dim=32",
    "++model.memory_encoder.fuser.layer.dim=32",
    "++model.memory_encoder.fuser.num_layers=1",
)


# --------------------------------------------------------------------------------------------
# slice rules
# --------------------------------------------------------------------------------------------


def informative_slices(mask_3d: np.ndarray | torch.Tensor, axis: int = 0) -> list[int]:
    """Indices of the slices with any foreground, sorted (the set ``S`` of the paper).

    Args:
        mask_3d: a 3D label; any non-zero voxel is foreground.
        axis: the slice axis (0 for ``(Z, H, W)``; -1 for a MONAI ``(X, Y, Z)`` array).
    """
    m = mask_3d.detach().cpu().numpy() if isinstance(mask_3d, torch.Tensor) else np.asarray(mask_3d)
    if m.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {m.shape}")
    axis = axis % 3
    other = tuple(a for a in range(3) if a != axis)
    return [int(i) for i in np.flatnonzero(np.any(m != 0, axis=other))]


def reference_slice(slices: Sequence[int]) -> int:
    """The reference slice ``S[floor(|S| / 2)]`` of sorted informative slices ``S``.

    With an even count this is the upper of the two middle slices (``[2, 3, 4, 5] -> 4``).

    Raises:
        ValueError: ``slices`` is empty (a label with no foreground has nothing to propagate).
    """
    s = list(slices)
    if not s:
        raise ValueError("no informative slice: the label has no foreground, so there is no reference slice")
    return int(s[len(s) // 2])


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------


def frames_to_uint8(volume: np.ndarray, value_range: tuple[float, float] | None = (0.0, 1.0)) -> np.ndarray:
    """Scale a ``(Z, H, W)`` float volume to uint8 frames.

    Args:
        volume: e.g. windowed CT in ``[0, 1]``.
        value_range: ``(lo, hi)`` mapped to ``0 .. 255`` after clipping (default: the ``[0, 1]``
            of a windowed volume); ``None`` uses the volume's own min and max (one scale for the
            whole volume, so slices keep their relative brightness; a constant volume gives 0).
    """
    v = np.asarray(volume, dtype=np.float64)
    if value_range is None:
        lo, hi = (float(np.nanmin(v)), float(np.nanmax(v))) if v.size else (0.0, 1.0)
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((np.nan_to_num(v, nan=lo) - lo) * scale, 0.0, 255.0)
    return np.rint(out).astype(np.uint8)


def _write_frames(frames: np.ndarray, folder: str, quality: int = 95) -> None:
    from PIL import Image

    for i, frame in enumerate(frames):
        rgb = np.repeat(frame[:, :, None], 3, axis=2)
        Image.fromarray(rgb).save(os.path.join(folder, f"{i:05d}.jpg"), quality=quality)


# --------------------------------------------------------------------------------------------
# propagation
# --------------------------------------------------------------------------------------------


def propagate_volume(
    predictor: Any,
    volume: np.ndarray | torch.Tensor,
    ref_index: int,
    ref_mask: np.ndarray | torch.Tensor,
    threshold: float = 0.0,
    slices: Iterable[int] | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    tmp_dir: str | os.PathLike | None = None,
    offload_video_to_cpu: bool = False,
    offload_state_to_cpu: bool = False,
) -> np.ndarray:
    """Propagate one slice's mask through a ``(Z, H, W)`` volume with a SAM 2 video predictor.

    The slices (all of them, or ``slices``) become a pseudo-video in increasing slice order:
    frames scaled to 0-255 (:func:`frames_to_uint8`), grey copied to RGB, written as JPEGs to a
    temporary folder (removed afterwards whatever happens), ``init_state``, ``add_new_mask`` on
    the reference frame, ``propagate_in_video`` forwards and then backwards (``reverse=True``).
    SAM 2 resizes frames to its ``image_size`` internally and returns logits at the original
    ``H x W``; they are thresholded (``logit > threshold``) and written back at their slice
    index. The reference slice keeps ``ref_mask`` itself. Slices outside ``slices`` are False.

    Args:
        predictor: a ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (:func:`build_sam2_propagator`).
        volume: ``(Z, H, W)`` float array, slices along the first axis (see the module docstring
            for MONAI's ``(1, X, Y, Z)``).
        ref_index: the prompted slice, an index into ``volume``'s first axis.
        ref_mask: ``(H, W)`` mask of that slice (non-zero = foreground).
        threshold: logit threshold (0 = probability 0.5).
        slices: volume indices forming the pseudo-video (e.g. :func:`informative_slices`); must
            contain ``ref_index``. Default: every slice.
        value_range: intensity range mapped to 0-255 (``None``: the volume's min / max).
        tmp_dir: parent of the temporary frame folder (default: the system temp folder).
        offload_video_to_cpu, offload_state_to_cpu: passed to ``init_state`` (GPU memory savers).

    Returns:
        ``(Z, H, W)`` bool mask.
    """
    vol = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (Z, H, W), got shape {vol.shape}")
    z, h, w = vol.shape
    ref = ref_mask.detach().cpu().numpy() if isinstance(ref_mask, torch.Tensor) else np.asarray(ref_mask)
    if ref.shape != (h, w):
        raise ValueError(f"ref_mask shape {ref.shape} does not match the slices' (H, W) = {(h, w)}")
    ref = ref != 0
    ref_index = int(ref_index)
    if not 0 <= ref_index < z:
        raise ValueError(f"ref_index {ref_index} is outside the volume's {z} slices")
    order = list(range(z)) if slices is None else sorted({int(s) for s in slices})
    if any(not 0 <= s < z for s in order):
        raise ValueError(f"slices {order} go outside the volume's {z} slices")
    if ref_index not in order:
        raise ValueError(f"ref_index {ref_index} is not among the propagated slices {order}")
    ref_frame = order.index(ref_index)

    out = np.zeros((z, h, w), dtype=bool)
    frames = frames_to_uint8(vol[order], value_range)
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=None if tmp_dir is None else os.fspath(tmp_dir))
    try:
        _write_frames(frames, folder)
        with torch.inference_mode():
            state = predictor.init_state(
                video_path=folder,
                offload_video_to_cpu=offload_video_to_cpu,
                offload_state_to_cpu=offload_state_to_cpu,
            )
            predictor.add_new_mask(state, frame_idx=ref_frame, obj_id=1, mask=torch.from_numpy(ref))
            for reverse in (False, True):
                for frame_idx, _obj_ids, logits in predictor.propagate_in_video(
                    state, start_frame_idx=ref_frame, reverse=reverse
                ):
                    m = logits[0, 0]
                    if m.shape != (h, w):  # SAM 2 already returns the video size; be safe
                        m = torch.nn.functional.interpolate(
                            logits[:1, :1].float(), size=(h, w), mode="bilinear", align_corners=False
                        )[0, 0]
                    out[order[frame_idx]] = (m > threshold).cpu().numpy()
            del state
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out[ref_index] = ref
    return out


def propagate_from_label(
    predictor: Any,
    volume: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    slice_axis: int = 0,
    threshold: float = 0.0,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    tmp_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, int]:
    """The paper's procedure: informative slices of ``label``, middle one as the prompt, propagate.

    Only the informative slices form the pseudo-video (paper: ``V = {V_s | s in S}``); every
    other slice of the result is background.

    Args:
        volume, label: same-shape 3D arrays (a MONAI ``(1, X, Y, Z)`` pair: pass ``vol[0]``,
            ``lab[0]`` and ``slice_axis=-1``).
        slice_axis: the axis along which slices are taken; the result has the input's axis order.

    Returns:
        ``(mask, s_r)``: the bool mask in ``volume``'s shape and the reference slice index.
    """
    vol = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    lab = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if vol.shape != lab.shape or vol.ndim != 3:
        raise ValueError(f"volume {vol.shape} and label {lab.shape} must be 3D arrays of the same shape")
    vol_z = np.moveaxis(vol, slice_axis, 0)
    lab_z = np.moveaxis(lab, slice_axis, 0)
    s = informative_slices(lab_z, axis=0)
    s_r = reference_slice(s)
    mask = propagate_volume(
        predictor, vol_z, s_r, lab_z[s_r] != 0, threshold=threshold, slices=s, value_range=value_range, tmp_dir=tmp_dir
    )
    return np.moveaxis(mask, 0, slice_axis), s_r


#: where :class:`Sam2Propagation` takes the informative slices and the reference mask from
PROMPT_SOURCES = ("prediction", "ground_truth")


class Sam2Propagation:
    """The SAM 2 step of a volume pipeline: a coarse 3D mask in, the propagated 3D mask out.

    ``__call__(volume, reference)`` runs :func:`propagate_from_label` on ``(Z, H, W)`` arrays:
    the informative slices of ``reference`` form the pseudo-video, its middle informative slice is
    the prompt. ``reference`` is the segmentation network's mask (``prompt="prediction"``, what a
    deployed model has) or the ground truth (``prompt="ground_truth"``, the paper's equations, for
    evaluation); which one is the caller's choice (the volume inferer passes the label when this
    attribute says ``"ground_truth"``). A reference with no foreground gives an empty mask (and
    counts in :attr:`no_prompt`): there is nothing to propagate.

    Args:
        predictor: a SAM 2 video predictor (:func:`build_sam2_propagator`).
        prompt: ``"prediction"`` or ``"ground_truth"`` (see above).
        threshold: logit threshold of SAM 2's masks (0: probability 0.5).
        value_range: intensity range of the volume mapped to 0-255 frames (``(0, 1)`` after
            :class:`fewlabel.transforms.CTWindow`); None: each volume's min-max.
        tmp_dir: parent folder of the temporary frame folder (default: the system's).

    Attributes:
        no_prompt: volumes seen whose reference had no foreground.
        reference_slices: the reference slice of each volume propagated (None when none).
    """

    def __init__(self, predictor: Any, prompt: str = "prediction", threshold: float = 0.0,
                 value_range: tuple[float, float] | None = (0.0, 1.0),
                 tmp_dir: str | os.PathLike | None = None) -> None:
        if prompt not in PROMPT_SOURCES:
            raise ValueError(f"prompt must be one of {PROMPT_SOURCES}, got '{prompt}'")
        self.predictor = predictor
        self.prompt = prompt
        self.threshold = float(threshold)
        self.value_range = value_range
        self.tmp_dir = tmp_dir
        self.no_prompt = 0
        self.reference_slices: list[int | None] = []

    def __call__(self, volume: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> np.ndarray:
        """``volume`` ``(Z, H, W)`` float, ``reference`` ``(Z, H, W)`` mask -> ``(Z, H, W)`` bool mask."""
        ref = reference.detach().cpu().numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
        if not np.any(ref):
            self.no_prompt += 1
            self.reference_slices.append(None)
            return np.zeros(ref.shape, dtype=bool)
        mask, s_r = propagate_from_label(self.predictor, volume, ref, slice_axis=0, threshold=self.threshold,
                                         value_range=self.value_range, tmp_dir=self.tmp_dir)
        self.reference_slices.append(int(s_r))
        return mask


def build_sam2_propagation(
    checkpoint: str | os.PathLike, config: str = "sam2.1_hiera_t", device: str | torch.device = "cpu",
    prompt: str = "prediction", threshold: float = 0.0,
) -> Sam2Propagation:
    """:func:`build_sam2_propagator` wrapped as a :class:`Sam2Propagation` step (for configs)."""
    return Sam2Propagation(build_sam2_propagator(checkpoint, config, device), prompt=prompt, threshold=threshold)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def _config_file(config: str) -> str:
    if config in SAM2_CONFIGS:
        return SAM2_CONFIGS[config]
    if config.endswith(".yaml"):
        return config
    raise ValueError(f"unknown SAM 2 config '{config}', expected one of {sorted(SAM2_CONFIGS)}, 'tiny' or a .yaml path")


def _build_model(config_file: str, overrides: Sequence[str], apply_postprocessing: bool) -> torch.nn.Module:
    from sam2.build_sam import build_sam2_video_predictor

    # built on the CPU without weights; the caller loads them and moves the model
    return build_sam2_video_predictor(
        config_file,
        None,
        device="cpu",
        hydra_overrides_extra=list(overrides),
        apply_postprocessing=apply_postprocessing,
    )


def _guess_config(sd: Mapping[str, Any]) -> str | None:
    w = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor):
        return None
    blocks = {int(k.split(".")[3]) for k in sd if k.startswith("image_encoder.trunk.blocks.")}
    size = _TRUNK_TO_SIZE.get((int(w.shape[0]), len(blocks)))
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in sd else "sam2"
    return f"{version}_hiera_{size}"


def _check_state_dict(sd: Mapping[str, Any], model: torch.nn.Module, path: Path, config: str) -> None:
    parts = state_dict_mismatch(sd, model, path, f"SAM 2 '{config}'")
    if not parts:
        return
    guess = _guess_config(sd)
    hint = f" The file looks like a '{guess}' checkpoint: pass config='{guess}'." if guess and guess != config else ""
    raise CheckpointError(f"{path} does not fit SAM 2 config '{config}': " + "; ".join(parts) + "." + hint)


def build_sam2_propagator(
    checkpoint: str | os.PathLike | None,
    config: str = "sam2.1_hiera_t",
    device: str | torch.device = "cpu",
    apply_postprocessing: bool = True,
) -> Any:
    """Load a SAM 2 checkpoint as a frozen ``SAM2VideoPredictor`` for :func:`propagate_volume`.

    The model is built from the Hydra config with ``sam2.build_sam.build_sam2_video_predictor``
    (without weights), the file is read with ``torch.load(..., map_location="cpu",
    weights_only=True)``, its ``"model"`` state dict is checked and loaded strictly, and the model
    is moved to ``device`` in eval mode with no parameter requiring grad. Without the CUDA
    extension ``sam2._C`` the hole-filling post-processing is switched off (``fill_hole_area=0``).

    Args:
        checkpoint: ``sam2.1_hiera_tiny.pt`` etc. (Meta's ``{"model": ...}`` files; a bare state
            dict is accepted too), or a :func:`save_tiny_sam2` file with ``config="tiny"``.
        config: a key of :data:`SAM2_CONFIGS` matching the file (``sam2.1_hiera_t`` for
            ``sam2.1_hiera_tiny.pt``), a ``configs/...yaml`` name inside the ``sam2`` package,
            or ``"tiny"``.
        device: where the predictor runs (``"cpu"`` works; the package defaults to CUDA).
        apply_postprocessing: SAM 2's demo settings (dynamic multimask fallback, hole filling).

    Raises:
        CheckpointError: the file is missing, unreadable, or does not fit the config (the message
            names the file, the config, a few mismatched keys and the config the file looks like).
        ValueError: unknown config name.
    """
    if config != "tiny":
        config_file = _config_file(config)
    if checkpoint is None or str(checkpoint) == "":
        raise CheckpointError(f"no SAM 2 checkpoint given for config '{config}': pass sam2_checkpoint.")
    path = Path(checkpoint)
    if not path.is_file():
        expected = _CONFIG_FILES.get(config, "sam2.1_hiera_tiny.pt")
        where = large_files_hint(path, "https://github.com/facebookresearch/sam2 or the Hugging Face model "
                                       "facebook/sam2.1-hiera-tiny etc.")
        raise CheckpointError(
            f"SAM 2 checkpoint not found: {path}. Download the SAM 2 weights for config '{config}' "
            f"({expected}; see {where}) and pass the file's path as the checkpoint (--sam2_checkpoint PATH); "
            "tests and demos can use fewlabel.sam.propagate.save_tiny_sam2(path) with config='tiny'."
        )
    payload = read_weights_file(path, "SAM 2 checkpoint")

    is_tiny_file = isinstance(payload, Mapping) and payload.get("format") == _TINY_FORMAT
    if config == "tiny":
        if not is_tiny_file:
            raise CheckpointError(
                f"{path} is not a tiny SAM 2 file (no overrides saved with the weights); config='tiny' loads only "
                "files written by fewlabel.sam.propagate.save_tiny_sam2. For a real checkpoint pass e.g. "
                "config='sam2.1_hiera_t'."
            )
        overrides = [str(o) for o in payload.get("overrides", ())]
        if not all(o.startswith("++model.") for o in overrides):
            raise CheckpointError(f"{path} holds unexpected tiny SAM 2 overrides {overrides}")
        config_file = str(payload.get("config", _TINY_BASE_CONFIG))
    else:
        if is_tiny_file:
            raise CheckpointError(
                f"{path} is a tiny random-weight SAM 2 test file; load it with config='tiny', not '{config}'."
            )
        overrides = []
    if isinstance(payload, Mapping) and isinstance(payload.get("model"), Mapping):
        state_dict = payload["model"]
    elif isinstance(payload, Mapping):
        state_dict = payload
    else:
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a SAM 2 state dict")

    model = _build_model(config_file, overrides, apply_postprocessing)
    _check_state_dict(state_dict, model, path, config)
    model.load_state_dict(state_dict, strict=True)
    return _frozen(model, device)


def _frozen(model: torch.nn.Module, device: str | torch.device) -> Any:
    """Hole filling off without the CUDA extension, on ``device``, eval mode, no gradients."""
    if importlib.util.find_spec("sam2._C") is None:
        model.fill_hole_area = 0  # hole filling needs the CUDA extension; SAM 2 would warn and skip it
    model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_random_sam2(config: str = "sam2.1_hiera_t", device: str | torch.device = "cpu") -> Any:
    """A released SAM 2 architecture (a :data:`SAM2_CONFIGS` key) with **random weights**, set up as
    :func:`build_sam2_propagator` sets up a loaded one. Its masks mean nothing: for measuring time and
    memory only (the compute does not depend on the weight values)."""
    return _frozen(_build_model(_config_file(config), [], True), device)


def save_tiny_sam2(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build a tiny random-weight SAM 2 and save it where :func:`build_sam2_propagator` loads it.

    The model is ``sam2.1_hiera_t``'s config composed with :data:`TINY_SAM2_OVERRIDES` (the
    package's own classes: Hiera trunk, FPN neck, memory attention / encoder, SAM heads), with
    weights initialised from ``seed`` (the global torch RNG is left untouched). The file holds
    ``{"model": <state dict>, "format": "fewlabel-tiny-sam2", "config": <base config>,
    "overrides": [...]}``; ``build_sam2_propagator(path, config="tiny")`` rebuilds the same
    architecture and loads it like a real checkpoint. Its masks come from random weights and
    mean nothing: for tests and demos only.

    Returns:
        The path written (parent folders are created).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(_TINY_BASE_CONFIG, TINY_SAM2_OVERRIDES, apply_postprocessing=True)
    from fewlabel.networks import write_weights_file

    payload = {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "format": _TINY_FORMAT,
        "config": _TINY_BASE_CONFIG,
        "overrides": list(TINY_SAM2_OVERRIDES),
    }
    return write_weights_file(payload, path)  # atomic, as save_tiny_sam


def tiny_sam2_checkpoint(path: str | os.PathLike, seed: int = 0) -> str:
    """The path of a tiny random-weight SAM 2 file, written with :func:`save_tiny_sam2` if absent.

    Load it with ``build_sam2_propagator(path, config="tiny")``.
    """
    path = Path(path)
    if not path.is_file():
        save_tiny_sam2(path, seed=seed)
    return str(path)
