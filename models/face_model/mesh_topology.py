"""Per-vertex adjacency tables of a triangle mesh, in the layout the authors' code builds them.

Both tables are padded rectangles so that they can be used as gather indices on the GPU:
``adjacent_triangles`` is padded with ``ntri`` (an extra all-zero "triangle" row is appended before
gathering) and ``neighbour_vertices`` with ``n`` (an extra all-zero vertex row). Entries keep the
authors' order — triangles in index order; neighbours in order of first appearance when walking the
vertex's triangles — because sums over them are order-sensitive in float32.
"""

from typing import NamedTuple

import numpy as np


class NeighbourTable(NamedTuple):
    """indices: (n, k) int64 neighbour vertex indices padded with n; counts: (n,) int64."""

    indices: np.ndarray
    counts: np.ndarray


def _check_triangles(triangles: np.ndarray, num_vertices: int) -> None:
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must have shape (ntri, 3), got {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= num_vertices):
        raise ValueError(
            f"triangle indices must lie in [0, {num_vertices}), got [{triangles.min()}, {triangles.max()}]"
        )


def _ragged_to_padded(row: np.ndarray, values: np.ndarray, num_rows: int, pad: int) -> np.ndarray:
    """Rows given as (row id, value) pairs sorted stably by row -> (num_rows, max count) padded array."""
    counts = np.bincount(row, minlength=num_rows)
    width = int(counts.max()) if counts.size else 0
    rank = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    table = np.full((num_rows, width), pad, dtype=np.int64)
    table[row, rank] = values
    return table


def adjacent_triangles(triangles: np.ndarray, num_vertices: int) -> np.ndarray:
    """Triangles each vertex belongs to, in increasing triangle index.

    Args:
        triangles: (ntri, 3) 0-based vertex indices.
        num_vertices: n.
    Returns:
        (n, k) int64, k = the largest number of triangles at one vertex, padded with ntri.
    """
    _check_triangles(triangles, num_vertices)
    vertex = triangles.reshape(-1)
    triangle = np.repeat(np.arange(len(triangles)), 3)
    order = np.argsort(vertex, kind="stable")
    return _ragged_to_padded(vertex[order], triangle[order], num_vertices, len(triangles))


def neighbour_vertices(triangles: np.ndarray, tri_table: np.ndarray, num_vertices: int) -> NeighbourTable:
    """One-ring neighbours of each vertex, in order of first appearance in its adjacent triangles.

    Args:
        triangles: (ntri, 3) 0-based vertex indices.
        tri_table: (n, k) output of :func:`adjacent_triangles`.
        num_vertices: n.
    Returns:
        :class:`NeighbourTable` padded with n.
    """
    _check_triangles(triangles, num_vertices)
    padded_triangles = np.concatenate([triangles, np.full((1, 3), num_vertices)], axis=0)
    candidates = padded_triangles[tri_table].reshape(num_vertices, -1)  # (n, 3k)
    own = np.arange(num_vertices)[:, None]
    valid = (candidates != num_vertices) & (candidates != own)

    # Keep the first occurrence of every value in each row.
    order = np.argsort(candidates, axis=1, kind="stable")
    sorted_values = np.take_along_axis(candidates, order, axis=1)
    repeated_sorted = np.zeros_like(sorted_values, dtype=bool)
    repeated_sorted[:, 1:] = sorted_values[:, 1:] == sorted_values[:, :-1]
    repeated = np.zeros_like(repeated_sorted)
    np.put_along_axis(repeated, order, repeated_sorted, axis=1)
    keep = valid & ~repeated

    rows, cols = np.nonzero(keep)
    indices = _ragged_to_padded(rows, candidates[rows, cols], num_vertices, num_vertices)
    return NeighbourTable(indices=indices, counts=keep.sum(axis=1).astype(np.int64))
