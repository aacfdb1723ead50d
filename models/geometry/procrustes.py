"""Batched similarity Procrustes alignment without reflection, on ``torch.linalg.svd``.

Solves, for every batch element independently (Umeyama 1991, "Least-squares estimation of
transformation parameters between two point patterns", IEEE TPAMI 13(4)):

    min_{s, R, t}  sum_i || target_i - (s * source_i @ R + t) ||^2,   R in SO(d), s > 0,

in the row-vector convention of the authors' ``batched_procrustes_pytorch`` (a point is a row, it is
multiplied on the right by the rotation). The rotation is the nearest proper rotation to the
cross-covariance (Kabsch 1976 with Umeyama's determinant correction), so reflections are never
returned. It replaces the authors' dependency on torch-batch-svd.

The SVD goes through a custom autograd function whose backward uses the derivative of the orthogonal
polar factor (denominators sigma_i + sigma_j) instead of the generic SVD backward (denominators
sigma_i^2 - sigma_j^2), so gradients stay finite for planar point sets and for repeated singular
values, where the rotation is still unique.
"""

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable


class SimilarityTransform(NamedTuple):
    """``x -> scale * x @ rotation + translation`` for row-vector points (torch tensors or numpy arrays).

    Batched (from :func:`procrustes`): scale (B, 1, 1), unitless; rotation (B, d, d), proper (det +1);
    translation (B, 1, d), in the units of the target points; points (B, n, d). Single: a scalar scale,
    rotation (d, d), translation (d,); points (n, d).
    """

    scale: torch.Tensor | np.ndarray | float
    rotation: torch.Tensor | np.ndarray
    translation: torch.Tensor | np.ndarray

    def apply(self, points):
        """Points (..., n, d) -> transformed points of the same shape."""
        return self.scale * (points @ self.rotation) + self.translation

    def then(self, other: "SimilarityTransform") -> "SimilarityTransform":
        """The transform that applies ``self`` and then ``other``."""
        return SimilarityTransform(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            other.scale * (self.translation @ other.rotation) + other.translation,
        )


class ProcrustesResult(NamedTuple):
    """Output of :func:`procrustes`.

    disparity: (B,) residual sum of squares divided by the target's centred sum of squares (the
    "standardised distance" d of MATLAB's ``procrustes``); 0 for an exact fit, and 0 where the
    target points all coincide.
    aligned: (B, n, d) the source points after ``transform``.
    transform: the similarity mapping source onto target.
    """

    disparity: torch.Tensor
    aligned: torch.Tensor
    transform: SimilarityTransform


class _NearestRotation(torch.autograd.Function):
    """M (B, d, d) -> argmax_{R in SO(d)} trace(R^T M) = U diag(1, .., 1, det(U V^T)) V^T."""

    @staticmethod
    def forward(ctx: FunctionCtx, matrix: torch.Tensor) -> torch.Tensor:
        u, sigma, vh = torch.linalg.svd(matrix)
        sign = torch.where(torch.linalg.det(u @ vh) < 0, -1.0, 1.0).to(matrix.dtype)
        # Fold the determinant correction into a signed decomposition M = U' diag(sigma') V^T.
        u = torch.cat([u[..., :-1], u[..., -1:] * sign[..., None, None]], dim=-1)
        sigma = torch.cat([sigma[..., :-1], sigma[..., -1:] * sign[..., None]], dim=-1)
        ctx.save_for_backward(u, sigma, vh)
        return u @ vh

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_rotation: torch.Tensor) -> torch.Tensor:
        # dR = U' Omega V^T with Omega_ij = (P_ij - P_ji) / (sigma'_i + sigma'_j), P = U'^T dM V.
        u, sigma, vh = ctx.saved_tensors
        k = u.mT @ grad_rotation @ vh.mT
        denominator = sigma[..., :, None] + sigma[..., None, :]
        # Pairs whose denominator vanishes leave the rotation undetermined (rank <= d - 2); they get
        # no gradient instead of an infinite one.
        tolerance = math.sqrt(torch.finfo(sigma.dtype).eps) * sigma[..., :1, None].abs()
        usable = denominator.abs() > tolerance
        w = torch.where(usable, (k - k.mT) / torch.where(usable, denominator, 1.0), 0.0)
        return u @ w @ vh


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, and 0 (with zero gradients) where the denominator is not positive-normal."""
    usable = denominator > torch.finfo(denominator.dtype).tiny
    return torch.where(usable, numerator / torch.where(usable, denominator, 1.0), 0.0)


def nearest_rotation(matrix: torch.Tensor) -> torch.Tensor:
    """Proper rotation closest in Frobenius norm to each matrix of a batch (Umeyama 1991, Lemma).

    Args:
        matrix: (B, d, d) real matrices.
    Returns:
        (B, d, d) rotations R maximising trace(R^T matrix), det(R) = +1; differentiable, with finite
        gradients whenever at most one singular value of ``matrix`` is zero.
    """
    if matrix.ndim != 3 or matrix.shape[1] != matrix.shape[2] or matrix.shape[1] < 2:
        raise ValueError(
            f"nearest_rotation expects a batch of square matrices (B, d, d), d >= 2, got {tuple(matrix.shape)}"
        )
    return _NearestRotation.apply(matrix)


def procrustes(target: torch.Tensor, source: torch.Tensor, scaling: bool = True) -> ProcrustesResult:
    """Similarity (or rigid, with ``scaling=False``) alignment of ``source`` onto ``target``.

    Args:
        target: (B, n, d) points to fit (the authors' ``X``, ground truth in the losses).
        source: (B, n, d) points to move (the authors' ``Y``, the prediction in the losses), in
            one-to-one correspondence with ``target``.
        scaling: estimate the scale (Umeyama 1991, eq. 42); otherwise the scale is 1.
    Returns:
        :class:`ProcrustesResult`; ``transform.apply(source)`` best fits ``target`` in least squares
        among similarities without reflection. Degenerate sources (all points equal) give scale 0.
    """
    if target.ndim != 3 or target.shape != source.shape:
        raise ValueError(
            f"procrustes expects target and source of the same shape (B, n, d), "
            f"got {tuple(target.shape)} and {tuple(source.shape)}"
        )
    if target.shape[1] < 1 or target.shape[2] < 2:
        raise ValueError(f"procrustes needs at least one point of dimension >= 2, got {tuple(target.shape)}")
    target_mean = target.mean(dim=1, keepdim=True)
    source_mean = source.mean(dim=1, keepdim=True)
    target_centred = target - target_mean
    source_centred = source - source_mean

    covariance = source_centred.mT @ target_centred  # (B, d, d)
    rotation = nearest_rotation(covariance)
    if scaling:
        correlation = (rotation * covariance).sum(dim=(1, 2))  # trace(R^T Y0^T X0)
        source_energy = source_centred.square().sum(dim=(1, 2))
        scale = _safe_divide(correlation, source_energy)[:, None, None]
    else:
        scale = torch.ones_like(target[:, :1, :1])
    translation = target_mean - scale * (source_mean @ rotation)
    transform = SimilarityTransform(scale=scale, rotation=rotation, translation=translation)

    aligned = transform.apply(source)
    residual = (aligned - target).square().sum(dim=(1, 2))
    disparity = _safe_divide(residual, target_centred.square().sum(dim=(1, 2)))
    return ProcrustesResult(disparity=disparity, aligned=aligned, transform=transform)
