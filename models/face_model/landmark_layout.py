"""The iBUG 68-point landmark layout (0-based indices), as dlib, face-alignment and the BFM's ``kpt_ind`` use it.

Groups: jaw 0-16 (chin 8), brows 17-26, nose 27-35 (tip bottom 30), eyes 36-47 (outer corners 36 and 45,
inner 39 and 42), mouth 48-67. "Left" and "right" are the image's (the person's right eye is 36-41).
"""

import numpy as np

NUM_LANDMARKS = 68

# The authors' landmark term (NRMVSOptimization.landmark_loss, train/losses.land3d_loss): the jaw contour
# except the chin region (0-5, 11-16) may slide to the closest visible vertex when its own vertex faces away
# ("dynamic contour landmarks"); every other landmark always uses its fixed vertex.
CONTOUR_LANDMARKS = (*range(0, 6), *range(11, 17))
FIXED_LANDMARKS = tuple(k for k in range(NUM_LANDMARKS) if k not in CONTOUR_LANDMARKS)

# land3d_loss weights nose and eyes 1 and every other landmark (jaw, brows, mouth) 10.
NOSE_EYE_LANDMARKS = tuple(range(27, 48))
OTHER_LANDMARKS = (*range(0, 27), *range(48, 68))

JAW = tuple(range(0, 17))
LOWER_JAW = tuple(range(5, 12))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
EYES = tuple(range(36, 48))
MOUTH = tuple(range(48, 68))

NOSE_TIP_BOTTOM = 30
LEFT_EYE_OUTER, LEFT_EYE_INNER = 36, 39
RIGHT_EYE_INNER, RIGHT_EYE_OUTER = 42, 45
OUTER_EYE_CORNERS = (LEFT_EYE_OUTER, RIGHT_EYE_OUTER)

# The mirror partner of each landmark (itself on the midline).
MIRROR = np.array(
    [16 - i for i in range(17)]
    + [26, 25, 24, 23, 22, 21, 20, 19, 18, 17]
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)
