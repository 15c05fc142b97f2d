"""The pretext tasks SurgicalSemiSeg compares with: colourisation's grey input, rotation prediction's turns."""

from __future__ import annotations

import pytest
import torch

from fewlabel.engines import DenoisingPairs, RotationBatch
from fewlabel.networks import ContrastiveEncoder, build_network
from fewlabel.transforms import GreyCorruption, centre_square, rotate_batch


def test_colourisation_input_is_the_luma_on_every_channel():
    img = torch.zeros(2, 3, 4, 5)
    img[:, 0] = 1.0  # pure red: luma 0.299
    grey_img, masks = GreyCorruption()(img)
    assert grey_img.shape == img.shape and torch.allclose(grey_img, torch.full_like(img, 0.299))
    assert masks.shape == (2, 1, 4, 5) and bool((masks == 1).all())
    # through the denoising autoencoder's prepare_batch: grey in, the colour image as the target
    x, y = DenoisingPairs(GreyCorruption())({"image": img})
    assert torch.equal(y, img) and torch.allclose(x, grey_img)
    with pytest.raises(ValueError, match="RGB"):
        GreyCorruption()(torch.rand(1, 1, 4, 4))


def test_rotation_batch_turns_each_image_by_its_target():
    img = torch.arange(2 * 1 * 3 * 5, dtype=torch.float32).view(2, 1, 3, 5)
    images, turns = RotationBatch(seed=3)({"image": img})
    square = centre_square(img)
    assert images.shape == (2, 1, 3, 3) and turns.dtype == torch.int64
    for i in range(2):
        assert torch.equal(images[i], torch.rot90(square[i], int(turns[i]), dims=(-2, -1)))
    # the same seed, the same turns; over many draws all four classes appear
    assert torch.equal(RotationBatch(seed=3)({"image": img})[1], turns)
    many = RotationBatch(seed=0)({"image": torch.rand(64, 1, 4, 4)})[1]
    assert set(many.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square"):
        rotate_batch(img, torch.zeros(2))


def test_rotation_classifier_trains_the_segmentation_encoder():
    torch.manual_seed(0)
    net = build_network("deeplabv3plus", encoder_name="resnet18", in_channels=3, out_channels=3)
    clf = ContrastiveEncoder(net, projection_dim=4, hidden_dim=0)
    images, turns = RotationBatch(seed=0)({"image": torch.rand(4, 3, 32, 40)})
    before = net.encoder.conv1.weight.detach().clone()
    loss = torch.nn.CrossEntropyLoss()(clf(images), turns)
    loss.backward()
    torch.optim.SGD(clf.parameters(), lr=0.1).step()
    assert not torch.equal(net.encoder.conv1.weight, before)
