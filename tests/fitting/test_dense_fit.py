"""The dense landmark term of the weights-free fit: its gradient, robustness and visibility weights, and fits."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.face_model.default_model import load_default_model
from models.face_model.dense_landmarks import DenseLandmarks
from models.face_model.mediapipe_layout import FACE_OVAL
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.fitting.dense_landmarks import DenseLandmarkTerm, point_model
from models.fitting.gauss_newton import NormalEquations, PointJacobian, Variables, levenberg_marquardt
from models.fitting.multiview_fit import DENSE_STAGES, FitConfig, _intra_op_threads, fit_multiview
from models.fitting.parameters import FitParameters
from models.fitting.region_mesh import region_mesh
from models.geometry.camera import pose_vertices, to_image
from models.geometry.normals import vertex_normals
from models.geometry.procrustes import procrustes
from models.io.landmark_detectors import MediaPipeLandmarks
from models.synthesis.multiview_sample import SampleConfig, face_width, render_sample

IMAGE_SIZE = (256, 256)


@pytest.fixture(scope="module")
def default_model() -> MorphableModel:
    return load_default_model()


@pytest.fixture(scope="module")
def small_model() -> MorphableModel:
    """A grid face with 120 dense points on random triangles of its front half."""
    mm = synthetic_morphable_model(20, 22)
    rng = np.random.default_rng(1)
    front = mm.triangles.numpy()[mm.face_region_mask.numpy()[mm.triangles.numpy()].all(axis=1)]
    triangles = front[rng.integers(0, len(front), 120)]
    weights = rng.dirichlet(np.ones(3), 120).astype(np.float32)
    return mm.with_dense_landmarks(DenseLandmarks("grid", torch.from_numpy(triangles), torch.from_numpy(weights)))


def posed_points(mm: MorphableModel, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor):
    """Camera-space vertices (V, n, 3) and the dense points' image positions (V, K, 2)."""
    vertices = pose_vertices(mm.vertices(shape.expand(pose.shape[0], -1), expression), pose)
    return vertices, to_image(mm.dense_landmarks.points(vertices))[..., :2]


def views(yaws_deg: list[float]) -> torch.Tensor:
    pose = torch.zeros(len(yaws_deg), 6)
    pose[:, 1] = torch.deg2rad(torch.tensor(yaws_deg))
    pose[:, 3] = -0.5
    return pose


def flat_images(count: int) -> torch.Tensor:
    return torch.full((count, 3, *IMAGE_SIZE), 0.5)


def region_error(mm: MorphableModel, fitted: torch.Tensor, truth: torch.Tensor) -> float:
    mask = mm.face_region_mask
    aligned = procrustes(truth[:, mask].double(), fitted[:, mask].double()).aligned
    return float((aligned - truth[:, mask].double()).norm(dim=-1).mean())


def make_term(mm: MorphableModel, targets: torch.Tensor, robust_scale: float = 4.0) -> DenseLandmarkTerm:
    region = region_mesh(mm, 100, torch.device("cpu"), mm.dense_landmarks)
    return DenseLandmarkTerm(mm.dense_landmarks, region, targets, IMAGE_SIZE, robust_scale, (0.0, 0.5), 0.5)


# ---------------------------------------------------------------------------------------------- the term
def test_point_model_evaluates_the_points(small_model):
    region = region_mesh(small_model, 100, torch.device("cpu"), small_model.dense_landmarks)
    points = point_model(region.face, region.dense_corners, small_model.dense_landmarks.barycentrics)
    shape, expression = torch.randn(80), torch.randn(2, 64)
    expected = small_model.dense_landmarks.points(small_model.vertices(shape.expand(2, -1), expression))
    torch.testing.assert_close(points.vertices(shape, expression), expected, rtol=1e-5, atol=0.5)


def test_energy_gradient_matches_finite_differences(small_model):
    generator = torch.Generator().manual_seed(0)
    vertices, targets = posed_points(small_model, torch.zeros(80), torch.zeros(2, 64), views([-20.0, 25.0]))
    targets = (targets + 6 * torch.randn(targets.shape, generator=generator)).double()  # some beyond the scale
    term = make_term(small_model.to("cpu"), targets)
    region = term.region
    region_vertices = region.face.vertices(torch.zeros(80), torch.zeros(2, 64))
    term_round = term.start_round(pose_vertices(region_vertices, views([-20.0, 25.0])), None)
    points = small_model.dense_landmarks.points(vertices).double().requires_grad_(True)
    assert torch.autograd.gradcheck(term_round.energy, (points,), eps=1e-4, atol=1e-6)


