"""Weights-free multi-view fitting (models/fitting/) and its photometric term."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.face_model.default_model import load_default_model
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.fitting import multiview_fit
from models.fitting.gauss_newton import Variables
from models.fitting.ibug_landmarks import IbugLandmarkTerm
from models.fitting.landmark_pose import landmark_pose
from models.fitting.multiview_fit import FitConfig, StageConfig, fit_multiview
from models.fitting.parameters import FitParameters
from models.fitting.photometric import estimate_shading, gaussian_blur, inside_image, photometric_consistency
from models.fitting.region_mesh import region_mesh
from models.geometry.camera import denormalize_pose, normalize_pose, pose_vertices, to_image
from models.geometry.procrustes import procrustes
from models.nrmvs.feature_sampling import central_difference_gradients, sample_at_vertices
from models.synthesis.multiview_sample import SampleConfig, face_width, render_sample


def landmark_only(config: FitConfig) -> FitConfig:
    return replace(config, stages=tuple(s for s in config.stages if s.photometric_weight == 0))


@pytest.fixture(scope="module")
def small_model() -> MorphableModel:
    return synthetic_morphable_model(24, 26)


@pytest.fixture(scope="module")
def reference_model(reference_dir) -> MorphableModel:
    return MorphableModel.from_face3d_dir(reference_dir)


@pytest.fixture(scope="module")
def case_v2(reference_dir, reference_model):
    """case_v2's images, landmarks and ground-truth vertices (rendered from the reference model)."""
    data = np.load(reference_dir / "case_v2" / "inputs.npz")
    shape = torch.from_numpy(data["gt_sp_norm"][0, :, 0]).float()
    expression = torch.from_numpy(data["gt_ep_norm"][0, :, :, 0]).float()
    pose = torch.from_numpy(data["gt_pose"][0]).float()
    truth = pose_vertices(reference_model.vertices(shape.expand(2, -1), expression), pose)
    return torch.from_numpy(data["ori_img"][0]), torch.from_numpy(data["kpts"][0]), truth


@pytest.fixture(scope="module")
def case_v2_fit(reference_model, case_v2):
    images, landmarks, _ = case_v2
    return fit_multiview(reference_model, images, landmarks)


