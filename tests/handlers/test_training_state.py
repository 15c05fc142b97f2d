"""Kill a training run mid-epoch (SIGKILL), start it again with ``--resume true``: the final weights equal an
uninterrupted run's bit for bit -- for one bundle of each kind: supervised, self-supervised pre-training,
pseudo-labelling and contrastive pre-training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from testlib import REPO

EPOCHS = 3
CASES = {
    # kind: (bundle, configs, extra overrides, checkpoint the stage writes)
    "supervised": (
        "polycl_liver_ct_segmentation",
        ["train.json"],
        {"from_pretrained": False, "image_size": [32, 32], "channels": [8, 16, 32], "batch_size": 4},
        "model.pt",
    ),
    "contrastive": (
        "polycl_liver_ct_segmentation",
        ["train.json", "pretrain.json"],
        {"image_size": [32, 32], "channels": [8, 16, 32], "pretrain_batch_size": 6},
        "pretrained_M.pt",
    ),
    "self_supervised": ("medsass_binary_segmentation", ["train.json", "pretrain.json"], {}, "pretrained.pt"),
    "pseudo_labelling": ("sam_mining_polyp_segmentation", ["train.json", "mine.json"], {}, "model.pt"),
}


def _args(bundle: str, configs: list[str], ckpt_dir: Path, out: Path, overrides: dict) -> list[str]:
    folder = REPO / "bundles" / bundle / "configs"
    smoke = json.loads((folder / "smoke.json").read_text())
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps([str(folder / c) for c in configs]),
        "--meta_file",
        str(folder / "metadata.json"),
        "--logging_file",
        str(folder / "logging.conf"),
        "--ckpt_dir",
        str(ckpt_dir),
        "--output_dir",
        str(out),
    ]
    for k, v in {**smoke, "epochs": EPOCHS, **overrides}.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return args


def _run(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess | None:
    """Run to the end, or SIGKILL the process when a log line contains ``kill_at``; None when killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kill_at is None:
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return proc
    with subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        seen = []
        for line in p.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if kill_at in line:
                p.send_signal(signal.SIGKILL)
                break
        p.wait(timeout=60)
        assert p.returncode == -signal.SIGKILL, f"the run ended before '{kill_at}':\n" + "".join(seen[-30:])
    return None


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if "network" not in state else state["network"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_killed_run_resumes_to_identical_weights(kind, tmp_path):
    bundle, configs, overrides, ckpt = CASES[kind]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    if kind == "pseudo_labelling":  # mining starts from the supervised student, as the protocol does
        first = _args(bundle, ["train.json"], straight, tmp_path / "sup", {"epochs": 1})
        _run(first)
        crashed.mkdir()
        shutil.copy(straight / "supervised.pt", crashed / "supervised.pt")
    _run(_args(bundle, configs, straight, tmp_path / "o1", overrides))

    args = _args(bundle, configs, crashed, tmp_path / "o2", overrides)
    _run(args, kill_at=f"Epoch: 2/{EPOCHS}, Iter: 1/")  # killed in the middle of epoch 2
    state_file = crashed / f"resume_{ckpt}"
    assert state_file.is_file(), "no training state was saved after epoch 1"
    assert not list(crashed.glob("*.tmp")), "a temporary file was left behind as if it were a checkpoint"
    resumed = _run(args + ["--resume", "true"])
    assert "resumed from" in resumed.stdout and "after epoch 1" in resumed.stdout

    for name in (ckpt, f"resume_{ckpt}"):  # the stage's checkpoint and the final state's network
        a, b = _weights(straight / name), _weights(crashed / name)
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ after resuming, e.g. {different[:3]}"


def _tiny_trainer(epochs: int = 2):
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    data = [{"image": torch.rand(1, 8, 8), "label": torch.rand(1, 8, 8)} for _ in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return SupervisedTrainer(device="cpu", max_epochs=epochs, train_data_loader=loader, network=net, optimizer=opt,
                             loss_function=torch.nn.MSELoss())


def test_state_file_is_plain_weights_and_resume_without_it_is_a_clear_error(tmp_path):
    from fewlabel.handlers import TrainingState
    from fewlabel.errors import CheckpointError

    trainer = _tiny_trainer()
    TrainingState(tmp_path / "resume_model.pt").attach(trainer)
    trainer.run()
    blob = torch.load(tmp_path / "resume_model.pt", map_location="cpu", weights_only=True)  # no pickled objects
    assert blob["trainer"]["iteration"] == 4 and set(blob["network"]) == {"weight", "bias"}  # 2 epochs x 2 batches
    assert not list(tmp_path.glob("*.tmp"))

    missing = _tiny_trainer()
    TrainingState(tmp_path / "none.pt", resume="true").attach(missing)  # command-line spelling of true
    with pytest.raises(CheckpointError, match="none.pt"):
        missing.run()
    (tmp_path / "broken.pt").write_bytes(b"truncated")
    broken = _tiny_trainer()
    TrainingState(tmp_path / "broken.pt", resume=True).attach(broken)
    with pytest.raises(CheckpointError, match="broken.pt"):
        broken.run()
    with pytest.raises(ValueError, match="resume"):
        TrainingState(tmp_path / "x.pt", resume="maybe")


def test_resuming_a_finished_run_with_more_epochs_continues_it(tmp_path):
    from fewlabel.handlers import TrainingState

    straight = _tiny_trainer(epochs=4)
    straight.run()
    first = _tiny_trainer(epochs=2)
    TrainingState(tmp_path / "state.pt").attach(first)
    first.run()
    more = _tiny_trainer(epochs=4)
    TrainingState(tmp_path / "state.pt", resume=True).attach(more)
    more.run()
    assert more.state.epoch == 4
    for a, b in zip(straight.network.parameters(), more.network.parameters()):
        assert torch.equal(a, b)


def test_crashed_surgical_pretraining_resumes_bit_for_bit(tmp_path):
    """SurgicalSemiSeg pre-training (random rotations whose random state is nested in ``RandRotated``) stopped by
    an exception in epoch 2 and resumed ends with every saved tensor equal to an uninterrupted run's."""
    from _resume_runs import crash_and_resume, differences, run_stage, smoke_overrides

    bundle, configs = "surgical_semiseg_laparoscopy_segmentation", ["train.json", "pretrain.json"]
    overrides = {**smoke_overrides(bundle), "epochs": 3, "seed": 5}
    run_stage(bundle, configs, tmp_path / "straight", tmp_path / "o1", overrides)
    crash_and_resume(bundle, configs, tmp_path / "crashed", tmp_path / "o2", overrides)
    for name in ("pretrained.pt", "resume_pretrained.pt"):
        different = differences(tmp_path / "straight" / name, tmp_path / "crashed" / name)
        assert not different, f"{name}: {len(different)} saved values differ after resuming, e.g. {different[:3]}"


def _transform_trainer(transforms: list, epochs: int = 2):
    """A tiny trainer whose training dataset runs ``transforms`` (MONAI dictionary transforms) on 8 x 8 images."""
    import monai.transforms as mt
    from monai.data import Dataset
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    data = [{"image": torch.rand(1, 8, 8), "label": torch.rand(1, 8, 8)} for _ in range(4)]
    pipeline = mt.Compose(transforms).set_random_state(seed=0)
    loader = torch.utils.data.DataLoader(Dataset(data, pipeline), batch_size=2, shuffle=True)
    return SupervisedTrainer(device="cpu", max_epochs=epochs, train_data_loader=loader, network=net,
                             optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.MSELoss())


def _nested_random_transforms() -> list:
    import monai.transforms as mt

    return [mt.RandRotated(["image", "label"], range_x=0.5, prob=1.0),
            mt.OneOf([mt.RandGaussianNoised("image", prob=1.0), mt.RandScaleIntensityd("image", 0.5, prob=1.0)])]


def test_random_components_are_found_at_any_depth_and_declared_ones_used():
    from fewlabel.engines import DenoisingPairs, MinedBatches
    from fewlabel.handlers.training_state import random_components
    from fewlabel.transforms import MaskCorruption

    trainer = _transform_trainer(_nested_random_transforms())
    found = random_components({"dataset": trainer.data_loader.dataset})
    # the array transform a dictionary transform wraps, and transforms inside OneOf
    assert found["dataset.transform.transforms[0].rand_rotate.R"][0] == "numpy.RandomState"
    assert found["dataset.transform.transforms[1].transforms[0].rand_gaussian_noise.R"][0] == "numpy.RandomState"
    pb = {"prepare_batch": DenoisingPairs(MaskCorruption(generator=torch.Generator()))}
    assert {p: k for p, (k, _) in random_components(pb).items()} == {
        "prepare_batch.corruption": "declared:MaskCorruption"}
    mined = random_components({"prepare_batch": MinedBatches(network=torch.nn.Linear(2, 2), teacher=object())})
    assert list(mined) == ["prepare_batch"]  # its own state_dict; the student network is not searched


def test_nested_transform_state_is_restored_and_a_different_pipeline_is_refused(tmp_path):
    import monai.transforms as mt

    from fewlabel.handlers import TrainingState
    from fewlabel.errors import CheckpointError

    straight = _transform_trainer(_nested_random_transforms(), epochs=3)
    straight.run()
    first = _transform_trainer(_nested_random_transforms(), epochs=1)
    TrainingState(tmp_path / "state.pt").attach(first)
    first.run()
    resumed = _transform_trainer(_nested_random_transforms(), epochs=3)
    TrainingState(tmp_path / "state.pt", resume=True).attach(resumed)
    resumed.run()
    for a, b in zip(straight.network.parameters(), resumed.network.parameters()):
        assert torch.equal(a, b)

    other = _transform_trainer(_nested_random_transforms() + [mt.RandFlipd("image", prob=0.5)], epochs=3)
    TrainingState(tmp_path / "state.pt", resume=True).attach(other)
    with pytest.raises(CheckpointError, match=r"dataset\.transform\.transforms\[2\]\.R: in this run's pipeline"):
        other.run()

    blob = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    torch.save({**blob, "version": 1}, tmp_path / "old.pt")
    old = _transform_trainer(_nested_random_transforms(), epochs=3)
    TrainingState(tmp_path / "old.pt", resume=True).attach(old)
    with pytest.raises(CheckpointError, match="format version 1"):
        old.run()
