"""A synthetic, face-like morphable model of any resolution, for tests and benchmarks.

A latitude/longitude grid on an ellipsoid facing +z (x right, y up) in the BFM's units, with triangles
clockwise seen from the camera (as the BFM's), 68 landmarks snapped to plausible face positions and
random identity/expression bases. A 231 x 231 grid has the BFM's size (53,361 vertices, 105,800
triangles). It is *not* a face model of anyone: only a stand-in with the right shapes and conventions.
"""

import numpy as np

from .morphable_model import NUM_EXPRESSION_COMPONENTS, NUM_SHAPE_COMPONENTS, MorphableModel

# 68 iBUG landmark positions on a unit face (x right, y up), rough but in the right places.
_JAW = [(-0.9 + 1.8 * i / 16, -0.2 - 0.7 * np.sin(np.pi * i / 16)) for i in range(17)]
_BROWS = [(-0.7 + 0.12 * i, 0.45) for i in range(5)] + [(0.22 + 0.12 * i, 0.45) for i in range(5)]
_NOSE = [(0.0, 0.3 - 0.1 * i) for i in range(4)] + [(-0.15 + 0.075 * i, -0.12) for i in range(5)]
_EYES = [(-0.55 + 0.08 * i, 0.3) for i in range(6)] + [(0.15 + 0.08 * i, 0.3) for i in range(6)]
_MOUTH = [(-0.35 + 0.7 * i / 11, -0.45 + 0.05 * np.sin(np.pi * i / 11)) for i in range(12)]
_MOUTH += [(-0.2 + 0.4 * i / 7, -0.45) for i in range(8)]
LANDMARKS_2D = np.array(_JAW + _BROWS + _NOSE + _EYES + _MOUTH)
# Eye corners (36, 39, 42, 45) and nose bottom (30) as the face-region rule expects them.
LANDMARKS_2D[36], LANDMARKS_2D[39], LANDMARKS_2D[42], LANDMARKS_2D[45] = (
    (-0.6, 0.3),
    (-0.2, 0.3),
    (0.2, 0.3),
    (0.6, 0.3),
)
LANDMARKS_2D[30] = (0.0, -0.05)

# Per-component standard deviations (model units, micrometres like the BFM): a few millimetres of
# smooth variation for the first identity / expression components, decreasing linearly.
SHAPE_STD_RANGE = (4e3, 1e2)
EXPRESSION_STD_RANGE = (2e3, 5e1)

# Units like the BFM's: a face ~1.5e5 wide, centred near z = 7.5e4.
FACE_HALF_WIDTH = 7.5e4
FACE_DEPTH_CENTRE = 7.5e4


def _smooth_basis(lat: np.ndarray, lon: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3n) float32 smooth displacement fields of unit RMS: random low-frequency waves over the grid."""
    frequency = rng.uniform(0.3, 2.5, size=(count, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(count, 3, 2))
    waves = np.sin(frequency[..., 0, None] * lat + phase[..., 0, None])
    waves = waves * np.cos(frequency[..., 1, None] * lon + phase[..., 1, None])  # (count, 3, n)
    waves /= np.sqrt(np.mean(np.square(waves), axis=(1, 2), keepdims=True))
    return np.ascontiguousarray(waves.transpose(0, 2, 1).reshape(count, -1), dtype=np.float32)


def make_grid_face(rows: int = 16, cols: int = 18, exp_dim: int = 70, seed: int = 0) -> dict:
    """Arrays of a tiny model: vertices (n, 3), triangles (ntri, 3) 0-based, landmarks (68,), uv (n, 2), bases."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(-1.2, 1.2, rows)
    lon = np.linspace(-1.6, 1.6, cols)
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    x = np.sin(lon_grid) * np.cos(lat_grid)
    y = np.sin(lat_grid)
    z = np.cos(lon_grid) * np.cos(lat_grid)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3) * FACE_HALF_WIDTH + (0, 0, FACE_DEPTH_CENTRE - FACE_HALF_WIDTH)
    index = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    # Clockwise seen from +z: (a, c, b) and (b, c, d) with rows going up in y.
    triangles = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    front = vertices[:, 2] > FACE_DEPTH_CENTRE - FACE_HALF_WIDTH
    candidates = np.flatnonzero(front)
    landmarks = np.empty(68, dtype=np.int64)
    for k, (lx, ly) in enumerate(LANDMARKS_2D * FACE_HALF_WIDTH):
        distance = np.hypot(vertices[candidates, 0] - lx, vertices[candidates, 1] - ly)
        landmarks[k] = candidates[np.argmin(distance)]
    n = vertices.shape[0]
    uv = np.stack(
        [(lon_grid.ravel() - lon[0]) / (lon[-1] - lon[0]), (lat_grid.ravel() - lat[0]) / (lat[-1] - lat[0])], 1
    )
    return {
        "vertices": vertices,
        "triangles": triangles,
        "landmarks": landmarks,
        "uv": uv,
        "shape_basis": _smooth_basis(lat_grid.ravel(), lon_grid.ravel(), 100, rng).T,
        "shape_std": np.linspace(SHAPE_STD_RANGE[0], SHAPE_STD_RANGE[1], 100),
        "exp_basis": _smooth_basis(lat_grid.ravel(), lon_grid.ravel(), exp_dim, rng),
        "exp_std": np.linspace(EXPRESSION_STD_RANGE[0], EXPRESSION_STD_RANGE[1], exp_dim),
        "nose_hole": np.array([landmarks[33]], dtype=np.int32),
        "segbin": (rng.random((4, n)) < 0.3).astype(np.float64),
    }


def synthetic_morphable_model(rows: int, cols: int, seed: int = 0) -> MorphableModel:
    """A :class:`MorphableModel` on a rows x cols grid face (see :func:`make_grid_face`)."""
    raw = make_grid_face(rows, cols, seed=seed)
    return MorphableModel.from_arrays(
        mean_shape=raw["vertices"].reshape(-1),
        shape_basis=raw["shape_basis"][:, :NUM_SHAPE_COMPONENTS],
        shape_std=raw["shape_std"][:NUM_SHAPE_COMPONENTS],
        exp_basis=np.ascontiguousarray(raw["exp_basis"][:NUM_EXPRESSION_COMPONENTS].T),
        exp_std=raw["exp_std"][:NUM_EXPRESSION_COMPONENTS],
        triangles=raw["triangles"],
        landmark_indices=raw["landmarks"],
        uv_coords=raw["uv"],
        nose_hole=raw["nose_hole"],
    )
