"""Plausibility checks of landmarks given by the user (a ``<photo>.txt``/``.npy`` file or an array).

A landmark file in the wrong units or of another photo (scaled x300, x0.005, all points equal, far outside the
photo) would otherwise drive the crop and up-sampling sizes to absurd values, or crop an empty part of the photo
and report the mesh of nothing as a success.
"""

import numpy as np

from ..errors import InputError

# Points may lie outside the photo (a face cut by the frame) by at most this fraction of its longer side.
OUTSIDE_MARGIN = 0.25
# The landmarks' bounding box must be at least this long (pixels): a face any detector could see has this.
MIN_EXTENT = 10.0
# ... and at most this multiple of the photo's longer side (a face cannot be much larger than its photo).
MAX_EXTENT_RATIO = 1.5


def check_landmarks(points: np.ndarray, photo_size: tuple[int, int], name: str) -> None:
    """Refuse landmarks that cannot be a face in this photo.

    Args:
        points: (K, 2) finite points, photo pixels (x right, y down).
        photo_size: (width, height) of the photo, pixels.
        name: how the message names the landmarks' source (their file, or the photo).
    Raises:
        InputError: the points are (nearly) all equal, far larger than the photo, or far outside it.
    """
    width, height = photo_size
    longer = max(width, height)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max())
    if extent < MIN_EXTENT:
        raise InputError(
            f"{name}: the landmarks span {extent:.3g} px, too small for a face (at least {MIN_EXTENT:g} px): "
            "are they in this photo's pixels?"
        )
    if extent > MAX_EXTENT_RATIO * longer:
        raise InputError(
            f"{name}: the landmarks span {extent:.4g} px, more than {MAX_EXTENT_RATIO:g}x the {width}x{height} "
            "photo: are they in this photo's pixels?"
        )
    margin = OUTSIDE_MARGIN * longer
    if (low < -margin).any() or high[0] > width - 1 + margin or high[1] > height - 1 + margin:
        raise InputError(
            f"{name}: landmarks lie far outside the {width}x{height} photo (x {low[0]:.4g}..{high[0]:.4g}, "
            f"y {low[1]:.4g}..{high[1]:.4g}): are they in this photo's pixels?"
        )
