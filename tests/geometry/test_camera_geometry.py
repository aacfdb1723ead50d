"""Camera and mesh geometry: the reference's initial vertices and visibility, and known answers."""

import math

import numpy as np
import pytest
import torch

from models.face_model.morphable_model import MorphableModel
from models.geometry import camera
from models.geometry.mesh_ops import correct_landmark_vertices, crop_mesh
from models.geometry.normals import vertex_normals
from models.geometry.visibility import backface_visibility

# Suggested vertex tolerance of the reference README (pixels of the 256x256 image).
VERTEX_ATOL = 5e-4


@pytest.fixture(scope="module")
def reference(reference_dir):
    mm = MorphableModel.from_face3d_dir(reference_dir)
    with np.load(reference_dir / "case_v2" / "outputs.npz") as data:
        outputs = {key: data[key] for key in data.files}
    return mm, outputs


def test_initial_vertices_match_reference(reference):
    mm, outputs = reference
    n_views = outputs["regressor_pose"].shape[1]
    pose = torch.from_numpy(outputs["regressor_pose"]).view(-1, 6)
    vertices = camera.pose_vertices(mm.vertices(torch.zeros(pose.shape[0], 80)), pose)
    expected = outputs["opt_verts_0"].reshape(n_views, -1, 3)
    np.testing.assert_allclose(vertices.numpy(), expected, rtol=0, atol=VERTEX_ATOL)
    image = camera.to_image(vertices)
    np.testing.assert_allclose(
        image.numpy(), outputs["opt_verts_img_0"].reshape(n_views, -1, 3), rtol=0, atol=VERTEX_ATOL
    )

    visible = backface_visibility(vertices, mm.triangles, mm.adjacent_triangles)
    full = outputs["full_face_vis_mask_0"].reshape(n_views, -1).astype(bool)
    face = outputs["vis_mask_0"].reshape(n_views, -1).astype(bool)
    np.testing.assert_array_equal(visible.numpy(), full)
    np.testing.assert_array_equal((visible & mm.face_region_mask).numpy(), face)
    assert 0 < face.sum() < full.sum() < full.size


def test_pose_normalisation_round_trip(device):
    pose = torch.tensor([[0.1, -0.4, 0.05, 0.3, -1.2, 0.7]], dtype=torch.float64, device=device)
    back = camera.normalize_pose(camera.denormalize_pose(pose))
    torch.testing.assert_close(back, pose)
    denormalised = camera.denormalize_pose(pose)
    assert math.isclose(float(denormalised.scale), 0.3 * camera.SCALE_STD + camera.SCALE_MEAN)
    assert math.isclose(float(denormalised.yaw), math.degrees(-0.4))
    with pytest.raises(ValueError, match="6 values"):
        camera.denormalize_pose(torch.zeros(2, 5))


def test_rotation_convention():
    zero = torch.zeros(1, dtype=torch.float64)
    quarter = torch.full((1,), 90.0, dtype=torch.float64)
    # positive yaw turns +z (the face's direction) towards +x
    yaw = camera.euler_to_matrix(zero, quarter, zero)[0]
    torch.testing.assert_close(
        yaw @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    )
    # R = Rz @ Ry @ Rx: applying pitch first
    angles = torch.tensor([20.0]), torch.tensor([-35.0]), torch.tensor([10.0])
    full = camera.euler_to_matrix(*angles)[0]
    rx = camera.euler_to_matrix(angles[0], torch.zeros(1), torch.zeros(1))[0]
    ry = camera.euler_to_matrix(torch.zeros(1), angles[1], torch.zeros(1))[0]
    rz = camera.euler_to_matrix(torch.zeros(1), torch.zeros(1), angles[2])[0]
    torch.testing.assert_close(full, rz @ ry @ rx)
    torch.testing.assert_close(full @ full.T, torch.eye(3), atol=1e-6, rtol=0)


