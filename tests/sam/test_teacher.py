"""fewlabel.sam: prompts from probability maps, the frozen SAM teacher, the embedding cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from fewlabel.errors import CheckpointError
from fewlabel.sam import (
    MODES,
    EmbeddingCache,
    SamPrompt,
    SamTeacher,
    build_sam_teacher,
    build_tiny_sam,
    make_prompt,
    mask_prompt_from_probability,
    prompts_from_probability,
    save_tiny_sam,
)

# ---------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------


def test_points_are_the_maxima_in_xy_order():
    prob = torch.full((20, 30), 0.6)
    prob[4, 25] = 0.99  # row 4, column 25 -> (x=25, y=4)
    prob[15, 2] = 0.95
    prob[9, 11] = 0.90
    points, _ = prompts_from_probability(prob, num_points=3)
    assert points.dtype == torch.float32 and points.shape == (3, 2)
    assert points.tolist() == [[25.0, 4.0], [2.0, 15.0], [11.0, 9.0]]


def test_ties_are_broken_by_the_generator_reproducibly():
    prob = torch.zeros(16, 16)
    prob[3:7, 5:10] = 1.0  # a saturated plateau of 20 pixels
    prob[12, 12] = 0.7

    def draw(seed):
        return prompts_from_probability(prob, 4, generator=torch.Generator().manual_seed(seed))[0]

    first = draw(0)
    assert torch.equal(first, draw(0))
    for x, y in first.tolist():
        assert prob[int(y), int(x)] == 1.0
    assert len({tuple(map(tuple, draw(s).tolist())) for s in range(8)}) > 1  # really random among ties
    # a unique maximum is always taken, the tie at the cut is drawn
    prob[0, 0] = 1.5
    for s in range(5):
        assert draw(s)[0].tolist() == [0.0, 0.0]


def test_box_is_the_inclusive_extent_of_the_thresholded_map():
    prob = np.zeros((40, 50), dtype=np.float32)
    prob[10:21, 5:9] = 0.8
    prob[30, 44] = 0.5  # exactly at the threshold counts as foreground
    prob[35, 1] = 0.49
    _, box = prompts_from_probability(prob, 1, threshold=0.5)
    assert box.tolist() == [5.0, 10.0, 44.0, 30.0]
    single = np.zeros((8, 8), dtype=np.float32)
    single[3, 5] = 0.9
    assert prompts_from_probability(single, 2)[1].tolist() == [5.0, 3.0, 5.0, 3.0]


@pytest.mark.parametrize("mode", MODES)
def test_empty_or_low_prediction_gives_no_prompt(mode):
    for prob in (torch.zeros(12, 12), torch.full((12, 12), 0.49)):
        assert prompts_from_probability(prob, 3, threshold=0.5, mode=mode) == (None, None)
        assert make_prompt(prob, 3, mode=mode) is None


def test_modes_choose_the_prompt_parts():
    prob = torch.zeros(32, 32)
    prob[8:20, 10:14] = 0.9
    pts, box = prompts_from_probability(prob, 2, mode="points")
    assert pts.shape == (2, 2) and box is None
    pts, box = prompts_from_probability(prob, 2, mode="box")
    assert pts is None and box.tolist() == [10.0, 8.0, 13.0, 19.0]
    assert prompts_from_probability(prob, 2, mode="mask") == (None, None)
    full = make_prompt(prob, 2, mode="points+box+mask", mask_size=64)
    assert full.points.shape == (2, 2) and full.point_labels.tolist() == [1, 1]
    assert full.box is not None and full.mask.shape == (1, 64, 64)
    only_mask = make_prompt(prob, 2, mode="mask")
    assert only_mask.points is None and only_mask.box is None and only_mask.mask.shape == (1, 256, 256)
    with pytest.raises(ValueError, match="mode"):
        prompts_from_probability(prob, 2, mode="scribble")
    with pytest.raises(ValueError, match="num_points"):
        prompts_from_probability(prob, 0)


def test_fewer_foreground_pixels_than_points_repeats_them():
    prob = torch.zeros(10, 10)
    prob[2, 3] = 0.9
    prob[7, 8] = 0.8
    points, _ = prompts_from_probability(prob, 5)
    assert points.shape == (5, 2)
    assert {tuple(p) for p in points.tolist()} == {(3.0, 2.0), (8.0, 7.0)}


def test_mask_prompt_is_resized_padded_logits():
    prob = torch.zeros(100, 50)  # portrait: SAM's frame holds it in the left half
    prob[:, :25] = 1.0
    logits = mask_prompt_from_probability(prob, mask_size=256)
    assert logits.shape == (1, 256, 256)
    lim = float(np.log((1 - 1e-4) / 1e-4))
    assert torch.allclose(logits[0, 10:250, 10:60], torch.tensor(lim), atol=1e-3)  # foreground half of the image
    assert torch.allclose(logits[0, 10:250, 70:120], torch.tensor(-lim), atol=1e-3)  # background half of the image
    assert torch.allclose(logits[0, :, 130:], torch.tensor(-lim), atol=1e-3)  # padding
    half = mask_prompt_from_probability(torch.full((8, 8), 0.5), mask_size=16)
    assert torch.allclose(half, torch.zeros_like(half), atol=1e-6)  # logit(0.5) = 0


# ---------------------------------------------------------------------------------------------
# teacher
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pt", seed=0)


@pytest.fixture(scope="module")
def teacher(tiny_ckpt):
    return build_sam_teacher(tiny_ckpt, model_type="tiny")


def _blob_batch(b: int = 3, h: int = 40, w: int = 56, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, h, w, generator=g)
    probs = torch.zeros(b, 1, h, w)
    for i in range(b - 1):  # the last image gets an empty prediction
        probs[i, 0, 5 + 3 * i : 25 + 2 * i, 8 + i : 30 + 4 * i] = 0.6 + 0.1 * i
    return images, probs


def test_tiny_checkpoint_loads_frozen_and_gives_masks_of_the_input_size(teacher):
    reference = build_tiny_sam(seed=0)
    for (name, p), q in zip(teacher.sam.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(p, q), name
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.training and not teacher.sam.training
    teacher.train()  # what a parent module's train() does
    assert not teacher.sam.training and not teacher.sam.image_encoder.training

    images, probs = _blob_batch()
    for mode in MODES:
        masks, valid = teacher.pseudo_label(images, probs, num_points=2, mode=mode)
        assert masks.shape == (3, 1, 40, 56) and masks.dtype == torch.float32
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        assert valid.tolist() == [True, True, False]
        assert masks[2].sum() == 0
    logits = teacher.predict(teacher.embed(images[:1]), [make_prompt(probs[0, 0], 2)], (40, 56), output="logits")
    assert logits.shape == (1, 1, 40, 56)


def test_teacher_matches_segment_anything_predictor(teacher):
    """Same preprocessing, prompt mapping and postprocessing as SamPredictor."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # long side = SAM input: no resampling
    predictor = SamPredictor(teacher.sam)
    predictor.set_image(image)
    ours = teacher.embed(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert torch.allclose(ours, predictor.features, atol=1e-5)

    # prompts in a 31 x 43 original frame: SAM's input frame is 46 x 64 (x scaled by 64/43, y by 46/31)
    small = (31, 43)
    predictor.original_size, predictor.input_size = small, (46, 64)
    prompt = SamPrompt(
        points=torch.tensor([[10.0, 5.0], [20.0, 15.0]]),
        point_labels=torch.tensor([1, 1]),
        box=torch.tensor([4.0, 2.0, 27.0, 19.0]),
    )
    for multimask in (False, True):
        ref, iou, _ = predictor.predict(prompt.points.numpy(), prompt.point_labels.numpy(), prompt.box.numpy(),
                                        multimask_output=multimask, return_logits=True)
        ref = ref[int(np.argmax(iou))] if multimask else ref[0]
        got = teacher.predict(ours, [prompt], small, multimask_output=multimask)
        assert got.shape == (1, 1, 31, 43)
        assert np.allclose(got[0, 0].numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("size", [(31, 43), (100, 7), (64, 64)])
def test_coordinates_map_like_resize_longest_side(teacher, size):
    coords = torch.tensor([[0.0, 0.0], [6.0, 30.0], [42.0, 5.5]])
    expected = ResizeLongestSide(teacher.image_size).apply_coords(coords.numpy(), size)
    assert np.allclose(teacher.to_input_coords(coords, size).numpy(), expected, atol=1e-5)


def test_image_formats(teacher):
    g = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (2, 3, 30, 20), dtype=torch.uint8, generator=g)
    assert torch.allclose(teacher.embed(u8), teacher.embed(u8.float() / 255), atol=1e-5)
    gray = u8[:, :1]
    assert torch.allclose(teacher.embed(gray), teacher.embed(gray.expand(-1, 3, -1, -1)), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        teacher.embed(u8.float())


def test_missing_checkpoint_names_the_file_and_large_files(tmp_path):
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(CheckpointError, match="large_files.yml") as err:
        build_sam_teacher(missing, "vit_b")
    assert str(missing) in str(err.value)


def test_mismatched_checkpoint_names_file_type_and_keys(tmp_path, tiny_ckpt):
    # a ViT-L-like checkpoint loaded as ViT-B
    fake = tmp_path / "sam_vit_l.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16),
                "image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024)}, fake)
    with pytest.raises(CheckpointError) as err:
        build_sam_teacher(fake, "vit_b")
    msg = str(err.value)
    assert str(fake) in msg and "vit_b" in msg and "image_encoder.patch_embed.proj.weight" in msg
    assert "looks like a SAM 'vit_l'" in msg

    # a tiny file whose config does not fit its weights
    payload = torch.load(tiny_ckpt, weights_only=True)
    payload["config"]["embed_dim"] = 64
    bad = tmp_path / "bad_tiny.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="differ in shape") as err:
        build_sam_teacher(bad, "tiny")
    assert str(bad) in str(err.value) and "'tiny'" in str(err.value)

    with pytest.raises(CheckpointError, match="tiny"):
        build_sam_teacher(tiny_ckpt, "vit_b")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        build_sam_teacher(garbage, "vit_b")
    with pytest.raises(ValueError, match="model_type"):
        build_sam_teacher(tiny_ckpt, "vit_x")


def test_student_step_leaves_the_teacher_untouched(tiny_ckpt):
    teacher = build_sam_teacher(tiny_ckpt, "tiny")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    student_before = [p.clone() for p in student.parameters()]
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_ids for group in optimizer.param_groups for p in group["params"])

    images = torch.rand(2, 3, 32, 32)
    student.train()
    teacher.train()
    logits = student(images)
    pseudo, valid = teacher.pseudo_label(images, torch.sigmoid(logits), num_points=3)
    assert valid.any() and not pseudo.requires_grad
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], pseudo[valid])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters()))
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.sam.training


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------


