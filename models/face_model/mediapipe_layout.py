"""MediaPipe's 468-point face-mesh layout (0-based indices), as its ``solutions.face_mesh`` returns the points.

The index groups are MediaPipe's own (``mediapipe/python/solutions/face_mesh_connections.py``: ``FACEMESH_FACE_OVAL``,
``FACEMESH_LEFT_EYE`` / ``FACEMESH_RIGHT_EYE``, the inner ring of ``FACEMESH_LIPS``), written out as closed
polygons so that the project does not need MediaPipe to use them. "Right" is the person's right (image left):
point 33 is the person's right outer eye corner, 263 the left one.
"""

# Name under which a morphable model stores its correspondence to this layout (models/face_model/dense_landmarks.py).
MEDIAPIPE_LAYOUT = "mediapipe468"
NUM_MEDIAPIPE_POINTS = 468

# The face outline, in order round the face (FACEMESH_FACE_OVAL). Its points lie on the cheeks' and jaw's
# silhouette, where a detector is least sure along the outline (about twice the scatter of the inner points).
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

# Eyelid contours (lower lid from the outer to the inner corner, then the upper lid back).
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)

# Inner lip contour (the mouth opening), round the mouth.
INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)

# Outer eye corners (the person's right, then left).
OUTER_EYE_CORNERS = (33, 263)

# The MediaPipe point nearest to each iBUG-68 landmark on the default model's mean face (by 3D distance;
# tests/face_model/test_dense_landmarks.py re-derives it). Used to turn a MediaPipe detection into an
# iBUG-like point set, e.g. for the S3FD-equivalent face box of models/io/landmark_detectors.py.
IBUG_FROM_MEDIAPIPE = (
    127, 137, 147, 138, 172, 150, 149, 148, 152, 377, 378, 379, 397, 367, 376, 366, 356,
    124, 63, 52, 65, 55, 285, 295, 282, 293, 353,
    168, 197, 5, 4, 75, 20, 2, 250, 305,
    163, 159, 158, 155, 153, 144, 382, 385, 386, 390, 373, 380,
    76, 74, 72, 11, 302, 304, 306, 321, 314, 17, 84, 91, 78, 38, 12, 268, 308, 316, 15, 86,
)  # fmt: skip
