"""Sampling image features at projected vertices, with the authors' feature-gradient backward.

DFNRMVS differentiates its feature-metric energy with respect to vertex positions through the sampled
features. Autograd of bilinear ``grid_sample`` would give piecewise-constant position gradients (the
slope of the bilinear patch the point falls in). The authors instead define the position gradient from
central-difference feature gradients (replicate-padded at the border), themselves bilinearly sampled
at the same points (``MyGridSample`` in networks/sub_nets.py). :class:`FeatureGradientSample` does the
same; the gradient with respect to the feature map is autograd's.

Vertex positions are given in pixels of the network input image (256x256) and mapped to ``[-1, 1]``
with ``align_corners=True``, whatever the resolution of the feature map.
"""

import torch
import torch.nn.functional as F

from ..geometry.camera import image_to_grid, to_image


def central_difference_gradients(features: torch.Tensor) -> torch.Tensor:
    """d/dx and d/dy of a feature map by central differences, replicate-padded at the border.

    Args:
        features: (B, C, H, W).
    Returns:
        (B, 2, C, H, W): [:, 0] = dF/dx (along W), [:, 1] = dF/dy (along H), per pixel.
    """
    grad_x = F.pad((features[..., 2:] - features[..., :-2]) / 2.0, (1, 1, 0, 0), mode="replicate")
    grad_y = F.pad((features[..., 2:, :] - features[..., :-2, :]) / 2.0, (0, 0, 1, 1), mode="replicate")
    return torch.stack([grad_x, grad_y], dim=1)


# Channels per block when contracting sampled slopes with the upstream gradient: small blocks keep the
# products in cache (about 3x faster than one broadcast product over all channels at BFM size).
CONTRACTION_BLOCK = 16


def _contract_channels(slopes: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """sum_c slopes[:, :, c] * upstream[:, :, c] over dim 2, in blocks of channels; (B, 2, C, ...) -> (B, 2, ...)."""
    total = None
    for start in range(0, slopes.shape[2], CONTRACTION_BLOCK):
        block = (
            slopes[:, :, start : start + CONTRACTION_BLOCK] * upstream[:, :, start : start + CONTRACTION_BLOCK]
        ).sum(2)
        total = block if total is None else total + block
    return total


class FeatureGradientSample(torch.autograd.Function):
    """``grid_sample(features, grid, align_corners=True)`` whose grid gradient uses sampled feature gradients."""

    @staticmethod
    def forward(ctx, grid: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grid, features)
        return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grid, features = ctx.saved_tensors
        batch, channels, height, width = features.shape
        grad_grid = grad_features = None
        if ctx.needs_input_grad[0]:
            slopes = central_difference_gradients(features).view(batch, 2 * channels, height, width)
            sampled = F.grid_sample(slopes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            sampled = sampled.view(batch, 2, channels, *grid.shape[1:3])
            pixel_grad = _contract_channels(sampled, grad_output.unsqueeze(1))  # (B, 2, h, w): d energy / d pixel
            # chain rule through the pixel -> [-1, 1] map: d pixel / d grid = (size - 1) / 2
            scale = pixel_grad.new_tensor([(width - 1) / 2, (height - 1) / 2]).view(1, 2, 1, 1)
            grad_grid = (pixel_grad * scale).permute(0, 2, 3, 1)
        if ctx.needs_input_grad[1]:
            with torch.enable_grad():
                detached = features.detach().requires_grad_(True)
                resampled = F.grid_sample(detached, grid.detach(), mode="bilinear", align_corners=True)
                (grad_features,) = torch.autograd.grad(resampled, detached, grad_output, create_graph=False)
        return grad_grid, grad_features


def sample_at_vertices(
    features: torch.Tensor, vertices: torch.Tensor, image_size: tuple[int, int], feature_gradient: bool = True
) -> torch.Tensor:
    """Bilinearly sample per-vertex features at the vertices' image projections.

    Args:
        features: (N, V, C, h, w) feature maps (or images) of each view.
        vertices: (N, V, n, 3) camera-space vertices (pixels of the input image).
        image_size: (H, W) of the input image the vertices are expressed in.
        feature_gradient: use :class:`FeatureGradientSample` (the optimisation's energy); plain
            ``grid_sample`` otherwise (colours).
    Returns:
        (N, V, C, n) sampled features; zero outside the image.
    """
    n_samples, n_views, channels, h, w = features.shape
    height, width = image_size
    num_vertices = vertices.shape[2]
    grid = image_to_grid(to_image(vertices, height, width)[..., :2], height, width)
    grid = grid.reshape(n_samples * n_views, num_vertices, 1, 2)
    flat = features.reshape(n_samples * n_views, channels, h, w)
    if feature_gradient:
        sampled = FeatureGradientSample.apply(grid, flat)
    else:
        sampled = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled.view(n_samples, n_views, channels, num_vertices)
