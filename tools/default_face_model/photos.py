"""The build's public-domain photos and their detections (MediaPipe face mesh, dlib iBUG landmarks)."""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from models.face_model.morphable_model import NUM_LANDMARKS

# Photos: matplotlib's sample portrait (geometry and landmarks) and scikit-image's astronaut (landmarks only;
# her open, smiling mouth makes her a poor neutral mean).
GEOMETRY_PHOTO = "grace_hopper.jpg"


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
