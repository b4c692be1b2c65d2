"""The input patches behind top activations, cut at collect time: boxes are the input-gradient
support of the very output (batched gradients equal one-at-a-time ones, and a linear conv stack
gives exactly its theoretical receptive field), vector layers take the whole input, and the crops
are what the report shows."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from convergent.collect import crop, receptive_box, receptive_boxes, topk_patches


def _linear_stack() -> nn.Module:
    torch.manual_seed(0)
    # no nonlinearity: every weight non-zero, so the support is the whole theoretical field
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1, stride=2))
    for p in net.parameters():
        nn.init.uniform_(p, 0.5, 1.0)
    return net.eval()


def test_boxes_are_the_theoretical_receptive_field_of_a_linear_stack():
    net = _linear_stack()
    images = torch.randn(3, 1, 12, 12)
    # layer "1": 6x6 map; position (r, c) sees input rows 2r-2 .. 2r+2 (clipped), as two 3x3
    # convs with the second strided by 2 do
    positions = np.array([0, 6 * 2 + 3, 35])
    boxes = receptive_boxes(net, "1", images, np.array([0, 1, 3]), positions)
    for (top, bottom, left, right), p in zip(boxes, positions):
        r, c = divmod(int(p), 6)
        assert (top, bottom) == (max(0, 2 * r - 2), min(12, 2 * r + 3))
        assert (left, right) == (max(0, 2 * c - 2), min(12, 2 * c + 3))


def test_batched_boxes_equal_one_at_a_time_and_the_model_state_is_kept():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3), nn.ReLU()
    )
    net.train()
    images = torch.randn(6, 1, 10, 10)
    units = np.array([0, 1, 2, 3, 4, 0])
    positions = np.array([0, 3, 8, 5, 4, 7])  # a 3x3 map
    batched = receptive_boxes(net, "4", images, units, positions, batch_size=4)
    for i in range(6):
        single = receptive_box(net, "4", images[i], int(units[i]), int(positions[i]))
        assert tuple(batched[i]) == single
    assert net.training  # restored
    assert all(not m._forward_hooks for m in net.modules())  # no hook left behind


def test_token_layers_and_crops():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 3)

        def forward(self, x):  # (B, 1, 4, 4) -> 4 row tokens of 4 pixels
            return self.proj(x[:, 0])

    net = Tokens()
    nn.init.constant_(net.proj.weight, 1.0)
    images = torch.randn(2, 1, 4, 4)
    boxes = receptive_boxes(
        net, "proj", images, np.array([0, 2]), np.array([1, 3]), channels_first=False
    )
    assert boxes.tolist() == [[1, 2, 0, 4], [3, 4, 0, 4]]  # token t is input row t
    image = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    patch = crop(image, np.array([0, 2, 0, 2]), size=4)
    assert patch.dtype == np.uint8 and patch.shape == (4, 4)
    # the crop is in the full image's display scale: pixel 0 -> 0, pixel 5 -> 5/15 of 255
    assert patch[0, 0] == 0 and patch[-1, -1] == round(255 * 5 / 15)
    colour = crop(np.random.default_rng(0).random((3, 5, 5)), np.array([0, 5, 0, 5]), size=3)
    assert colour.shape == (3, 3, 3)


def test_topk_patches_cover_every_net_and_skip_empty_slots():
    net = _linear_stack()
    images = torch.randn(5, 1, 12, 12)
    index = np.array([[0, 4], [1, -1], [2, 3], [3, 0]])  # 4 joint units, k = 2
    position = np.array([[0, 35], [7, -1], [14, 21], [0, 1]])
    out = topk_patches(
        {"a": net, "b": net}, "1", images, index, position, {"a": (0, 2), "b": (2, 4)}
    )
    assert out["box"].shape == (4, 2, 4) and out["image"].shape == (4, 2, 16, 16)
    assert (out["box"][1, 1] == 0).all() and (out["image"][1, 1] == 0).all()  # empty slot
    np.testing.assert_array_equal(
        out["box"][0, 1], receptive_box(net, "1", images[4], 0, 35)
    )  # joint unit 0 is unit 0 of net a
    np.testing.assert_array_equal(out["box"][3, 0], receptive_box(net, "1", images[3], 1, 0))
    vector = topk_patches(
        {"a": net}, "1", images, index[:2], position[:2], {"a": (0, 2)}, map_shape=()
    )
    assert (vector["box"][0] == [0, 12, 0, 12]).all()  # a vector layer: the whole input