def _face_error(vertices: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    return float((vertices - truth)[:, mask].norm(dim=-1).mean())


# ---------------------------------------------------------------------------------------------- initialisation
def test_landmark_pose_recovers_a_known_pose(small_model):
    generator = torch.Generator().manual_seed(3)
    angles = (torch.rand(4, 3, generator=generator) - 0.5) * math.radians(60)
    scale = torch.rand(4, 1, generator=generator) - 0.5
    translation = (torch.rand(4, 2, generator=generator) - 0.5) * 4
    pose = torch.cat([angles, scale, translation], dim=1)
    vertices = pose_vertices(small_model.vertices(torch.zeros(4, 80)).double(), pose.double())
    landmarks = to_image(vertices)[:, small_model.landmark_indices, :2]

    recovered = landmark_pose(small_model, landmarks, (256, 256))

    assert torch.allclose(recovered[:, :3], pose[:, :3].double(), atol=1e-3)
    truth, found = denormalize_pose(pose.double()), denormalize_pose(recovered)
    assert torch.allclose(found.scale, truth.scale, rtol=1e-4)
    assert torch.allclose(found.tx, truth.tx, atol=1e-3) and torch.allclose(found.ty, truth.ty, atol=1e-3)
    reprojected = to_image(pose_vertices(small_model.vertices(torch.zeros(4, 80)).double(), recovered))
    assert (reprojected[:, small_model.landmark_indices, :2] - landmarks).norm(dim=-1).max() < 1e-3


def test_landmark_pose_round_trips_through_the_camera_convention(small_model):
    pose = normalize_pose(denormalize_pose(torch.tensor([[0.1, -0.4, 0.2, 0.3, -1.0, 2.0]], dtype=torch.float64)))
    vertices = pose_vertices(small_model.vertices(torch.zeros(1, 80)).double(), pose)
    recovered = landmark_pose(small_model, to_image(vertices)[:, small_model.landmark_indices, :2], (256, 256))
    assert torch.allclose(recovered, pose, atol=1e-4)


# ---------------------------------------------------------------------------------------------- photometric
def test_gaussian_blur_keeps_constants_and_mean():
    constant = torch.full((1, 3, 32, 40), 0.3)
    assert torch.allclose(gaussian_blur(constant, 2.0), constant, atol=1e-6)
    image = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(image, 1.5)
    assert blurred.std() < image.std() * 0.6
    assert abs(float(blurred.mean() - image.mean())) < 1e-2
    assert torch.equal(gaussian_blur(image, 0.0), image)


def test_estimate_shading_recovers_first_order_lighting():
    generator = torch.Generator().manual_seed(1)
    normals = torch.randn(2, 500, 3, generator=generator)
    normals[..., 2] = normals[..., 2].abs() + 1.0
    normals = normals / normals.norm(dim=-1, keepdim=True)
    lighting = torch.tensor([[0.7, 0.1, 0.2, 0.3], [0.6, -0.2, 0.1, 0.35]])
    basis = torch.cat([torch.ones(2, 500, 1), normals], dim=-1)
    shading = (basis * lighting.unsqueeze(1)).sum(-1)
    albedo = 0.3 + 0.6 * torch.rand(3, 500, generator=generator)
    colours = albedo.unsqueeze(0) * shading.unsqueeze(1)
    visible = torch.ones(2, 500, dtype=torch.bool)

    estimated = estimate_shading(colours, normals, visible)

    ratio = estimated / shading
    assert float(ratio.std() / ratio.mean()) < 1e-3
    compensated = photometric_consistency(colours / estimated.unsqueeze(1), visible, 0.05)
    raw = photometric_consistency(colours, visible, 0.05)
    assert float(compensated.mean_abs_error) < 1e-3 < float(raw.mean_abs_error)


def test_photometric_consistency_counts_co_visible_vertices_only():
    colours = torch.zeros(2, 3, 4)
    colours[1, :, 3] = 1.0  # differs only at vertex 3
    visible = torch.ones(2, 4, dtype=torch.bool)
    assert float(photometric_consistency(colours, visible, 0.1).mean_abs_error) == pytest.approx(0.25)
    visible[0, 3] = False
    term = photometric_consistency(colours, visible, 0.1)
    assert float(term.value) == 0.0 and float(term.mean_abs_error) == 0.0
    with pytest.raises(ValueError, match="two views"):
        photometric_consistency(colours[:1], visible[:1], 0.1)


# ---------------------------------------------------------------------------------------------- case_v2
def test_fit_lowers_landmark_error_below_the_initialisation(case_v2_fit):
    initial, final = case_v2_fit.stages[0], case_v2_fit.stages[-1]
    assert initial.name == "initialisation" and not case_v2_fit.single_view
    assert torch.all(final.landmark_error < initial.landmark_error)
    assert float(final.landmark_error.mean()) < 1.5


def test_photometric_stages_lower_the_photometric_error(case_v2_fit):
    landmarks_stage = case_v2_fit.stage("landmarks")
    assert case_v2_fit.stages[-1].photometric_error < 0.9 * landmarks_stage.photometric_error


def test_fitted_vertices_are_closer_to_the_ground_truth(reference_model, case_v2, case_v2_fit):
    images, landmarks, truth = case_v2
    mask = reference_model.face_region_mask
    initial_pose = landmark_pose(reference_model, landmarks, (256, 256))
    mean_shape = pose_vertices(reference_model.vertices(torch.zeros(2, 80)), initial_pose)
    assert _face_error(case_v2_fit.vertices, truth, mask) < 0.5 * _face_error(mean_shape, truth, mask)

    landmark_fit = fit_multiview(reference_model, images, landmarks, landmark_only(FitConfig()))
    aligned = [procrustes(truth[:, mask], v[:, mask]).aligned for v in (landmark_fit.vertices, case_v2_fit.vertices)]
    errors = [float((a - truth[:, mask]).norm(dim=-1).mean()) for a in aligned]
    assert errors[1] < errors[0]


def test_result_shapes_and_timings(reference_model, case_v2_fit):
    n = reference_model.num_vertices
    assert case_v2_fit.vertices.shape == (2, n, 3)
    assert case_v2_fit.shape_coeffs.shape == (80,) and case_v2_fit.exp_coeffs.shape == (2, 64)
    assert case_v2_fit.pose.shape == (2, 6)
    assert [s.name for s in case_v2_fit.stages] == ["initialisation"] + [s.name for s in FitConfig().stages]
    assert all(s.seconds >= 0 for s in case_v2_fit.stages)
    assert case_v2_fit.seconds >= sum(s.seconds for s in case_v2_fit.stages[1:])
    # the returned vertices are the model's under the returned parameters
    expected = pose_vertices(
        reference_model.vertices(case_v2_fit.shape_coeffs.expand(2, -1), case_v2_fit.exp_coeffs), case_v2_fit.pose
    )
    assert torch.allclose(case_v2_fit.vertices, expected, atol=1e-3)


def test_single_view_fits_landmarks_only(reference_model, case_v2):
    images, landmarks, _ = case_v2
    result = fit_multiview(reference_model, images[:1], landmarks[:1])
    assert result.single_view
    assert [s.name for s in result.stages] == ["initialisation", "pose", "landmarks"]
    assert math.isnan(result.stages[-1].photometric_error)
    assert result.vertices.shape == (1, reference_model.num_vertices, 3)
    assert float(result.stages[-1].landmark_error[0]) < float(result.stages[0].landmark_error[0])


# ---------------------------------------------------------------------------------------------- generated case
def _generated_errors(mm: MorphableModel, seed: int) -> tuple[list[float], object]:
    """Procrustes face-region errors (px) of mean shape, landmark-only and full fit on a rendered face."""
    config = SampleConfig(detail_amplitude=0.01 * face_width(mm))
    sample = render_sample(mm, np.random.default_rng(seed), config)
    images = torch.from_numpy(sample.images).permute(0, 3, 1, 2).float() / 255.0
    landmarks, truth = torch.from_numpy(sample.landmarks), torch.from_numpy(sample.vertices)
    mask = mm.face_region_mask
    full = fit_multiview(mm, images, landmarks)
    partial = fit_multiview(mm, images, landmarks, landmark_only(FitConfig()))
    mean_shape = pose_vertices(mm.vertices(torch.zeros(2, mm.shape_std.shape[0])), full.pose)
    errors = []
    for vertices in (mean_shape, partial.vertices, full.vertices):
        aligned = procrustes(truth[:, mask], vertices[:, mask]).aligned
        errors.append(float((aligned - truth[:, mask]).norm(dim=-1).mean()))
    return errors, full


def test_photometric_fit_beats_landmarks_on_a_generated_face(reference_model):
    errors, _ = _generated_errors(reference_model, seed=1)
    assert errors[2] < errors[1] < errors[0]


def test_fit_works_with_the_default_model():
    errors, full = _generated_errors(load_default_model(), seed=2)
    assert errors[2] < errors[1] < errors[0]
    assert full.stages[-1].photometric_error < full.stage("landmarks").photometric_error
    assert torch.all(full.stages[-1].landmark_error < full.stages[0].landmark_error)


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("images", "landmarks", "message"),
    [
        (torch.rand(2, 4, 64, 64), torch.rand(2, 68, 2), "raw_images must have shape"),
        (torch.rand(3, 64, 64), torch.rand(1, 68, 2), "raw_images must have shape"),
        (torch.rand(2, 3, 64, 64), torch.rand(2, 68, 3), "landmarks must have shape"),
        (torch.rand(2, 3, 64, 64), torch.rand(2, 67, 2), "need a dense landmark correspondence"),
        (torch.rand(2, 3, 64, 64), torch.rand(3, 68, 2), "one per view"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 68, 2), "at least 16 pixels"),
        (torch.rand(2, 3, 64, 64) * 255, torch.rand(2, 68, 2), r"must lie in \[0, 1\]"),
        (torch.rand(2, 3, 64, 64), torch.full((2, 68, 2), float("nan")), "NaN"),
    ],
)
def test_bad_inputs_raise_value_error(small_model, images, landmarks, message):
    with pytest.raises(ValueError, match=message):
        fit_multiview(small_model, images, landmarks)


