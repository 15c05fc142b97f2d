"""SAM pseudo-labels per unlabelled image and visit, with the embedding cache vs without, same run.

Continuous pseudo-label generation (SAM mining, section 2.4) asks SAM for a new pseudo-label each
time an unlabelled image is revisited; only the prompts change between visits.

Baseline: :meth:`fewlabel.sam.SamTeacher.pseudo_label` without a cache, i.e. image encoder +
prompt encoder + mask decoder for every visit. Measured: the same call on a later visit with an
:class:`fewlabel.sam.EmbeddingCache` holding the image's embedding (prompt encoder + mask decoder,
plus the cache lookup), keyed by the image file (path + size + mtime) and keyed by the image
tensor's content (a SHA-256 of its bytes). The model is a SAM ViT-B built with
``segment_anything.sam_model_registry["vit_b"]()`` (random weights: no checkpoint is needed for
timing), the image 1024 x 1024 RGB, prompts = 3 points + box from a blob-shaped probability map.
Runs on the CPU and, when present, on CUDA (synchronised). Also reports the storage per cached
embedding and how many pseudo-label pixels change when embeddings are cached in float16.
Saves JSON to ``benchmarks/results/sam_cache.json``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
import tempfile
from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry

from _timing import median_seconds, save_result

from fewlabel.sam import EmbeddingCache, SamTeacher, make_prompts

SIZE = 1024
NUM_POINTS = 3
REPEATS_ENCODER = {"cpu": 2, "cuda": 10}  # vit_b on 2 CPU cores takes tens of seconds per image
REPEATS_CACHED = {"cpu": 9, "cuda": 30}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, SIZE, SIZE, generator=g)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dist2 = ((yy - 420.0) / 180) ** 2 + ((xx - 560.0) / 240) ** 2
    prob = torch.exp(-dist2)[None, None]  # a polyp-like blob, maximum 1 at its centre
    return image, prob


def _seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def _measure(teacher: SamTeacher, device: str, image: torch.Tensor, prob: torch.Tensor, file: Path) -> dict:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    kind = device.split(":")[0]
    image, prob = image.to(device), prob.to(device)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    last: dict = {}

    def uncached():
        teacher.cache = None
        last["uncached"] = teacher.pseudo_label(image, prob, NUM_POINTS, generator=gen())[0]

    path_cache, content_cache = EmbeddingCache(), EmbeddingCache()

    def cached(cache: EmbeddingCache, key):
        teacher.cache = cache
        return teacher.pseudo_label(image, prob, NUM_POINTS, cache_keys=[key], generator=gen())[0]

    t_plain = median_seconds(uncached, REPEATS_ENCODER[kind], sync)
    # the two cached variants alternate, so that a change of machine load hits both alike
    cached(path_cache, file), cached(content_cache, None)  # first visits: fill the caches (and warm up)
    t_path, t_content = [], []
    for _ in range(REPEATS_CACHED[kind]):
        t_path.append(_seconds(lambda: cached(path_cache, file), sync))
        t_content.append(_seconds(lambda: cached(content_cache, None), sync))
    t_path, t_content = statistics.median(t_path), statistics.median(t_content)
    assert path_cache.misses == 1 and content_cache.misses == 1, "the cache should compute each embedding once"
    teacher.cache = None

    reference = last["uncached"]
    same = torch.equal(cached(path_cache, file), reference)
    # what a float16 cache returns: the float32 embedding rounded to float16
    emb = path_cache.get_or_compute(file, image[0], teacher)[None]
    prompts = make_prompts(prob[:, 0], NUM_POINTS, generator=gen(), mask_size=teacher.mask_input_size)
    half = (teacher.predict(emb.half().float(), prompts, image.shape[-2:]) > 0).float()
    teacher.cache = None
    return {
        "uncached_ms_per_image_visit": t_plain * 1e3,
        "cached_path_key_ms_per_image_visit": t_path * 1e3,
        "cached_content_key_ms_per_image_visit": t_content * 1e3,
        "speedup_path_key": t_plain / t_path,
        "speedup_content_key": t_plain / t_content,
        "cached_equals_uncached_float32": same,
        "float16_changed_pixels_fraction": float((half != reference).float().mean()),
    }


def main() -> dict:
    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    teacher = SamTeacher(sam, model_type="vit_b", checkpoint_id="random-init-vit_b")
    image, prob = _inputs()
    emb_shape = (teacher.embedding_dim, SIZE // 16, SIZE // 16)
    n = int(np.prod(emb_shape))
    result: dict = {
        "model": "SAM vit_b (segment_anything.sam_model_registry['vit_b'](), random weights)",
        "image": [3, SIZE, SIZE],
        "prompts": f"{NUM_POINTS} points + box",
        "baseline": "SamTeacher.pseudo_label without cache: image encoder + prompt encoder + mask decoder per visit",
        "measured": "SamTeacher.pseudo_label with an EmbeddingCache hit: prompt encoder + mask decoder + lookup",
        "embedding_shape": list(emb_shape),
        "embedding_mib_float32": n * 4 / 2**20,
        "embedding_mib_float16": n * 2 / 2**20,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "unlabelled.npy"
        np.save(file, image[0].numpy())
        result["cpu"] = _measure(teacher, "cpu", image, prob, file)
        if torch.cuda.is_available():
            result["cuda"] = _measure(teacher.to("cuda"), "cuda", image, prob, file)
            result["gpu"] = torch.cuda.get_device_name()
        else:
            result["cuda"] = "not available"
    for dev in ("cpu", "cuda"):
        r = result[dev]
        if isinstance(r, dict):
            print(f"[{dev}] without cache: {r['uncached_ms_per_image_visit']:.1f} ms/image/visit")
            print(f"[{dev}] with cache, path key: {r['cached_path_key_ms_per_image_visit']:.1f} ms "
                  f"({r['speedup_path_key']:.1f}x); content key: {r['cached_content_key_ms_per_image_visit']:.1f} ms "
                  f"({r['speedup_content_key']:.1f}x)")
            changed = 100 * r["float16_changed_pixels_fraction"]
            print(f"[{dev}] float16 cache changes {changed:.4f} % of pseudo-label pixels")
        else:
            print(f"[{dev}] {r}")
    save_result("sam_cache", result)
    return result


if __name__ == "__main__":
    main()
