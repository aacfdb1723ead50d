"""Weights-free multi-view face fitting: DFNRMVS's parameterisation and energy, minimised by analysis by synthesis.

Bai et al., "Deep Facial Non-Rigid Multi-View Stereo" (CVPR 2020), reconstruct a face from V views with
one identity (80 normalised shape coefficients shared by all views), one expression per view (64
normalised coefficients) and one weak-perspective pose per view, by descending a multi-view consistency
energy plus a landmark term with learnt step sizes and learnt features. Without network weights,
:func:`fit_multiview` minimises the same kind of energy by analysis by synthesis:

* a landmark term, either the authors' 68-point term (:mod:`models.fitting.ibug_landmarks`: fixed landmarks
  plus dynamic jaw-contour landmarks, back-face visibility) or, for a model that knows where a dense detector's
  points lie on it, the dense term (:mod:`models.fitting.dense_landmarks`: MediaPipe's 468 points, robust and
  weighted by how squarely each point faces the camera);
* multi-view photometric consistency (:mod:`models.fitting.photometric`) of the [0, 1] colours sampled at the
  face-region vertices visible in both views of each pair, each view's colours divided by its shading
  (first-order spherical harmonics estimated from the current normals, held fixed within a round: a head
  turning under fixed light changes its shading between views), with a robust penalty, coarse to fine
  over Gaussian-blurred images;
* Gaussian priors ``||shape||^2`` and ``mean_v ||expression_v||^2`` on the normalised coefficients.

The pose starts from a closed-form weak-perspective fit to the landmarks off the face outline
(:func:`~models.fitting.landmark_pose.affine_pose`). Every stage (:class:`StageConfig`) runs Levenberg-Marquardt
(:mod:`models.fitting.gauss_newton`) on the energy as weighted least squares: the landmark residuals
(:class:`~models.fitting.landmark_term.LandmarkResiduals`) and the photometric colour differences, whose
derivatives by the image positions are the blurred images' central-difference slopes (the authors' feature
gradient); robust penalties are re-weighted at each step. Before each round the visibility, the landmark term's
weights or candidates and the shading are recomputed and held fixed. Only the points the energy reads are computed
while optimising (the landmark term's points and a subsample of the face region); visibility and normals are
computed on the face-region sub-mesh (:mod:`models.fitting.region_mesh`), which gives the same result as on the
whole mesh there.

Both landmark terms are followed by the photometric stages (:data:`PHOTOMETRIC_STAGES`; skipped for one view). Their
weight, 2e3, is a compromise. On generated faces (bench/benchmark_fitting.py, tuning seeds 0-11, 2 views) a stronger
one lowers the error further: true 68 landmarks, region error 3.13 mm without the stages, 3.00 with 2e3, 2.92 with 8e3;
MediaPipe's points, region error in mm / the held-out check's surface measure, 5.20 / 0.0217, 5.01 / 0.0202, 4.87 /
0.0188 (16e3: 4.80 / 0.0182), and so too on MediaPipe's points less their render bias (``--debias``: 4.31 / 0.0182,
4.17 / 0.0173, 4.11 / 0.0169) and on renders with highlights and a colour gain per view that the term does not model
(``--specular``: 5.43 / 0.0228, 5.31 / 0.0221, 5.23 / 0.0211). But on images not made by our renderer it pulls the
shape away from the landmarks: on the reference case (tests/fitting, rendered by the authors' pipeline, exact landmarks
on an almost textureless face) 8e3 made the shape worse than the landmarks alone (1.92 vs 1.55) where 2e3 improved it
(1.52), and on the authors' real example pairs (report only) the dense fit's distance to MediaPipe's points grew from
1.0-1.3 px RMS to 1.2-2.2 px with 8e3 and its shape moved further from MediaPipe's own mesh than the mean shape is in
two of the four pairs. Photos agree less with the term's shading model than our renders, so the weaker weight is kept.
"""

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..face_model.dense_landmarks import DenseLandmarks
from ..face_model.landmark_layout import NUM_LANDMARKS
from ..face_model.linear_model import LinearFaceModel
from ..face_model.morphable_model import MorphableModel
from ..geometry.camera import Pose, denormalize_pose, normalize_pose, pose_vertices
from ..geometry.normals import unit_normals, vertex_normal_sums
from ..geometry.visibility import facing_camera
from ..nrmvs.feature_sampling import central_difference_gradients, sample_at_vertices
from .dense_landmarks import DenseLandmarkTerm
from .gauss_newton import NormalEquations, PointJacobian, Variables, levenberg_marquardt
from .ibug_landmarks import IbugLandmarkTerm
from .landmark_pose import check_landmarks
from .landmark_term import LandmarkTerm, TermRound
from .parameters import FitParameters
from .photometric import estimate_shading, gaussian_blur, inside_image, photometric_consistency
from .region_mesh import RegionMesh, region_mesh

