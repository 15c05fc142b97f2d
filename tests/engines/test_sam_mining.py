"""SAM knowledge mining: data (Kvasir-SEG, COVID-QU-Ex infection subset, polyp phantom), NT-Xent and
SimCLR pre-training, and the mining engine on MONAI's SupervisedTrainer with a tiny SAM teacher."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.losses import ContrastiveLoss
from PIL import Image
from scipy import ndimage as ndi

from fewlabel.data import load_datalist, make_phantom, phantom_info, write_demo_dataset
from fewlabel.data.adapters import ADAPTERS, build_covid_qu_ex, build_datalist, build_kvasir_seg
from fewlabel.data.adapters.kvasir_seg import read_kvasir_mask
from fewlabel.engines.sam_mining import (
    ROLE_EXCLUDED,
    ROLE_LABELLED,
    ROLE_PSEUDO,
    MinedBatches,
    MiningLoss,
    MiningStatsHandler,
    PlaceholderLabeld,
    check_teacher_separate,
    load_mined_datalist,
    mine_pseudo_labels,
    mixed_items,
    unpack_targets,
)
from fewlabel.engines.simclr import ContrastiveEncoder, SimCLRPairs
from fewlabel.errors import DataError
from fewlabel.losses import NTXentLoss, contrastive_loss
from fewlabel.networks import build_network, load_pretrained
from fewlabel.sam import EmbeddingCache, SamPrompter, build_sam_teacher, save_tiny_sam
from fewlabel.transforms import PairedBatchAugmentation
from fewlabel.transforms.io import LoadLabel2D

from testlib import write_png

SPLITS = ("training", "validation", "testing")
SIZE = 64


# ---------------------------------------------------------------------------------------------
# Kvasir-SEG adapter
# ---------------------------------------------------------------------------------------------


def _kvasir_tree(root: Path, n: int = 20) -> dict[str, np.ndarray]:
    """A fake ``Kvasir-SEG/{images,masks}`` release with JPEG masks; returns the drawn 0/1 masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    drawn = {}
    for i in range(n):
        h, w = 40 + (i % 3) * 8, 52 - (i % 2) * 6
        name = f"cju{i:04d}abc"
        yy, xx = np.mgrid[:h, :w]
        mask = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2).astype(np.uint8)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        Image.fromarray(np.repeat(mask[..., None] * 255, 3, -1)).save(root / "masks" / f"{name}.jpg", quality=70)
        drawn[name] = mask
    return drawn


def test_kvasir_seg_binarises_jpeg_masks_and_splits_80_10_10(tmp_path):
    release = tmp_path / "download" / "Kvasir-SEG"
    drawn = _kvasir_tree(release)
    jpeg = np.asarray(Image.open(release / "masks" / "cju0000abc.jpg"))
    assert len(np.unique(jpeg)) > 2  # the published JPEG masks are not binary

    datalist = build_kvasir_seg(tmp_path / "download", out_dir=tmp_path / "out", seed=3)
    assert datalist["labels"] == {"0": "background", "1": "polyp"}
    assert tuple(len(datalist[s]) for s in SPLITS) == (16, 2, 2)
    stems = [Path(it["image"]).stem for s in SPLITS for it in datalist[s]]
    assert sorted(stems) == sorted(drawn)  # every image once, in exactly one split
    loader = LoadLabel2D(num_classes=2)  # class indices 0/1, as the bundles read labels
    for item in datalist["training"]:
        label = Path(item["label"])
        assert label.parent == tmp_path / "out" / "masks" and label.suffix == ".png"
        mask = np.asarray(Image.open(label))
        assert set(np.unique(mask)) <= {0, 1}
        truth = drawn[item["patient"]]
        assert mask.shape == truth.shape
        assert (mask != truth).mean() < 0.02  # only a few boundary pixels differ after JPEG
        assert np.array_equal(mask, read_kvasir_mask(release / "masks" / f"{item['patient']}.jpg"))
        assert loader(label).shape == (1, *truth.shape)

    # seeded: same seed, same split; another seed, another split; the folder itself is accepted too
    again = build_kvasir_seg(release, out_dir=tmp_path / "out", seed=3)
    assert [it["patient"] for it in again["testing"]] == [it["patient"] for it in datalist["testing"]]
    other = build_kvasir_seg(release, out_dir=tmp_path / "out", seed=4)
    assert {it["patient"] for it in other["testing"]} != {it["patient"] for it in datalist["testing"]}


