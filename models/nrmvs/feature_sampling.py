"""Sampling image features at projected vertices, with the authors' feature-gradient backward.

DFNRMVS differentiates its feature-metric energy with respect to vertex positions through the sampled
features. Autograd of bilinear ``grid_sample`` would give piecewise-constant position gradients (the
slope of the bilinear patch the point falls in). The authors instead define the position gradient from
central-difference feature gradients (replicate-padded at the border), themselves bilinearly sampled
at the same points (``MyGridSample`` in networks/sub_nets.py). :class:`FeatureGradientSample` does the
same; the gradient with respect to the feature map is autograd's.

Vertex positions are given in pixels of the network input image (256x256) and mapped to ``[-1, 1]``
with ``align_corners=True``, whatever the resolution of the feature map.

Inference does not need autograd here: :class:`FeatureTables` holds a level's feature map and its two
slope maps as channels-last pixel tables (the slopes are constant while the level runs);
:func:`sample_features` reads the features at bilinear taps (:mod:`models.nrmvs.point_sampling`) and
:func:`position_gradient` reads the slopes at the same taps and contracts them with the energy's feature
gradient, exactly what :class:`FeatureGradientSample`'s backward computes.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..geometry.camera import image_to_grid, to_image
from .energy import PairGradient, channel_dot
from .point_sampling import BilinearTaps, bilinear_taps, gather_taps, pixel_table


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


class FeatureTables(NamedTuple):
    """A stack of B feature maps (B, C, h, w) as channels-last pixel tables, each (B * h * w, C).

    values: the features; slope_x, slope_y: their central-difference slopes along the width and the height
    (:func:`central_difference_gradients`). height, width: h, w.
    """

    values: torch.Tensor
    slope_x: torch.Tensor
    slope_y: torch.Tensor
    height: int
    width: int


def feature_tables(features: torch.Tensor) -> FeatureTables:
    """:class:`FeatureTables` of (B, C, h, w) maps (no copy of the values when they are channels-last)."""
    batch, channels, height, width = features.shape
    pixels = features.permute(0, 2, 3, 1)  # (B, h, w, C)
    slope_x = torch.empty_like(pixels, memory_format=torch.contiguous_format)
    slope_x[:, :, 1:-1] = (pixels[:, :, 2:] - pixels[:, :, :-2]) / 2.0
    slope_x[:, :, 0] = slope_x[:, :, 1]
    slope_x[:, :, -1] = slope_x[:, :, -2]
    slope_y = torch.empty_like(slope_x)
    slope_y[:, 1:-1] = (pixels[:, 2:] - pixels[:, :-2]) / 2.0
    slope_y[:, 0] = slope_y[:, 1]
    slope_y[:, -1] = slope_y[:, -2]
    return FeatureTables(
        pixel_table(features).contiguous(), slope_x.view(-1, channels), slope_y.view(-1, channels), height, width
    )


class FeatureSamples(NamedTuple):
    """values (P, C) sampled at P = N * V * m points (view-major, then vertex order) and the taps they were
    read at (where the slopes are read too)."""

    values: torch.Tensor
    taps: BilinearTaps


def sample_features(tables: FeatureTables, vertices: torch.Tensor, image_size: tuple[int, int]) -> FeatureSamples:
    """Features at the vertices' projections, as :func:`sample_at_vertices` reads them.

    Args:
        tables: B = N * V maps. vertices: (N, V, m, 3) camera-space vertices (pixels of the input image).
        image_size: (H, W) of the input image.
    Returns:
        :class:`FeatureSamples` of the N * V * m points.
    """
    n_samples, n_views, num_vertices = vertices.shape[:3]
    height, width = image_size
    grid = image_to_grid(to_image(vertices, height, width)[..., :2], height, width)
    taps = bilinear_taps(grid.reshape(n_samples * n_views, num_vertices, 2), tables.height, tables.width)
    return FeatureSamples(gather_taps(tables.values, taps), taps)


def position_gradient(
    tables: FeatureTables,
    taps: BilinearTaps,
    feature_gradient: Sequence[PairGradient],
    image_size: tuple[int, int],
    n_views: int,
) -> torch.Tensor:
    """Gradient with respect to the image position (u, v) of each point, from the gradient of the sampled features.

    The slopes are sampled at the features' taps, as :class:`FeatureGradientSample`'s backward samples them:
    ``d/du = sum_c g_c * slope_x_c * (w - 1) / (W - 1)`` (and the same along v with the heights): a slope is per
    feature-map pixel, and a feature-map pixel spans (W - 1) / (w - 1) image pixels (align_corners=True).

    Args:
        tables: the maps the features were sampled from. taps: :attr:`FeatureSamples.taps` (N * V * m points).
        feature_gradient: the gradient with respect to the sampled features, per view pair
            (:func:`~models.nrmvs.energy.feature_metric_energy_and_gradient`), each (N, m, C).
        n_views: V.
    Returns:
        (N, V, m, 2) gradient with respect to (u, v) in image pixels.
    """
    height, width = image_size
    n_samples, num_vertices, channels = feature_gradient[0].difference.shape
    gradient = feature_gradient[0].difference.new_zeros(n_samples, n_views, num_vertices, 2)
    # one axis at a time: only one (P, C) sample of slopes is alive
    for axis, table in enumerate((tables.slope_x, tables.slope_y)):
        slopes = gather_taps(table, taps).view(n_samples, n_views, num_vertices, channels)
        for pair in feature_gradient:
            for view, sign in ((pair.first, 1.0), (pair.second, -1.0)):
                gradient[:, view, :, axis].add_(channel_dot(slopes[:, view], pair.difference), alpha=sign)
        del slopes
    # the same chain of factors as the autograd path: d pixel / d grid, then d grid / d image position
    scale_u = (tables.width - 1) / 2 * (2.0 / (width - 1))
    scale_v = (tables.height - 1) / 2 * (2.0 / (height - 1))
    return gradient.mul_(gradient.new_tensor([scale_u, scale_v]))
