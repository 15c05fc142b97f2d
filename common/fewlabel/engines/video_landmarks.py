"""Landmark segmentation of a laparoscopic video, frame by frame: an overlay video and per-frame point lists.

:func:`run_video` is what the SLiPPA bundle's ``video.json`` runs (``python -m monai.bundle run
--config_file "['configs/inference.json','configs/video.json']" --video_path VIDEO``, or
``fewlabel video VIDEO``). Each frame is read with OpenCV, resized to the network size exactly as the
inference pipeline resizes images (bilinear, MONAI's ``Resized``), segmented, post-processed, and the
curves are scaled back to the frame. Outputs, in ``output_dir``:

- ``<video stem>_overlay.mp4`` (or ``.avi`` when the MPEG-4 encoder is missing): the frames with the
  curves drawn over them;
- ``<video stem>_landmarks.json``: ``{"video", "fps", "height", "width", "frames": [{"frame", "time_s",
  "landmarks": {name: [[[x, y], ...], ...]}}], "timing_ms": {...}}`` (see
  :func:`fewlabel.transforms.landmarks.landmarks_record` for the point convention).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from fewlabel.arguments import as_bool, as_int, as_optional
from fewlabel.errors import DataError

__all__ = ["run_video"]

logger = logging.getLogger("fewlabel.engines")


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[Any, Path]:
    import cv2

    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        out = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, out
        writer.release()
    raise RuntimeError(f"OpenCV cannot write a video at {path} (neither mp4v nor MJPG encoders work here)")


def run_video(
    video_path: str | os.PathLike, network: torch.nn.Module, image_size: Sequence[int], class_names: Sequence[str],
    postprocessor: Any, output_dir: str | os.PathLike, ckpt_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu", amp: bool = False, palette: Sequence[Sequence[int]] | None = None,
    thickness: int = 12, max_frames: int | None = None, progress: bool = True, channels: int = 3,
    channel_policy: str = "error",
) -> dict[str, Any]:
    """Segment every frame of ``video_path`` and write the overlay video and the per-frame JSON.

    Args:
        video_path: a video file OpenCV can read (mp4, avi, ...).
        network: the landmark network (``(B, 3, H, W)`` in [0, 1] -> ``(B, K, H, W)`` logits).
        image_size: network input ``(H, W)`` (SLiPPA: ``(320, 416)``).
        class_names: class names, index 0 = background.
        postprocessor: a :class:`fewlabel.postprocess.LandmarkPostprocessor` (curves are traced by it).
        output_dir: folder for the outputs (created).
        ckpt_path: weights to load into ``network`` first (a MONAI checkpoint or a state dict); ``None``
            keeps the network's weights.
        device / amp: where the network runs; AMP (autocast) is used on CUDA only.
        palette: ``(K, 3)`` RGB class colours of the overlay.
        thickness: curve width in frame pixels.
        max_frames: stop after this many frames (``None``: the whole video).
        progress: show a progress bar.
        channels / channel_policy: the bundle's ``image_channels`` / ``channel_policy``: each (RGB) frame goes
            through :class:`fewlabel.transforms.LoadImage2D` as image files do, so a 1-channel network
            needs ``channel_policy="convert"`` (luma) and gets a clear error otherwise.

    Returns:
        A summary: frames processed, output paths, mean milliseconds per frame of inference and of
        post-processing, and frames per second end to end.

    Raises:
        DataError: the video is missing or OpenCV cannot decode it.
    """
    import cv2
    from tqdm import tqdm

    from fewlabel.networks.transfer import load_pretrained
    from fewlabel.transforms.io import LoadImage2D, overlay_mask
    from fewlabel.transforms.landmarks import landmarks_record, render_landmarks, scale_paths

    max_frames = as_optional(max_frames, "max_frames", as_int)
    amp = as_bool(amp, "amp")
    video_path = Path(video_path)
    if not video_path.is_file():
        raise DataError(f"video not found: {video_path}. Pass --video_path with a video file.")
    cap = cv2.VideoCapture(str(video_path))
    if not cap.isOpened():
        raise DataError(f"OpenCV cannot open {video_path}: is it a video file (mp4, avi, ...) and not truncated?")
    loader = LoadImage2D(channels, channel_policy)
    device = torch.device(device)
    if ckpt_path:
        load_pretrained(network, ckpt_path, part="all")
    network = network.to(device).eval()
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if max_frames is not None:
        total = min(total, int(max_frames)) if total else int(max_frames)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pal = None if palette is None else np.asarray(palette, np.uint8)
    writer, video_out = None, None
    frames: list[dict[str, Any]] = []
    t_infer, t_post = [], []
    t_start = time.perf_counter()
    bar = tqdm(total=total, desc=f"landmarks {video_path.name}", unit="frame", disable=not progress)
    try:
        index = 0
        while max_frames is None or index < int(max_frames):
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            if writer is None:
                writer, video_out = _open_writer(out_dir / f"{video_path.stem}_overlay", fps, (w, h))
            t0 = time.perf_counter()
            frame = loader(MetaTensor(torch.from_numpy(rgb), meta={"filename_or_obj": f"{video_path} frame {index}"}))
            x = F.interpolate(frame.as_tensor()[None].to(device), size=tuple(int(s) for s in image_size),
                              mode="bilinear", align_corners=False)
            with torch.inference_mode(), torch.autocast(device.type, enabled=bool(amp) and device.type == "cuda"):
                labels = network(x).argmax(dim=1)[0]
            labels = labels.to("cpu", torch.uint8).numpy()
            t1 = time.perf_counter()
            small = x[0].expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()  # the field of view is found in RGB
            res = postprocessor(labels, small)
            full = scale_paths(res.paths, labels.shape, (h, w))
            t2 = time.perf_counter()
            t_infer.append(t1 - t0)
            t_post.append(t2 - t1)
            drawn = render_landmarks(full, class_names, (h, w), thickness)
            writer.write(cv2.cvtColor(overlay_mask(rgb, drawn, alpha=0.8, palette=pal), cv2.COLOR_RGB2BGR))
            record = landmarks_record(full, (h, w))
            frames.append({"frame": index, "time_s": round(index / fps, 4), "landmarks": record["landmarks"]})
            index += 1
            bar.update(1)
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise DataError(f"no frame could be decoded from {video_path}: the file is empty or truncated.")
    elapsed = time.perf_counter() - t_start
    timing = {"inference_ms": 1000 * float(np.mean(t_infer)), "postprocess_ms": 1000 * float(np.mean(t_post)),
              "fps_end_to_end": len(frames) / elapsed}
    json_out = out_dir / f"{video_path.stem}_landmarks.json"
    json_out.write_text(json.dumps({"video": str(video_path), "fps": fps, "height": h, "width": w,
                                    "class_names": list(class_names)[1:], "frames": frames, "timing_ms": timing}))
    summary = {"frames": len(frames), "overlay_video": str(video_out), "landmarks_json": str(json_out), **timing}
    logger.info(
        "video %s: %d frames, inference %.1f ms + post-processing %.1f ms per frame, %.1f fps end to end",
        video_path.name,
        len(frames),
        timing["inference_ms"],
        timing["postprocess_ms"],
        timing["fps_end_to_end"],
    )
    return summary
