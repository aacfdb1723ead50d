"""Indices (0-based) of dlib's iBUG 68-point landmarks: mirror partners and facial parts."""

import numpy as np

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
