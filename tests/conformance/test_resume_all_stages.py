"""Every training stage of every bundle's protocol (:data:`fewlabel.protocols.PROTOCOLS`), stopped by an
exception after the first iteration of epoch 2 and resumed with ``resume=True``, ends with every tensor and
value of its checkpoint and of its training state equal to an uninterrupted run's.

The stages run in-process at smoke sizes made smaller still (3 epochs of 1-5 iterations on 32 px images). The
earlier stages a stage reads (e.g. pre-trained weights) come from the uninterrupted runs of the same bundle,
which run once per test session, in protocol order. A new bundle (or stage) is covered by its protocol.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from _resume_runs import crash_and_resume, differences, run_stage, smoke_overrides
from fewlabel.protocols import PROTOCOLS, Stage

EPOCHS = 3
# on top of each bundle's smoke.json: 2 training iterations per epoch, few validation images
TINY: dict[str, dict[str, Any]] = {
    "medsass_binary_segmentation": {
        "image_size": [32, 32],
        "demo_kwargs": {"num_patients": 4, "images_per_patient": 2, "size": [32, 32]},
    },
    "surgical_semiseg_laparoscopy_segmentation": {
        "image_size": [32, 32],
        "mask_size": 8,
        "demo_kwargs": {"num_patients": 4, "images_per_patient": 2, "size": [32, 32], "unlabelled_fraction": 0.5},
    },
    "slippa_liver_landmark_segmentation": {
        "image_size": [32, 32],
        "demo_kwargs": {"num_patients": 4, "images_per_patient": 2, "size": [36, 64], "seed": 0},
        "finetune_demo_kwargs": {"num_patients": 4, "images_per_patient": 2, "size": [36, 64], "seed": 1},
    },
    "sam_mining_polyp_segmentation": {
        "image_size": [32, 32],
        "demo_kwargs": {"num_patients": 8, "images_per_patient": 1, "size": [32, 40], "seed": 0},
    },
    "polycl_liver_ct_segmentation": {"batch_size": 16},
}


def _is_training(stage: Stage) -> bool:
    return "evaluate.json" not in stage.configs


CASES = [(bundle, stage) for bundle, stages in PROTOCOLS.items() for stage in stages if _is_training(stage)]


def _overrides(bundle: str, stage: Stage) -> dict[str, Any]:
    return {**smoke_overrides(bundle), "epochs": EPOCHS, **TINY.get(bundle, {}), **stage.overrides}


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Per bundle: the folder of its uninterrupted runs and the stages already run there."""
    return {}


def _straight(runs: dict[str, dict[str, Any]], base: Path, bundle: str, upto: Stage) -> tuple[Path, Path, str]:
    """Run ``bundle``'s training stages straight, in protocol order, up to ``upto``.

    Returns the weights folder as it was before ``upto`` ran, the folder after it, and ``upto``'s checkpoint name.
    """
    state = runs.setdefault(bundle, {"root": base / bundle, "done": {}})
    root: Path = state["root"]
    models = root / "models"
    for stage in PROTOCOLS[bundle]:
        if not _is_training(stage):
            continue
        if stage.name not in state["done"]:
            before = root / f"before_{stage.name}"
            if models.is_dir():
                shutil.copytree(models, before)
            else:
                before.mkdir(parents=True)
            wf = run_stage(bundle, stage.configs, models, root / stage.name, _overrides(bundle, stage))
            state["done"][stage.name] = str(wf.parser.get_parsed_content("ckpt_name"))
        if stage.name == upto.name:
            return root / f"before_{stage.name}", models, state["done"][stage.name]
    raise AssertionError(f"{upto.name} is not a training stage of {bundle}")


@pytest.mark.parametrize(("bundle", "stage"), CASES, ids=[f"{b}-{s.name}" for b, s in CASES])
def test_crashed_stage_resumes_bit_for_bit(bundle, stage, straight_runs, tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "resume_straight"
    before, straight, ckpt = _straight(straight_runs, base, bundle, stage)
    crashed = tmp_path / "models"
    shutil.copytree(before, crashed)
    wall, cpu = time.perf_counter(), time.process_time()
    crash_and_resume(bundle, stage.configs, crashed, tmp_path / "out", _overrides(bundle, stage))
    print(f"{bundle}-{stage.name}: crash + resume {time.perf_counter() - wall:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU")
    for name in (ckpt, f"resume_{ckpt}"):
        assert (straight / name).is_file() and (crashed / name).is_file(), f"{name} was not written"
        different = differences(straight / name, crashed / name)
        assert not different, f"{name}: {len(different)} saved values differ after resuming, e.g. {different[:4]}"
