"""fewlabel.handlers.AtomicCheckpointSaver: a run killed while it saves leaves the previous whole file."""

from __future__ import annotations

import stat

import pytest
import torch
from ignite.engine import Engine

from fewlabel.handlers import AtomicCheckpointSaver


def _run(saver: AtomicCheckpointSaver) -> None:
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    engine.run([0], max_epochs=1)


def test_a_save_cut_short_leaves_the_previous_file(tmp_path, monkeypatch):
    net = torch.nn.Linear(3, 2)
    saver = AtomicCheckpointSaver(tmp_path, {"model": net}, save_final=True, final_filename="model.pt")
    _run(saver)
    path = tmp_path / "model.pt"
    before = path.read_bytes()
    assert torch.load(path, weights_only=True)["weight"].shape == (2, 3)
    assert path.stat().st_mode & stat.S_IRGRP and path.stat().st_mode & stat.S_IROTH  # as MONAI's saver

    real_save = torch.save

    def killed_midway(obj, f, **kw):  # what a SIGKILL during the write leaves: part of the bytes
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    with torch.no_grad():
        net.weight.add_(1)
    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        _run(AtomicCheckpointSaver(tmp_path, {"model": net}, save_final=True, final_filename="model.pt"))
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no half file beside it


def test_a_new_best_cut_short_leaves_the_previous_best(tmp_path, monkeypatch):
    """As the bundles save model.pt: the key metric's best, under a fixed name (MONAI removes it first)."""
    net = torch.nn.Linear(3, 2)
    real_save, calls = torch.save, []

    def second_save_killed(obj, f, **kw):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half")
            raise KeyboardInterrupt
        real_save(obj, f, **kw)

    def step(engine, batch):
        engine.state.metrics["dice"] = float(engine.state.epoch)  # better every epoch
        with torch.no_grad():
            net.weight.add_(1)

    engine = Engine(step)
    AtomicCheckpointSaver(tmp_path, {"model": net}, save_key_metric=True, key_metric_name="dice",
                          key_metric_filename="model.pt").attach(engine)
    monkeypatch.setattr(torch, "save", second_save_killed)
    with pytest.raises(KeyboardInterrupt):
        engine.run([0], max_epochs=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    first = torch.load(tmp_path / "model.pt", weights_only=True)["weight"]
    assert torch.allclose(first, net.weight - 1)  # the weights of epoch 1, whole