def test_kvasir_seg_caches_masks_and_reports_bad_trees(tmp_path):
    release = tmp_path / "Kvasir-SEG"
    _kvasir_tree(release, n=4)
    build_kvasir_seg(release)  # default out_dir: beside the release
    written = release / "fewlabel_masks" / "masks" / "cju0000abc.png"
    stamp = written.stat().st_mtime_ns
    build_kvasir_seg(release)
    assert written.stat().st_mtime_ns == stamp  # up to date: not rewritten
    build_kvasir_seg(release, force=True)
    assert written.stat().st_mtime_ns != stamp

    in_place = build_kvasir_seg(release, write_masks=False)
    assert all(it["label"].endswith(".jpg") for s in SPLITS for it in in_place[s])

    path = build_datalist("Kvasir-SEG", release, tmp_path / "lists" / "kvasir.json", seed=1)
    assert "kvasir_seg" in ADAPTERS
    assert sum(len(load_datalist(path, s)) for s in SPLITS) == 4  # every listed file exists

    with pytest.raises(DataError, match="missing"):
        build_kvasir_seg(tmp_path / "missing")
    with pytest.raises(DataError, match="images/ and masks/"):
        build_kvasir_seg(tmp_path / "lists")
    (release / "masks" / "cju0001abc.jpg").unlink()
    with pytest.raises(DataError, match=r"cju0001abc\.jpg has no mask"):
        build_kvasir_seg(release)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(release / "masks" / "cju0001abc.jpg")
    with pytest.raises(DataError, match="cju0001abc"):
        build_kvasir_seg(release, force=True)  # mask and image sizes differ


# ---------------------------------------------------------------------------------------------
# COVID-QU-Ex: the infection segmentation subset's lung masks, official split
# ---------------------------------------------------------------------------------------------


