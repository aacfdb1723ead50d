"""Gaussian-process bases: squared-exponential kernels and their leading, partly mirror-symmetric eigenvectors."""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class KernelScale:
    """One squared-exponential term: correlation length and per-axis displacement std, both micrometres."""

    length: float
    std: float


# Randomised eigen-solver: extra subspace columns and power iterations (ample for these smooth kernels).
EIGEN_OVERSAMPLING = 40
EIGEN_ITERATIONS = 6


class Basis(NamedTuple):
    """basis: (3n, k) orthonormal columns, interleaved x, y, z; std: (k,) decreasing, model units."""

    basis: np.ndarray
    std: np.ndarray


def squared_exponential(distances: np.ndarray, scales: tuple[KernelScale, ...]) -> np.ndarray:
    """Sum over scales of ``std^2 exp(-d^2 / (2 length^2))``, for a (n, n) distance matrix."""
    return sum(s.std**2 * np.exp(-np.square(distances) / (2 * s.length**2)) for s in scales)


def leading_eigenpairs(matrix: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Largest eigenpairs of a symmetric (n, n) matrix by randomised subspace iteration (Halko et al., 2011).

    Deterministic for a fixed seed. Returns (count,) eigenvalues, decreasing, and (n, count) orthonormal vectors,
    each with its largest-magnitude entry positive.
    """
    n = matrix.shape[0]
    width = min(n, count + EIGEN_OVERSAMPLING)
    subspace = np.linalg.qr(matrix @ np.random.default_rng(seed).standard_normal((n, width)))[0]
    for _ in range(EIGEN_ITERATIONS):
        subspace = np.linalg.qr(matrix @ subspace)[0]
    values, vectors = np.linalg.eigh(subspace.T @ matrix @ subspace)
    order = np.argsort(-values, kind="stable")[:count]
    vectors = subspace @ vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    return values[order], vectors * signs


def gp_basis(kernel: np.ndarray, mirror: np.ndarray, symmetry: float, count: int) -> Basis:
    """Leading eigenvectors of a vector-valued GP with independent axes, partly mirror-symmetric.

    Axis c has the scalar kernel ``K + symmetry * s_c * K M`` (M: the mirror permutation, s = (-1, 1, 1)):
    with symmetry 1 only deformations that keep the face mirror-symmetric remain (x odd, y and z even under the
    mirror). As ``K = E + O`` with even part ``E = (K + K M) / 2`` and odd part ``O = (K - K M) / 2``, that kernel
    is ``(1 + symmetry s_c) E + (1 - symmetry s_c) O``: two eigen-decompositions give all three axes' spectra,
    which are merged, largest first (ties: parity even first, then axis x, y, z, then eigen index).

    Args:
        kernel: (n, n) symmetric scalar kernel matrix, invariant under the mirror (micrometres^2).
        mirror: (n,) involution. symmetry: in [0, 1]. count: components to keep.
    Returns:
        :class:`Basis` with std = sqrt(eigenvalue).
    """
    n = kernel.shape[0]
    mirrored = kernel[:, mirror]
    values, vectors, axes = [], [], []
    for parity in (1.0, -1.0):
        block = (kernel + parity * mirrored) / 2
        eigenvalues, eigenvectors = leading_eigenpairs((block + block.T) / 2, count)
        for axis, sign in enumerate((-1.0, 1.0, 1.0)):
            values.append(eigenvalues * (1 + symmetry * sign * parity))
            vectors.append(eigenvectors)
            axes.append(np.full(len(eigenvalues), axis))
    values_all, vectors_all, axes_all = np.concatenate(values), np.concatenate(vectors, 1), np.concatenate(axes)
    order = np.argsort(-values_all, kind="stable")[:count]
    if len(order) < count or values_all[order[-1]] <= 0:
        raise ValueError(f"the kernel has fewer than {count} positive eigenvalues")
    basis = np.zeros((3 * n, count))
    for column, k in enumerate(order):
        basis[axes_all[k] :: 3, column] = vectors_all[:, k]
    return Basis(basis, np.sqrt(values_all[order]))
