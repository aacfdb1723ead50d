"""Error definitions: same-topology vertex errors, the NoW scan-to-mesh protocol, statistics, curves.

All distances are Euclidean, in the ground truth's unit (millimetres for the benchmarks' scans): the
prediction is moved onto the ground truth, not the other way round, so that the unit is kept (ICP
moves the scan points rigidly instead, which leaves every distance unchanged).

Scan landmarks and predicted-mesh landmarks are 7 points in the order of ``LANDMARK_NAMES``.
"""

from typing import NamedTuple

import numpy as np
import trimesh

from eval import EvaluationError
from eval.alignment import (
    ICP_MAX_ITERATIONS,
    IcpResult,
    SimilarityTransform,
    depth_align,
    rigid_icp,
    similarity_procrustes,
)
from models.io.mesh_io import TriangleMesh

# The 7 landmarks the NoW benchmark (Sanyal et al., CVPR 2019; github.com/soubhiksanyal/now_evaluation)
# and the FG2018 / Stirling-ESRC challenge (github.com/patrikhuber/fg2018-competition) annotate, in
# their order; "right" is the subject's right.
LANDMARK_NAMES = (
    "right eye outer corner",
    "right eye inner corner",
    "left eye inner corner",
    "left eye outer corner",
    "nose bottom",
    "right mouth corner",
    "left mouth corner",
)
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER, NOSE_BOTTOM = range(5)

# NoW's crop (now_evaluation, scan2mesh_computations.py, compute_mask): the face centre lies this
# fraction of the way from the nose bottom up to the midpoint of the inner eye corners ...
NOW_CENTRE_FRACTION = 0.3
# ... and scan vertices within this factor times the mean of the outer-eye-corner distance and the nose
# length (nose bottom to that midpoint) of the centre are kept (FG2018's script uses 1.5).
NOW_CROP_RADIUS_FACTOR = 1.4

# Number of thresholds at which a cumulative error curve is sampled.
CURVE_SAMPLES = 801


class ErrorSummary(NamedTuple):
    """Statistics of a set of distances (mm); NoW reports median, mean and std of all distances pooled."""

    points: int
    median: float
    mean: float
    std: float


def summarize(errors: np.ndarray) -> ErrorSummary:
    """(n,) distances -> count, median, mean, population standard deviation."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        return ErrorSummary(0, float("nan"), float("nan"), float("nan"))
    return ErrorSummary(errors.size, float(np.median(errors)), float(errors.mean()), float(errors.std()))


class CumulativeCurve(NamedTuple):
    """thresholds_mm: (k,) increasing; percent: (k,) share of distances <= each threshold, in %."""

    thresholds_mm: np.ndarray
    percent: np.ndarray


def cumulative_curve(errors: np.ndarray, max_mm: float, samples: int = CURVE_SAMPLES) -> CumulativeCurve:
    """Cumulative error curve of (n,) distances on ``samples`` thresholds evenly spaced in [0, max_mm]."""
    errors = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    thresholds = np.linspace(0.0, max_mm, samples)
    counts = np.searchsorted(errors, thresholds, side="right")
    return CumulativeCurve(thresholds, 100.0 * counts / max(errors.size, 1))


def point_to_surface_distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(n, 3) points -> (n,) distance to the closest point on the triangles ``vertices[faces]``.

    trimesh's exact point-to-triangle query (``trimesh.proximity.closest_point``).
    """
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), process=False)
    _, distances, _ = trimesh.proximity.closest_point(mesh, np.asarray(points, dtype=np.float64))
    return np.asarray(distances, dtype=np.float64)


class VertexErrors(NamedTuple):
    """Per-vertex distances (k,) over the region, after similarity alignment and after depth alignment."""

    similarity: np.ndarray
    depth: np.ndarray