def _covid_subset(root: Path, with_infection: bool) -> None:
    rng = np.random.default_rng(1)
    for split, n in {"Train": 2, "Val": 1, "Test": 1}.items():
        for category in ("COVID-19", "Non-COVID", "Normal"):
            for i in range(n):
                name = f"{category.lower()}_{split}_{i}.png"
                write_png(root / split / category / "images" / name, rng.integers(0, 255, (12, 12), dtype=np.uint8))
                lung = np.zeros((12, 12), np.uint8)
                lung[2:10, 1:5] = 255
                write_png(root / split / category / "lung masks" / name, lung)
                if with_infection:
                    write_png(root / split / category / "infection masks" / name, lung // 2 * (category == "COVID-19"))


def test_covid_qu_ex_infection_subset_lung_masks(tmp_path):
    kaggle = tmp_path / "COVID-QU-Ex"
    _covid_subset(kaggle / "Lung Segmentation Data" / "Lung Segmentation Data", with_infection=False)
    _covid_subset(kaggle / "Infection Segmentation Data" / "Infection Segmentation Data", with_infection=True)

    lung_data = build_covid_qu_ex(kaggle, subset="lung")
    assert "Lung Segmentation Data" in lung_data["training"][0]["image"]
    infection = build_covid_qu_ex(kaggle)  # default: the paper's subset, infection segmentation data
    assert tuple(len(infection[s]) for s in SPLITS) == (6, 3, 3)
    assert infection["labels"] == {"0": "background", "1": "lung"}
    for split, folder in zip(SPLITS, ("Train", "Val", "Test")):  # the official split is kept
        for item in infection[split]:
            image, label = Path(item["image"]), Path(item["label"])
            assert "Infection Segmentation Data" in str(image) and image.parents[2].name == folder
            assert label.parent.name == "lung masks" and label.name == image.name
    infected = build_covid_qu_ex(kaggle / "Infection Segmentation Data", subset="infection", target="infection")
    assert infected["labels"]["1"] == "infection"
    assert all(Path(it["label"]).parent.name == "infection masks" for it in infected["training"])
    with pytest.raises(ValueError, match="subset='infection'"):
        build_covid_qu_ex(kaggle, subset="lung", target="infection")
    with pytest.raises(ValueError, match="subset"):
        build_covid_qu_ex(kaggle, subset="pneumonia")
    with pytest.raises(DataError, match="Infection Segmentation Data"):
        build_covid_qu_ex(tmp_path / "COVID-QU-Ex" / "Lung Segmentation Data" / "Lung Segmentation Data" / "Train",
                          subset="infection")


# ---------------------------------------------------------------------------------------------
# polyp phantom
# ---------------------------------------------------------------------------------------------


def test_polyp_phantom_is_deterministic_and_always_has_a_polyp():
    info = phantom_info("polyp")
    assert info["class_names"] == ("background", "polyp") and info["modality"] == "endoscopy"
    a, ma = make_phantom("polyp", 5, (96, 128))
    b, mb = make_phantom("polyp", 5, (96, 128))
    assert a.tobytes() == b.tobytes() and ma.tobytes() == mb.tobytes()
    c, mc = make_phantom("polyp", 6, (96, 128))
    assert not np.array_equal(a, c) and not np.array_equal(ma, mc)

    counts = []
    for seed in range(60):
        size = [(64, 64), (32, 32), (48, 80)][seed % 3]
        image, mask = make_phantom("polyp", seed, size)
        assert set(np.unique(mask)) == {0, 1}, seed  # never a frame without a polyp
        counts.append(ndi.label(mask)[1])
        # endoscope frame: dark corners, brighter centre; the polyp lies in the lit field of view
        corner = image[:3, :3].mean()
        assert corner < image[size[0] // 4 : -size[0] // 4, size[1] // 4 : -size[1] // 4].mean()
        assert image[mask > 0].mean() > 2 * max(corner, 5)
    assert min(counts) >= 1 and max(counts) >= 2  # one polyp, sometimes two


def test_polyp_demo_dataset(tmp_path):
    path = write_demo_dataset("polyp", tmp_path / "demo", num_patients=3, images_per_patient=2, size=(64, 64))
    items = load_datalist(path, "training")
    assert json.loads(path.read_text())["labels"] == {"0": "background", "1": "polyp"}
    assert items and all(np.asarray(Image.open(it["label"])).max() == 1 for it in items)


# ---------------------------------------------------------------------------------------------
# contrastive loss
# ---------------------------------------------------------------------------------------------


def _nll(pos: float, negs: list[float], t: float) -> float:
    return -math.log(math.exp(pos / t) / (math.exp(pos / t) + sum(math.exp(n / t) for n in negs)))


def test_nt_xent_equals_hand_computed_value_for_two_pairs():
    # unit vectors with simple cosines: a.b = 0, a.c = 0.6, a.d = -0.8, b.c = 0.8, b.d = 0.6, c.d = 0
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # views 1 of images 0, 1: a, b
    z2 = torch.tensor([[0.6, 0.8], [-0.8, 0.6]])  # views 2: c, d
    t = 0.5
    expected = (
        _nll(0.6, [0.0, -0.8], t)  # a: positive c, negatives b, d
        + _nll(0.6, [0.0, 0.8], t)  # b: positive d, negatives a, c
        + _nll(0.6, [0.8, 0.0], t)  # c: positive a, negatives b, d
        + _nll(0.6, [-0.8, 0.0], t)  # d: positive b, negatives a, c
    ) / 4
    loss = NTXentLoss(temperature=t)
    assert loss(z1, z2).item() == pytest.approx(expected, rel=1e-5)
    assert loss(torch.cat([z1, z2])).item() == pytest.approx(expected, rel=1e-5)  # stacked (2N, D), as the trainer
    assert loss(3.0 * z1, 0.5 * z2).item() == pytest.approx(expected, rel=1e-5)  # cosine: scale-free
    assert NTXentLoss().temperature == 0.1

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    assert loss(a, b).item() == pytest.approx(ContrastiveLoss(temperature=t)(a, b).item(), rel=1e-5)
    # small temperatures: MONAI's exp / log overflows, the log-sum-exp does not
    same = torch.randn(4, 8, generator=g)
    assert not torch.isfinite(ContrastiveLoss(temperature=0.01)(same, same))
    assert torch.isfinite(NTXentLoss(temperature=0.01)(same, same))


def test_contrastive_loss_with_explicit_positives_and_negatives():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[0.6, 0.8], [0.0, 2.0]])
    negatives = torch.tensor([[[-0.8, 0.6]], [[1.0, 0.0]]])  # one negative per anchor (PolyCL, eq. 4)
    t = 0.5
    expected = (_nll(0.6, [-0.8], t) + _nll(1.0, [0.0], t)) / 2
    assert contrastive_loss(anchors, positives, negatives, t).item() == pytest.approx(expected, rel=1e-5)
    per_anchor = contrastive_loss(anchors, positives, negatives, t, reduction="none")
    assert per_anchor.shape == (2,) and per_anchor[1].item() == pytest.approx(_nll(1.0, [0.0], t), rel=1e-5)
    pool = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])  # shared negatives
    shared = contrastive_loss(anchors[:1], positives[:1], pool, t).item()
    assert shared == pytest.approx(_nll(0.6, [-1.0, 0.0], t), rel=1e-5)
    # with in-batch negatives too, the other anchor and its positive (both at cosine 0) join the negatives
    both = contrastive_loss(anchors, positives, negatives, t, in_batch=True, reduction="none")
    assert both[0].item() == pytest.approx(_nll(0.6, [-0.8, 0.0, 0.0], t), rel=1e-5)
    with pytest.raises(ValueError, match="negatives"):
        contrastive_loss(anchors, positives, torch.zeros(3, 1, 2))
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(anchors, positives, temperature=0.0)


