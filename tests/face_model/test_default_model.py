"""The built-in default face model: the shipped file's conventions, and the deterministic pieces of its build."""

from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

import models.face_model.default_model as default_model
from models.errors import MorphableModelError
from models.face_model.landmark_layout import MIRROR, NUM_LANDMARKS
from models.face_model.morphable_model import NUM_EXPRESSION_COMPONENTS, NUM_SHAPE_COMPONENTS
from models.face_model.procedural import make_grid_face
from models.geometry.camera import IMAGE_SIZE, MODEL_DEPTH_OFFSET, pose_vertices, to_image
from models.geometry.normals import vertex_normals
from models.geometry.visibility import backface_visibility
from tools.build_default_face_model import main
from tools.default_face_model.gp_basis import KernelScale, gp_basis, leading_eigenpairs, squared_exponential
from tools.default_face_model.landmark_selection import select_landmarks
from tools.default_face_model.mesh_ops import (
    boundary_loops,
    orient_triangles,
    symmetrise_topology,
    triangles_from_edges,
    unique_edges,
    zipper_fill,
)
from tools.default_face_model.mirror_symmetry import mirror_average
from tools.default_face_model.subdivision import loop_subdivision
from tools.default_face_model.uv_unwrap import disk_uv, uv_coverage

# ------------------------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def model():
    return default_model.load_default_model()


@pytest.fixture(scope="module")
def mean(model):
    return model.mean_shape.view(-1, 3).double().numpy()


def test_loads_with_expected_counts(model):
    assert model.shape_basis.shape[1] == model.shape_std.numel() == NUM_SHAPE_COMPONENTS
    assert model.exp_basis.shape[1] == model.exp_std.numel() == NUM_EXPRESSION_COMPONENTS
    assert model.landmark_indices.unique().numel() == NUM_LANDMARKS
    assert 3000 <= model.num_vertices <= 20000
    assert model.shape_basis.dtype == torch.float32
    for std in (model.shape_std, model.exp_std):
        assert (std > 0).all() and (std[1:] <= std[:-1]).all()


def test_missing_file_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_PATH", tmp_path / "absent.npz")
    with pytest.raises(MorphableModelError, match="default face model is missing"):
        default_model.load_default_model()


def test_units_orientation_and_winding(model, mean):
    extent = mean.max(0) - mean.min(0)
    assert 1.3e5 <= extent[0] <= 1.7e5  # a face ~15 cm wide, in micrometres
    assert abs(mean[:, 2].mean() - MODEL_DEPTH_OFFSET) < 1e3
    vertices = model.mean_shape.view(1, -1, 3)
    normals = vertex_normals(vertices, model.triangles, model.adjacent_triangles)[0]
    landmarks = model.landmark_indices
    # Triangles clockwise seen from the camera: normals point into the head, -z on the front of the face.
    assert normals[landmarks[27:31], 2].max() < -0.7  # nose bridge and tip
    assert normals[landmarks[17:68], 2].max() < 0  # every inner landmark faces the camera
    visible = backface_visibility(vertices, model.triangles, model.adjacent_triangles)[0]
    assert visible[model.face_region_mask].float().mean() > 0.9
    assert int(np.argmax(mean[landmarks.numpy(), 2])) == 30  # the nose tip is the landmark nearest the camera


def test_landmarks_in_ibug_layout(model, mean):
    points = mean[model.landmark_indices.numpy()]
    x, y = points[:, 0], points[:, 1]
    # Image-left (x < 0) is the face's right: jaw 0 -> 16 runs from x < 0 to x > 0, 36-41 is the left eye.
    assert np.all(np.diff(x[0:17]) > 0)
    assert x[36] < x[39] < x[27] < x[42] < x[45]
    assert np.argmin(y[0:17]) == 8
    assert y[19] > y[37] > y[30] > y[33] > y[51] > y[62] >= y[66] > y[57] > y[8]
    assert x[48] < x[33] < x[54]
    # Mirror pairs are mirror images of each other.
    np.testing.assert_allclose(points[MIRROR], points * (-1, 1, 1), atol=1.0)


def test_face_region(model):
    region = model.face_region_mask
    assert 0.5 * model.num_vertices < int(region.sum()) < model.num_vertices
    assert region[model.landmark_indices[17:]].all()
    assert torch.equal(model.face_region_mask_no_nose_hole, region)


def test_zero_pose_projects_inside_the_crop(model):
    image = to_image(pose_vertices(model.mean_shape.view(1, -1, 3), torch.zeros(1, 6)))[0]
    assert image[:, :2].min() > 0 and image[:, :2].max() < IMAGE_SIZE - 1
    width = image[:, 0].max() - image[:, 0].min()
    assert 150 < width < 230


