"""Dense landmark correspondences: the points they place, their file round trips, and the default model's."""

import numpy as np
import pytest
import torch

from models.errors import MorphableModelError
from models.face_model.default_model import load_default_model
from models.face_model.dense_landmarks import NPZ_KEYS, DenseLandmarks
from models.face_model.mediapipe_layout import (
    FACE_OVAL,
    IBUG_FROM_MEDIAPIPE,
    MEDIAPIPE_LAYOUT,
    NUM_MEDIAPIPE_POINTS,
    OUTER_EYE_CORNERS,
)
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model


@pytest.fixture(scope="module")
def small_model() -> MorphableModel:
    return synthetic_morphable_model(12, 14)


def some_landmarks(mm: MorphableModel, count: int = 20, seed: int = 0) -> DenseLandmarks:
    """``count`` random points on random triangles of ``mm``."""
    rng = np.random.default_rng(seed)
    triangles = mm.triangles.numpy()[rng.integers(0, mm.num_triangles, count)]
    weights = rng.dirichlet(np.ones(3), count)
    return DenseLandmarks("test", torch.from_numpy(triangles), torch.from_numpy(weights.astype(np.float32)))


def test_points_are_barycentric_combinations(small_model):
    dense = some_landmarks(small_model)
    vertices = small_model.vertices(torch.randn(2, 80), torch.randn(2, 64))  # (2, n, 3)
    points = dense.points(vertices)
    assert points.shape == (2, dense.count, 3)
    corners = vertices[:, dense.triangle_vertices]  # (2, K, 3, 3)
    expected = torch.einsum("bkjc,kj->bkc", corners, dense.barycentrics)
    torch.testing.assert_close(points, expected)
    # A point with weight 1 on one corner is that vertex.
    single = DenseLandmarks("test", dense.triangle_vertices[:1], torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(single.points(vertices)[:, 0], vertices[:, dense.triangle_vertices[0, 1]])


def test_model_npz_round_trip_keeps_the_correspondence(small_model, tmp_path):
    dense = some_landmarks(small_model)
    model = small_model.with_dense_landmarks(dense)
    assert small_model.dense_landmarks is None  # the original is unchanged
    model.save_npz(tmp_path / "model.npz")
    loaded = MorphableModel.from_npz(tmp_path / "model.npz")
    assert loaded.dense_landmarks.layout == "test"
    torch.testing.assert_close(loaded.dense_landmarks.triangle_vertices, dense.triangle_vertices)
    torch.testing.assert_close(loaded.dense_landmarks.barycentrics, dense.barycentrics)
    torch.testing.assert_close(loaded.mean_shape, small_model.mean_shape)
    assert loaded.to("cpu").dense_landmarks.count == dense.count

    small_model.save_npz(tmp_path / "plain.npz")
    assert MorphableModel.from_npz(tmp_path / "plain.npz").dense_landmarks is None


def test_correspondence_files(small_model, tmp_path):
    dense = some_landmarks(small_model, count=7)
    dense.save_npz(tmp_path / "corr.npz")
    loaded = DenseLandmarks.from_npz(tmp_path / "corr.npz", small_model.num_vertices)
    assert loaded.layout == "test" and loaded.count == 7
    torch.testing.assert_close(loaded.barycentrics, dense.barycentrics)
    # A model file with a correspondence is a correspondence file too.
    small_model.with_dense_landmarks(dense).save_npz(tmp_path / "model.npz")
    assert DenseLandmarks.from_npz(tmp_path / "model.npz").count == 7

    with pytest.raises(MorphableModelError, match="corr.npz: dense landmark vertex indices must lie in"):
        DenseLandmarks.from_npz(tmp_path / "corr.npz", num_vertices=3)
    with pytest.raises(MorphableModelError, match="missing.npz: dense landmark correspondence file not found"):
        DenseLandmarks.from_npz(tmp_path / "missing.npz")
    arrays = dense.arrays()
    np.savez(tmp_path / "partial.npz", **{key: arrays[key] for key in NPZ_KEYS[:2]})
    with pytest.raises(MorphableModelError, match="partial.npz: missing key.*dense_landmark_barycentrics"):
        DenseLandmarks.from_npz(tmp_path / "partial.npz")


def test_bad_correspondences_are_refused(small_model, tmp_path):
    dense = some_landmarks(small_model, count=5)
    bad_weights = DenseLandmarks("test", dense.triangle_vertices, dense.barycentrics * 2)
    with pytest.raises(MorphableModelError, match="barycentric coordinates must lie in"):
        small_model.with_dense_landmarks(bad_weights)
    with pytest.raises(MorphableModelError, match=r"\(K, 3\)"):
        small_model.with_dense_landmarks(DenseLandmarks("test", dense.triangle_vertices[:, :2], dense.barycentrics))
    model = small_model.with_dense_landmarks(dense)
    model.save_npz(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as data:
        arrays = {key: data[key] for key in data.files if key != NPZ_KEYS[1]}
    np.savez(tmp_path / "incomplete.npz", **arrays)
    with pytest.raises(MorphableModelError, match="incomplete.npz: incomplete dense landmarks"):
        MorphableModel.from_npz(tmp_path / "incomplete.npz")


# ------------------------------------------------------------------------------------------ the default model
@pytest.fixture(scope="module")
def default_points():
    mm = load_default_model()
    return mm, mm.dense_landmarks.points(mm.mean_shape.view(-1, 3).double()).numpy()


def test_the_default_model_knows_where_mediapipes_points_lie(default_points):
    mm, points = default_points
    dense = mm.dense_landmarks
    assert dense.layout == MEDIAPIPE_LAYOUT and dense.count == NUM_MEDIAPIPE_POINTS
    # MediaPipe's outer eye corners are ~10 % wider apart than the iBUG ones (90 mm by construction).
    eye = np.linalg.norm(points[OUTER_EYE_CORNERS[0]] - points[OUTER_EYE_CORNERS[1]])
    assert 90e3 < eye < 105e3
    assert points[OUTER_EYE_CORNERS[0], 0] < 0 < points[OUTER_EYE_CORNERS[1], 0]  # the person's right is -x
    # The outline surrounds the inner points; the nose tip (MediaPipe point 4) is the nearest to the camera.
    oval = points[list(FACE_OVAL), :2]
    inner = np.delete(points, list(FACE_OVAL), axis=0)
    assert (inner[:, 0] > oval[:, 0].min()).all() and (inner[:, 0] < oval[:, 0].max()).all()
    assert int(np.argmax(points[:, 2])) in (1, 4)
    # The mean face is mirror-symmetric, and so is the correspondence: each point's mirror image is a point.
    mirrored = points * (-1.0, 1.0, 1.0)
    distances = np.linalg.norm(mirrored[:, None] - points[None], axis=2).min(axis=1)
    assert distances.max() < 500.0  # 0.5 mm


def test_ibug_from_mediapipe_is_the_nearest_point_to_each_ibug_landmark(default_points):
    mm, points = default_points
    landmarks = mm.mean_shape.view(-1, 3).double().numpy()[mm.landmark_indices.numpy()]
    nearest = np.linalg.norm(landmarks[:, None] - points[None], axis=2).argmin(axis=1)
    np.testing.assert_array_equal(nearest, IBUG_FROM_MEDIAPIPE)