# Smallest image side accepted (the blur and sampling need a few pixels).
MIN_IMAGE_SIDE = 16

# Slack on the [0, 1] range check of the input images.
RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class StageConfig:
    """One stage of the coarse-to-fine fit.

    name: label in the report. rounds: visibility / contour-candidate refreshes; iterations: the most
    Levenberg-Marquardt steps per round. photometric_weight: weight of the photometric term (0: landmarks and priors
    only; stages with a positive weight are skipped for a single view). blur_sigma: Gaussian blur of the
    images, pixels. fit_shape / fit_expression: optimise those coefficients (the pose always is).
    """

    name: str
    rounds: int
    iterations: int
    photometric_weight: float = 0.0
    blur_sigma: float = 0.0
    fit_shape: bool = True
    fit_expression: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.iterations < 1:
            raise ValueError(f"stage {self.name!r} needs at least one round and one iteration")
        if self.photometric_weight < 0 or self.blur_sigma < 0:
            raise ValueError(f"stage {self.name!r} has a negative photometric weight or blur")


# The photometric term's weight (module docstring).
PHOTOMETRIC_WEIGHT = 2e3

# Coarse to fine photometric consistency, after either landmark term (a few Levenberg-Marquardt steps each suffice:
# more steps, a third stage on sharper images, more samples or a second round changed the error on generated faces
# by under 1 %, measured with the weight 8e3).
PHOTOMETRIC_STAGES = (
    StageConfig("photometric_coarse", rounds=1, iterations=2, photometric_weight=PHOTOMETRIC_WEIGHT, blur_sigma=4.0),
    StageConfig("photometric_fine", rounds=1, iterations=3, photometric_weight=PHOTOMETRIC_WEIGHT, blur_sigma=1.5),
)

DEFAULT_STAGES = (
    StageConfig("pose", rounds=1, iterations=3, fit_shape=False, fit_expression=False),
    StageConfig("landmarks", rounds=2, iterations=3),
    *PHOTOMETRIC_STAGES,
)

# The schedule with dense landmarks: the pose alone, two rounds of re-weighting, then the photometric stages.
DENSE_STAGES = (
    StageConfig("pose", rounds=1, iterations=3, fit_shape=False, fit_expression=False),
    StageConfig("dense_landmarks", rounds=2, iterations=3),
    *PHOTOMETRIC_STAGES,
)


