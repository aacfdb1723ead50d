"""The fitting benchmark's surface measure (the held-out real-photo check's, on generated faces)."""

import math

import pytest
import torch

from bench.benchmark_fitting import SURFACE_SCAN_STRIDE, surface_distance
from models.face_model.default_model import load_default_model


@pytest.fixture(scope="module")
def face():
    """The default model's mean face: vertices (n, 3), triangles (f, 3), its 468 MediaPipe points, the scan."""
    mm = load_default_model()
    vertices = mm.mean_shape.view(-1, 3).double()
    points = mm.dense_landmarks.points(vertices.unsqueeze(0))[0]
    scan = vertices[mm.face_region_mask][::SURFACE_SCAN_STRIDE]
    return mm, vertices, points, scan


def _similarity(points: torch.Tensor) -> torch.Tensor:
    """A scale of 0.002, a rotation of 30 degrees about y and a shift: what the measure must not see."""
    angle = math.radians(30.0)
    rotation = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]],
        dtype=points.dtype,
    )
    return 0.002 * points @ rotation.T + torch.tensor([5.0, -3.0, 40.0], dtype=points.dtype)


def test_a_moved_copy_of_the_scanned_surface_is_at_distance_zero(face):
    mm, vertices, points, scan = face
    moved = _similarity(vertices)
    distance = surface_distance(
        scan.numpy(), points.numpy(), moved.numpy(), _similarity(points).numpy(), mm.triangles.numpy()
    )
    assert distance < 1e-6


def _deepened(vertices: torch.Tensor, factor: float) -> torch.Tensor:
    """The face with its depth (z about the mean) scaled by ``factor``: no similarity undoes it."""
    deeper = vertices.clone()
    deeper[:, 2] = vertices[:, 2].mean() + factor * (vertices[:, 2] - vertices[:, 2].mean())
    return deeper


def test_a_deeper_face_is_further_and_the_measure_has_no_unit(face):
    mm, vertices, points, scan = face
    triangles = mm.triangles.numpy()

    def measure(factor: float, unit: float = 1.0) -> float:
        deeper = _deepened(vertices, factor)
        deeper_points = mm.dense_landmarks.points(deeper.unsqueeze(0))[0]
        return surface_distance(
            unit * scan.numpy(),
            unit * points.numpy(),
            _similarity(deeper).numpy(),
            _similarity(deeper_points).numpy(),
            triangles,
        )

    slightly, much = measure(1.15), measure(1.4)
    assert 0.003 < slightly < much < 0.1
    assert measure(1.15, unit=1e-3) == pytest.approx(slightly, rel=1e-2)  # micrometres or millimetres alike
