"""Filling a texture's unseen texels from the seen ones.

:func:`push_pull` (Gortler et al., "The Lumigraph", 1996): the image is averaged down a pyramid, each
level weighting texels by their confidence (a texel's coarse confidence is the sum of its children's, at
most 1), until one texel is left; on the way back up, each texel keeps its own colour in proportion to its
confidence and takes the rest from the bilinearly up-sampled coarser level. Unseen texels (confidence 0)
thus get a smooth blend of the nearest seen ones, at the scale of the hole, and seen texels (confidence 1)
keep their colour exactly.

Filling the whole square also pads the chart's border (its only seam: the models' charts are single discs
whose border is the mesh's rim), so bilinear and mip-mapped lookups there see the nearby skin colour.
"""

import torch
import torch.nn.functional as F


def push_pull(image: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """Fill the low-confidence texels of ``image`` from its confident ones.

    Args:
        image: (C, H, W) texel values (any where the confidence is 0).
        confidence: (H, W) weights in [0, 1]; 1 keeps a texel, 0 fills it.
    Returns:
        (C, H, W) filled image; all zeros when no texel has any confidence.
    """
    if image.dim() != 3 or confidence.shape != image.shape[1:]:
        raise ValueError(
            f"image must be (C, H, W) and confidence (H, W), got {tuple(image.shape)} and {tuple(confidence.shape)}"
        )
    weight = confidence.clamp(0.0, 1.0).to(image.dtype).unsqueeze(0)
    return push_pull_weighted(image * weight, weight)


def push_pull_weighted(weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:func:`push_pull` of colours given premultiplied: ``weighted`` (C, H, W) = colour x ``weight`` (1, H, W),
    weights in [0, 1] (saves a pass over the image when the caller has the products already)."""
    height, width = weight.shape[1:]
    if height == 1 and width == 1:
        return weighted / weight.clamp(min=torch.finfo(weight.dtype).tiny)
    if height % 2 or width % 2:
        padding = (0, width % 2, 0, height % 2)
        weighted, weight = F.pad(weighted, padding), F.pad(weight, padding)
    coarse_sum = F.avg_pool2d(weight.unsqueeze(0), 2)[0] * 4.0
    coarse_weight = coarse_sum.clamp(max=1.0)
    # The children's weighted mean, premultiplied by the clamped coarse weight.
    scale = 4.0 * coarse_weight / coarse_sum.clamp(min=torch.finfo(weight.dtype).tiny)
    coarse = push_pull_weighted(F.avg_pool2d(weighted.unsqueeze(0), 2)[0] * scale, coarse_weight)
    filled = F.interpolate(coarse.unsqueeze(0), size=weight.shape[1:], mode="bilinear")[0]
    filled = filled.mul_(1.0 - weight).add_(weighted)
    return filled[:, :height, :width]