# ---------------------------------------------------------------------------------------------
# SimCLR pre-training
# ---------------------------------------------------------------------------------------------


def _student(bias: float | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_network("unetplusplus", 3, 1, encoder_name="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    if bias is not None:  # a constant prediction: everything (+) or nothing (-) is foreground
        with torch.no_grad():
            net.segmentation_head[0].bias.fill_(bias)
    return net


def _phantoms(n: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for seed in range(start, start + n):
        image, mask = make_phantom("polyp", seed, (SIZE, SIZE))
        out.append((torch.from_numpy(image).permute(2, 0, 1).float() / 255.0, torch.from_numpy(mask)[None].float()))
    return out


def test_simclr_pairs_give_two_different_seeded_views():
    images = torch.stack([im for im, _ in _phantoms(3)])
    views, target = SimCLRPairs(seed=0)({"image": images})
    assert target is None and views.shape == (6, 3, SIZE, SIZE)
    assert views.min() >= 0 and views.max() <= 1
    for i in range(3):
        assert not torch.allclose(views[i], views[3 + i], atol=1e-3)  # two views of image i differ
        assert not torch.allclose(views[i], images[i], atol=1e-3)
    again, _ = SimCLRPairs(seed=0)({"image": images})
    assert torch.equal(views, again)
    other, _ = SimCLRPairs(seed=1)({"image": images})
    assert not torch.equal(views, other)
    gray, _ = SimCLRPairs(seed=0)({"image": images[:, :1]})  # X-ray: 1 channel
    assert gray.shape == (6, 1, SIZE, SIZE)


def test_simclr_pretraining_through_supervised_trainer_loads_into_the_student(tmp_path):
    network = _student(seed=1)
    model = ContrastiveEncoder(network, projection_dim=16)
    assert set(model.encoder_state_dict()) == {f"encoder.{k}" for k in network.encoder.state_dict()}
    before = {k: v.clone() for k, v in model.encoder_state_dict().items()}
    data = [{"image": im} for im, _ in _phantoms(4)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(Dataset(data), batch_size=4),
        network=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_function=NTXentLoss(0.1),
        prepare_batch=SimCLRPairs(seed=0), decollate=False,
    )
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"]) and trainer.state.output["pred"].shape == (8, 16)
    assert any(not torch.equal(before[k], v) for k, v in model.encoder_state_dict().items())

    ckpt = tmp_path / "simclr.pt"
    torch.save({"model": model.state_dict()}, ckpt)  # as MONAI's CheckpointSaver writes it
    student = _student(seed=2)
    decoder_before = {k: v.clone() for k, v in student.state_dict().items() if not k.startswith("encoder.")}
    load_pretrained(student, ckpt, part="encoder")
    for k, v in student.encoder.state_dict().items():
        assert torch.equal(v, network.encoder.state_dict()[k]), k
    for k, v in decoder_before.items():
        assert torch.equal(student.state_dict()[k], v), k


# ---------------------------------------------------------------------------------------------
# the mining prepare_batch: alignment of pseudo-labels with the augmented image
# ---------------------------------------------------------------------------------------------


class _ShapeTeacher:
    """Teacher stub: the pseudo-label is the image's bright red region; records what it was shown."""

    cache = None

    def __init__(self) -> None:
        self.shown: list[torch.Tensor] = []

    def pseudo_label(self, images, probs, num_points, **kwargs):
        self.shown.append(images.clone())
        return (images[:, :1] > 0.5).float(), torch.ones(images.shape[0], dtype=torch.bool)


def _l_shapes(n: int) -> torch.Tensor:
    """Images whose red channel holds an asymmetric L (no flip or rotation maps it onto itself)."""
    images = torch.full((n, 3, 16, 16), 0.2)
    for i in range(n):
        images[i, 0, 2 + i : 12, 3:5] = 0.9  # the long bar
        images[i, 0, 10:12, 3 : 9 + i] = 0.9  # the foot
    return images


def _augment(**settings) -> PairedBatchAugmentation:
    """The engine's augmentation without colour jitter (so image values can be compared exactly)."""
    return PairedBatchAugmentation(**{"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, **settings})


def test_pseudo_label_moves_with_the_augmented_image():
    images = _l_shapes(6)
    teacher = _ShapeTeacher()
    student = torch.nn.Conv2d(3, 1, 1)
    batch = {"image": images, "label": torch.zeros(6, 1, 16, 16), "is_labelled": torch.zeros(6)}
    mined = MinedBatches(student, teacher, "continuous", augmentation=_augment())
    aug, targets = mined(batch)
    masks, roles = unpack_targets(targets)
    assert torch.equal(teacher.shown[0], images)  # the teacher saw the un-augmented images
    assert (roles == ROLE_PSEUDO).all()
    assert torch.equal(masks, (aug[:, :1] > 0.5).float())  # label and image moved together
    moved = [not torch.equal(aug[i], images[i]) for i in range(6)]
    assert any(moved)  # the seeded draw did transform some images

    # a known transform: every image flipped up-down and left-right, and the L's pseudo-label with it
    flip = MinedBatches(student, _ShapeTeacher(), "continuous", augmentation=_augment(
        flip_prob=1.0, transpose_prob=0.0, rot90_prob=0.0))
    aug, targets = flip(batch)
    masks = unpack_targets(targets)[0]
    assert torch.equal(aug, images.flip(-1, -2))
    assert torch.equal(masks, (images[:, :1] > 0.5).float().flip(-1, -2))
    turn = MinedBatches(student, _ShapeTeacher(), "continuous", augmentation=_augment(
        flip_prob=0.0, transpose_prob=0.0, rot90_prob=1.0))
    aug, targets = turn(batch)
    assert not torch.equal(aug, images) and torch.equal(unpack_targets(targets)[0], (aug[:, :1] > 0.5).float())

    # labelled items go through the same transform as their image; a small affine stays aligned
    labelled = {"image": images, "label": (images[:, :1] > 0.5).float(), "is_labelled": torch.ones(6)}
    affine = MinedBatches(student, _ShapeTeacher(), "continuous", augmentation=_augment(seed=2, affine_prob=1.0))
    aug, targets = affine(labelled)
    masks, roles = unpack_targets(targets)
    assert (roles == ROLE_LABELLED).all()
    from_image = aug[:, :1] > 0.5
    iou = (from_image & (masks > 0)).sum() / (from_image | (masks > 0)).sum()
    assert iou > 0.85


def test_teacher_inside_the_student_or_optimizer_is_refused(tmp_path):
    teacher = build_sam_teacher(save_tiny_sam(tmp_path / "sam.pt"), "tiny")
    student = _student()
    student.teacher = teacher  # registered as a submodule: it would be trained and saved with the student
    with pytest.raises(ValueError, match="inside the student"):
        MinedBatches(student, teacher, "continuous")
    del student.teacher
    optimizer = torch.optim.Adam(list(student.parameters()) + list(teacher.parameters()))
    with pytest.raises(ValueError, match="optimizer"):
        check_teacher_separate(teacher, student, optimizer)
    with pytest.raises(ValueError, match="network and the SAM teacher"):
        MinedBatches(None, teacher, "continuous")


# ---------------------------------------------------------------------------------------------
# continuous mining through MONAI's SupervisedTrainer with a tiny SAM
# ---------------------------------------------------------------------------------------------


class _EmbedSpy:
    def __init__(self, teacher, monkeypatch) -> None:
        self.images = 0
        real = teacher.embed

        def spy(images):
            self.images += images.shape[0]
            return real(images)

        monkeypatch.setattr(teacher, "embed", spy)


def _mixed_loader(n_labelled: int = 4, n_unlabelled: int = 4, batch_size: int = 4) -> DataLoader:
    pairs = _phantoms(n_labelled + n_unlabelled)
    labelled = [{"image": im, "label": lb} for im, lb in pairs[:n_labelled]]
    unlabelled = [{"image": im} for im, _ in pairs[n_labelled:]]
    items = mixed_items(labelled, unlabelled)
    dataset = Dataset(items, transform=PlaceholderLabeld("label", ref_key="image"))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pt", seed=0)


def test_continuous_mining_embeds_each_unlabelled_image_once_and_keeps_the_teacher_frozen(tiny_sam, monkeypatch):
    teacher = build_sam_teacher(tiny_sam, "tiny", cache=EmbeddingCache())
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    spy = _EmbedSpy(teacher, monkeypatch)
    student = _student(bias=10.0)  # predicts foreground everywhere: every image gets a prompt
    student_before = [p.clone() for p in student.parameters()]
    optimizer = torch.optim.Adam(student.parameters(), 1e-4)
    check_teacher_separate(teacher, student, optimizer)
    mined = MinedBatches(student, teacher, "continuous", prompter=SamPrompter(num_points=2))
    losses = []
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=2, train_data_loader=_mixed_loader(), network=student,
        optimizer=optimizer, loss_function=MiningLoss(), prepare_batch=mined,
        train_handlers=[MiningStatsHandler(mined)], decollate=False,
    )
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach()))
    )
    trainer.run()

    assert spy.images == 4  # 4 unlabelled images, each embedded once over two epochs
    assert teacher.cache.stats()["misses"] == 4 and teacher.cache.stats()["hits"] == 4
    assert trainer.state.metrics["pseudo_label_no_prompt"] == 0 and mined.seen == 4
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    # the student learnt, the teacher did not move, has no gradient and stayed in eval mode
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters()))
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.sam.training
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}