def test_bad_configs_raise_value_error():
    with pytest.raises(ValueError, match="at least one stage"):
        FitConfig(stages=())
    with pytest.raises(ValueError, match="at least one round"):
        StageConfig("empty", rounds=0, iterations=5)
    with pytest.raises(ValueError, match="robust scale"):
        FitConfig(robust_scale=0.0)


def test_runs_on_a_small_model_with_three_views(small_model):
    pose = torch.tensor([[0.0, -0.3, 0.0, -0.5, 0.0, 0.0], [0.0, 0.0, 0.0, -0.5, 0.0, 0.0], [0.0, 0.3, 0, -0.5, 0, 0]])
    vertices = pose_vertices(small_model.vertices(torch.zeros(3, 80)), pose)
    landmarks = to_image(vertices)[:, small_model.landmark_indices, :2]
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.interpolate(images, size=256, mode="bilinear", align_corners=False)
    stages = tuple(replace(s, rounds=1, iterations=5) for s in FitConfig().stages)
    threads = torch.get_num_threads()
    result = fit_multiview(small_model, images, landmarks, FitConfig(stages=stages, num_threads=1))
    assert torch.get_num_threads() == threads  # the fit's thread setting is restored
    assert result.vertices.shape == (3, small_model.num_vertices, 3)
    assert torch.isfinite(result.vertices).all() and torch.isfinite(result.pose).all()
    assert all(math.isfinite(s.photometric_error) for s in result.stages)