class _EmbedSpy:
    """Counts the images a teacher embeds."""

    def __init__(self, teacher: SamTeacher, monkeypatch) -> None:
        self.images = 0
        real = teacher.embed

        def spy(images):
            self.images += images.shape[0]
            return real(images)

        monkeypatch.setattr(teacher, "embed", spy)


def test_cache_hits_on_the_second_visit_and_misses_on_a_changed_image(teacher, monkeypatch):
    cache = EmbeddingCache()
    spy = _EmbedSpy(teacher, monkeypatch)
    image = torch.rand(3, 40, 56)
    first = cache.get_or_compute(None, image, teacher)
    second = cache.get_or_compute(None, image.clone(), teacher)
    assert spy.images == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first, second)
    changed = image.clone()
    changed[0, 0, 0] = 1.0 - changed[0, 0, 0]
    cache.get_or_compute(None, changed, teacher)
    assert spy.images == 2 and cache.misses == 2


def test_cache_misses_when_the_checkpoint_changes(tmp_path, monkeypatch):
    path = save_tiny_sam(tmp_path / "sam.pt", seed=0)
    image = torch.rand(3, 32, 32)
    cache = EmbeddingCache()
    old = build_sam_teacher(path, "tiny")
    emb_old = cache.get_or_compute(None, image, old)
    assert cache.misses == 1
    stat = os.stat(path)
    save_tiny_sam(path, seed=1)  # new weights at the same path
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    new = build_sam_teacher(path, "tiny")
    emb_new = cache.get_or_compute(None, image, new)
    assert cache.misses == 2 and not torch.allclose(emb_old, emb_new)
    # in-memory models are told apart by their weights
    cache.get_or_compute(None, image, SamTeacher(build_tiny_sam(seed=0)))
    cache.get_or_compute(None, image, SamTeacher(build_tiny_sam(seed=0)))
    cache.get_or_compute(None, image, SamTeacher(build_tiny_sam(seed=2)))
    assert (cache.hits, cache.misses) == (1, 4)


