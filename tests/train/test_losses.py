"""Tests of models/geometry/procrustes.py and train/losses.py against independent numpy/scipy computations."""

from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from models.face_model.procedural import synthetic_morphable_model
from models.geometry.normals import vertex_normal_sums
from models.geometry.procrustes import nearest_rotation, procrustes
from models.networks.fnrmvs_net import FNRMVSNet
from train import losses as L
from train.losses import LossFunction

EPS = L.EDGE_LENGTH_EPS


# ------------------------------------------------------------------------------------------- test data
def grid_mesh(rows: int = 10, cols: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy height-field grid: vertices (rows * cols, 3) and counter-clockwise triangles."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    z = 0.8 * np.exp(-((x - cols / 2) ** 2 + (y - rows / 2) ** 2) / 8.0) + 0.1 * np.sin(x)
    vertices = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    triangles = []
    for r in range(rows - 1):
        for c in range(cols - 1):
            a = r * cols + c
            triangles += [(a, a + 1, a + cols + 1), (a, a + cols + 1, a + cols)]
    return vertices, np.asarray(triangles, dtype=np.int64)


def adjacency_by_loops(triangles: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded adjacent-triangle and neighbour tables built with python sets."""
    tris: list[list[int]] = [[] for _ in range(n)]
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for t, tri in enumerate(triangles):
        for v in tri:
            tris[v].append(t)
            neighbours[v].update(int(u) for u in tri if u != v)
    tri_table = np.full((n, max(map(len, tris))), len(triangles))
    nb_table = np.full((n, max(map(len, neighbours))), n)
    for v in range(n):
        tri_table[v, : len(tris[v])] = tris[v]
        nb_table[v, : len(neighbours[v])] = sorted(neighbours[v])
    return tri_table, nb_table


class Mesh:
    """Grid mesh, face region (a disk), landmarks and posed ground truth for N=2 samples, V=3 views."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.vertices, self.triangles = grid_mesh()
        self.n = len(self.vertices)
        centre = self.vertices[:, :2].mean(axis=0)
        self.face_mask = np.linalg.norm(self.vertices[:, :2] - centre, axis=1) < 3.6
        self.landmarks = rng.permutation(self.n)[:68]
        self.tri_table, self.nb_table = adjacency_by_loops(self.triangles, self.n)
        poses = Rotation.from_rotvec(rng.normal(scale=0.3, size=(6, 3))).as_matrix()
        gt = np.einsum("kij,nj->kni", poses, self.vertices) * 3.0 + rng.normal(size=(6, 1, 3))
        self.gt = torch.from_numpy(gt.reshape(2, 3, self.n, 3))

    def criterion(self, **kwargs) -> LossFunction:
        return LossFunction.from_arrays(
            torch.from_numpy(self.triangles),
            torch.from_numpy(self.landmarks),
            torch.from_numpy(self.face_mask),
            adjacent_triangles=torch.from_numpy(self.tri_table),
            neighbour_vertices=torch.from_numpy(self.nb_table),
            **kwargs,
        )


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return Mesh()


def random_similarity(seed: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(batch, random_state=seed).as_matrix()
    return rng.uniform(0.5, 2.0, size=batch), rotation, rng.normal(scale=3.0, size=(batch, 1, 3))


# ------------------------------------------------------------------------------- numpy references
def umeyama_reference(target: np.ndarray, source: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, column-convention rotation M and translation with target ~ s * M @ source + t (scipy Kabsch)."""
    target_centred = target - target.mean(axis=0)
    source_centred = source - source.mean(axis=0)
    rotation, _ = Rotation.align_vectors(target_centred, source_centred)
    m = rotation.as_matrix()
    scale = np.sum(target_centred * (source_centred @ m.T)) / np.sum(source_centred**2)
    return scale, m, target.mean(axis=0) - scale * m @ source.mean(axis=0)


def dense_reference(mesh: Mesh, pred: np.ndarray, gt: np.ndarray, root: bool = False) -> np.ndarray:
    face = np.flatnonzero(mesh.face_mask)
    out = np.zeros(pred.shape[:2])
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            s, m, t = umeyama_reference(gt[i, j, face], pred[i, j, face])
            distances = [np.sum((s * m @ pred[i, j, v] + t - gt[i, j, v]) ** 2) for v in face]
            out[i, j] = np.mean(np.sqrt(distances) if root else distances)
    return out


def depth_reference(mesh: Mesh, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    face = np.flatnonzero(mesh.face_mask)
    out = np.zeros(pred.shape[:2])
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            shift = np.array([0.0, 0.0, np.mean(pred[i, j, face, 2] - gt[i, j, face, 2])])
            out[i, j] = np.mean([np.sum((pred[i, j, v] - gt[i, j, v] - shift) ** 2) for v in face])
    return out


def normals_reference(mesh: Mesh, vertices: np.ndarray) -> np.ndarray:
    """Accumulate minus the right-hand (b - a) x (c - a) normal of each triangle onto its corners."""
    normals = np.zeros_like(vertices)
    for a, b, c in mesh.triangles:
        n = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])
        for v in (a, b, c):
            normals[v] -= n
    return normals


def normal_reference(mesh: Mesh, pred: np.ndarray, normal_gt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    face = np.flatnonzero(mesh.face_mask)
    out = np.zeros(pred.shape[:2])
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            s, m, t = umeyama_reference(gt[i, j, face], pred[i, j, face])
            normals = normals_reference(mesh, s * pred[i, j] @ m.T + t)[face]
            reference = normal_gt[i, j, face]
            cosine = (
                np.sum(normals * reference, 1) / np.linalg.norm(normals, axis=1) / np.linalg.norm(reference, axis=1)
            )
            out[i, j] = np.mean(1.0 - cosine)
    return out


def edge_reference(mesh: Mesh, pred: np.ndarray, gt: np.ndarray) -> float:
    neighbours: list[set[int]] = [set() for _ in range(mesh.n)]
    for tri in mesh.triangles:
        for v in tri:
            neighbours[v].update(int(u) for u in tri if u != v)
    slots = max(map(len, neighbours))
    terms = []
    for p, g in zip(pred.reshape(-1, mesh.n, 3), gt.reshape(-1, mesh.n, 3), strict=True):
        for v in np.flatnonzero(mesh.face_mask):
            for u in neighbours[v]:
                g_len = np.linalg.norm(g[v] - g[u])
                p_len = np.linalg.norm(p[v] - p[u]) if mesh.face_mask[u] else g_len
                terms.append(abs(p_len / (g_len + EPS) - 1.0))
            padding_len = np.linalg.norm(g[v])  # padding slots measure the distance to the origin
            terms += [abs(padding_len / (padding_len + EPS) - 1.0)] * (slots - len(neighbours[v]))
    return float(np.mean(terms))


def land_reference(mesh: Mesh, vert_img, kpts, kpts_3d, full_vis, vis, mean: bool = True) -> float:
    weights = np.where((np.arange(68) >= 27) & (np.arange(68) < 48), 1.0, 10.0)
    invariant = set(range(6, 11)) | set(range(17, 68))
    low, high, dynamic = [], [], []
    for i in range(vert_img.shape[0]):
        for j in range(vert_img.shape[1]):
            visible = np.flatnonzero(vis[i, j])
            for k in range(68):
                error = np.sum((vert_img[i, j, mesh.landmarks[k], :2] - kpts_3d[i, j, k, :2]) ** 2)
                (high if weights[k] == 10.0 else low).append(error)
                if k in invariant or full_vis[i, j, mesh.landmarks[k]]:
                    dynamic.append(0.0)
                    continue
                candidates = visible if len(visible) else np.arange(mesh.n)
                d = [np.linalg.norm(vert_img[i, j, v, :2] - kpts[i, j, k]) for v in candidates]
                dynamic.append(np.sum((vert_img[i, j, candidates[int(np.argmin(d))], :2] - kpts[i, j, k]) ** 2))
    reduce = np.mean if mean else np.sum
    return reduce(low) + 10.0 * reduce(high) + reduce(dynamic)


def stages(*levels):
    return [levels[0], *[list(level) for level in levels[1:]]]


# --------------------------------------------------------------------------------------------- procrustes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_procrustes_recovers_known_similarity(dtype):
    scale, rotation, translation = random_similarity(0, 6)
    source = np.random.default_rng(1).normal(size=(6, 40, 3))
    target = scale[:, None, None] * source @ rotation + translation
    result = procrustes(torch.tensor(target, dtype=dtype), torch.tensor(source, dtype=dtype))
    tol = dict(atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(result.transform.scale.reshape(-1).numpy(), scale, **tol)
    np.testing.assert_allclose(result.transform.rotation.numpy(), rotation, **tol)
    np.testing.assert_allclose(result.transform.translation.numpy(), translation, **tol)
    np.testing.assert_allclose(result.aligned.numpy(), target, atol=1e-4 if dtype == torch.float32 else 1e-9)
    assert result.disparity.abs().max() < 1e-6


def test_procrustes_rigid_mode_keeps_unit_scale():
    _, rotation, translation = random_similarity(2, 4)
    source = np.random.default_rng(3).normal(size=(4, 25, 3))
    target = source @ rotation + translation
    result = procrustes(torch.tensor(target), torch.tensor(1.7 * source), scaling=False)
    assert torch.equal(result.transform.scale, torch.ones(4, 1, 1, dtype=torch.float64))
    np.testing.assert_allclose(result.transform.rotation.numpy(), rotation, atol=1e-10)
    assert (result.disparity > 0.1).all()  # the 1.7 scale cannot be undone


def test_procrustes_never_reflects_and_matches_scipy():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(5, 30, 3))
    mirrored = source @ np.diag([1.0, 1.0, -1.0]) @ Rotation.random(5, random_state=5).as_matrix()
    target = 1.3 * mirrored + rng.normal(scale=0.05, size=(5, 30, 3))
    result = procrustes(torch.tensor(target), torch.tensor(source))
    rotation = result.transform.rotation
    np.testing.assert_allclose(torch.linalg.det(rotation).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose((rotation.mT @ rotation).numpy(), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12)
    for b in range(5):
        scale, m, t = umeyama_reference(target[b], source[b])
        np.testing.assert_allclose(rotation[b].numpy(), m.T, atol=1e-8)
        np.testing.assert_allclose(result.transform.scale[b].item(), scale, rtol=1e-8)
        np.testing.assert_allclose(result.transform.translation[b, 0].numpy(), t, atol=1e-8)
    # A reflection would fit exactly; the proper rotation cannot.
    assert (result.disparity > 0.1).all()


def test_nearest_rotation_gradients_pass_gradcheck_including_repeated_singular_values():
    generic = torch.randn(4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rotations = 2.0 * torch.from_numpy(Rotation.random(4, random_state=1).as_matrix())  # singular values 2, 2, 2
    two_equal = rotations @ torch.diag(torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64))
    for matrix in (generic, rotations, two_equal):
        assert torch.autograd.gradcheck(nearest_rotation, (matrix.clone().requires_grad_(),))
    # Gradient of the rotation at a rotation: the projection of the upstream gradient onto so(3), / 2.
    upstream = torch.randn(4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    matrix = (rotations / 2.0).requires_grad_()
    (nearest_rotation(matrix) * upstream).sum().backward()
    rt_g = matrix.detach().mT @ upstream
    torch.testing.assert_close(matrix.grad, matrix.detach() @ (rt_g - rt_g.mT) / 2.0)


@pytest.mark.parametrize("kind", ["generic", "planar", "collinear", "coincident"])
def test_procrustes_gradients_are_finite_for_degenerate_inputs(kind):
    rng = np.random.default_rng(6)
    source = rng.normal(size=(3, 20, 3))
    if kind == "planar":
        source[..., 2] = 0.0
    elif kind == "collinear":
        source = rng.normal(size=(3, 20, 1)) * np.array([1.0, 2.0, -0.5])
    elif kind == "coincident":
        source = np.broadcast_to(rng.normal(size=(3, 1, 3)), (3, 20, 3)).copy()
    scale, rotation, translation = random_similarity(8, 3)
    target = scale[:, None, None] * source @ rotation + translation
    target_t = torch.tensor(target, requires_grad=True)
    source_t = torch.tensor(source, requires_grad=True)
    result = procrustes(target_t, source_t)
    (result.aligned.square().sum() + result.disparity.sum() + result.transform.rotation.sum()).backward()
    assert torch.isfinite(target_t.grad).all() and torch.isfinite(source_t.grad).all()
    assert torch.linalg.det(result.transform.rotation).sub(1.0).abs().max() < 1e-9
    if kind in ("generic", "planar"):
        np.testing.assert_allclose(result.aligned.detach().numpy(), target, atol=1e-9)
        subset = (target_t.detach()[:2, :8].requires_grad_(), source_t.detach()[:2, :8].requires_grad_())
        assert torch.autograd.gradcheck(lambda t, s: procrustes(t, s).aligned, subset)


def test_procrustes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        procrustes(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="same shape"):
        procrustes(torch.zeros(5, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="square"):
        nearest_rotation(torch.zeros(2, 3, 4))


# ----------------------------------------------------------------------------------------- vertex losses
def similarity_of(gt: torch.Tensor, seed: int) -> torch.Tensor:
    scale, rotation, translation = random_similarity(seed, gt.shape[0] * gt.shape[1])
    moved = scale[:, None, None] * gt.reshape(-1, gt.shape[2], 3).numpy() @ rotation + translation
    return torch.from_numpy(moved.reshape(gt.shape))


def noisy(gt: torch.Tensor, seed: int, sigma: float = 0.1) -> torch.Tensor:
    return gt + sigma * torch.randn(gt.shape, dtype=gt.dtype, generator=torch.Generator().manual_seed(seed))


def test_dense_aligned_vert_loss(mesh):
    criterion = mesh.criterion()
    assert criterion.dense_aligned_vert_loss(mesh.gt, mesh.gt).abs().max() < 1e-20
    assert criterion.dense_aligned_vert_loss(similarity_of(mesh.gt, 9), mesh.gt).abs().max() < 1e-18
    pred = noisy(similarity_of(mesh.gt, 10), 0)
    loss = criterion.dense_aligned_vert_loss(pred, mesh.gt)
    assert loss.shape == (2, 3) and (loss > 1e-3).all()
    np.testing.assert_allclose(loss.numpy(), dense_reference(mesh, pred.numpy(), mesh.gt.numpy()), rtol=1e-9)
    root = criterion.dense_aligned_vert_loss(pred, mesh.gt, root=True)
    np.testing.assert_allclose(root.numpy(), dense_reference(mesh, pred.numpy(), mesh.gt.numpy(), root=True), rtol=1e-9)


def test_dense_loss_gradient_equals_that_with_the_transform_held_fixed(mesh):
    # The fit minimises this very loss, so even a differentiated transform would add nothing (envelope).
    criterion = mesh.criterion()
    pred = noisy(similarity_of(mesh.gt, 11), 1).requires_grad_()
    criterion.dense_aligned_vert_loss(pred, mesh.gt).sum().backward()
    face = torch.from_numpy(np.flatnonzero(mesh.face_mask))
    fixed_pred = pred.detach().clone().requires_grad_()
    transform = procrustes(
        mesh.gt[:, :, face].reshape(6, -1, 3), fixed_pred.detach()[:, :, face].reshape(6, -1, 3)
    ).transform
    aligned = transform.apply(fixed_pred[:, :, face].reshape(6, -1, 3))
    (aligned - mesh.gt[:, :, face].reshape(6, -1, 3)).square().sum(-1).mean(-1).sum().backward()
    torch.testing.assert_close(pred.grad, fixed_pred.grad)
    assert pred.grad[:, :, ~torch.from_numpy(mesh.face_mask)].abs().max() == 0


def test_depth_aligned_vert_loss(mesh):
    criterion = mesh.criterion()
    assert criterion.depth_aligned_vert_loss(mesh.gt, mesh.gt).abs().max() == 0
    depth_shift = mesh.gt + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    assert criterion.depth_aligned_vert_loss(depth_shift, mesh.gt).abs().max() < 1e-20
    x_shift = mesh.gt + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(
        criterion.depth_aligned_vert_loss(x_shift, mesh.gt), torch.full((2, 3), 0.25, dtype=torch.float64)
    )
    pred = noisy(mesh.gt, 2)
    loss = criterion.depth_aligned_vert_loss(pred, mesh.gt)
    assert (loss > 1e-3).all()
    np.testing.assert_allclose(loss.numpy(), depth_reference(mesh, pred.numpy(), mesh.gt.numpy()), rtol=1e-12)
    root = criterion.depth_aligned_vert_loss(x_shift, mesh.gt, root=True)
    torch.testing.assert_close(root, torch.full((2, 3), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("align_mode", ["depth", "dense"])
def test_vert_loss_sums_iterations_and_reports_stage_errors(mesh, align_mode):
    criterion = mesh.criterion()
    regressor = noisy(mesh.gt, 3, 0.3).requires_grad_()
    level1 = [noisy(mesh.gt, 4, 0.2).requires_grad_(), noisy(mesh.gt, 5, 0.15).requires_grad_()]
    level2 = [noisy(mesh.gt, 6, 0.08).requires_grad_(), noisy(mesh.gt, 7, 0.05).requires_grad_()]
    result = criterion.vert_loss(stages(regressor, level1, level2), mesh.gt, align_mode=align_mode)
    single = criterion.dense_aligned_vert_loss if align_mode == "dense" else criterion.depth_aligned_vert_loss
    expected = sum(single(v, mesh.gt).mean() for v in [*level1, *level2])
    torch.testing.assert_close(result.loss, expected)
    torch.testing.assert_close(result.reg_err, single(regressor, mesh.gt, root=True))
    torch.testing.assert_close(result.land_opt_err, single(level1[-1], mesh.gt, root=True))
    torch.testing.assert_close(result.feat_opt_err, single(level2[-1], mesh.gt, root=True))
    assert result.reg_err.mean() > result.land_opt_err.mean() > result.feat_opt_err.mean() > 0
    result.loss.backward()
    assert regressor.grad is None and all(v.grad.abs().sum() > 0 for v in [*level1, *level2])
    assert not result.reg_err.requires_grad


def test_vert_loss_rejects_bad_inputs(mesh):
    criterion = mesh.criterion()
    with pytest.raises(ValueError, match="align_mode"):
        criterion.vert_loss(stages(mesh.gt, [mesh.gt]), mesh.gt, align_mode="rigid")
    with pytest.raises(ValueError, match="regressor output"):
        criterion.vert_loss([mesh.gt], mesh.gt)
    with pytest.raises(ValueError, match="non-empty list"):
        criterion.vert_loss([mesh.gt, mesh.gt], mesh.gt)
    with pytest.raises(ValueError, match="shape"):
        criterion.dense_aligned_vert_loss(mesh.gt[:, :, :-1], mesh.gt[:, :, :-1])
    with pytest.raises(ValueError, match="shape"):
        criterion.depth_aligned_vert_loss(mesh.gt, mesh.gt[:1])


# --------------------------------------------------------------------------------------- landmark losses
def landmark_setup(mesh: Mesh, seed: int):
    rng = np.random.default_rng(seed)
    vert_img = mesh.gt.numpy() * 10.0 + 128.0
    kpts_3d = vert_img[:, :, mesh.landmarks] + rng.normal(scale=0.5, size=(2, 3, 68, 3))
    kpts = vert_img[:, :, mesh.landmarks, :2] + rng.normal(scale=2.0, size=(2, 3, 68, 2))
    full_vis = rng.random((2, 3, mesh.n)) < 0.5
    vis = full_vis & mesh.face_mask & (rng.random((2, 3, mesh.n)) < 0.8)
    return vert_img, kpts, kpts_3d, full_vis, vis


@pytest.mark.parametrize("mean_loss", [True, False])
def test_land3d_loss_matches_loops(mesh, mean_loss):
    criterion = mesh.criterion(mean_loss=mean_loss)
    for seed in range(3):
        vert_img, kpts, kpts_3d, full_vis, vis = landmark_setup(mesh, seed)
        loss = criterion.land3d_loss(
            torch.from_numpy(vert_img),
            torch.from_numpy(kpts),
            torch.from_numpy(kpts_3d),
            torch.from_numpy(full_vis).to(torch.uint8)[:, :, None],  # the network's (N, V, 1, n) byte layout
            torch.from_numpy(vis),
        )
        expected = land_reference(mesh, vert_img, kpts, kpts_3d, full_vis, vis, mean=mean_loss)
        np.testing.assert_allclose(loss.item(), expected, rtol=1e-10)


def test_land3d_loss_is_zero_at_ground_truth_and_positive_away(mesh):
    criterion = mesh.criterion()
    vert_img, _, _, full_vis, _ = landmark_setup(mesh, 0)
    kpts_3d = torch.from_numpy(vert_img[:, :, mesh.landmarks])
    kpts = kpts_3d[..., :2].clone()
    # Hidden contour landmarks fall back to the nearest visible vertex: their own vertex when visible.
    visible = torch.ones(2, 3, mesh.n, dtype=torch.bool)
    hidden_landmarks = torch.from_numpy(full_vis)
    at_gt = criterion.land3d_loss(torch.from_numpy(vert_img), kpts, kpts_3d, hidden_landmarks, visible)
    assert at_gt.item() == 0.0
    moved = torch.from_numpy(vert_img).clone().requires_grad_()
    away = criterion.land3d_loss(moved + 0.5, kpts, kpts_3d, hidden_landmarks, visible)
    assert away.item() > 0.1
    away.backward()
    assert moved.grad[..., 2].abs().max() == 0  # only image-plane coordinates are compared


def test_land3d_dynamic_points_pick_nearest_visible_vertex(mesh):
    criterion = mesh.criterion()
    vert_img = torch.from_numpy(mesh.gt.numpy() * 10.0).requires_grad_()
    kpts_3d = vert_img.detach()[:, :, mesh.landmarks].clone()
    kpts = kpts_3d[..., :2] + 0.3
    hidden = torch.zeros(2, 3, mesh.n, dtype=torch.bool)  # every landmark vertex hidden
    only_vertex = 17
    visible = torch.zeros(2, 3, mesh.n, dtype=torch.bool)
    visible[:, :, only_vertex] = True
    criterion.land3d_loss(vert_img, kpts, kpts_3d, hidden, visible).backward()
    gradient_norm = vert_img.grad[..., :2].abs().sum(dim=-1)
    landmark_or_chosen = torch.zeros(mesh.n, dtype=torch.bool)
    landmark_or_chosen[torch.from_numpy(mesh.landmarks)] = True
    landmark_or_chosen[only_vertex] = True
    assert gradient_norm[:, :, only_vertex].min() > 0
    assert gradient_norm[:, :, ~landmark_or_chosen].abs().max() == 0


def test_multi_land3d_loss_sums_iterations(mesh):
    criterion = mesh.criterion()
    vert_img, kpts, kpts_3d, full_vis, vis = (torch.from_numpy(a) for a in landmark_setup(mesh, 1))
    imgs = [vert_img, vert_img + 1.0, vert_img - 0.5]
    masks = [full_vis, full_vis, ~full_vis]
    total = criterion.multi_land3d_loss(
        stages(vert_img + 9.0, imgs[:2], imgs[2:]),
        kpts,
        kpts_3d,
        stages(None, masks[:2], masks[2:]),
        stages(None, [vis, vis], [vis]),
    )
    expected = sum(criterion.land3d_loss(i, kpts, kpts_3d, m, vis) for i, m in zip(imgs, masks, strict=True))
    torch.testing.assert_close(total, expected)
    with pytest.raises(ValueError, match="nested exactly"):
        criterion.multi_land3d_loss(stages(vert_img, imgs), kpts, kpts_3d, stages(None, masks[:2]), stages(None, [vis]))
    with pytest.raises(ValueError, match="kpts_gt"):
        criterion.land3d_loss(vert_img, kpts[:, :, :67], kpts_3d, full_vis, vis)
    with pytest.raises(ValueError, match="vis_mask"):
        criterion.land3d_loss(vert_img, kpts, kpts_3d, full_vis, vis[:, :, :-1])


# ----------------------------------------------------------------------------------------- normal losses
def test_vertex_normals_orientation_and_values(mesh):
    criterion = mesh.criterion()
    flat = torch.from_numpy(mesh.vertices * np.array([1.0, 1.0, 0.0]))
    normals = criterion.vertex_normals(flat)
    # Counter-clockwise triangles seen from +z get normals towards -z (the authors' orientation).
    assert (normals[:, 2] < 0).all() and normals[:, :2].abs().max() == 0
    np.testing.assert_allclose(
        criterion.vertex_normals(mesh.gt).numpy()[1, 2], normals_reference(mesh, mesh.gt.numpy()[1, 2])
    )
    table = torch.from_numpy(mesh.tri_table[:5])
    torch.testing.assert_close(
        vertex_normal_sums(mesh.gt, criterion.triangles.flip(1), table), criterion.vertex_normals(mesh.gt)[..., :5, :]
    )


def test_normal_loss(mesh):
    criterion = mesh.criterion()
    normal_gt = criterion.vertex_normals(mesh.gt)
    assert criterion.normal_loss(mesh.gt, normal_gt, mesh.gt).abs().max() < 1e-14
    assert criterion.normal_loss(similarity_of(mesh.gt, 12), 3.0 * normal_gt, mesh.gt).abs().max() < 1e-12
    pred = noisy(similarity_of(mesh.gt, 13), 3, 0.5)
    loss = criterion.normal_loss(pred, normal_gt, mesh.gt)
    assert loss.shape == (2, 3) and (loss > 1e-3).all()
    expected = normal_reference(mesh, pred.numpy(), normal_gt.numpy(), mesh.gt.numpy())
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(criterion.normal_loss(mesh.gt, -normal_gt, mesh.gt).numpy(), 2.0)


def test_normal_loss_does_not_differentiate_the_alignment(mesh):
    criterion = mesh.criterion()
    normal_gt = criterion.vertex_normals(mesh.gt)
    pred = noisy(similarity_of(mesh.gt, 15), 4, 0.5).requires_grad_()
    criterion.normal_loss(pred, normal_gt, mesh.gt).sum().backward()
    face = torch.from_numpy(np.flatnonzero(mesh.face_mask))
    fixed_pred = pred.detach().clone().requires_grad_()
    transform = procrustes(
        mesh.gt[:, :, face].reshape(6, -1, 3), fixed_pred.detach()[:, :, face].reshape(6, -1, 3)
    ).transform
    aligned = transform.apply(fixed_pred.reshape(6, -1, 3)).reshape(pred.shape)
    normals = criterion.face_region(criterion.vertex_normals(aligned))
    cosine = torch.cosine_similarity(normals, criterion.face_region(normal_gt), dim=-1)
    (1.0 - cosine).mean(-1).sum().backward()
    torch.testing.assert_close(pred.grad, fixed_pred.grad)


def test_multi_normal_loss(mesh):
    criterion = mesh.criterion()
    normal_gt = criterion.vertex_normals(mesh.gt)
    verts = [noisy(mesh.gt, s, 0.1 * s) for s in (1, 2, 3, 4)]
    result = criterion.multi_normal_loss(stages(verts[0], verts[1:3], verts[3:]), normal_gt, mesh.gt)
    per = [criterion.normal_loss(v, normal_gt, mesh.gt) for v in verts]
    torch.testing.assert_close(result.loss, per[1].mean() + per[2].mean() + per[3].mean())
    torch.testing.assert_close(result.reg_err, per[0])
    torch.testing.assert_close(result.land_opt_err, per[2])
    torch.testing.assert_close(result.feat_opt_err, per[3])


# ------------------------------------------------------------------------------------------- edge losses
def test_edge_loss(mesh):
    criterion = mesh.criterion()
    at_gt = criterion.edge_loss(mesh.gt, mesh.gt)
    np.testing.assert_allclose(at_gt.item(), edge_reference(mesh, mesh.gt.numpy(), mesh.gt.numpy()), rtol=1e-9)
    assert 0 < at_gt.item() < 1e-5  # eps / (length + eps), not exactly 0
    pred = noisy(mesh.gt, 5, 0.1)
    loss = criterion.edge_loss(pred, mesh.gt)
    assert loss > 100 * at_gt
    np.testing.assert_allclose(loss.item(), edge_reference(mesh, pred.numpy(), mesh.gt.numpy()), rtol=1e-9)
    scaled = criterion.edge_loss(1.1 * mesh.gt, mesh.gt)
    valid_fraction = criterion.face_neighbour_mask.double().mean()
    np.testing.assert_allclose(scaled.item(), 0.1 * valid_fraction.item(), rtol=1e-3)


def test_edge_loss_is_rigid_invariant_and_multi_edge_loss_sums_iterations(mesh):
    criterion = mesh.criterion()
    rotation = torch.from_numpy(Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix())
    moved = mesh.gt @ rotation + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    # Valid edges keep their length; masked slots use the ground truth, so the value is unchanged.
    torch.testing.assert_close(criterion.edge_loss(moved, mesh.gt), criterion.edge_loss(mesh.gt, mesh.gt))
    verts = [noisy(mesh.gt, s) for s in (6, 7, 8)]
    torch.testing.assert_close(
        criterion.multi_edge_loss(stages(verts[0], verts[1:]), mesh.gt),
        criterion.edge_loss(verts[1], mesh.gt) + criterion.edge_loss(verts[2], mesh.gt),
    )


# ------------------------------------------------------------------------------------ recipe and setup
def test_recipe_combines_weighted_terms_and_backpropagates(mesh):
    assert (L.VERT_LOSS_WEIGHT, L.ALIGNED_VERT_LOSS_WEIGHT, L.LANDMARK_LOSS_WEIGHT) == (1.0, 1.0, 0.1)
    assert (L.NORMAL_LOSS_WEIGHT, L.EDGE_LOSS_WEIGHT) == (100.0, 0.01)
    criterion = mesh.criterion()
    vert_img, kpts, kpts_3d, full_vis, vis = (torch.from_numpy(a) for a in landmark_setup(mesh, 2))
    verts = [noisy(mesh.gt, s, 0.1).requires_grad_() for s in (10, 11, 12)]
    imgs = [vert_img + 0.1 * s for s in range(3)]
    normal_gt = criterion.vertex_normals(mesh.gt)
    masks = stages(None, [full_vis], [full_vis])
    vis_masks = stages(None, [vis], [vis])
    result = criterion(
        stages(verts[0], verts[1:2], verts[2:]),
        stages(imgs[0], imgs[1:2], imgs[2:]),
        mesh.gt,
        normal_gt,
        kpts,
        kpts_3d,
        masks,
        vis_masks,
    )
    expected = (
        result.vert.loss
        + result.aligned_vert.loss
        + 0.1 * result.land
        + 100.0 * result.normal.loss
        + 0.01 * result.edge
    )
    torch.testing.assert_close(result.total, expected)
    torch.testing.assert_close(
        result.edge, criterion.edge_loss(verts[1], mesh.gt) + criterion.edge_loss(verts[2], mesh.gt)
    )
    result.total.backward()
    assert verts[0].grad is None
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in verts[1:])


def test_default_tables_and_float32(mesh):
    explicit = mesh.criterion()
    built = LossFunction.from_arrays(mesh.triangles, mesh.landmarks, mesh.face_mask)
    pred = noisy(mesh.gt, 20)
    normal_gt = explicit.vertex_normals(mesh.gt)
    torch.testing.assert_close(built.edge_loss(pred, mesh.gt), explicit.edge_loss(pred, mesh.gt))
    torch.testing.assert_close(
        built.normal_loss(pred, normal_gt, mesh.gt), explicit.normal_loss(pred, normal_gt, mesh.gt)
    )
    single = explicit.dense_aligned_vert_loss(pred.float(), mesh.gt.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), explicit.dense_aligned_vert_loss(pred, mesh.gt), rtol=1e-4, atol=1e-6)


def test_constructor_rejects_bad_inputs(mesh):
    with pytest.raises(ValueError, match="bool"):
        LossFunction.from_arrays(mesh.triangles, mesh.landmarks, mesh.face_mask.astype(np.int64))
    with pytest.raises(ValueError, match=r"\(68,\)"):
        LossFunction.from_arrays(mesh.triangles, mesh.landmarks[:60], mesh.face_mask)
    with pytest.raises(ValueError, match="triangles"):
        LossFunction.from_arrays(mesh.triangles[:, :2], mesh.landmarks, mesh.face_mask)
    with pytest.raises(ValueError, match="adjacent_triangles"):
        LossFunction.from_arrays(mesh.triangles, mesh.landmarks, mesh.face_mask, adjacent_triangles=mesh.tri_table[:-1])
    with pytest.raises(ValueError, match="integer"):
        LossFunction.from_arrays(mesh.triangles.astype(np.float32), mesh.landmarks, mesh.face_mask)


# ------------------------------------------------------------------------------ the authors' call signatures
class AuthorsInputs(NamedTuple):
    opt_verts: list
    opt_verts_img: list
    full_masks: list
    masks: list
    gt: torch.Tensor
    normal_gt: torch.Tensor
    kpts: torch.Tensor
    kpts_3d: torch.Tensor


@pytest.fixture(scope="module")
def face_model():
    return synthetic_morphable_model(14, 16)


@pytest.fixture(scope="module")
def authors_inputs(face_model):
    """Nested outputs as the authors' network returns them, uint8 (N, V, 1, n) masks included."""
    generator = torch.Generator().manual_seed(3)
    n = face_model.num_vertices
    base = face_model.mean_shape.view(1, 1, n, 3).double() * 1e-3 + 0.1 * torch.randn(
        2, 2, n, 3, generator=generator, dtype=torch.float64
    )

    def stage():
        return base + 0.3 * torch.randn(base.shape, generator=generator, dtype=torch.float64)

    def mask(p):
        return (torch.rand(2, 2, 1, n, generator=generator) < p).to(torch.uint8)

    opt_verts = [stage(), [stage(), stage()], [stage()]]
    opt_verts_img = [stage(), [stage(), stage()], [stage()]]
    full_masks = [mask(0.7), [mask(0.7), mask(0.7)], [mask(0.7)]]
    masks = [mask(0.5), [mask(0.5), mask(0.5)], [mask(0.5)]]
    gt = base
    kpts = gt[:, :, face_model.landmark_indices, :2] + 0.5
    kpts_3d = gt[:, :, face_model.landmark_indices]
    normal_gt = LossFunction(bfm=face_model).vertex_normals(gt)
    return AuthorsInputs(opt_verts, opt_verts_img, full_masks, masks, gt, normal_gt, kpts, kpts_3d)


def test_the_authors_calls_give_the_bound_numbers(face_model, authors_inputs):
    """Each method called as the authors' train/losses.py is called equals the bound form."""
    x = authors_inputs
    authors = LossFunction(mean_loss=True)
    bound = LossFunction(mean_loss=True, bfm=face_model)
    bfm = face_model
    mask = face_model.face_region_mask.numpy()[:, None]  # the authors pass the BFM's (n, 1) numpy mask
    vert, img = x.opt_verts[1][0], x.opt_verts_img[1][0]
    full, vis = x.full_masks[1][0], x.masks[1][0]
    pairs = [
        (
            authors.dense_aligned_vert_loss(vert, x.gt, mask, root=True),
            bound.dense_aligned_vert_loss(vert, x.gt, root=True),
        ),
        (authors.depth_aligned_vert_loss(vert, x.gt, mask, False), bound.depth_aligned_vert_loss(vert, x.gt)),
        (
            authors.land3d_loss(img, x.kpts, x.kpts_3d, bfm, full, vis),
            bound.land3d_loss(img, x.kpts, x.kpts_3d, full, vis),
        ),
        (authors.normal_loss(vert, x.normal_gt, x.gt, bfm), bound.normal_loss(vert, x.normal_gt, x.gt)),
        (authors.edge_loss(vert, x.gt, bfm), bound.edge_loss(vert, x.gt)),
        (
            authors.multi_land3d_loss(x.opt_verts_img, x.kpts, x.kpts_3d, bfm, x.full_masks, x.masks),
            bound.multi_land3d_loss(x.opt_verts_img, x.kpts, x.kpts_3d, x.full_masks, x.masks),
        ),
        (authors.multi_edge_loss(x.opt_verts, x.gt, bfm), bound.multi_edge_loss(x.opt_verts, x.gt)),
    ]
    for mode in ("depth", "dense"):
        pairs += list(
            zip(
                authors.vert_loss(x.opt_verts, x.gt, mask, align_mode=mode),
                bound.vert_loss(x.opt_verts, x.gt, align_mode=mode),
                strict=True,
            )
        )
    pairs += list(
        zip(
            authors.multi_normal_loss(x.opt_verts, x.normal_gt, x.gt, bfm),
            bound.multi_normal_loss(x.opt_verts, x.normal_gt, x.gt),
            strict=True,
        )
    )
    for ours, theirs in pairs:
        assert torch.isfinite(ours).all() and (ours != 0).any()
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # The authors unpack the multi losses as 4-tuples.
    loss, reg_err, land_opt_err, feat_opt_err = authors.vert_loss(x.opt_verts, x.gt, mask, align_mode="depth")
    assert reg_err.shape == land_opt_err.shape == feat_opt_err.shape == (2, 2) and loss.ndim == 0
    recipe = authors(x.opt_verts, x.opt_verts_img, x.gt, x.normal_gt, x.kpts, x.kpts_3d, x.full_masks, x.masks, bfm)
    torch.testing.assert_close(
        recipe.total,
        bound(x.opt_verts, x.opt_verts_img, x.gt, x.normal_gt, x.kpts, x.kpts_3d, x.full_masks, x.masks).total,
    )


def test_the_network_face_model_serves_as_bfm(face_model, authors_inputs):
    """``bfm = model.opt_layer.bfm``, as the authors' training loop writes it."""
    network = FNRMVSNet(face_model)
    x = authors_inputs
    vert = x.opt_verts[1][0]
    torch.testing.assert_close(
        LossFunction(mean_loss=True).edge_loss(vert, x.gt, network.opt_layer.bfm),
        LossFunction(bfm=face_model).edge_loss(vert, x.gt),
    )


def test_unbound_calls_without_a_model_are_refused(authors_inputs):
    x = authors_inputs
    with pytest.raises(ValueError, match="no bound face model"):
        LossFunction(mean_loss=True).edge_loss(x.gt, x.gt)
    with pytest.raises(TypeError, match="bfm must be a face model"):
        LossFunction(mean_loss=True).edge_loss(x.gt, x.gt, object())