def test_robust_penalty_grows_linearly_beyond_its_scale(small_model):
    _, targets = posed_points(small_model, torch.zeros(80), torch.zeros(1, 64), views([0.0]))
    term = make_term(small_model, targets.double(), robust_scale=4.0)
    region_vertices = pose_vertices(term.region.face.vertices(torch.zeros(80), torch.zeros(1, 64)), views([0.0]))
    energy = term.start_round(region_vertices, None).energy
    camera = small_model.dense_landmarks.points(pose_vertices(small_model.vertices(torch.zeros(1, 80)), views([0.0])))
    weights = term.weights(region_vertices)
    moved = []
    for shift in (0.5, 40.0, 80.0):
        offset = torch.zeros_like(camera)
        offset[0, 0, 0] = shift  # one point moves along x
        moved.append(float(energy(camera.double() + offset)) * float(weights.sum()) / float(weights[0, 0]))
    assert moved[0] == pytest.approx(0.25, rel=0.01)  # ~ r^2 below the scale
    assert moved[2] - moved[1] == pytest.approx(2 * 4.0 * 40.0, rel=0.05)  # ~ 2 c r above it


def test_points_turned_away_from_the_camera_get_no_weight(default_model):
    mm = default_model
    pose = views([0.0, 70.0])
    vertices = pose_vertices(mm.vertices(torch.zeros(2, 80)), pose)
    targets = to_image(mm.dense_landmarks.points(vertices))[..., :2]
    term = make_term(mm, targets)
    region_vertices = pose_vertices(term.region.face.vertices(torch.zeros(80), torch.zeros(2, 64)), pose)
    weights = term.weights(region_vertices)
    outward = -vertex_normals(vertices, mm.triangles, mm.adjacent_triangles)
    normals = mm.dense_landmarks.points(outward)
    facing = normals[..., 2] / normals.norm(dim=-1)
    oval = torch.zeros(468, dtype=torch.bool)
    oval[list(FACE_OVAL)] = True
    assert torch.all(weights[facing <= 0] == 0)
    assert torch.allclose(weights[(facing >= 0.5) & ~oval], torch.tensor(1.0))
    assert torch.allclose(weights[(facing >= 0.5) & oval], torch.tensor(0.5))
    assert (facing[1] <= 0).sum() > 30  # the turned view hides a good part of the face
    assert (facing[0] > 0.5).float().mean() > 0.6


def test_wrong_points_on_the_hidden_side_do_not_move_the_fit(default_model):
    mm = default_model
    generator = torch.Generator().manual_seed(4)
    shape, expression = torch.randn(80, generator=generator), 0.5 * torch.randn(2, 64, generator=generator)
    pose = views([-10.0, 65.0])
    vertices, targets = posed_points(mm, shape, expression, pose)
    outward = -vertex_normals(vertices, mm.triangles, mm.adjacent_triangles)
    normals = mm.dense_landmarks.points(outward)
    hidden = normals[..., 2] / normals.norm(dim=-1) < -0.2
    corrupted = targets.clone()
    corrupted[hidden] += 30.0
    clean = fit_multiview(mm, flat_images(2), targets)
    noisy = fit_multiview(mm, flat_images(2), corrupted)
    trusting = fit_multiview(mm, flat_images(2), corrupted, FitConfig(dense_visibility_ramp=(-2.0, -1.5)))
    assert int(hidden.sum()) > 20
    errors = [region_error(mm, fit.vertices, vertices) for fit in (clean, noisy, trusting)]
    assert errors[1] < 1.1 * errors[0]
    assert errors[1] < 0.7 * errors[2]


def test_a_few_gross_outliers_barely_move_the_robust_fit(default_model):
    mm = default_model
    generator = torch.Generator().manual_seed(2)
    shape, expression = torch.randn(80, generator=generator), 0.5 * torch.randn(2, 64, generator=generator)
    vertices, targets = posed_points(mm, shape, expression, views([-20.0, 20.0]))
    corrupted = targets.clone()
    outliers = torch.arange(3, 468, 12)  # 39 of 468 points per view, 40 px off in random directions
    angle = torch.rand(2, len(outliers), generator=generator) * 2 * torch.pi
    corrupted[:, outliers] += 40.0 * torch.stack([angle.cos(), angle.sin()], dim=-1)
    clean = fit_multiview(mm, flat_images(2), targets)
    robust = fit_multiview(mm, flat_images(2), corrupted)
    squares = fit_multiview(mm, flat_images(2), corrupted, FitConfig(dense_robust_scale=1e4))
    clean_error, robust_error, squares_error = (
        region_error(mm, fit.vertices, vertices) for fit in (clean, robust, squares)
    )
    assert robust_error - clean_error < 0.5 * (squares_error - clean_error)


