"""Alignments used before measuring errors: similarity Procrustes, depth-only shift, rigid ICP.

All points are (n, 3) float arrays in the ground truth's unit (millimetres for scans). Every function
moves the *first* argument (the prediction, or the scan points in ICP) onto the second.
"""

from typing import NamedTuple

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from eval import EvaluationError
from models.geometry.procrustes import SimilarityTransform, procrustes

# ICP stops after this many iterations at most; from a landmark start point-to-plane steps settle in a
# handful (point-to-point steps, as in trimesh.registration.icp, needed ~200 on the test face).
ICP_MAX_ITERATIONS = 30
# ... or as soon as one step moves no ICP point by more than this (mm).
ICP_STEP_TOLERANCE_MM = 1e-6
# At most this many scan points (a fixed random subset) drive the ICP; 6 parameters do not need more,
# and each nearest-surface query slows down linearly with the count.
ICP_MAX_POINTS = 10000


def similarity_procrustes(source: np.ndarray, target: np.ndarray) -> SimilarityTransform:
    """Least-squares similarity taking ``source`` (n, 3) onto corresponding ``target`` (n, 3).

    Umeyama's closed form (IEEE TPAMI 1991) with reflections excluded; it is the transform of the
    authors' ``batched_procrustes_pytorch(..., scaling=True, reflection=False)``. Raises
    ``EvaluationError`` when fewer than 3 points are given or ``source`` collapses to a point.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or len(source) < 3:
        raise EvaluationError(f"alignment needs two equal (n >= 3, 3) point sets, got {source.shape}, {target.shape}")
    source_variance = ((source - source.mean(axis=0)) ** 2).sum() / len(source)
    if source_variance <= 1e-12 * max(1.0, ((target - target.mean(axis=0)) ** 2).sum() / len(target)):
        raise EvaluationError("alignment points are degenerate (all at one place)")
    # the project's batched Procrustes (models/geometry/procrustes.py) in float64, as a single transform
    fitted = procrustes(torch.from_numpy(target)[None], torch.from_numpy(source)[None]).transform
    return SimilarityTransform(float(fitted.scale), fitted.rotation[0].numpy(), fitted.translation[0, 0].numpy())


class DepthAlignment(NamedTuple):
    """offset_z: scalar added to every z of the source; aligned: (n, 3) shifted source."""

    offset_z: float
    aligned: np.ndarray


def depth_align(source: np.ndarray, target: np.ndarray, region: np.ndarray | None = None) -> DepthAlignment:
    """Shift ``source`` (n, 3) along z so its mean depth over ``region`` (indices) matches ``target`` (n, 3).

    The authors' ``depth_aligned_vert_loss`` shifts the ground truth by the mean z difference over the
    face region instead; the resulting per-vertex distances are the same.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    selected = slice(None) if region is None else region
    offset = float(np.mean(target[selected, 2] - source[selected, 2]))
    return DepthAlignment(offset, source + np.array([0.0, 0.0, offset]))


class IcpResult(NamedTuple):
    """transform: rigid transform (scale 1) taking the scan points towards the mesh; points: (n, 3) moved
    scan points; iterations: ICP steps taken."""

    transform: SimilarityTransform
    points: np.ndarray
    iterations: int


def _point_to_plane_step(points: np.ndarray, closest: np.ndarray, normals: np.ndarray) -> SimilarityTransform:
    """Linearised least-squares rigid motion moving (k, 3) ``points`` onto the planes through ``closest``
    with unit ``normals`` (Chen & Medioni 1992); rotation about the points' centroid for conditioning."""
    centroid = points.mean(axis=0)
    design = np.hstack([np.cross(points - centroid, normals), normals])
    residual = np.einsum("ij,ij->i", closest - points, normals)
    solution = np.linalg.lstsq(design, residual, rcond=None)[0]
    rotation = Rotation.from_rotvec(solution[:3]).as_matrix()  # acts on column vectors
    return SimilarityTransform(1.0, rotation.T, centroid + solution[3:] - rotation @ centroid)


def rigid_icp(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, max_iterations: int = ICP_MAX_ITERATIONS, seed: int = 0
) -> IcpResult:
    """Rigid (rotation + translation) point-to-plane ICP of scan ``points`` (n, 3) onto the mesh
    ``vertices`` (m, 3) / ``faces`` (f, 3).

    Correspondences are the exact closest points on the triangles (``trimesh.proximity.closest_point``),
    without weights or outlier rejection, like NoW's scan-to-mesh objective. At most
    ``ICP_MAX_POINTS`` points, drawn with ``seed``, drive it; the result moves all points.
    """
    points = np.asarray(points, dtype=np.float64)
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), process=False)
    subset = points
    if len(points) > ICP_MAX_POINTS:
        subset = points[np.random.default_rng(seed).choice(len(points), ICP_MAX_POINTS, replace=False)]
    total = SimilarityTransform(1.0, np.eye(3), np.zeros(3))
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        moved = total.apply(subset)
        closest, _, triangles = trimesh.proximity.closest_point(mesh, moved)
        step = _point_to_plane_step(moved, closest, mesh.face_normals[triangles])
        total = total.then(step)
        if np.abs(step.apply(moved) - moved).max() < ICP_STEP_TOLERANCE_MM:
            break
    return IcpResult(total, total.apply(points), iterations)
