"""The demo's preprocessing of one photo, as the authors' ``load_img_2_tensors`` does it.

1. Read the photo as RGB (EXIF orientation applied; grey, palette, alpha and 16-bit photos converted).
2. Reflect-pad it by :data:`PAD_WIDTH` pixels (OpenCV's ``BORDER_DEFAULT``, i.e. reflect-101 = numpy's
   ``mode="reflect"``).
3. Find the face box (S3FD convention, see :mod:`models.io.landmark_detectors`) and build the square crop box:
   centre = box centre moved down by :data:`CROP_VERTICAL_SHIFT` box heights, side =
   :data:`CROP_SCALE` x the box's longer side, both truncated to integers as the authors do.
   The authors skip faces whose crop side is below :data:`MIN_CROP_SIDE`; here the photo is up-sampled
   instead (bilinear) and the face detected again.
4. Crop with PIL semantics (outside the padded photo is black) and resize to 256x256 bilinearly with
   half-pixel centres and no anti-aliasing (``torch.nn.functional.interpolate``, the arithmetic of the
   authors' ``cv2.resize`` default; colours are rounded to integers as cv2's uint8 output is).
5. Detect the landmarks on the crop (68 iBUG points, or MediaPipe's 468; where a dense detector finds no face,
   its fallback's 68 points).

Coordinates are pixels with x right, y down, pixel centres at integers. :class:`CropGeometry` records the
crop so that crop pixels (and meshes) can be mapped back onto the original photo.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..face_model.landmark_layout import NUM_LANDMARKS
from ..face_model.mediapipe_layout import NUM_MEDIAPIPE_POINTS
from ..geometry.camera import IMAGE_SIZE
from .landmark_checks import check_landmarks
from .landmark_detectors import FaceBox, LandmarkDetector, detector_box_from_landmarks, ibug_like_points

# Authors' load_img_2_tensors: copyMakeBorder width, crop scale, vertical shift (in box heights) and the
# smallest crop side they accept (``if l < 200: continue``).
PAD_WIDTH = 50
CROP_SCALE = 1.2
CROP_VERTICAL_SHIFT = 0.06
MIN_CROP_SIDE = 200
# Extra up-sampling on top of MIN_CROP_SIDE / side, so that a slightly smaller re-detection still passes.
UPSCALE_MARGIN = 1.1
# Bounds of that up-sampling: the factor (a face crop of at least MIN_CROP_SIDE * UPSCALE_MARGIN / MAX_UPSCALE
# = 27.5 px), and the up-sampled photo's size (pixels; about 0.5 GB while it is resized in float32).
MAX_UPSCALE = 8.0
MAX_UPSCALED_PIXELS = 40_000_000

# torchvision's ImageNet normalisation used by the authors' demo.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LANDMARK_SUFFIXES = (".txt", ".npy")
# Point counts a landmark file or array may hold: iBUG's 68, or MediaPipe's 468 dense points.
LANDMARK_COUNTS = (NUM_LANDMARKS, NUM_MEDIAPIPE_POINTS)
# Largest value of a 16-bit channel, mapped to 255.
UINT16_MAX = 65535
# Integer and floating-point single-channel PIL modes (16/32-bit integer, 32-bit float).
INTEGER_GREY_MODES = ("I", "I;16", "I;16B", "I;16L")
FLOAT_GREY_MODE = "F"

log = logging.getLogger(__name__)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def load_photo(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file, upright according to its EXIF orientation."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: not a readable image ({first_line(error)})") from None
    if image.mode in (*INTEGER_GREY_MODES, FLOAT_GREY_MODE):
        return _grey_to_rgb(np.asarray(image, dtype=np.float64), image.mode == FLOAT_GREY_MODE, path)
    return np.asarray(image.convert("RGB"))


def _grey_to_rgb(values: np.ndarray, floating: bool, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of a single-channel photo: floats in [0, 1] (or [0, 255]) and 16-bit values to 0..255."""
    if not np.isfinite(values).all():
        raise InputError(f"{path}: not a usable image (it holds non-finite pixel values)")
    peak = values.max(initial=0.0)
    if floating and peak <= 1.0:
        scale = 255.0
    else:
        scale = 255.0 / UINT16_MAX if peak > 255 else 1.0
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