def test_to_image_and_grid(device):
    points = torch.tensor([[[0.0, 0.0, 5.0], [-128.0, 127.0, 0.0]]], device=device)
    image = camera.to_image(points)
    torch.testing.assert_close(image.cpu(), torch.tensor([[[128.0, 127.0, 5.0], [0.0, 0.0, 0.0]]]))
    torch.testing.assert_close(camera.from_image(image), points)
    torch.testing.assert_close(camera.from_image(image[..., :2]), points[..., :2])
    grid = camera.image_to_grid(torch.tensor([[0.0, 0.0], [255.0, 255.0]]), 256, 256)
    torch.testing.assert_close(grid, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def _cube():
    vertices = torch.tensor(
        [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=torch.float64
    )
    # faces wound so that cross(p0 - p1, p0 - p2) points inwards, as the 3DMM's
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    triangles = []
    for a, b, c, d in quads:
        triangles += [(a, c, b), (a, d, c)]
    triangles = torch.tensor(triangles)
    adjacent = [[t for t in range(len(triangles)) if v in triangles[t]] for v in range(8)]
    width = max(map(len, adjacent))
    adjacent = torch.tensor([row + [len(triangles)] * (width - len(row)) for row in adjacent])
    return vertices, triangles, adjacent


def test_visibility_and_normals_on_a_cube(device):
    vertices, triangles, adjacent = (t.to(device) for t in _cube())
    normals = vertex_normals(vertices[None], triangles, adjacent)[0]
    torch.testing.assert_close(vertex_normals(vertices[None], triangles)[0], normals)  # scattered, no table
    # unit, inward normals: every component opposite to the corner's (the split of each quad into two
    # triangles weights the faces unequally, so they are not exactly the diagonal)
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(8, dtype=torch.float64, device=device))
    assert torch.equal(torch.sign(normals), -torch.sign(vertices))
    visible = backface_visibility(vertices[None], triangles, adjacent)[0]
    # the camera looks down -z: the corners with z = +1 face it
    assert visible.tolist() == [bool(v[2] > 0) for v in vertices]


def test_unpose_inverts_pose(device):
    generator = torch.Generator().manual_seed(5)
    model = (torch.randn(3, 40, 3, generator=generator, dtype=torch.float64) * 3e4 + 7.5e4).to(device)
    pose = (torch.randn(3, 6, generator=generator, dtype=torch.float64) * 0.3).to(device)
    back = camera.unpose_vertices(camera.pose_vertices(model, pose), pose)
    torch.testing.assert_close(back, model, rtol=0, atol=1e-6)


def test_crop_mesh_keeps_whole_triangles():
    vertices = np.arange(15, dtype=float).reshape(5, 3)
    triangles = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 3, 4]])
    mask = np.array([True, True, True, True, False])
    cropped = crop_mesh(vertices, triangles, mask)
    np.testing.assert_array_equal(cropped.triangles, [[0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(cropped.vertices, vertices[:4])
    cropped = crop_mesh(vertices, triangles, np.array([False, True, True, True, True]))
    np.testing.assert_array_equal(cropped.triangles, [[0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(cropped.kept_vertices, [1, 2, 3, 4])


def test_landmark_correction_matches_neighbour_mean(reference):
    mm, outputs = reference
    vertices = torch.from_numpy(outputs["opt_verts_l4_it3"]).view(-1, mm.num_vertices, 3)
    corrected = correct_landmark_vertices(vertices, mm.landmark_indices, mm.neighbour_vertices, mm.neighbour_counts)
    expected = torch.from_numpy(outputs["corrected_verts_l4"]).view_as(vertices)
    torch.testing.assert_close(corrected, expected, atol=VERTEX_ATOL, rtol=0)
    landmark = int(mm.landmark_indices[30])
    ring = [int(i) for i in mm.neighbour_vertices[landmark] if i < mm.num_vertices]
    manual = 0.9 * vertices[0, ring].double().mean(0) + 0.1 * vertices[0, landmark].double()
    torch.testing.assert_close(corrected[0, landmark].double(), manual, atol=1e-4, rtol=0)
    others = torch.ones(mm.num_vertices, dtype=torch.bool)
    others[mm.landmark_indices] = False
    assert torch.equal(corrected[:, others], vertices[:, others])