def same_topology_errors(
    predicted: np.ndarray, ground_truth: np.ndarray, region: np.ndarray | None = None
) -> VertexErrors:
    """Vertex-to-vertex errors of a prediction (n, 3) against ground truth (n, 3) in correspondence.

    As the authors' ``dense_aligned_vert_loss`` / ``depth_aligned_vert_loss`` (train/losses.py) define
    them: the similarity (scale, rotation, translation, no reflection) or the z shift is fitted over the
    ``region`` vertices (indices; all when None) and the Euclidean distance is taken per region vertex.
    Their mean is the authors' root error; the depth loss there is left squared, here it is the distance.
    Only the similarity errors are scale-free: the depth errors need the prediction in the GT's unit.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    ground_truth = np.asarray(ground_truth, dtype=np.float64)
    if predicted.shape != ground_truth.shape:
        raise EvaluationError(f"vertex counts differ: prediction {predicted.shape}, ground truth {ground_truth.shape}")
    selected = np.arange(len(predicted)) if region is None else np.asarray(region)
    transform = similarity_procrustes(predicted[selected], ground_truth[selected])
    similarity = np.linalg.norm(transform.apply(predicted[selected]) - ground_truth[selected], axis=1)
    depth_aligned = depth_align(predicted, ground_truth, selected).aligned
    depth = np.linalg.norm(depth_aligned[selected] - ground_truth[selected], axis=1)
    return VertexErrors(similarity, depth)


class FaceCrop(NamedTuple):
    """centre: (3,) face centre; radius: crop radius, both in the scan's unit."""

    centre: np.ndarray
    radius: float


def now_face_crop(landmarks: np.ndarray) -> FaceCrop:
    """The NoW benchmark's crop sphere from the scan's 7 landmarks (7, 3) in ``LANDMARK_NAMES`` order."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    nose_bottom = landmarks[NOSE_BOTTOM]
    nose_bridge = (landmarks[RIGHT_EYE_INNER] + landmarks[LEFT_EYE_INNER]) / 2.0
    centre = nose_bottom + NOW_CENTRE_FRACTION * (nose_bridge - nose_bottom)
    outer_eye_distance = np.linalg.norm(landmarks[RIGHT_EYE_OUTER] - landmarks[LEFT_EYE_OUTER])
    nose_length = np.linalg.norm(nose_bridge - nose_bottom)
    return FaceCrop(centre, float(NOW_CROP_RADIUS_FACTOR * (outer_eye_distance + nose_length) / 2.0))


class ScanErrors(NamedTuple):
    """distances: (k,) scan-to-mesh distance per kept scan vertex; kept: (n,) bool crop mask over the
    scan vertices; crop: the crop sphere; landmark_transform: prediction -> scan similarity from the
    landmarks; icp: the rigid refinement (it moves the kept scan points onto the landmark-aligned
    prediction; distances are unchanged by moving the prediction by its inverse instead)."""

    distances: np.ndarray
    kept: np.ndarray
    crop: FaceCrop
    landmark_transform: SimilarityTransform
    icp: IcpResult


def scan_to_mesh_errors(
    scan_points: np.ndarray,
    scan_landmarks: np.ndarray,
    prediction: TriangleMesh,
    prediction_landmarks: np.ndarray,
    icp_iterations: int = ICP_MAX_ITERATIONS,
) -> ScanErrors:
    """The NoW protocol for a scan (n, 3) against a predicted mesh of any topology.

    1. crop the scan to the ``now_face_crop`` sphere of its landmarks;
    2. align the prediction to the scan by the similarity between the two 7-landmark sets;
    3. refine with rigid ICP of the kept scan points onto the predicted surface (NoW's reference
       refinement also lets the scale float; here the scale stays the landmarks' one);
    4. measure each kept scan vertex's distance to the predicted triangles.
    """
    scan_points = np.asarray(scan_points, dtype=np.float64)
    crop = now_face_crop(scan_landmarks)
    kept = np.linalg.norm(scan_points - crop.centre, axis=1) <= crop.radius
    if not kept.any():
        raise EvaluationError(
            f"no scan vertex lies within the crop radius {crop.radius:.3g} of the face centre "
            "(are the landmarks in the scan's frame and order?)"
        )
    transform = similarity_procrustes(prediction_landmarks, scan_landmarks)
    vertices = transform.apply(prediction.vertices)
    icp = rigid_icp(scan_points[kept], vertices, prediction.faces, icp_iterations)
    distances = point_to_surface_distances(icp.points, vertices, prediction.faces)
    return ScanErrors(distances, kept, crop, transform, icp)