def test_path_cache_keys_come_from_the_batch_meta(tiny_sam, tmp_path, monkeypatch):
    from monai.data import MetaTensor

    teacher = build_sam_teacher(tiny_sam, "tiny", cache=EmbeddingCache())
    spy = _EmbedSpy(teacher, monkeypatch)
    pairs = _phantoms(2)
    files = [str(write_png(tmp_path / f"u{i}.png", (im.permute(1, 2, 0).numpy() * 255).astype(np.uint8)))
             for i, (im, _) in enumerate(pairs)]
    images = torch.stack([im for im, _ in pairs])
    batch = {"image": MetaTensor(images, meta={"filename_or_obj": files}), "is_labelled": torch.zeros(2)}
    mined = MinedBatches(_student(bias=10.0), teacher, "continuous", cache_keys="path")
    mined(batch)
    mined(batch)
    assert spy.images == 2 and teacher.cache.stats()["hits"] == 2
    with pytest.raises(ValueError, match="filename_or_obj"):
        mined({"image": images, "is_labelled": torch.zeros(2)})
    with pytest.raises(ValueError, match="is_labelled"):
        mined({"image": images})  # a mixed batch must say which items are labelled


def test_empty_student_prediction_is_counted_not_a_crash(tiny_sam, monkeypatch, caplog):
    teacher = build_sam_teacher(tiny_sam, "tiny", cache=EmbeddingCache())
    spy = _EmbedSpy(teacher, monkeypatch)
    student = _student(bias=-10.0)  # predicts nothing: no prompt for any unlabelled image
    mined = MinedBatches(student, teacher, "continuous")
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_mixed_loader(2, 4, batch_size=3),
        network=student, optimizer=torch.optim.Adam(student.parameters(), 1e-4), loss_function=MiningLoss(),
        prepare_batch=mined, train_handlers=[MiningStatsHandler(mined)], decollate=False,
    )
    with caplog.at_level(logging.INFO, logger="fewlabel.engines"):
        trainer.run()
    assert trainer.state.metrics["pseudo_label_no_prompt"] == 4
    assert trainer.state.metrics["pseudo_label_skipped"] == 1.0
    assert spy.images == 0  # no prompt, no SAM call
    assert math.isfinite(float(trainer.state.output["loss"].detach()))
    assert "4 of 4 unlabelled images had no pseudo-label" in caplog.text


