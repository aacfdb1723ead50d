"""User-given landmarks that cannot be a face in their photo are refused with one line naming their source."""

import numpy as np
import pytest

from models.errors import InputError
from models.io.landmark_checks import MIN_EXTENT, check_landmarks

PHOTO = (640, 480)


def face_points() -> np.ndarray:
    """68 points on an ellipse of 120 x 160 px around the photo's centre."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([320 + 60 * np.cos(angles), 240 + 80 * np.sin(angles)], axis=1)


def test_a_face_and_a_face_cut_by_the_frame_pass():
    check_landmarks(face_points(), PHOTO, "a.txt")
    check_landmarks(face_points() + [330, 0], PHOTO, "a.txt")  # the right side leaves the photo by 70 px


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (face_points() * 300, "more than 1.5x the 640x480 photo"),
        (face_points() * 0.005, "too small for a face"),
        (np.full((68, 2), 100.0), "span 0 px, too small for a face"),
        (face_points() + [5000, -5000], "far outside the 640x480 photo"),
        (face_points() - [520, 0], "far outside the 640x480 photo"),
    ],
)
def test_implausible_landmarks_are_refused(points, message):
    with pytest.raises(InputError) as info:
        check_landmarks(points, PHOTO, "photos/a.txt")
    text = str(info.value)
    assert text.startswith("photos/a.txt: ") and message in text and "\n" not in text


def test_the_smallest_extent_is_the_bound():
    points = face_points()
    points = (points - points.min(axis=0)) / np.ptp(points, axis=0).max() * MIN_EXTENT + 300
    check_landmarks(points, PHOTO, "a.txt")
    with pytest.raises(InputError):
        check_landmarks((points - 300) * 0.99 + 300, PHOTO, "a.txt")
