"""The build's public-domain photos and their detections (MediaPipe face mesh, dlib iBUG landmarks).

Two sets of photos:

* **landmark photos** (:func:`landmark_photos`): Grace Hopper's official portrait (US Navy, public domain; shipped
  by matplotlib as ``grace_hopper.jpg``) and scikit-image's astronaut (Eileen Collins, NASA, public domain). dlib's
  iBUG landmarks on them place the model's 68 landmarks; Hopper's face mesh gives the topology and mirror map.
* **mean-shape photos** (:func:`mean_shape_photos`): those two, scikit-image's cameraman and the faces of
  scikit-image's ``lfw_subset`` (the first 100 of its 200 images are 25x25 grey faces from Labeled Faces in the
  Wild, up-sampled here to :data:`LFW_SIDE` pixels). Only MediaPipe's point positions of these photos enter the
  model (their average shape); no pixel does.
"""

from typing import NamedTuple

import numpy as np
from PIL import Image

from models.face_model.landmark_layout import NUM_LANDMARKS
from models.face_model.mediapipe_layout import OUTER_EYE_CORNERS
from models.io.landmark_detectors import MediaPipeLandmarks, dlib_model_file, import_face_mesh

GEOMETRY_PHOTO = "grace_hopper.jpg"
# The first LFW_FACES images of skimage.data.lfw_subset() are faces (the rest are not), up-sampled (bicubic) to a
# LFW_SIDE-pixel square so that MediaPipe's face detector sees them at a usual size.
LFW_FACES = 100
LFW_SIDE = 256
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class PhotoMesh(NamedTuple):
    """MediaPipe's face mesh of one photo, in image pixels (x right, y down).

    mesh: (468, 3) points (z: depth away from the camera, in the same pixel scale as x).
    mirrored_mesh: (468, 3) the points detected on the mirrored photo, mapped back (x -> width - 1 - x); point i
    of it lies where point mirror(i) of ``mesh`` does.
    """

    mesh: np.ndarray
    mirrored_mesh: np.ndarray


class LandmarkPhoto(NamedTuple):
    """A landmark photo's face mesh and its dlib iBUG landmarks (68, 2)."""

    face: PhotoMesh
    ibug: np.ndarray


def _hopper() -> np.ndarray:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data(GEOMETRY_PHOTO, asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


def landmark_photos() -> dict[str, np.ndarray]:
    """The two landmark photos as (H, W, 3) uint8 RGB arrays, Hopper first."""
    import skimage.data

    return {"hopper": _hopper(), "astronaut": np.asarray(skimage.data.astronaut())}


def mean_shape_photos() -> dict[str, np.ndarray]:
    """Every mean-shape photo as (H, W, 3) uint8 RGB arrays, in a fixed order (Hopper first)."""
    import skimage.data

    photos = landmark_photos()
    photos["cameraman"] = np.repeat(np.asarray(skimage.data.camera())[..., None], 3, axis=2)
    faces = skimage.data.lfw_subset()[:LFW_FACES]
    for index, face in enumerate(faces):
        grey = Image.fromarray(np.round(np.clip(face, 0.0, 1.0) * 255).astype(np.uint8))
        resized = np.asarray(grey.resize((LFW_SIDE, LFW_SIDE), Image.Resampling.BICUBIC))
        photos[f"lfw{index:03d}"] = np.repeat(resized[..., None], 3, axis=2)
    return photos


class MeshDetector:
    """MediaPipe's face mesh of a photo and of its mirror image (one MediaPipe graph for the whole build)."""

    def __init__(self) -> None:
        self._detector = MediaPipeLandmarks()

    def __call__(self, image: np.ndarray) -> PhotoMesh | None:
        """The :class:`PhotoMesh` of ``image``, or None when MediaPipe misses the face in it or its mirror image."""
        mesh = self._detector.mesh(image)
        mirrored = self._detector.mesh(np.ascontiguousarray(image[:, ::-1]))
        if mesh is None or mirrored is None:
            return None
        mirrored[:, 0] = image.shape[1] - 1 - mirrored[:, 0]
        return PhotoMesh(mesh, mirrored)


def dlib_landmarks(image: np.ndarray, near: np.ndarray) -> np.ndarray:
    """(68, 2) dlib's iBUG landmarks of the face whose box contains the image point ``near`` (x, y)."""
    import dlib

    faces = list(dlib.get_frontal_face_detector()(image, 1))
    inside = [f for f in faces if f.left() <= near[0] <= f.right() and f.top() <= near[1] <= f.bottom()]
    if not inside:
        raise RuntimeError("dlib found no face where MediaPipe found one")
    shape = dlib.shape_predictor(str(dlib_model_file(SHAPE_PREDICTOR_FILE)))(image, inside[0])
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(NUM_LANDMARKS)], dtype=np.float64)


def detect_landmark_photo(detector: MeshDetector, image: np.ndarray) -> LandmarkPhoto:
    """MediaPipe on the photo and its mirror image, and dlib on the photo."""
    face = detector(image)
    if face is None:
        raise RuntimeError("MediaPipe found no face in a landmark photo")
    return LandmarkPhoto(face, dlib_landmarks(image, face.mesh[:, :2].mean(0)))


def eye_distance(mesh: np.ndarray) -> float:
    """Distance between a face mesh's outer eye corners (its units)."""
    return float(np.linalg.norm(mesh[OUTER_EYE_CORNERS[0]] - mesh[OUTER_EYE_CORNERS[1]]))


def mediapipe_edges() -> np.ndarray:
    """(E, 2) edges of MediaPipe's face-mesh tessellation."""
    import_face_mesh()
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return np.array(sorted(tuple(sorted(edge)) for edge in FACEMESH_TESSELATION), dtype=np.int64)


def image_to_model_axes(points: np.ndarray) -> np.ndarray:
    """Image axes (x right, y down, z away from the camera) -> model axes (x right, y up, z towards it)."""
    return points * (1.0, -1.0, -1.0)
