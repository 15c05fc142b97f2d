"""Quiet stages (fewlabel.stage_log): full output in a log per stage, a short line per stage, failures shown."""

from __future__ import annotations

import io
import sys

import pytest

from fewlabel.stage_log import EpochProgress, StageError, StageLog

TRAINER = "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedTrainer - INFO - "
EVALUATOR = "2026-01-01 10:00:00,000 - ignite.engine.engine.SupervisedEvaluator - INFO - "


def _train(epochs: int) -> str:
    """A stand-in stage: prints what a MONAI trainer and its validation log, and noise on stderr."""
    print(TRAINER + f"Engine run resuming from iteration 0, epoch 0 until {epochs} epochs")
    for e in range(1, epochs + 1):
        print(f"2026-01-01 10:00:00,000 - INFO - Epoch: {e}/{epochs}, Iter: 1/2 -- train_loss: 0.5")
        print(EVALUATOR + "Engine run resuming from iteration 0, epoch 0 until 1 epochs")
        print(EVALUATOR + "Epoch[1] Complete. Time taken: 00:00:01")
        print(TRAINER + f"Epoch[{e}] Complete. Time taken: 00:00:02")
        print("parsing config_file ... (a notice)", file=sys.stderr)
    return "trained"


def test_epoch_progress_follows_the_trainer_not_its_evaluator():
    p = EpochProgress()
    p.feed(TRAINER + "Engine run resuming from iteration 0, epoch 0 until 4 epochs")
    p.feed(EVALUATOR + "Engine run resuming from iteration 0, epoch 0 until 1 epochs")
    assert (p.epochs, p.done) == (4, 0.0)
    p.feed("2026 - INFO - Epoch: 2/4, Iter: 3/4 -- train_loss: 0.1")
    assert p.done == pytest.approx(1.75)
    p.feed(EVALUATOR + "Epoch[1] Complete. Time taken: 00:00:01")
    p.feed(TRAINER + "Epoch[2] Complete. Time taken: 00:00:01")
    assert (p.epochs, p.done) == (4, 2.0)


def test_stages_log_to_files_and_show_one_line_each(tmp_path):
    terminal = io.StringIO()
    with StageLog(tmp_path / "logs", title="bundle", terminal=terminal) as log:
        assert log.run("train", _train, 3) == "trained"
        print("between stages")  # neither a stage's nor the summary: other.log
        log.say("the summary")
    shown = terminal.getvalue().splitlines()
    first, second = tmp_path / "logs" / "01_train.log", tmp_path / "logs" / "other.log"
    assert log.logs == [first]
    assert shown[0] == f"bundle [1] train ... (log {first})"
    assert shown[1].startswith("bundle [1] train: done in ") and shown[1].endswith(", 3/3 epochs")
    assert shown[2:] == ["the summary"]
    text = first.read_text()
    assert "Epoch[3] Complete" in text and "(a notice)" in text and "train_loss" in text
    assert second.read_text() == "between stages\n"


def test_a_failing_stage_shows_its_reason_and_log(tmp_path):
    def broken() -> None:
        print("loading the data")
        raise ValueError("dataset_dir does not exist: /nowhere")

    terminal = io.StringIO()
    with pytest.raises(StageError, match=r"stage 'load' of bundle failed: ValueError: dataset_dir does not exist: "
                                         r"/nowhere\n  its log: .*02_load\.log") as info:
        with StageLog(tmp_path / "logs", title="bundle", terminal=terminal) as log:
            log.run("ok", lambda: None)
            log.run("load", broken)
    assert isinstance(info.value.__cause__, ValueError)
    shown = terminal.getvalue()
    assert "bundle [2] load: FAILED after" in shown
    assert "bundle [2] load failed: ValueError: dataset_dir does not exist: /nowhere" in shown
    assert f"--- last lines of {tmp_path / 'logs' / '02_load.log'} ---" in shown
    tail = shown.split("---\n", 2)[1]
    assert "loading the data" in tail and "ValueError: dataset_dir does not exist: /nowhere" in tail
    assert "Traceback" in (tmp_path / "logs" / "02_load.log").read_text()


def test_verbose_runs_in_the_open_and_writes_no_logs(tmp_path, capsys):
    with StageLog(tmp_path / "logs", title="bundle", verbose=True) as log:
        log.run("train", _train, 1)
        log.say("the summary")
    out = capsys.readouterr()
    assert "Epoch[1] Complete" in out.out and "(a notice)" in out.err and "the summary" in out.out
    assert not (tmp_path / "logs").exists() and log.logs == []
