"""The energy DFNRMVS descends: feature-metric multi-view consistency plus a 68-landmark term.

Both terms also return mean absolute residuals, the inputs of the step-size networks. Reductions follow
the authors' code exactly (NRMVSOptimization.feature_metric_loss / landmark_loss), including that batch
samples are coupled: the feature term is a masked mean over the visible vertices of *all* samples.

:func:`feature_metric_energy` and :func:`landmark_energy` are differentiated by autograd (training builds
second-order graphs through them). Inference uses :func:`feature_metric_energy_and_gradient` and
:func:`landmark_energy_and_gradient`: the same values, with their gradients written out by hand (both terms
are sums of squares, so the gradients are short), which spares the autograd graph and its copies.
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
    return landmark_errors(projected, landmarks, landmark_indices, landmark_visible, region_visible, image_size).term


class LandmarkErrors(NamedTuple):
    """The landmark term and its parts: fixed_error (N, V, 68, 2) model minus detected landmarks, fixed
    (N, V, 68) its 0/1 weights; dynamic_error (N, V, 68, 2) (zero off the contour), dynamic = 1 - fixed;
    closest (N, V, 12) the vertices chosen for the contour landmarks; contour: their landmark indices."""

    term: EnergyTerm
    fixed_error: torch.Tensor
    fixed: torch.Tensor
    dynamic_error: torch.Tensor
    dynamic: torch.Tensor
    closest: torch.Tensor
    contour: list[int]


def landmark_errors(
    projected: torch.Tensor,
    landmarks: torch.Tensor,
    landmark_indices: torch.Tensor,
    landmark_visible: torch.Tensor,
    region_visible: torch.Tensor,
    image_size: tuple[int, int],
) -> LandmarkErrors:
    """The fixed and dynamic landmark errors of (N, V, n, 2) image-space vertices (see :func:`landmark_energy`)."""
    height, width = image_size
    model_landmarks = projected[:, :, landmark_indices]  # (N, V, 68, 2)

    fixed = torch.zeros_like(landmark_visible)
    fixed[:, :, list(FIXED_LANDMARKS)] = True
    fixed = (fixed | landmark_visible).to(projected.dtype)  # (N, V, 68)
    dynamic = 1.0 - fixed

    fixed_error = model_landmarks - landmarks
    fixed_value = (fixed_error.square().sum(dim=-1) * fixed).mean()
    fixed_residual = (fixed_error.abs() * fixed.unsqueeze(-1)).mean(dim=2)

    # Only contour landmarks can be dynamic; the others contribute exact zeros to the dynamic term.
    contour = list(CONTOUR_LANDMARKS)
    closest = closest_visible_vertices(landmarks[:, :, contour], projected.detach(), region_visible)  # (N, V, 12)
    contour_points = torch.gather(projected, 2, closest.unsqueeze(-1).expand(-1, -1, -1, 2))  # (N, V, 12, 2)
    dynamic_error = torch.zeros_like(model_landmarks)
    dynamic_error[:, :, contour] = contour_points - landmarks[:, :, contour]
    dynamic_value = (dynamic_error.square().sum(dim=-1) * dynamic).mean()
    dynamic_residual = (dynamic_error.abs() * dynamic.unsqueeze(-1)).mean(dim=2)

    residuals = fixed_residual + dynamic_residual
    residuals = residuals / residuals.new_tensor([width - 1.0, height - 1.0])
    term = EnergyTerm(fixed_value + dynamic_value, residuals)
    return LandmarkErrors(term, fixed_error, fixed, dynamic_error, dynamic, closest, contour)


class PairGradient(NamedTuple):
    """One view pair's share of the feature-metric gradient: ``+difference`` for view ``first``,
    ``-difference`` for view ``second``; difference (N, m, C) is zero at vertices the pair does not share."""

    first: int
    second: int
    difference: torch.Tensor


class FeatureEnergyGradient(NamedTuple):
    """term: :class:`EnergyTerm` as :func:`feature_metric_energy`; pairs: the gradient with respect to the
    features, one :class:`PairGradient` per view pair (see :meth:`dense`)."""

    term: EnergyTerm
    pairs: list[PairGradient]

    def dense(self) -> torch.Tensor:
        """The gradient as one (N, V, m, C) tensor."""
        first = self.pairs[0].difference
        n_views = max(pair.second for pair in self.pairs) + 1
        gradient = first.new_zeros(first.shape[0], n_views, *first.shape[1:])
        for pair in self.pairs:
            gradient[:, pair.first] += pair.difference
            gradient[:, pair.second] -= pair.difference
        return gradient


def feature_metric_energy_and_gradient(vertex_features: torch.Tensor, visible: torch.Tensor) -> FeatureEnergyGradient:
    """:func:`feature_metric_energy` and its gradient, for vertex-major features.

    Args:
        vertex_features: (N, V, m, C) features sampled at each view's projection of m vertices.
        visible: (N, V, m) bool, vertices visible in each view.
    Returns:
        the energy term (value and (N, V, C) residuals, as :func:`feature_metric_energy`) and the gradient of
        the value with respect to ``vertex_features``, per pair (i, j): ``2 (f_i - f_j) / (P count_ij)`` at its
        co-visible vertices (P pairs, count_ij co-visible vertices over all samples), for i, and minus that
        for j. The pair differences are the gradient's only storage (a dense (N, V, m, C) gradient would
        hold each of them twice).
    """
    n_views = vertex_features.shape[1]
    if n_views < 2:
        raise ValueError("the feature-metric energy needs at least two views")
    n_pairs = n_views * (n_views - 1) / 2.0
    total = vertex_features.new_zeros(())
    pairs = []
    per_view = [[] for _ in range(n_views)]
    for i in range(n_views - 1):
        for j in range(i + 1, n_views):
            difference = vertex_features[:, i] - vertex_features[:, j]  # (N, m, C)
            both = visible[:, i] & visible[:, j]  # (N, m)
            total = total + channel_dot(difference, difference)[both].mean()
            weight = both.to(difference.dtype).unsqueeze(1)  # (N, 1, m)
            # masked sum over vertices as a batched product: (N, 1, m) @ (N, m, C)
            residual = torch.bmm(weight, difference.abs()).squeeze(1) / weight.sum(dim=2)  # (N, C)
            per_view[i].append(residual)
            per_view[j].append(residual)
            count = both.sum().clamp(min=1)  # no co-visible vertex: the value is NaN, nothing to descend
            pairs.append(PairGradient(i, j, difference.mul_(weight.transpose(1, 2) * (2.0 / n_pairs / count))))
    residuals = torch.stack([torch.stack(pair, dim=0).mean(dim=0) for pair in per_view], dim=1)
    return FeatureEnergyGradient(EnergyTerm(total / n_pairs, residuals), pairs)


class LandmarkEnergyGradient(NamedTuple):
    """term: :class:`EnergyTerm` as :func:`landmark_energy`; gradient: (N, V, n, 2) d value / d image points."""

    term: EnergyTerm
    gradient: torch.Tensor


def landmark_energy_and_gradient(
    projected: torch.Tensor,
    landmarks: torch.Tensor,
    landmark_indices: torch.Tensor,
    landmark_visible: torch.Tensor,
    region_visible: torch.Tensor,
    image_size: tuple[int, int],
) -> LandmarkEnergyGradient:
    """:func:`landmark_energy` and its gradient with respect to the projected vertices.

    Args:
        projected: (N, V, n, 2) image-space vertices (pixels, x right, y down), e.g. ``to_image(v)[..., :2]``.
        landmarks, landmark_indices, landmark_visible, region_visible, image_size: as :func:`landmark_energy`.
    Returns:
        the energy term and the gradient (N, V, n, 2) of its value with respect to ``projected``: nonzero
        only at the landmark vertices and at the vertices chosen for the dynamic landmarks.
    """
    n_samples, n_views = projected.shape[:2]
    count = float(n_samples * n_views * landmarks.shape[2])
    errors = landmark_errors(projected, landmarks, landmark_indices, landmark_visible, region_visible, image_size)
    fixed, dynamic, contour = errors.fixed, errors.dynamic, errors.contour

    gradient = torch.zeros_like(projected)
    fixed_gradient = errors.fixed_error * (fixed.unsqueeze(-1) * (2.0 / count))
    gradient.index_add_(2, landmark_indices, fixed_gradient)
    dynamic_gradient = errors.dynamic_error[:, :, contour] * (dynamic[:, :, contour].unsqueeze(-1) * (2.0 / count))
    rows = _flat_rows(errors.closest, projected.shape[2])
    gradient.view(-1, 2).index_add_(0, rows, dynamic_gradient.reshape(-1, 2))
    return LandmarkEnergyGradient(errors.term, gradient)


def _flat_rows(index: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """(N, V, L) vertex indices -> their rows in the flattened (N * V * n) vertex dimension."""
    batch = torch.arange(index.shape[0] * index.shape[1], device=index.device).view(index.shape[:2] + (1,))
    return (index + batch * num_vertices).reshape(-1)


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products over the last dimension of two (N, m, C) tensors: (N, m), without an (N, m, C) temporary."""
    channels = a.shape[-1]
    return torch.bmm(a.reshape(-1, 1, channels), b.reshape(-1, channels, 1)).view(a.shape[:-1])
