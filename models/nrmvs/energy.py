"""The energy DFNRMVS descends: feature-metric multi-view consistency plus a 68-landmark term.

Both terms also return mean absolute residuals, the inputs of the step-size networks. Reductions follow
the authors' code exactly (NRMVSOptimization.feature_metric_loss / landmark_loss), including that batch
samples are coupled: the feature term is a masked mean over the visible vertices of *all* samples.
"""

from typing import NamedTuple

import torch

from ..face_model.landmark_layout import CONTOUR_LANDMARKS, FIXED_LANDMARKS
from ..geometry.camera import to_image
from ..geometry.visibility import closest_visible_vertices


class EnergyTerm(NamedTuple):
    """value: scalar energy; abs_residuals: (N, V, C) mean absolute residuals for the step-size nets."""

    value: torch.Tensor
    abs_residuals: torch.Tensor


def feature_metric_energy(vertex_features: torch.Tensor, visible: torch.Tensor) -> EnergyTerm:
    """Mean over view pairs of the squared feature difference at vertices visible in both views.

    Args:
        vertex_features: (N, V, C, n) features sampled at each view's projection of every vertex.
        visible: (N, V, n) bool, face-region vertices visible in each view.
    Returns:
        value: mean over pairs (i < j) of mean over co-visible vertices (all samples pooled) of
            ``sum_c (f_i - f_j)^2``; abs_residuals: per view, the mean over its pairs of the per-channel
            mean |f_i - f_j| over co-visible vertices (N, V, C).
    """
    n_views = vertex_features.shape[1]
    if n_views < 2:
        raise ValueError("the feature-metric energy needs at least two views")
    total = vertex_features.new_zeros(())
    per_view = [[] for _ in range(n_views)]
    # unbind, not indexing: its backward stacks the gradients instead of zero-filling a full tensor per view
    features = vertex_features.unbind(dim=1)
    for i in range(n_views - 1):
        for j in range(i + 1, n_views):
            difference = features[i] - features[j]  # (N, C, n)
            both = visible[:, i] & visible[:, j]  # (N, n)
            squared = difference.square().sum(dim=1)  # (N, n)
            total = total + squared[both].mean()
            weight = both.unsqueeze(1).to(difference.dtype)
            # masked sum over vertices as a batched product: (N, C, n) @ (N, n, 1)
            residual = torch.bmm(difference.abs(), weight.transpose(1, 2)).squeeze(2) / weight.sum(dim=2)  # (N, C)
            per_view[i].append(residual)
            per_view[j].append(residual)
    residuals = torch.stack([torch.stack(pairs, dim=0).mean(dim=0) for pairs in per_view], dim=1)
    return EnergyTerm(total / (n_views * (n_views - 1.0) / 2.0), residuals)


def landmark_energy(
    vertices: torch.Tensor,
    landmarks: torch.Tensor,
    landmark_indices: torch.Tensor,
    landmark_visible: torch.Tensor,
    region_visible: torch.Tensor,
    image_size: tuple[int, int],
) -> EnergyTerm:
    """Squared image distance between detected 2D landmarks and the model's, fixed plus dynamic.

    Args:
        vertices: (N, V, n, 3) camera-space vertices.
        landmarks: (N, V, 68, 2) detected landmarks in image pixels (x right, y down).
        landmark_indices: (68,) landmark vertex indices.
        landmark_visible: (N, V, 68) bool, back-face visibility of the landmark vertices (whole mesh).
        region_visible: (N, V, n) bool, visible face-region vertices (candidates of dynamic landmarks).
        image_size: (H, W).
    Returns:
        value: mean over (N, V, 68) of the fixed term plus the same mean of the dynamic term;
        abs_residuals: (N, V, 2) mean |residual| over the 68 landmarks (each from its term), x divided by
        W - 1 and y by H - 1.
    """
    height, width = image_size
    projected = to_image(vertices, height, width)[..., :2]  # (N, V, n, 2)
    model_landmarks = projected[:, :, landmark_indices]  # (N, V, 68, 2)

    fixed = torch.zeros_like(landmark_visible)
    fixed[:, :, list(FIXED_LANDMARKS)] = True
    fixed = (fixed | landmark_visible).to(vertices.dtype)  # (N, V, 68)
    dynamic = 1.0 - fixed

    fixed_value = ((model_landmarks - landmarks).square().sum(dim=-1) * fixed).mean()
    fixed_residual = ((model_landmarks - landmarks).abs() * fixed.unsqueeze(-1)).mean(dim=2)

    # Only contour landmarks can be dynamic; the others contribute exact zeros to the dynamic term.
    contour = list(CONTOUR_LANDMARKS)
    closest = closest_visible_vertices(landmarks[:, :, contour], projected.detach(), region_visible)
    contour_points = torch.gather(projected, 2, closest.unsqueeze(-1).expand(-1, -1, -1, 2))  # (N, V, 12, 2)
    dynamic_error = torch.zeros_like(model_landmarks)
    dynamic_error[:, :, contour] = contour_points - landmarks[:, :, contour]
    dynamic_value = (dynamic_error.square().sum(dim=-1) * dynamic).mean()
    dynamic_residual = (dynamic_error.abs() * dynamic.unsqueeze(-1)).mean(dim=2)

    residuals = fixed_residual + dynamic_residual
    residuals = residuals / residuals.new_tensor([width - 1.0, height - 1.0])
    return EnergyTerm(fixed_value + dynamic_value, residuals)