@dataclass(frozen=True)
class FitConfig:
    """Weights and schedule of :func:`fit_multiview`.

    The energy is ``landmark_weight * E_lmk + photometric_weight * E_photo + shape_prior_weight *
    ||shape||^2 + expression_prior_weight * mean_v ||exp_v||^2`` with E_lmk in squared pixels (mean over
    views and landmarks; a weighted robust mean for dense landmarks) and E_photo in squared colour units.
    With landmark noise sigma pixels, a prior weight of about sigma^2 / 68 is the Bayesian one.

    stages: the schedule with 68 landmarks; dense_stages: with dense landmarks. robust_scale: pseudo-Huber
    scale of the colour difference ([0, 1] units). photometric_points: face-region vertices sampled per view
    (evenly spaced in index order; all when fewer). contour_candidates: nearest visible face-region vertices
    per contour landmark kept as dynamic-landmark candidates within a round. dense_robust_scale: pseudo-Huber
    scale of the dense points' distances, pixels; dense_visibility_ramp: (low, high) camera-z of a point's
    outward normal at which its weight is 0 and 1; dense_contour_weight: weight of the face-outline points
    (:mod:`models.fitting.dense_landmarks`); dense_shape_prior_weight, dense_expression_prior_weight: the
    priors' weights with dense landmarks (tuned on generated faces, bench/benchmark_fitting.py; a weaker
    identity prior than with 68 points, as 468 points say more about the face). num_threads: torch's
    intra-op CPU threads during the fit, restored afterwards (None: left alone). The fit is thousands of small
    operations; threaded ones (matrix-vector products, cdist) cost ~100x more with 2 threads than with one on a
    loaded 2-core machine (measured 6-10 ms vs 50-130 us), so one thread is the default.
    """

    stages: tuple[StageConfig, ...] = DEFAULT_STAGES
    dense_stages: tuple[StageConfig, ...] = DENSE_STAGES
    landmark_weight: float = 1.0
    shape_prior_weight: float = 0.1
    expression_prior_weight: float = 0.1
    robust_scale: float = 0.05
    photometric_points: int = 1500
    contour_candidates: int = 64
    dense_robust_scale: float = 4.0
    dense_visibility_ramp: tuple[float, float] = (0.0, 0.5)
    dense_contour_weight: float = 0.5
    dense_shape_prior_weight: float = 0.05
    dense_expression_prior_weight: float = 0.3
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if not self.stages or not self.dense_stages:
            raise ValueError("a fit needs at least one stage")
        weights = (
            self.landmark_weight,
            self.shape_prior_weight,
            self.expression_prior_weight,
            self.dense_shape_prior_weight,
            self.dense_expression_prior_weight,
        )
        if min(weights) < 0 or self.robust_scale <= 0 or self.dense_robust_scale <= 0:
            raise ValueError("weights must be non-negative and the robust scales positive")
        if self.photometric_points < 1 or self.contour_candidates < 1:
            raise ValueError("photometric_points and contour_candidates must be positive")
        low, high = self.dense_visibility_ramp
        if not low < high or self.dense_contour_weight < 0:
            raise ValueError("dense_visibility_ramp needs low < high, and dense_contour_weight must be non-negative")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be positive or None, got {self.num_threads}")


class StageReport(NamedTuple):
    """State after one stage.

    name: the stage's name ("initialisation" for the closed-form pose). landmark_error: (V,) RMS
    distance in pixels between the targets and the model's landmarks, fixed and dynamic as the energy
    picks them (dense landmarks: weighted as the energy weighs them). photometric_error: the photometric
    term's error on the unblurred images, mean over view pairs, co-visible photometric samples
    (``FitConfig.photometric_points``) and channels of |c_i / s_i - c_j / s_j|, colours c divided by the
    shading s estimated at this geometry (:func:`models.fitting.photometric.estimate_shading`); [0, 1] units,
    NaN for one view and for a schedule without photometric stages. colour_error: the same without shading
    compensation. seconds: wall time of the stage (the report's own computation excluded; for
    "initialisation", the closed-form pose and the sub-mesh set-up).
    """

    name: str
    landmark_error: torch.Tensor
    photometric_error: float
    colour_error: float
    seconds: float


class FitResult(NamedTuple):
    """Output of :func:`fit_multiview`, on the device of the inputs.

    vertices: (V, n, 3) camera-space vertices (pixels, x right, y up, origin at the image centre).
    shape_coeffs: (80,) normalised identity. exp_coeffs: (V, 64) normalised expressions (the model's
    component counts; 80 and 64 for the authors' models).
    pose: (V, 6) normalised weak-perspective pose (pitch, yaw, roll [rad], s_norm, tx_norm, ty_norm).
    stages: reports, the closed-form initialisation first. single_view: True when V = 1 (landmarks and
    priors only: the photometric stages were skipped). seconds: total wall time. landmarks: the landmark
    term used, "ibug68" or the dense layout's name.
    """

    vertices: torch.Tensor
    shape_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    pose: torch.Tensor
    stages: tuple[StageReport, ...]
    single_view: bool
    seconds: float
    landmarks: str = "ibug68"

    def stage(self, name: str) -> StageReport:
        """The report of the stage called ``name``."""
        for report in self.stages:
            if report.name == name:
                return report
        raise KeyError(f"no stage {name!r}; stages: {', '.join(r.name for r in self.stages)}")