def test_bases_are_orthonormal_with_millimetre_scale_variation(model):
    for basis, std in ((model.shape_basis, model.shape_std), (model.exp_basis, model.exp_std)):
        gram = basis.double().T @ basis.double()
        torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
        largest = (basis[:, 0] * std[0]).view(-1, 3).norm(dim=1).max()
        assert 1e3 < largest < 2e4  # 1 std of the first component moves the face by 1-20 mm
    moved = model.vertices(torch.ones(1, NUM_SHAPE_COMPONENTS), torch.ones(1, NUM_EXPRESSION_COMPONENTS))
    assert torch.isfinite(moved).all()


def test_uv_map_is_one_to_one_and_covers_the_face(model):
    uv = model.uv_coords.numpy()
    assert uv.min() >= 0 and uv.max() <= 1
    corners = uv[model.triangles.numpy()]
    first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    signed_area = first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0]
    assert (signed_area < 0).all()  # clockwise in UV as on the face: no fold
    assert uv_coverage(model) > 0.98


# ------------------------------------------------------------------------------------------- build pieces
class Grid(NamedTuple):
    vertices: np.ndarray
    triangles: np.ndarray
    mirror: np.ndarray


ROWS, COLS = 8, 9


@pytest.fixture(scope="module")
def grid() -> Grid:
    """A mirror-symmetric grid face (odd columns: a midline column), triangles clockwise seen from +z."""
    raw = make_grid_face(rows=ROWS, cols=COLS)
    mirror = np.arange(ROWS * COLS).reshape(ROWS, COLS)[:, ::-1].ravel()
    vertices = mirror_average(raw["vertices"], mirror)
    triangles = symmetrise_topology(np.sort(raw["triangles"], axis=1), mirror)
    return Grid(vertices, orient_triangles(triangles, vertices), mirror)


def _edge_set(triangles: np.ndarray) -> set[tuple[int, int]]:
    return {tuple(edge) for edge in unique_edges(triangles).tolist()}


def test_symmetrise_topology_makes_edges_mirror_closed(grid):
    raw = make_grid_face(rows=ROWS, cols=COLS)
    mirrored = {tuple(sorted(grid.mirror[list(e)])) for e in _edge_set(raw["triangles"])}
    assert mirrored != _edge_set(raw["triangles"])  # the grid's diagonals all lean one way
    edges = _edge_set(grid.triangles)
    assert {tuple(sorted(grid.mirror[list(e)].tolist())) for e in edges} == edges
    assert len(grid.triangles) == len(raw["triangles"])


