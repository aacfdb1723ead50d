"""The model's UV map: the face flattened one-to-one onto a disk (mean-value embedding), and its coverage."""

import numpy as np
from matplotlib.path import Path as PolygonPath
from scipy import sparse
from scipy.sparse.linalg import spsolve

from models.face_model.morphable_model import MorphableModel
from tools.default_face_model.mesh_ops import boundary_loops, zipper_fill


def mean_value_weights(vertices: np.ndarray, triangles: np.ndarray) -> sparse.csr_matrix:
    """(n, n) Floater's mean-value weights ``w_ij = (tan(a/2) + tan(b/2)) / |v_i - v_j|`` (a, b: the angles at i
    beside edge ij); positive, not symmetric."""
    rows, cols, values = [], [], []
    for k in range(3):
        i, j, m = triangles[:, k], triangles[:, (k + 1) % 3], triangles[:, (k + 2) % 3]
        first, second = vertices[j] - vertices[i], vertices[m] - vertices[i]
        first_length, second_length = np.linalg.norm(first, axis=1), np.linalg.norm(second, axis=1)
        cosine = np.clip(np.sum(first * second, 1) / (first_length * second_length), -1.0, 1.0)
        half_tangent = np.tan(np.arccos(cosine) / 2)
        rows += [i, i]
        cols += [j, m]
        values += [half_tangent / first_length, half_tangent / second_length]
    n = len(vertices)
    return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def disk_uv(vertices: np.ndarray, triangles: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """A one-to-one UV map in [0, 1] (v up): the face flattened onto the disk inscribed in the unit square.

    The outer boundary goes round the circle by arc length, starting at its top midline vertex, the face's
    +x side to the right; the inside is Floater's mean-value (Tutte) embedding, which cannot fold. Inner holes
    are closed (:func:`zipper_fill`) for the solve only. The map is made exactly mirror-symmetric (u -> 1 - u).

    Args:
        vertices: (n, 3) in model axes, symmetric about x = 0 (midline vertices at x = 0 exactly).
        triangles: (ntri, 3). mirror: (n,) involution.
    Returns:
        (n, 2) float64.
    """
    n = len(vertices)
    loops = boundary_loops(triangles, n)
    outline = max(loops, key=len)
    holes = [zipper_fill(loop, vertices) for loop in loops if loop is not outline]
    weights = mean_value_weights(vertices, np.concatenate([triangles, *holes]))
    laplacian = (sparse.diags(np.asarray(weights.sum(1)).ravel()) - weights).tocsr()

    top_candidates = np.flatnonzero(vertices[outline, 0] == 0)
    start = int(top_candidates[np.argmax(vertices[outline[top_candidates], 1])])
    outline = np.roll(outline, -start)
    if vertices[outline[1], 0] < 0:
        outline = np.concatenate([outline[:1], outline[:0:-1]])
    steps = np.linalg.norm(vertices[np.roll(outline, -1)] - vertices[outline], axis=1)
    angle = np.pi / 2 - 2 * np.pi * np.concatenate([[0.0], np.cumsum(steps)[:-1]]) / steps.sum()
    uv = np.zeros((n, 2))
    uv[outline] = 0.5 + 0.5 * np.stack([np.cos(angle), np.sin(angle)], 1)

    inside = np.setdiff1d(np.arange(n), outline)
    system = laplacian[inside][:, inside].tocsc()
    uv[inside] = spsolve(system, -(laplacian[inside][:, outline] @ uv[outline]))
    mirrored = uv[mirror]
    return (uv + np.stack([1 - mirrored[:, 0], mirrored[:, 1]], 1)) / 2


def uv_coverage(model: MorphableModel, size: int = 128) -> float:
    """Share of the UV pixels inside the mesh's outer boundary that some triangle covers."""
    triangles = model.triangles.numpy()
    outline = max(boundary_loops(triangles, model.num_vertices), key=len)
    table = model.uv_tables[size]
    outline_pixels = table.vertex_uv.numpy()[outline, :2]
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2)
    inside = PolygonPath(outline_pixels).contains_points(grid).reshape(size, size)
    covered = table.pixel_vert_weights.numpy().any(axis=-1)
    return float(covered[inside].mean())