# ---------------------------------------------------------------------------------------------
# one-time mining
# ---------------------------------------------------------------------------------------------


class _RedStudent(torch.nn.Module):
    """Student stub: foreground where the red channel is bright (an all-dark image: no prompt)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        return self.scale * (x[:, :1] - 0.5)


def test_one_time_mining_writes_masks_and_a_datalist(tmp_path, tiny_sam):
    teacher = build_sam_teacher(tiny_sam, "tiny")
    sizes = {"a": (48, 64), "b": (64, 64), "dark": (40, 30)}
    items = []
    for name, (h, w) in sizes.items():
        image = np.full((h, w, 3), 40, np.uint8)
        if name != "dark":
            image[h // 4 : h // 2, w // 4 : w // 2, 0] = 230
        items.append({"image": str(write_png(tmp_path / "images" / f"{name}.png", image)), "patient": name})
    student = _RedStudent().train()
    path = mine_pseudo_labels(student, teacher, items, tmp_path / "mined", spatial_size=(SIZE, SIZE), batch_size=2)
    assert student.training  # the student's mode is restored

    content = json.loads(path.read_text())
    assert content["mining"]["no_prompt"] == 1 and content["mining"]["images"] == 3
    mined = load_datalist(path, "training")  # files exist
    assert load_mined_datalist(path) == mined  # what the bundle's pseudo_files reads
    assert [Path(it["image"]).stem for it in mined] == ["a", "b", "dark"]
    assert [it["valid"] for it in mined] == [1, 1, 0]
    assert all(it["is_labelled"] == 0 and it["patient"] == Path(it["image"]).stem for it in mined)
    for it in mined:
        mask = np.asarray(Image.open(it["label"]))
        assert Path(it["label"]).parent == tmp_path / "mined" / "masks"
        assert mask.shape == sizes[Path(it["image"]).stem]  # back at the image file's size
        assert set(np.unique(mask)) <= {0, 1}
    assert np.asarray(Image.open(mined[2]["label"])).max() == 0

    # one-time training: pseudo-labelled items keep their validity as roles, labelled ones are labelled
    train_items = mixed_items([{"image": "x.png", "label": "x_mask.png"}], pseudo=mined)
    assert [(it["is_labelled"], it["valid"]) for it in train_items] == [(1, 1), (0, 1), (0, 1), (0, 0)]
    batch = {
        "image": torch.rand(4, 3, 16, 16),
        "label": torch.ones(4, 1, 16, 16),
        "is_labelled": torch.tensor([it["is_labelled"] for it in train_items]),
        "valid": torch.tensor([it["valid"] for it in train_items]),
    }
    one_time = MinedBatches(mode="one_time")
    _, targets = one_time(batch)
    assert unpack_targets(targets)[1].tolist() == [ROLE_LABELLED, ROLE_PSEUDO, ROLE_PSEUDO, ROLE_EXCLUDED]
    assert (one_time.seen, one_time.skipped) == (3, 1)


def test_reading_pseudo_labels_before_the_mining_step_names_the_step(tmp_path):
    missing = tmp_path / "pseudo_labels" / "pseudo_datalist.json"
    with pytest.raises(DataError, match="initialize step") as excinfo:
        load_mined_datalist(missing)
    assert str(missing) in str(excinfo.value) and "mining_schedule one_time" in str(excinfo.value)


def test_the_bundle_config_composes_the_miner_from_a_prompter_and_an_augmentation(tmp_path):
    from monai.bundle import ConfigParser

    from testlib import REPO

    configs = REPO / "bundles" / "sam_mining_polyp_segmentation" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")])
    parser.update({"bundle_root": str(tmp_path), "seed": 7, "num_points": 5, "augmentation#flip_prob": 0.0})
    mined = parser.get_parsed_content("train#prepare_batch")
    assert isinstance(mined, MinedBatches) and mined.mode == "supervised"
    assert (mined.prompter.num_points, mined.prompter.threshold, mined.prompter.mode) == (5, 0.5, "points+box")
    assert mined.prompter.seed == 8 and mined.augmentation.seed == 7  # the draws of before: seed, seed + 1
    assert mined.augmentation.geometry["flip_prob"] == 0.0 and mined.augmentation.jitter["prob"] == 0.0
    with pytest.raises(ValueError, match="num_points must be >= 1"):
        SamPrompter(num_points=0)