def test_orient_triangles_is_consistent_and_clockwise(grid):
    rng = np.random.default_rng(0)
    shuffled = grid.triangles.copy()
    flip = rng.random(len(shuffled)) < 0.5
    shuffled[flip] = shuffled[flip, ::-1]
    oriented = orient_triangles(shuffled, grid.vertices)
    directed = oriented[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    assert len({tuple(e) for e in directed.tolist()}) == len(directed)  # each directed edge once: consistent
    normals = vertex_normals(
        torch.from_numpy(grid.vertices)[None], torch.from_numpy(oriented), torch.from_numpy(_adjacent(oriented))
    )[0]
    front = grid.vertices[:, 2] > np.median(grid.vertices[:, 2])
    assert (normals[torch.from_numpy(front), 2] < 0).all()


def _adjacent(triangles: np.ndarray) -> np.ndarray:
    from models.face_model.mesh_topology import adjacent_triangles

    return adjacent_triangles(triangles, int(triangles.max()) + 1)


def test_triangles_from_edges_drops_cycles_that_are_not_faces(grid):
    # Split one interior triangle (a, b, c) around a new vertex: (a, b, c) stays a 3-cycle of the edge graph.
    centre = len(grid.vertices)
    split = 3 * COLS
    a, b, c = grid.triangles[split]
    triangles = np.concatenate(
        [np.delete(grid.triangles, split, axis=0), [[a, b, centre], [b, c, centre], [c, a, centre]]]
    )
    recovered = triangles_from_edges(unique_edges(triangles), centre + 1)
    assert {tuple(t) for t in recovered.tolist()} == {tuple(sorted(t)) for t in triangles.tolist()}


def test_zipper_fill_closes_a_hole(grid):
    centre = (ROWS // 2) * COLS + COLS // 2
    holed = grid.triangles[~(grid.triangles == centre).any(axis=1)]
    loops = boundary_loops(holed, len(grid.vertices))
    assert len(loops) == 2
    hole = min(loops, key=len)
    fill = zipper_fill(hole, grid.vertices)
    assert len(fill) == len(hole) - 2
    assert len(boundary_loops(np.concatenate([holed, fill]), len(grid.vertices))) == 1


def test_loop_subdivision(grid):
    n = len(grid.vertices)
    level = loop_subdivision(grid.triangles, n, grid.mirror)
    num_edges = len(unique_edges(grid.triangles))
    assert level.operator.shape == (n + num_edges, n)
    assert level.triangles.shape == (4 * len(grid.triangles), 3)
    np.testing.assert_allclose(np.asarray(level.operator.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    fine = level.operator @ grid.vertices
    np.testing.assert_array_equal(level.mirror[level.mirror], np.arange(len(fine)))
    np.testing.assert_allclose(fine[level.mirror], fine * (-1, 1, 1), atol=1e-6)
    flat = grid.vertices * (1, 1, 0)
    np.testing.assert_array_equal((level.operator @ flat)[:, 2], 0.0)
    # Orientation is kept: the front of the fine mesh still has normals towards -z.
    fine_normals = vertex_normals(
        torch.from_numpy(fine)[None], torch.from_numpy(level.triangles), torch.from_numpy(_adjacent(level.triangles))
    )[0]
    assert (fine_normals[torch.from_numpy(fine[:, 2] > np.median(fine[:, 2])), 2] < 0).all()


def _grid_kernel(grid: Grid) -> np.ndarray:
    return squared_exponential(cdist(grid.vertices, grid.vertices), (KernelScale(4e4, 3e3), KernelScale(1.5e4, 1e3)))


def test_leading_eigenpairs_match_a_full_decomposition(grid):
    kernel = _grid_kernel(grid)
    values, vectors = leading_eigenpairs(kernel, 10)
    np.testing.assert_allclose(values, np.linalg.eigh(kernel)[0][::-1][:10], rtol=1e-8)
    np.testing.assert_allclose(kernel @ vectors, vectors * values, atol=1e-6 * values[0])


def test_gp_basis_spectrum_symmetry_and_determinism(grid):
    kernel = _grid_kernel(grid)
    n = len(grid.vertices)
    basis = gp_basis(kernel, grid.mirror, symmetry=0.5, count=20)
    again = gp_basis(kernel, grid.mirror, symmetry=0.5, count=20)
    assert np.array_equal(basis.basis, again.basis) and np.array_equal(basis.std, again.std)
    np.testing.assert_allclose(basis.basis.T @ basis.basis, np.eye(20), atol=1e-10)
    # The spectrum is that of the three axis kernels K + 0.5 s_c K M, s = (-1, 1, 1).
    permutation = np.eye(n)[grid.mirror]
    axis_values = [np.linalg.eigvalsh(kernel + 0.5 * s * kernel @ permutation) for s in (-1, 1, 1)]
    expected = np.sort(np.concatenate(axis_values))[::-1][:20]
    np.testing.assert_allclose(basis.std**2, expected, rtol=1e-8)
    # Fully symmetric: every component deforms the face mirror-symmetrically.
    symmetric = gp_basis(kernel, grid.mirror, symmetry=1.0, count=20).basis.T.reshape(20, n, 3)
    np.testing.assert_allclose(symmetric[:, grid.mirror], symmetric * (-1, 1, 1), atol=1e-10)


def test_disk_uv_is_one_to_one_and_symmetric(grid):
    uv = disk_uv(grid.vertices, grid.triangles, grid.mirror)
    assert uv.min() >= 0 and uv.max() <= 1
    np.testing.assert_allclose(uv[grid.mirror], np.stack([1 - uv[:, 0], uv[:, 1]], 1), atol=1e-12)
    corners = uv[grid.triangles]
    first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    assert (first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0] < 0).all()
    assert np.corrcoef(uv[:, 0], grid.vertices[:, 0])[0, 1] > 0.9  # u follows x, v follows y
    assert np.corrcoef(uv[:, 1], grid.vertices[:, 1])[0, 1] > 0.9


def test_select_landmarks_recovers_mirror_pairs(grid):
    n = len(grid.vertices)
    rng = np.random.default_rng(1)
    midline = np.flatnonzero(grid.mirror == np.arange(n))
    left = np.flatnonzero(grid.vertices[:, 0] < 0)
    truth = np.empty(NUM_LANDMARKS, dtype=np.int64)
    for k in range(NUM_LANDMARKS):
        m = MIRROR[k]
        if m == k:
            truth[k] = rng.choice(midline)
        elif k < m:
            truth[k] = rng.choice(left)
            truth[m] = grid.mirror[truth[k]]
    projection = grid.vertices[:, :2] * (1, -1)  # an image: y down
    detections = projection[truth] + rng.normal(scale=10.0, size=(NUM_LANDMARKS, 2))
    chosen = select_landmarks([projection], [np.ones(n, dtype=bool)], [detections], grid.mirror)
    np.testing.assert_array_equal(chosen, truth)


def test_build_refuses_to_overwrite(tmp_path):
    out = tmp_path / "model.npz"
    out.write_bytes(b"keep")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out)])
    assert exit_info.value.code == 2
    assert out.read_bytes() == b"keep"
