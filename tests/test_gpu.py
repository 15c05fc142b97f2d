"""Checks that need CUDA (skipped without it): on-device Otsu and a mixed-precision pre-training step."""

from __future__ import annotations

import pytest
import torch

from fewlabel.engines import ThresholdPseudoLabels
from fewlabel.losses import build_loss
from fewlabel.networks import build_network
from fewlabel.transforms import otsu_threshold

pytestmark = pytest.mark.gpu


def test_otsu_on_cuda_equals_cpu():
    x = torch.rand(16, 3, 224, 224)
    assert torch.allclose(otsu_threshold(x.cuda()).cpu(), otsu_threshold(x), atol=1e-5)


def test_pseudo_labels_are_made_on_the_device_and_amp_step_runs():
    net = build_network("medsass_unet").cuda()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    images, targets = ThresholdPseudoLabels()({"image": torch.rand(4, 3, 64, 64)}, device="cuda")
    assert images.is_cuda and targets.is_cuda
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda"):
        loss = build_loss()(net(images), targets)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
