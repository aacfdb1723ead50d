"""Push-pull hole filling: seen texels kept, holes filled smoothly from their surroundings."""

import torch

from models.texture.hole_filling import push_pull


def test_confident_texels_are_kept_and_a_smooth_image_is_refilled(device):
    size = (37, 50)  # odd sizes exercise the padding
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    image = torch.stack([xs / 50.0, ys / 37.0, 0.5 + 0 * xs]).float().to(device)
    confidence = torch.ones(size, device=device)
    confidence[10:25, 15:30] = 0.0  # a hole
    confidence[0:4, :] = 0.5  # half-confident rows
    scrambled = image.clone()
    scrambled[:, confidence == 0] = 7.0  # whatever lies in the hole is ignored
    filled = push_pull(scrambled, confidence)
    assert torch.equal(filled[:, confidence == 1], image[:, confidence == 1])
    hole = confidence == 0
    assert (filled[:, hole] - image[:, hole]).abs().max() < 0.08  # a linear ramp is refilled closely
    assert (filled[:, hole] >= 0).all() and (filled[:, hole] <= 1).all()
    half = confidence == 0.5
    assert (filled[:, half] - image[:, half]).abs().max() < 0.05


def test_one_seen_texel_colours_everything_and_none_gives_zeros():
    image = torch.zeros(3, 16, 16)
    image[:, 5, 9] = torch.tensor([0.2, 0.4, 0.6])
    confidence = torch.zeros(16, 16)
    confidence[5, 9] = 1.0
    filled = push_pull(image, confidence)
    assert torch.allclose(filled, torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, 16, 16), atol=1e-6)
    assert torch.equal(push_pull(image, torch.zeros(16, 16)), torch.zeros(3, 16, 16))