# ---------------------------------------------------------------------------------------------- the solver
def test_normal_equations_hold_the_energy_gradient(small_model):
    """The Gauss-Newton system of a 68-point photometric round: its g is the gradient of the round's energy with the
    authors' feature-gradient sampling (central-difference slopes), and its H is symmetric positive semi-definite."""
    pose = torch.tensor([[0.05, -0.3, 0.02, -0.5, 3.0, -2.0], [0.0, 0.25, 0.0, -0.45, -4.0, 1.0]])
    generator = torch.Generator().manual_seed(3)
    landmarks = to_image(pose_vertices(small_model.vertices(torch.zeros(2, 80)), pose))[:, small_model.landmark_indices]
    landmarks = landmarks[..., :2] + 2.0 * torch.randn(2, 68, 2, generator=generator)
    coarse = torch.rand(2, 3, 12, 12, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=256, mode="bilinear", align_corners=False)
    config, stage = FitConfig(photometric_points=300), multiview_fit.PHOTOMETRIC_STAGES[-1]
    region = region_mesh(small_model, config.photometric_points, torch.device("cpu"))
    term = IbugLandmarkTerm(small_model, region, landmarks, (256, 256), config.contour_candidates)
    problem = multiview_fit._Problem(images, (256, 256), region, term)
    params = FitParameters(multiview_fit._denormalised(term.initial_pose()), 80, 64)
    params.shape, params.expression = torch.randn(80, generator=generator), torch.randn(2, 64, generator=generator)
    blurred = gaussian_blur(images, stage.blur_sigma)
    maps = torch.cat([blurred, central_difference_gradients(blurred).flatten(1, 2)], dim=1)
    setup = multiview_fit._round_setup(problem, multiview_fit._region_state(problem, params), blurred)
    variables = Variables.of(params, fit_shape=True, fit_expression=True)
    system = multiview_fit._normal_equations(params, setup, problem, maps, stage, config, variables)

    names = ("rotation", "log_scale", "translation", "shape", "expression")
    for name in names:
        getattr(params, name).requires_grad_(True)
    points = params.camera_vertices(setup.photometric_face)
    colours = sample_at_vertices(blurred[None], points[None], (256, 256), feature_gradient=True)[0]
    visible = setup.photometric_visible & inside_image(points.detach(), (256, 256))
    photo = photometric_consistency(colours / setup.shading.unsqueeze(1), visible, config.robust_scale).value
    landmark_energy = setup.landmark_round.energy(params.camera_vertices(setup.landmark_round.face))
    energy = config.landmark_weight * landmark_energy + stage.photometric_weight * photo
    gradients = torch.autograd.grad(energy, [getattr(params, n) for n in names])
    rotation, log_scale, translation, shape, expression = gradients
    pose_gradient = torch.cat([rotation, log_scale[:, None], translation], 1).flatten()
    expected = torch.cat([pose_gradient, shape, expression.flatten()]).double()
    assert float(expected.abs().max()) > 1.0  # away from the minimum, both terms active
    assert float(photo.detach()) > 0 and int(visible.sum()) > 100
    torch.testing.assert_close(system.gradient, expected, rtol=2e-3, atol=2e-3 * float(expected.abs().max()))
    largest = float(system.hessian.abs().max())
    torch.testing.assert_close(system.hessian, system.hessian.mT, rtol=1e-4, atol=1e-5 * largest)
    assert float(torch.linalg.eigvalsh(system.hessian).min()) > -1e-6 * float(system.hessian.diagonal().max())
    with torch.no_grad():
        stage_energy = multiview_fit._data_energy(params, setup, problem, blurred, stage, config)
    assert stage_energy == pytest.approx(float(energy.detach()), rel=1e-5)


def test_a_second_fit_reuses_the_region_sub_mesh():
    mm = synthetic_morphable_model(24, 26)  # a fresh model: nothing derived from it yet
    pose = torch.tensor([[0.0, -0.3, 0.0, -0.5, 0.0, 0.0], [0.0, 0.3, 0.0, -0.5, 0.0, 0.0]])
    landmarks = to_image(pose_vertices(mm.vertices(torch.zeros(2, 80)), pose))[:, mm.landmark_indices, :2]
    images = torch.full((2, 3, 256, 256), 0.5)
    first = fit_multiview(mm, images, landmarks)
    assert len(mm._derived) == 1
    second = fit_multiview(mm, images, landmarks)
    assert len(mm._derived) == 1
    assert torch.equal(first.vertices, second.vertices)
    fit_multiview(mm, images, landmarks, FitConfig(photometric_points=50))
    assert len(mm._derived) == 2  # another sample count, another sub-mesh