# ---------------------------------------------------------------------------------------------- the solver
def _random_state(mm: MorphableModel, seed: int) -> tuple[DenseLandmarkTerm, FitParameters]:
    """A dense term on noisy targets of a random face in two views, and parameters away from its minimum."""
    generator = torch.Generator().manual_seed(seed)
    shape, expression = torch.randn(80, generator=generator), 0.5 * torch.randn(2, 64, generator=generator)
    pose = views([-25.0, 20.0])
    _, targets = posed_points(mm, shape, expression, pose)
    term = make_term(mm, targets + 3 * torch.randn(targets.shape, generator=generator))
    params = FitParameters(denormalised(term.initial_pose()), 80, 64)
    params.shape = 0.5 * torch.randn(80, generator=generator)
    params.rotation = torch.randn(2, 3, generator=generator)
    return term, params


def denormalised(pose: torch.Tensor):
    from models.geometry.camera import denormalize_pose

    return type(denormalize_pose(pose))(*(field.detach().clone() for field in denormalize_pose(pose)))


def test_point_jacobian_matches_autograd(small_model):
    term, params = _random_state(small_model, 0)
    variables = Variables.of(params, fit_shape=True, fit_expression=True)
    jacobian = PointJacobian(term.points, IMAGE_SIZE, variables)
    names = ("rotation", "log_scale", "translation", "shape", "expression")
    values = [getattr(params, name) for name in names]

    def positions(*arguments):
        for name, value in zip(names, arguments, strict=True):
            setattr(params, name, value)
        return jacobian.positions(params)

    with _intra_op_threads(1):
        blocks = torch.autograd.functional.jacobian(positions, tuple(v.clone() for v in values), vectorize=True)
    for name, value in zip(names, values, strict=True):
        setattr(params, name, value)
    ours = jacobian.jacobians(params)  # (V, K, 2, 6 + 80 + 64)
    for view in range(2):
        expected = torch.cat(
            [
                blocks[0][view, :, :, view],
                blocks[1][view, :, :, view].unsqueeze(-1),
                blocks[2][view, :, :, view],
                blocks[3][view],
                blocks[4][view, :, :, view],
            ],
            dim=-1,
        ).double()
        torch.testing.assert_close(ours[view], expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    subset = torch.tensor([5, 0, 77])
    torch.testing.assert_close(jacobian.jacobians(params, subset), ours[:, subset])


def _dense_system(term: DenseLandmarkTerm, term_round, params: FitParameters, variables: Variables) -> NormalEquations:
    """The Gauss-Newton system of the dense round's energy (its robust residuals, re-weighted)."""
    system = NormalEquations(variables, params.shape)
    jacobian = PointJacobian(term.points, IMAGE_SIZE, variables)
    residuals = term_round.residuals(jacobian.positions(params))
    derivatives = jacobian.jacobians(params)
    weights = residuals.weight * residuals.slope()
    for view in range(2):
        system.add_points(view, derivatives[view, residuals.point[view]], residuals.residual[view], weights[view])
    return system


def test_levenberg_marquardt_reaches_the_minimum_lbfgs_approaches(small_model):
    term, params = _random_state(small_model, 1)
    region_vertices = params.camera_vertices(term.region.face)
    term_round = term.start_round(region_vertices, None)
    variables = Variables.of(params, True, True)
    prior = variables.prior(params, 0.1, 0.1)
    names = ("rotation", "log_scale", "translation", "shape", "expression")
    start = {name: getattr(params, name).clone() for name in names}

    def energy(state: FitParameters) -> torch.Tensor:
        return term_round.energy(state.camera_vertices(term.points)) + state.prior(0.1, 0.1)

    initial = float(energy(params))
    slope = _dense_system(term, term_round, params, variables).gradient + 2.0 * prior * variables.values(params)
    steps = levenberg_marquardt(
        params,
        variables,
        prior,
        30,
        lambda: _dense_system(term, term_round, params, variables),
        lambda: float(term_round.energy(params.camera_vertices(term.points))),
    )
    solved = float(energy(params))
    system = _dense_system(term, term_round, params, variables)
    stationary = system.gradient + 2.0 * prior * variables.values(params)

    _, fresh = _random_state(small_model, 1)
    for name in names:
        assert torch.equal(getattr(fresh, name), start[name])
        getattr(fresh, name).requires_grad_(True)
    optimiser = torch.optim.LBFGS([getattr(fresh, name) for name in names], max_iter=400, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = energy(fresh)
        value.backward()
        return value

    optimiser.step(closure)
    long_lbfgs = float(energy(fresh).detach())
    assert 0 < steps <= 30
    assert solved < 0.5 * initial
    assert solved <= long_lbfgs * (1 + 1e-3)
    assert float(stationary.abs().max()) < 1e-2 * float(slope.abs().max())  # a stationary point (float32 energy)


# ---------------------------------------------------------------------------------------------- fits
def test_dense_points_recover_a_generated_face_better_than_68(default_model):
    mm = default_model
    config = SampleConfig(views=2, detail_amplitude=0.01 * face_width(mm), detail_wavelength=0.15)
    sample = render_sample(mm, np.random.default_rng(3), config)
    images = torch.from_numpy(sample.images).permute(0, 3, 1, 2).float() / 255.0
    truth = torch.from_numpy(sample.vertices)
    dense_points = to_image(mm.dense_landmarks.points(truth))[..., :2]
    dense = fit_multiview(mm, images, dense_points)
    sparse = fit_multiview(mm, images, torch.from_numpy(sample.landmarks))
    mean = pose_vertices(mm.vertices(torch.zeros(2, 80)), dense.pose)
    assert dense.landmarks == "mediapipe468" and sparse.landmarks == "ibug68"
    assert [stage.name for stage in dense.stages] == ["initialisation", *(s.name for s in DENSE_STAGES)]
    errors = [region_error(mm, vertices, truth) for vertices in (mean, sparse.vertices, dense.vertices)]
    assert errors[2] < 0.9 * errors[1] < errors[0]
    assert dense.stages[-1].landmark_error.max() < 2.0  # pixels (the detail and the priors keep it above 0)


def test_dense_fit_on_mediapipes_points_beats_the_mean_shape(default_model):
    mm = default_model
    config = SampleConfig(
        views=2,
        yaw_max_deg=30.0,
        detail_amplitude=0.01 * face_width(mm),
        detail_wavelength=0.15,
        painted_eyes=True,
        mouth_cavity=True,
    )
    sample = render_sample(mm, np.random.default_rng(1), config)
    detector = MediaPipeLandmarks()
    found = [detector.landmarks(image) for image in sample.images]
    assert all(points is not None for points in found)
    images = torch.from_numpy(sample.images).permute(0, 3, 1, 2).float() / 255.0
    truth = torch.from_numpy(sample.vertices)
    fit = fit_multiview(mm, images, torch.from_numpy(np.stack(found)).float())
    mean = pose_vertices(mm.vertices(torch.zeros(2, 80)), fit.pose)
    assert region_error(mm, fit.vertices, truth) < 0.9 * region_error(mm, mean, truth)
    assert fit.stages[-1].landmark_error.max() < 3.0


def test_one_view_and_a_given_correspondence(small_model):
    plain = synthetic_morphable_model(20, 22)
    generator = torch.Generator().manual_seed(5)
    shape, expression = torch.randn(80, generator=generator), 0.3 * torch.randn(2, 64, generator=generator)
    _, targets = posed_points(small_model, shape, expression, views([-15.0, 15.0]))
    with pytest.raises(ValueError, match="120 landmarks per view need a dense landmark correspondence"):
        fit_multiview(plain, flat_images(2), targets)
    with pytest.raises(ValueError, match="landmarks need 68 or 120"):
        fit_multiview(small_model, flat_images(2), targets[:, :100])
    stages = tuple(replace(stage, iterations=10) for stage in DENSE_STAGES)
    config = FitConfig(dense_stages=stages)
    given = fit_multiview(plain, flat_images(2), targets, config, dense_landmarks=small_model.dense_landmarks)
    assert given.landmarks == "grid"
    assert given.stages[-1].landmark_error.max() < given.stages[0].landmark_error.max()
    single = fit_multiview(small_model, flat_images(1), targets[:1], config)
    assert single.single_view and single.vertices.shape == (1, small_model.num_vertices, 3)
    assert single.stages[-1].landmark_error[0] < 0.5 * single.stages[0].landmark_error[0]