# ---------------------------------------------------------------------------------------------- one round
class _Problem(NamedTuple):
    """The fixed inputs of a fit: images (V, 3, H, W), image_size (H, W), the region sub-mesh, the landmark term."""

    images: torch.Tensor
    image_size: tuple[int, int]
    region: RegionMesh
    landmarks: LandmarkTerm


class _RoundSetup(NamedTuple):
    """What a round holds fixed: the landmark term's points and energy and, in photometric stages, the model of the
    region's photometric samples with their visibility (V, p) and shading (V, p) (all three None otherwise)."""

    landmark_round: TermRound
    photometric_face: LinearFaceModel | None
    photometric_visible: torch.Tensor | None
    shading: torch.Tensor | None


class _RegionState(NamedTuple):
    """The region sub-mesh at some parameters: vertices (V, s, 3) camera space, visible (V, s) back-face visibility,
    normal_sums (V, s, 3) summed triangle normals (into the head)."""

    vertices: torch.Tensor
    visible: torch.Tensor
    normal_sums: torch.Tensor


@torch.no_grad()
def _region_state(problem: _Problem, params: FitParameters) -> _RegionState:
    region = problem.region
    vertices = params.camera_vertices(region.face)
    sums = vertex_normal_sums(vertices, region.triangles, region.adjacent)
    return _RegionState(vertices, facing_camera(sums), sums)


def _round_setup(problem: _Problem, state: _RegionState, stage_images: torch.Tensor | None) -> _RoundSetup:
    """The landmark term's round and (with ``stage_images``) shading at the region state of the current parameters."""
    region = problem.region
    region_vertices, visible = state.vertices, state.visible
    landmark_round = problem.landmarks.start_round(region_vertices, visible)
    photometric_face = photometric_visible = shading = None
    if stage_images is not None:
        photometric_visible = (visible & region.face_region)[:, region.photometric]
        shading = _sample_shading(problem, state, region.photometric, photometric_visible, stage_images)
        photometric_face = region.face.take(region.photometric)
    return _RoundSetup(landmark_round, photometric_face, photometric_visible, shading)