def reflect_pad(image: np.ndarray, width: int = PAD_WIDTH) -> np.ndarray:
    """Pad (H, W, 3) by ``width`` pixels on each side with reflect-101 (cv2.BORDER_DEFAULT); needs sides > width."""
    return np.pad(image, ((width, width), (width, width), (0, 0)), mode="reflect")


def crop_side(box: FaceBox) -> float:
    """The authors' crop side ``l = CROP_SCALE * max(width, height)`` of a face box, pixels."""
    return CROP_SCALE * max(box.width, box.height)


def crop_box_from_face_box(box: FaceBox) -> tuple[int, int, int, int]:
    """The authors' square crop box (left, top, right, bottom), integers, for PIL's ``crop``."""
    centre_y = int(box.bottom - box.height / 2.0 + box.height * CROP_VERTICAL_SHIFT)
    centre_x = int(box.right - box.width / 2.0)
    half = int(crop_side(box) / 2)
    return centre_x - half, centre_y - half, centre_x + half, centre_y + half


def crop_with_black_border(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``PIL.Image.crop`` of (H, W, C): the box's pixels, black where the box leaves the image."""
    left, top, right, bottom = box
    out = np.zeros((bottom - top, right - left, image.shape[2]), dtype=image.dtype)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(right, image.shape[1]), min(bottom, image.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return out


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (H, W, C) uint8 with half-pixel centres and no anti-aliasing, rounded to uint8."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass(frozen=True)
class CropGeometry:
    """Where the 256x256 crop comes from in the original photo.

    photo_size: (width, height) of the photo as read (EXIF-rotated). upscaled_size: (width, height)
    after the optional up-sampling (equal to photo_size when none). pad: reflect padding, pixels.
    crop_box: (left, top, right, bottom) in the padded, up-sampled photo (integers; right - left =
    bottom - top). size: side of the crop after resizing.
    """

    photo_size: tuple[int, int]
    upscaled_size: tuple[int, int]
    pad: int
    crop_box: tuple[int, int, int, int]
    size: int = IMAGE_SIZE

    @property
    def upscale(self) -> tuple[float, float]:
        """(x, y) factors photo -> up-sampled photo."""
        return (self.upscaled_size[0] / self.photo_size[0], self.upscaled_size[1] / self.photo_size[1])

    @property
    def side(self) -> int:
        return self.crop_box[2] - self.crop_box[0]

    def crop_to_photo(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixels -> original photo pixels (inverse of :meth:`photo_to_crop`)."""
        points = np.asarray(points, dtype=np.float64)
        origin = np.array(self.crop_box[:2], dtype=np.float64) - self.pad
        upscaled = origin + (points + 0.5) * (self.side / self.size) - 0.5
        return (upscaled + 0.5) / np.array(self.upscale) - 0.5

    def photo_to_crop(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) original photo pixels -> crop pixels."""
        points = np.asarray(points, dtype=np.float64)
        upscaled = (points + 0.5) * np.array(self.upscale) - 0.5
        origin = np.array(self.crop_box[:2], dtype=np.float64) - self.pad
        return (upscaled - origin + 0.5) * (self.size / self.side) - 0.5

    def camera_to_photo(self, vertices: np.ndarray) -> np.ndarray:
        """(n, 3) mesh vertices (crop camera space: pixels, x right, y up, origin at the centre) -> (n, 3)
        in the photo: x right and y down in photo pixels (face3d's ``to_image`` then :meth:`crop_to_photo`),
        z scaled to photo pixels (larger = closer to the camera)."""
        vertices = np.asarray(vertices, dtype=np.float64)
        crop_points = np.stack([vertices[:, 0] + self.size / 2, self.size / 2 - 1.0 - vertices[:, 1]], axis=1)
        z_scale = self.side / self.size / float(np.mean(self.upscale))
        return np.concatenate([self.crop_to_photo(crop_points), vertices[:, 2:3] * z_scale], axis=1)

    def crop_box_in_photo(self) -> tuple[float, float, float, float]:
        """The crop box (left, top, right, bottom) in original photo pixels, as edges (PIL box convention);
        it may reach outside the photo."""
        left, top, right, bottom = (value - self.pad for value in self.crop_box)
        scale_x, scale_y = self.upscale
        return left / scale_x, top / scale_y, right / scale_x, bottom / scale_y

    def as_dict(self) -> dict:
        """JSON-ready description."""
        return {
            "photo_size": list(self.photo_size),
            "upscaled_size": list(self.upscaled_size),
            "pad": self.pad,
            "crop_box_padded": list(self.crop_box),
            "crop_box_photo": [round(v, 3) for v in self.crop_box_in_photo()],
            "crop_size": self.size,
        }


class PreparedView(NamedTuple):
    """One preprocessed view.

    path: the photo file (None for a photo given as an array). crop: (256, 256, 3) uint8 RGB.
    landmarks: (K, 2) float64 crop pixels (K = 68 iBUG points or 468 MediaPipe points). geometry: the crop's
    :class:`CropGeometry`. face_box: the face box in the padded photo. landmark_source: the backend's name,
    "file" for landmarks from a file beside the photo, "given" for landmarks passed in. landmark_note: why the
    landmarks are not the requested backend's (a fallback), or None. face_note: which face was taken where the
    photo shows several (:func:`models.io.face_identity.choose_faces`), else None.
    """

    path: Path | None
    crop: np.ndarray
    landmarks: np.ndarray
    geometry: CropGeometry
    face_box: FaceBox
    landmark_source: str
    landmark_note: str | None = None
    face_note: str | None = None


class NetworkInputs(NamedTuple):
    """Tensors of V views: images (V, 3, 256, 256) ImageNet-normalised, raw_images (same) in [0, 1],
    landmarks (V, K, 2) crop pixels (K = 68 or 468, the same for every view)."""

    images: torch.Tensor
    raw_images: torch.Tensor
    landmarks: torch.Tensor


def landmark_file(photo: Path) -> Path | None:
    """User-supplied landmarks beside a photo: ``<stem>.txt|.npy`` or ``<name>.txt|.npy``, if present."""
    for base in (photo.with_suffix(""), photo):
        for suffix in LANDMARK_SUFFIXES:
            candidate = base.parent / (base.name + suffix)
            if candidate.is_file():
                return candidate
    return None


def read_landmark_file(path: Path) -> np.ndarray:
    """(K, 2) float64 points (photo pixels) from a text file (K rows "x y") or a ``.npy`` array.

    K is 68 (iBUG layout) or 468 (MediaPipe's face mesh; rows "x y z" are accepted and the depth dropped).
    """
    try:
        if path.suffix == ".npy":
            points = np.load(path, allow_pickle=False)
        else:
            rows = [line.replace(",", " ").split() for line in path.read_text(encoding="utf-8").splitlines()]
            points = np.array([[float(value) for value in row] for row in rows if row])
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable landmark file ({first_line(error)})") from None
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2 and points.shape[0] == NUM_MEDIAPIPE_POINTS and points.shape[1] == 3:
        points = points[:, :2]
    if points.ndim != 2 or points.shape[0] not in LANDMARK_COUNTS or points.shape[1] != 2:
        raise InputError(
            f"{path}: expected {NUM_LANDMARKS} (iBUG) or {NUM_MEDIAPIPE_POINTS} (MediaPipe) rows of 2 coordinates, "
            f"got shape {points.shape}"
        )
    if not np.isfinite(points).all():
        raise InputError(f"{path}: the landmarks must be finite numbers (found NaN or infinity)")
    return points


def box_from_points(points: np.ndarray) -> FaceBox:
    """The S3FD-equivalent face box of 68 iBUG or 468 MediaPipe points (the latter through the MediaPipe points
    nearest to the iBUG landmarks)."""
    return detector_box_from_landmarks(points if len(points) == NUM_LANDMARKS else ibug_like_points(points))


def _scaled_box(box: FaceBox, scale: np.ndarray) -> FaceBox:
    """A box in the padded photo mapped into the padded photo up-sampled by (x, y) ``scale``."""
    (left, top), (right, bottom) = [
        (np.array(corner) - PAD_WIDTH + 0.5) * scale - 0.5 + PAD_WIDTH
        for corner in ((box.left, box.top), (box.right, box.bottom))
    ]
    return FaceBox(float(left), float(top), float(right), float(bottom))


def _upscale(photo: np.ndarray, factor: float) -> np.ndarray:
    height, width = photo.shape[:2]
    return resize_bilinear(photo, max(1, round(height * factor)), max(1, round(width * factor)))


def _face_box(
    photo: np.ndarray,
    detector: LandmarkDetector,
    user_points: np.ndarray | None,
    name: str,
    near: FaceBox | None = None,
) -> tuple[np.ndarray, FaceBox]:
    """Pad ``photo`` and find the face box in it: from the user's landmarks when given, else the detected face
    that overlaps ``near`` most (a face chosen earlier, in the padded photo), else the largest face."""
    padded = reflect_pad(photo)
    if user_points is not None:
        return padded, box_from_points(user_points + PAD_WIDTH)
    if near is not None:
        boxes = [face.box for face in detector.faces(padded)]
        best = max(boxes, key=lambda box: overlap(box, near), default=None)
        return padded, best if best is not None and overlap(best, near) > 0 else near
    box = detector.face_box(padded)
    if box is None:
        raise InputError(f"{name}: no face found")
    return padded, box


def overlap(first: FaceBox, second: FaceBox) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    width = min(first.right, second.right) - max(first.left, second.left)
    height = min(first.bottom, second.bottom) - max(first.top, second.top)
    if width <= 0 or height <= 0:
        return 0.0
    shared = width * height
    return shared / (first.area + second.area - shared)


def _upscale_factor(box: FaceBox, photo_size: tuple[int, int], name: str) -> float:
    """The up-sampling that brings the face's crop to MIN_CROP_SIDE, within the bounds (MAX_UPSCALE, ...)."""
    side = crop_side(box)
    factor = MIN_CROP_SIDE / side * UPSCALE_MARGIN
    width, height = photo_size
    pixels = width * height * factor**2
    if factor > MAX_UPSCALE or pixels > MAX_UPSCALED_PIXELS:
        raise InputError(
            f"{name}: the face is too small for its {width}x{height} photo (a {side:.0f} px crop would need "
            f"up-sampling x{factor:.3g} to {pixels / 1e6:.0f} MP; at most x{MAX_UPSCALE:g} and "
            f"{MAX_UPSCALED_PIXELS / 1e6:.0f} MP): use a closer or cropped photo"
        )
    return factor


def prepare_view(path: Path, detector: LandmarkDetector) -> PreparedView:
    """Read one photo file and prepare it (:func:`prepare_photo`).

    A ``<photo>.txt``/``.npy`` file beside the photo with 68 or 468 points in photo pixels replaces detection.

    Raises:
        InputError: unreadable photo or landmark file, implausible landmarks, no face found.
    """
    photo = load_photo(path)
    points_file = landmark_file(path)
    if points_file is None:
        return prepare_photo(photo, detector, name=str(path), path=path)
    points = read_landmark_file(points_file)
    return prepare_photo(
        photo, detector, points, str(path), path, landmark_source="file", landmark_name=str(points_file)
    )


def check_photo(photo: np.ndarray, name: str) -> np.ndarray:
    """``photo`` as an array, refused unless it is an (H, W, 3) uint8 RGB image with sides above PAD_WIDTH."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise InputError(f"{name}: expected an (H, W, 3) uint8 RGB image, got {photo.dtype} {photo.shape}")
    height, width = photo.shape[:2]
    if min(height, width) <= PAD_WIDTH:
        raise InputError(f"{name}: a {width}x{height} photo is too small (more than {PAD_WIDTH} pixels a side needed)")
    return photo


def prepare_photo(
    photo: np.ndarray,
    detector: LandmarkDetector,
    landmarks: np.ndarray | None = None,
    name: str = "photo",
    path: Path | None = None,
    landmark_source: str = "given",
    face: FaceBox | None = None,
    landmark_name: str | None = None,
) -> PreparedView:
    """Pad, crop and resize one photo and find its landmarks on the crop.

    Args:
        photo: (H, W, 3) uint8 RGB.
        detector: finds the face box and the landmarks (not used when ``landmarks`` are given); where it finds
            no face in the crop, its ``fallback`` detector's landmarks are used, with a note.
        landmarks: (68, 2) or (468, 2) landmarks in photo pixels (x right, y down), replacing detection.
        name: how messages name the photo. path: recorded in the result (None for an array).
        landmark_source: recorded as the landmarks' source when ``landmarks`` are given.
        landmark_name: how messages about the landmarks name them (their file; default ``name``).
        face: the face to crop (its box in the padded photo, e.g. from
            :func:`models.io.face_identity.choose_faces`), instead of the largest one the detector finds.
    Raises:
        InputError: a photo too small or of the wrong shape, implausible landmarks, a face too small to
            up-sample within bounds, no face found.
    """
    photo = check_photo(photo, name)
    height, width = photo.shape[:2]
    user_points = None if landmarks is None else np.asarray(landmarks, dtype=np.float64)
    if user_points is not None and (
        user_points.ndim != 2
        or user_points.shape[0] not in LANDMARK_COUNTS
        or user_points.shape[1] != 2
        or not np.isfinite(user_points).all()
    ):
        raise InputError(f"{name}: expected {NUM_LANDMARKS} or {NUM_MEDIAPIPE_POINTS} finite landmarks of 2 values")
    if user_points is not None:
        check_landmarks(user_points, (width, height), landmark_name or name)
    padded, box = _face_box(photo, detector, user_points, name) if face is None else (reflect_pad(photo), face)
    upscaled = photo
    if crop_side(box) < MIN_CROP_SIDE:
        factor = _upscale_factor(box, (width, height), name)
        upscaled = _upscale(photo, factor)
        scale = np.array([upscaled.shape[1] / width, upscaled.shape[0] / height])
        scaled_points = None if user_points is None else (user_points + 0.5) * scale - 0.5
        log.info(
            "%s: face crop of %.0f px is below the authors' %d px; photo up-sampled x%.2f to %dx%d",
            name,
            crop_side(box),
            MIN_CROP_SIDE,
            factor,
            upscaled.shape[1],
            upscaled.shape[0],
        )
        near = None if face is None else _scaled_box(face, scale)
        padded, box = _face_box(upscaled, detector, scaled_points, name, near)
    crop_box = crop_box_from_face_box(box)
    geometry = CropGeometry((width, height), (upscaled.shape[1], upscaled.shape[0]), PAD_WIDTH, crop_box)
    crop = resize_bilinear(crop_with_black_border(padded, crop_box), IMAGE_SIZE, IMAGE_SIZE)
    if user_points is not None:
        return PreparedView(path, crop, geometry.photo_to_crop(user_points), geometry, box, landmark_source)
    points = detector.landmarks(crop)
    if points is not None:
        return PreparedView(path, crop, points, geometry, box, detector.name)
    fallback = detector.fallback
    points = None if fallback is None else fallback.landmarks(crop)
    tried = detector.name if fallback is None else f"{detector.name} or {fallback.name}"
    if points is None:
        raise InputError(f"{name}: no face found by {tried} in its {IMAGE_SIZE}x{IMAGE_SIZE} crop")
    note = f"{detector.name} found no face in the crop; {fallback.name}'s {len(points)} landmarks used"
    log.info("%s: %s", name, note)
    return PreparedView(path, crop, points, geometry, box, fallback.name, note)


def network_inputs(views: Sequence[PreparedView], device: torch.device | str = "cpu") -> NetworkInputs:
    """Stack the views into the tensors the reconstruction takes."""
    crops = np.stack([view.crop for view in views]).astype(np.float32)
    raw = torch.from_numpy(crops).permute(0, 3, 1, 2).div(255.0).to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    landmarks = torch.from_numpy(np.stack([view.landmarks for view in views])).to(device=device, dtype=torch.float32)
    return NetworkInputs(images=(raw - mean) / std, raw_images=raw, landmarks=landmarks)