def test_path_keys_follow_the_file(tmp_path, teacher, monkeypatch):
    cache = EmbeddingCache()
    spy = _EmbedSpy(teacher, monkeypatch)
    file = tmp_path / "img.npy"
    image = torch.rand(3, 24, 24)
    np.save(file, image.numpy())
    cache.get_or_compute(file, image, teacher)
    cache.get_or_compute(str(file), image, teacher)
    assert spy.images == 1
    stat = os.stat(file)
    np.save(file, (1 - image).numpy())
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache.get_or_compute(file, 1 - image, teacher)
    assert spy.images == 2
    with pytest.raises(ValueError, match="not a file"):
        cache.get_or_compute(tmp_path / "nope.png", image, teacher)


def test_disk_cache_survives_a_new_cache_object(tmp_path, teacher, monkeypatch):
    images = torch.rand(2, 3, 40, 56)
    first = EmbeddingCache(cache_dir=tmp_path / "emb")
    ref = first.get_or_compute_batch([None, None], images, teacher)
    files = sorted(p.name for p in (tmp_path / "emb").iterdir())
    assert len(files) == 2 and all(f.endswith(".pt") and not f.startswith(".") for f in files)  # no temp files left

    spy = _EmbedSpy(teacher, monkeypatch)
    second = EmbeddingCache(cache_dir=tmp_path / "emb")
    again = second.get_or_compute_batch([None, None], images, teacher)
    assert spy.images == 0 and second.disk_hits == 2 and torch.equal(ref, again)

    second.clear()
    assert list((tmp_path / "emb").iterdir()) == [] and second.hits == 0
    second.get_or_compute_batch([None, None], images, teacher)
    assert spy.images == 2