@torch.no_grad()
def _sample_shading(
    problem: _Problem, state: _RegionState, points: torch.Tensor, visible: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """Shading (V, p) of the region vertices ``points`` (local indices) estimated from ``images``."""
    normals = unit_normals(-state.normal_sums[:, points])  # outward
    positions = state.vertices[:, points]
    colours = sample_at_vertices(images.unsqueeze(0), positions.unsqueeze(0), problem.image_size, False)[0]
    return estimate_shading(colours, normals, visible & inside_image(positions, problem.image_size))


@torch.no_grad()
def _data_energy(
    params: FitParameters,
    setup: _RoundSetup,
    problem: _Problem,
    stage_images: torch.Tensor | None,
    stage: StageConfig,
    config: FitConfig,
) -> float:
    """The energy of the current parameters for one round without the priors (stage_images: blurred images or
    None)."""
    landmark_points = params.camera_vertices(setup.landmark_round.face)  # (V, w, 3)
    energy = config.landmark_weight * setup.landmark_round.energy(landmark_points)
    if stage_images is not None:
        points = params.camera_vertices(setup.photometric_face)  # (V, p, 3)
        colours = sample_at_vertices(
            stage_images.unsqueeze(0), points.unsqueeze(0), problem.image_size, feature_gradient=False
        )[0]
        visible = setup.photometric_visible & inside_image(points, problem.image_size)
        photo = photometric_consistency(colours / setup.shading.unsqueeze(1), visible, config.robust_scale)
        energy = energy + stage.photometric_weight * photo.value
    return float(energy)


@torch.no_grad()
def _normal_equations(
    params: FitParameters,
    setup: _RoundSetup,
    problem: _Problem,
    stage_maps: torch.Tensor | None,
    stage: StageConfig,
    config: FitConfig,
    variables: Variables,
) -> NormalEquations:
    """The Gauss-Newton system of :func:`_data_energy` at the current parameters.

    stage_maps: (V, 9, H, W) the blurred images and their x and y slopes (central differences), or None.
    """
    system = NormalEquations(variables, params.shape)
    jacobian = PointJacobian(setup.landmark_round.face, problem.image_size, variables)
    projected = jacobian.positions(params)  # (V, w, 2)
    landmarks = setup.landmark_round.residuals(projected)
    weights = config.landmark_weight * landmarks.weight * landmarks.slope()
    used, rows = torch.unique(landmarks.point, return_inverse=True)  # the points the residuals read
    derivatives = jacobian.jacobians(params, None if used.numel() == projected.shape[1] else used)
    for view in range(projected.shape[0]):
        system.add_points(view, derivatives[view, rows[view]], landmarks.residual[view], weights[view])
    if stage_maps is not None:
        _add_photometric(system, params, setup, problem, stage_maps, stage, config)
    return system


def _add_photometric(
    system: NormalEquations,
    params: FitParameters,
    setup: _RoundSetup,
    problem: _Problem,
    stage_maps: torch.Tensor,
    stage: StageConfig,
    config: FitConfig,
) -> None:
    """Add the photometric term's rows at the current parameters (float32 derivatives: the rows are many and a
    Gauss-Newton step needs no more). Each pair's colour differences are re-weighted by the pseudo-Huber penalty's
    slope."""
    points = params.camera_vertices(setup.photometric_face)  # (V, p, 3)
    derivatives = PointJacobian(setup.photometric_face, problem.image_size, system.variables).jacobians(
        params, dtype=points.dtype
    )  # (V, p, 2, c)
    views = points.shape[0]
    sampled = sample_at_vertices(stage_maps.unsqueeze(0), points.unsqueeze(0), problem.image_size, False)[0]
    sampled = sampled / setup.shading.unsqueeze(1)  # (V, 9, p): colours and slopes, shading divided out
    colours = sampled[:, :3].mT  # (V, p, 3)
    colour_derivatives = torch.einsum("vkcp,vpkq->vpcq", sampled[:, 3:].unflatten(1, (2, 3)), derivatives)
    visible = setup.photometric_visible & inside_image(points, problem.image_size)
    pairs = views * (views - 1) / 2.0
    scale = config.robust_scale
    for first in range(views - 1):
        for second in range(first + 1, views):
            both = torch.nonzero(visible[first] & visible[second]).squeeze(1)
            if both.numel() == 0:
                continue
            difference = colours[first, both] - colours[second, both]  # (b, 3)
            slope = 0.5 / torch.sqrt(1.0 + difference.square().sum(dim=-1) / scale**2)  # pseudo-Huber's phi'
            weight = slope * (stage.photometric_weight / (pairs * both.numel()))
            system.add_differences(
                (first, second),
                (colour_derivatives[first, both], colour_derivatives[second, both]),
                difference,
                weight,
            )


def _run_stage(
    problem: _Problem, params: FitParameters, stage: StageConfig, config: FitConfig, state: _RegionState
) -> None:
    """Minimise the stage's energy in place: ``stage.rounds`` Levenberg-Marquardt runs of at most
    ``stage.iterations`` steps, each with the visibility, the landmark term's weights or candidates and the shading
    held fixed (``state``: the region at the current parameters)."""
    stage_images = stage_maps = None
    if stage.photometric_weight > 0:
        stage_images = gaussian_blur(problem.images, stage.blur_sigma)
        stage_maps = torch.cat([stage_images, central_difference_gradients(stage_images).flatten(1, 2)], dim=1)
    variables = Variables.of(params, stage.fit_shape, stage.fit_expression)
    prior = variables.prior(params, *_prior_weights(problem, config))
    for index in range(stage.rounds):
        setup = _round_setup(problem, state if index == 0 else _region_state(problem, params), stage_images)
        levenberg_marquardt(
            params,
            variables,
            prior,
            stage.iterations,
            lambda s=setup: _normal_equations(params, s, problem, stage_maps, stage, config, variables),
            lambda s=setup: _data_energy(params, s, problem, stage_images, stage, config),
        )


def _prior_weights(problem: _Problem, config: FitConfig) -> tuple[float, float]:
    """The shape and expression prior weights of the problem's landmark term."""
    if isinstance(problem.landmarks, DenseLandmarkTerm):
        return config.dense_shape_prior_weight, config.dense_expression_prior_weight
    return config.shape_prior_weight, config.expression_prior_weight


# ---------------------------------------------------------------------------------------------- reports
@torch.no_grad()
def _report(problem: _Problem, state: _RegionState, name: str, seconds: float, photometric: bool) -> StageReport:
    """Landmark errors and (with ``photometric``) photometric errors (unblurred) of the region ``state``."""
    region = problem.region
    vertices, visible = state.vertices, state.visible
    region_visible = visible & region.face_region
    errors = problem.landmarks.errors(vertices, visible)
    photometric_error = colour_error = math.nan
    if photometric and vertices.shape[0] >= 2:
        points = region.photometric
        positions = vertices[:, points]
        colours = sample_at_vertices(problem.images.unsqueeze(0), positions.unsqueeze(0), problem.image_size, False)[0]
        covisible = region_visible[:, points] & inside_image(positions, problem.image_size)
        shading = _sample_shading(problem, state, points, covisible, problem.images)
        compensated = photometric_consistency(colours / shading.unsqueeze(1), covisible, 1.0)
        photometric_error = float(compensated.mean_abs_error)
        colour_error = float(photometric_consistency(colours, covisible, 1.0).mean_abs_error)
    return StageReport(name, errors.cpu(), photometric_error, colour_error, seconds)


# ---------------------------------------------------------------------------------------------- public fit
def _check_inputs(raw_images: torch.Tensor, landmarks: torch.Tensor, dense: DenseLandmarks | None) -> None:
    if raw_images.dim() != 4 or raw_images.shape[1] != 3 or raw_images.shape[0] < 1:
        raise ValueError(f"raw_images must have shape (V, 3, H, W) with V >= 1, got {tuple(raw_images.shape)}")
    if min(raw_images.shape[2:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"images must be at least {MIN_IMAGE_SIDE} pixels on each side, got {tuple(raw_images.shape)}")
    count = landmarks.shape[1] if landmarks.dim() == 3 else NUM_LANDMARKS
    if count != NUM_LANDMARKS:
        if dense is None:
            raise ValueError(
                f"{count} landmarks per view need a dense landmark correspondence (MorphableModel.dense_landmarks); "
                f"this model has none: give {NUM_LANDMARKS} iBUG landmarks"
            )
        if count != dense.count:
            raise ValueError(f"landmarks need {NUM_LANDMARKS} or {dense.count} ({dense.layout}) points, not {count}")
    check_landmarks(landmarks, count)
    if landmarks.shape[0] != raw_images.shape[0]:
        raise ValueError(f"{raw_images.shape[0]} images but {landmarks.shape[0]} landmark sets: one per view is needed")
    if raw_images.device != landmarks.device:
        raise ValueError(f"images are on {raw_images.device} but landmarks on {landmarks.device}")
    if not raw_images.is_floating_point() or not bool(torch.isfinite(raw_images).all()):
        raise ValueError("raw_images must be finite floating-point values in [0, 1]")
    if raw_images.min() < -RANGE_TOLERANCE or raw_images.max() > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"raw_images must lie in [0, 1], got [{float(raw_images.min()):.3g}, {float(raw_images.max()):.3g}]"
        )


def fit_multiview(
    mm: MorphableModel,
    raw_images: torch.Tensor,
    landmarks: torch.Tensor,
    config: FitConfig = FitConfig(),
    dense_landmarks: DenseLandmarks | None = None,
) -> FitResult:
    """Fit shared identity, per-view expressions and per-view poses to V views of a face.

    Args:
        mm: any :class:`MorphableModel` (it may live on another device; only the face region is moved).
        raw_images: (V, 3, H, W) images in [0, 1] (the 256x256 crops of the demo), V >= 1.
        landmarks: (V, 68, 2) iBUG landmarks, or (V, K, 2) dense landmarks (K = 468 for MediaPipe's face mesh),
            in pixels of those images (x right, y down, pixel centres at integers).
        config: weights and stages (``config.stages`` with 68 landmarks, ``config.dense_stages`` with dense ones).
        dense_landmarks: where the dense landmarks lie on the model; default ``mm.dense_landmarks``.
    Returns:
        :class:`FitResult` on the inputs' device; with V = 1 only the landmark stages run and
        ``single_view`` is True.
    Raises:
        ValueError: inputs of the wrong shape, range or device; dense landmarks for a model without a
            correspondence.
    """
    dense = dense_landmarks if dense_landmarks is not None else mm.dense_landmarks
    _check_inputs(raw_images, landmarks, dense)
    with _intra_op_threads(config.num_threads):
        return _fit(mm, raw_images, landmarks, config, None if landmarks.shape[1] == NUM_LANDMARKS else dense)


@contextlib.contextmanager
def _intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (None: unchanged), then restore the setting."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(
    mm: MorphableModel,
    raw_images: torch.Tensor,
    landmarks: torch.Tensor,
    config: FitConfig,
    dense: DenseLandmarks | None,
) -> FitResult:
    """:func:`fit_multiview` on checked inputs; ``dense`` is None for the 68-point term."""
    start = time.perf_counter()
    device = raw_images.device
    dtype = mm.mean_shape.dtype
    images = raw_images.to(dtype)
    targets = landmarks.to(dtype)
    image_size = (int(raw_images.shape[2]), int(raw_images.shape[3]))
    single_view = raw_images.shape[0] == 1

    region = _cached_region_mesh(mm, config.photometric_points, device, dense)
    if dense is None:
        term = IbugLandmarkTerm(mm, region, targets, image_size, config.contour_candidates)
        stages, layout = config.stages, "ibug68"
    else:
        term = DenseLandmarkTerm(
            dense,
            region,
            targets,
            image_size,
            config.dense_robust_scale,
            config.dense_visibility_ramp,
            config.dense_contour_weight,
        )
        stages, layout = config.dense_stages, dense.layout
    problem = _Problem(images, image_size, region, term)
    params = FitParameters(_denormalised(term.initial_pose()), mm.shape_std.shape[0], mm.exp_std.shape[0])
    stages = tuple(stage for stage in stages if not (single_view and stage.photometric_weight > 0))
    photometric = any(stage.photometric_weight > 0 for stage in stages)
    state = _region_state(problem, params)
    reports = [_report(problem, state, "initialisation", time.perf_counter() - start, photometric)]
    for stage in stages:
        stage_start = time.perf_counter()
        _run_stage(problem, params, stage, config, state)
        state = _region_state(problem, params)
        reports.append(_report(problem, state, stage.name, time.perf_counter() - stage_start, photometric))

    pose = normalize_pose(params.pose())
    model_vertices = mm.vertices(
        params.shape.to(mm.device).expand(raw_images.shape[0], -1), params.expression.to(mm.device)
    )
    vertices = pose_vertices(model_vertices, pose.to(mm.device)).to(device)
    return FitResult(
        vertices=vertices,
        shape_coeffs=params.shape.clone(),
        exp_coeffs=params.expression.clone(),
        pose=pose,
        stages=tuple(reports),
        single_view=single_view,
        seconds=time.perf_counter() - start,
        landmarks=layout,
    )


def _cached_region_mesh(
    mm: MorphableModel, photometric_points: int, device: torch.device, dense: DenseLandmarks | None
) -> RegionMesh:
    """:func:`region_mesh`, cut once per model, sample count, device and correspondence (a fit on another case
    with the same model reuses it)."""
    key = ("fit_region", photometric_points, str(device), None if dense is None else id(dense))
    region, used = mm.derived(key, lambda: (region_mesh(mm, photometric_points, device, dense), dense))
    if used is not dense:  # an id reused by another correspondence object
        return region_mesh(mm, photometric_points, device, dense)
    return region


def _denormalised(pose: torch.Tensor) -> Pose:
    """Normalised (V, 6) pose -> :class:`Pose` (detached copies)."""
    return Pose(*(field.detach().clone() for field in denormalize_pose(pose)))