def test_lru_bound_evicts_the_oldest_entry(teacher):
    cache = EmbeddingCache(max_memory_entries=2)
    images = torch.rand(3, 3, 16, 16)
    for i in range(3):
        cache.get_or_compute(None, images[i], teacher)
    assert len(cache) == 2 and cache.misses == 3
    cache.get_or_compute(None, images[2], teacher)  # still held
    cache.get_or_compute(None, images[0], teacher)  # evicted
    assert (cache.hits, cache.misses) == (1, 4)


@pytest.mark.parametrize("mode", ["points+box", "points+box+mask"])
def test_pseudo_labels_with_cached_embeddings_equal_uncached(tiny_ckpt, teacher, mode, monkeypatch):
    images, probs = _blob_batch(seed=3)
    plain, valid_plain = teacher.pseudo_label(images, probs, 3, mode=mode, generator=torch.Generator().manual_seed(0))
    cached_teacher = build_sam_teacher(tiny_ckpt, "tiny", cache=EmbeddingCache())
    spy = _EmbedSpy(cached_teacher, monkeypatch)
    for _visit in range(2):
        masks, valid = cached_teacher.pseudo_label(images, probs, 3, mode=mode, cache_keys=[None] * 3,
                                                   generator=torch.Generator().manual_seed(0))
        assert torch.equal(masks, plain) and torch.equal(valid, valid_plain)
    assert spy.images == 2  # two images had prompts, each embedded once; the empty one never
    assert cached_teacher.cache.hits == 2
    with pytest.raises(ValueError, match="no cache"):
        teacher.pseudo_label(images, probs, 3, cache_keys=[None] * 3)


def test_float16_cache_halves_storage_with_small_error(teacher):
    images = torch.rand(2, 3, 40, 56)
    exact = teacher.embed(images)
    cache = EmbeddingCache(dtype=torch.float16)
    half = cache.get_or_compute_batch([None, None], images, teacher)
    stored = next(iter(cache._memory.values()))
    assert stored.dtype == torch.float16 and half.dtype == torch.float32
    assert (half - exact).abs().max() <= 2e-3 * exact.abs().max()
