"""Weights-free multi-view face fitting: DFNRMVS's parameterisation and energy, minimised by L-BFGS.

Bai et al., "Deep Facial Non-Rigid Multi-View Stereo" (CVPR 2020), reconstruct a face from V views with
one identity (80 normalised shape coefficients shared by all views), one expression per view (64
normalised coefficients) and one weak-perspective pose per view, by descending a multi-view consistency
energy plus a landmark term with learnt step sizes and learnt features. Without network weights,
:func:`fit_multiview` minimises the same kind of energy by analysis by synthesis:

* the authors' landmark term (:func:`models.nrmvs.energy.landmark_energy`: fixed landmarks plus dynamic
  jaw-contour landmarks that slide to the closest visible face-region vertex; back-face visibility);
* multi-view photometric consistency (:mod:`models.photometric`) of the [0, 1] colours sampled at the
  face-region vertices visible in both views of each pair, each view's colours divided by its shading
  (first-order spherical harmonics estimated from the current normals, held fixed within a round: a head
  turning under fixed light changes its shading between views), with a robust penalty, coarse to fine
  over Gaussian-blurred images;
* Gaussian priors ``||shape||^2`` and ``mean_v ||expression_v||^2`` on the normalised coefficients.

The pose starts from a closed-form weak-perspective fit to the non-contour landmarks
(:func:`landmark_pose`). Stages (:class:`StageConfig`) run L-BFGS with a strong-Wolfe line search; before
each round the visibility and the candidates of the dynamic landmarks are recomputed and held fixed.
Only the vertices the energy reads are computed while optimising: the landmark vertices, a few
candidates per contour landmark and a subsample of the face region; visibility is computed on the
face-region sub-mesh, which gives the same result as on the whole mesh for those vertices.
"""

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..face_model.landmark_layout import CONTOUR_LANDMARKS
from ..face_model.linear_model import LinearFaceModel
from ..face_model.mesh_topology import adjacent_triangles
from ..face_model.morphable_model import MorphableModel
from ..geometry.camera import (
    Pose,
    denormalize_pose,
    normalize_pose,
    pose_vertices,
    remove_depth_offset,
    to_image,
    transform_vertices,
)
from ..geometry.normals import vertex_normals
from ..geometry.visibility import backface_visibility, visible_distances
from ..nrmvs.energy import landmark_energy
from ..nrmvs.feature_sampling import sample_at_vertices
from .landmark_pose import check_landmarks, landmark_pose
from .photometric import estimate_shading, gaussian_blur, inside_image, photometric_consistency

# Units of the pose variables L-BFGS sees, chosen so that one unit moves a ~150 px wide face by about
# one pixel, like one unit of a normalised coefficient: rotations in centiradians, log-scale in 1e-2.
ANGLE_UNIT = 1e-2
LOG_SCALE_UNIT = 1e-2

# L-BFGS memory (pairs of updates kept).
LBFGS_HISTORY = 10

# Smallest image side accepted (the blur and sampling need a few pixels).
MIN_IMAGE_SIDE = 16

# Slack on the [0, 1] range check of the input images.
RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class StageConfig:
    """One stage of the coarse-to-fine fit.

    name: label in the report. rounds: visibility / contour-candidate refreshes; iterations: L-BFGS
    iterations per round. photometric_weight: weight of the photometric term (0: landmarks and priors
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


DEFAULT_STAGES = (
    StageConfig("pose", rounds=1, iterations=20, fit_shape=False, fit_expression=False),
    StageConfig("landmarks", rounds=2, iterations=30),
    StageConfig("photometric_coarse", rounds=2, iterations=30, photometric_weight=2e3, blur_sigma=4.0),
    StageConfig("photometric_fine", rounds=2, iterations=30, photometric_weight=2e3, blur_sigma=1.5),
)


@dataclass(frozen=True)
class FitConfig:
    """Weights and schedule of :func:`fit_multiview`.

    The energy is ``landmark_weight * E_lmk + photometric_weight * E_photo + shape_prior_weight *
    ||shape||^2 + expression_prior_weight * mean_v ||exp_v||^2`` with E_lmk in squared pixels (mean over
    views and landmarks) and E_photo in squared colour units. With landmark noise sigma pixels, a prior
    weight of about sigma^2 / 68 is the Bayesian one. robust_scale: pseudo-Huber scale of the colour
    difference ([0, 1] units). photometric_points: face-region vertices sampled per view (evenly spaced
    in index order; all when fewer). contour_candidates: nearest visible face-region vertices per
    contour landmark kept as dynamic-landmark candidates within a round. num_threads: torch's intra-op
    CPU threads during the fit, restored afterwards (None: left alone). The fit is thousands of small
    operations; threaded ones (matrix-vector products, cdist) cost ~100x more with 2 threads than with
    one on a loaded 2-core machine (measured 6-10 ms vs 50-130 us), so one thread is the default.
    """

    stages: tuple[StageConfig, ...] = DEFAULT_STAGES
    landmark_weight: float = 1.0
    shape_prior_weight: float = 0.1
    expression_prior_weight: float = 0.1
    robust_scale: float = 0.05
    photometric_points: int = 4000
    contour_candidates: int = 64
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a fit needs at least one stage")
        weights = (self.landmark_weight, self.shape_prior_weight, self.expression_prior_weight)
        if min(weights) < 0 or self.robust_scale <= 0:
            raise ValueError("weights must be non-negative and the robust scale positive")
        if self.photometric_points < 1 or self.contour_candidates < 1:
            raise ValueError("photometric_points and contour_candidates must be positive")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be positive or None, got {self.num_threads}")


class StageReport(NamedTuple):
    """State after one stage.

    name: the stage's name ("initialisation" for the closed-form pose). landmark_error: (V,) RMS
    distance in pixels between the targets and the model's landmarks, fixed and dynamic as the energy
    picks them. photometric_error: the photometric term's error on the unblurred images, mean over view
    pairs, co-visible photometric samples (``FitConfig.photometric_points``) and channels of
    |c_i / s_i - c_j / s_j|, colours c divided by the shading s estimated at this geometry
    (:func:`models.fitting.photometric.estimate_shading`); [0, 1] units, NaN for one view. colour_error: the same
    without shading compensation. seconds: wall time of the stage (the report's own computation excluded;
    for "initialisation", the closed-form pose and the sub-mesh set-up).
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
    priors only: the photometric stages were skipped). seconds: total wall time.
    """

    vertices: torch.Tensor
    shape_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    pose: torch.Tensor
    stages: tuple[StageReport, ...]
    single_view: bool
    seconds: float

    def stage(self, name: str) -> StageReport:
        """The report of the stage called ``name``."""
        for report in self.stages:
            if report.name == name:
                return report
        raise KeyError(f"no stage {name!r}; stages: {', '.join(r.name for r in self.stages)}")


# ---------------------------------------------------------------------------------------------- model pieces
class _RegionMesh(NamedTuple):
    """The face region (plus landmark vertices) with every triangle touching it, in local indices.

    face: the :class:`LinearFaceModel` of its s vertices. triangles: (t, 3) local.
    adjacent: (s, k) local adjacent-triangle table padded with t. face_region: (s,) bool.
    landmarks: (68,) local landmark indices. photometric: (p,) local face-region sample indices.
    """

    face: LinearFaceModel
    triangles: torch.Tensor
    adjacent: torch.Tensor
    face_region: torch.Tensor
    landmarks: torch.Tensor
    photometric: torch.Tensor


def _region_mesh(mm: MorphableModel, photometric_points: int, device: torch.device) -> _RegionMesh:
    """Cut the region sub-mesh out of ``mm`` (numpy topology, then tensors on ``device``).

    Visibility on it equals visibility on the whole mesh at the core vertices (face region and
    landmarks), whose adjacent triangles are all kept in their original order.
    """
    n = mm.num_vertices
    triangles = mm.triangles.cpu().numpy()
    core = mm.face_region_mask.cpu().numpy().copy()
    core[mm.landmark_indices.cpu().numpy()] = True
    kept_triangles = triangles[core[triangles].any(axis=1)]
    support = np.zeros(n, dtype=bool)
    support[kept_triangles.reshape(-1)] = True
    support |= core
    vertex_ids = np.flatnonzero(support)
    local = np.full(n, -1, dtype=np.int64)
    local[vertex_ids] = np.arange(vertex_ids.size)
    local_triangles = local[kept_triangles]
    face_region = mm.face_region_mask.cpu().numpy()[vertex_ids]
    region_local = np.flatnonzero(face_region)
    count = min(photometric_points, region_local.size)
    photometric = region_local[np.linspace(0, region_local.size - 1, count).round().astype(np.int64)]

    return _RegionMesh(
        face=mm.linear.take(torch.from_numpy(vertex_ids)).to(device),
        triangles=torch.from_numpy(local_triangles).to(device),
        adjacent=torch.from_numpy(adjacent_triangles(local_triangles, vertex_ids.size)).to(device),
        face_region=torch.from_numpy(face_region).to(device),
        landmarks=torch.from_numpy(local[mm.landmark_indices.cpu().numpy()]).to(device),
        photometric=torch.from_numpy(np.unique(photometric)).to(device),
    )


class _Parameters:
    """The optimised variables: shared shape, per-view expression and per-view pose offsets.

    shape (80,), expression (V, 64) normalised; rotation (V, 3) pitch/yaw/roll offsets in
    :data:`ANGLE_UNIT` radians; log_scale (V,) in :data:`LOG_SCALE_UNIT`; translation (V, 2) pixels;
    all relative to the closed-form pose ``anchor``.
    """

    def __init__(self, anchor: Pose, shape_dim: int, exp_dim: int) -> None:
        views = anchor.scale.shape[0]
        like = anchor.scale
        self.anchor = anchor
        self.shape = like.new_zeros(shape_dim)
        self.expression = like.new_zeros(views, exp_dim)
        self.rotation = like.new_zeros(views, 3)
        self.log_scale = like.new_zeros(views)
        self.translation = like.new_zeros(views, 2)

    def pose_variables(self) -> list[torch.Tensor]:
        return [self.rotation, self.log_scale, self.translation]

    def pose(self) -> Pose:
        degrees = ANGLE_UNIT * 180.0 / math.pi
        return Pose(
            pitch=self.anchor.pitch + self.rotation[:, 0] * degrees,
            yaw=self.anchor.yaw + self.rotation[:, 1] * degrees,
            roll=self.anchor.roll + self.rotation[:, 2] * degrees,
            scale=self.anchor.scale * torch.exp(self.log_scale * LOG_SCALE_UNIT),
            tx=self.anchor.tx + self.translation[:, 0],
            ty=self.anchor.ty + self.translation[:, 1],
        )

    def camera_vertices(self, face: LinearFaceModel) -> torch.Tensor:
        """(V, m, 3) camera-space vertices of ``face`` under the current parameters."""
        model = face.vertices(self.shape, self.expression)
        return transform_vertices(remove_depth_offset(model), self.pose())

    def prior(self, config: FitConfig) -> torch.Tensor:
        shape_term = config.shape_prior_weight * self.shape.square().sum()
        return shape_term + config.expression_prior_weight * self.expression.square().sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------- one round
class _Problem(NamedTuple):
    """The fixed inputs of a fit: images (V, 3, H, W), landmarks (V, 68, 2), image_size (H, W), region."""

    images: torch.Tensor
    landmarks: torch.Tensor
    image_size: tuple[int, int]
    region: _RegionMesh


class _RoundSetup(NamedTuple):
    """What a round holds fixed: the working vertices and their masks.

    face: :class:`LinearFaceModel` of the working vertices: first the landmark term's (the landmark vertices
    and the dynamic-landmark candidates, visible face-region vertices near a contour landmark), then, in
    photometric stages, the region's photometric samples. landmark_count: how many are the landmark
    term's. landmarks: (68,) positions among them. landmark_visible: (V, 68); candidate_visible: (V, w).
    photometric_visible: (V, p) and shading: (V, p) of the photometric samples, or None.
    """

    face: LinearFaceModel
    landmark_count: int
    landmarks: torch.Tensor
    landmark_visible: torch.Tensor
    candidate_visible: torch.Tensor
    photometric_visible: torch.Tensor | None
    shading: torch.Tensor | None


def _round_setup(
    problem: _Problem, params: _Parameters, config: FitConfig, stage_images: torch.Tensor | None
) -> _RoundSetup:
    """Visibility, dynamic-landmark candidates and (with ``stage_images``) shading at the current parameters."""
    region = problem.region
    with torch.no_grad():
        region_vertices = params.camera_vertices(region.face)  # (V, s, 3)
        visible = backface_visibility(region_vertices, region.triangles, region.adjacent)  # (V, s)
        region_visible = visible & region.face_region
        projected = to_image(region_vertices, *problem.image_size)[..., :2]
        contour_targets = problem.landmarks[:, list(CONTOUR_LANDMARKS)]  # (V, 12, 2)
        distance = visible_distances(contour_targets, projected, region_visible, exact=False)
        count = min(config.contour_candidates, distance.shape[-1])
        nearest = distance.topk(count, dim=-1, largest=False).indices.reshape(-1)
    working = torch.unique(torch.cat([region.landmarks, nearest]))
    is_candidate = torch.zeros_like(region.face_region)
    is_candidate[nearest] = True
    photometric_visible = shading = None
    if stage_images is not None:
        photometric_visible = region_visible[:, region.photometric]
        shading = _sample_shading(problem, region_vertices, region.photometric, photometric_visible, stage_images)
        working_all = torch.cat([working, region.photometric])
    else:
        working_all = working
    return _RoundSetup(
        face=region.face.take(working_all),
        landmark_count=working.shape[0],
        landmarks=torch.searchsorted(working, region.landmarks),
        landmark_visible=visible[:, region.landmarks],
        candidate_visible=(region_visible & is_candidate)[:, working],
        photometric_visible=photometric_visible,
        shading=shading,
    )


@torch.no_grad()
def _sample_shading(
    problem: _Problem, region_vertices: torch.Tensor, points: torch.Tensor, visible: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """Shading (V, p) of the region vertices ``points`` (local indices) estimated from ``images``."""
    region = problem.region
    normals = -vertex_normals(region_vertices, region.triangles, region.adjacent)[:, points]  # outward
    positions = region_vertices[:, points]
    colours = sample_at_vertices(images.unsqueeze(0), positions.unsqueeze(0), problem.image_size, False)[0]
    return estimate_shading(colours, normals, visible & inside_image(positions, problem.image_size))


def _energy(
    params: _Parameters,
    setup: _RoundSetup,
    problem: _Problem,
    stage_images: torch.Tensor | None,
    stage: StageConfig,
    config: FitConfig,
) -> torch.Tensor:
    """Scalar energy of the current parameters for one round (stage_images: blurred images or None)."""
    vertices = params.camera_vertices(setup.face)  # (V, w + p, 3)
    lmk = landmark_energy(
        vertices[:, : setup.landmark_count].unsqueeze(0),
        problem.landmarks.unsqueeze(0),
        setup.landmarks,
        setup.landmark_visible.unsqueeze(0),
        setup.candidate_visible.unsqueeze(0),
        problem.image_size,
    )
    energy = config.landmark_weight * lmk.value + params.prior(config)
    if stage_images is not None:
        points = vertices[:, setup.landmark_count :]  # (V, p, 3)
        colours = sample_at_vertices(
            stage_images.unsqueeze(0), points.unsqueeze(0), problem.image_size, feature_gradient=False
        )[0]
        visible = setup.photometric_visible & inside_image(points.detach(), problem.image_size)
        photo = photometric_consistency(colours / setup.shading.unsqueeze(1), visible, config.robust_scale)
        energy = energy + stage.photometric_weight * photo.value
    return energy


def _run_stage(problem: _Problem, params: _Parameters, stage: StageConfig, config: FitConfig) -> None:
    """Minimise the stage's energy in place: ``stage.rounds`` L-BFGS runs, each with fixed visibility."""
    photometric = stage.photometric_weight > 0
    stage_images = gaussian_blur(problem.images, stage.blur_sigma) if photometric else None
    variables = params.pose_variables()
    if stage.fit_shape:
        variables.append(params.shape)
    if stage.fit_expression:
        variables.append(params.expression)
    for _ in range(stage.rounds):
        setup = _round_setup(problem, params, config, stage_images)
        _minimise(variables, stage.iterations, lambda s=setup: _energy(params, s, problem, stage_images, stage, config))


def _minimise(variables: list[torch.Tensor], iterations: int, energy_fn: Callable[[], torch.Tensor]) -> None:
    """Run L-BFGS (strong-Wolfe line search) on ``variables`` in place for ``iterations`` iterations."""
    for variable in variables:
        variable.requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        variables, lr=1.0, max_iter=iterations, history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        energy = energy_fn()
        energy.backward()
        return energy

    optimiser.step(closure)
    for variable in variables:
        variable.requires_grad_(False)
        variable.grad = None


# ---------------------------------------------------------------------------------------------- reports
@torch.no_grad()
def _report(problem: _Problem, params: _Parameters, name: str, seconds: float) -> StageReport:
    """Landmark errors (whole region as candidates) and photometric errors (unblurred) of the current state."""
    region = problem.region
    vertices = params.camera_vertices(region.face)  # (V, s, 3)
    visible = backface_visibility(vertices, region.triangles, region.adjacent)
    region_visible = visible & region.face_region
    errors = []
    for view in range(vertices.shape[0]):
        term = landmark_energy(
            vertices[None, view : view + 1],
            problem.landmarks[None, view : view + 1],
            region.landmarks,
            visible[None, view : view + 1, region.landmarks],
            region_visible[None, view : view + 1],
            problem.image_size,
        )
        errors.append(term.value.sqrt())
    photometric_error = colour_error = math.nan
    if vertices.shape[0] >= 2:
        points = region.photometric
        positions = vertices[:, points]
        colours = sample_at_vertices(problem.images.unsqueeze(0), positions.unsqueeze(0), problem.image_size, False)[0]
        covisible = region_visible[:, points] & inside_image(positions, problem.image_size)
        shading = _sample_shading(problem, vertices, points, covisible, problem.images)
        compensated = photometric_consistency(colours / shading.unsqueeze(1), covisible, 1.0)
        photometric_error = float(compensated.mean_abs_error)
        colour_error = float(photometric_consistency(colours, covisible, 1.0).mean_abs_error)
    return StageReport(name, torch.stack(errors).cpu(), photometric_error, colour_error, seconds)


# ---------------------------------------------------------------------------------------------- public fit
def _check_inputs(raw_images: torch.Tensor, landmarks: torch.Tensor) -> None:
    if raw_images.dim() != 4 or raw_images.shape[1] != 3 or raw_images.shape[0] < 1:
        raise ValueError(f"raw_images must have shape (V, 3, H, W) with V >= 1, got {tuple(raw_images.shape)}")
    if min(raw_images.shape[2:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"images must be at least {MIN_IMAGE_SIDE} pixels on each side, got {tuple(raw_images.shape)}")
    check_landmarks(landmarks)
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
    mm: MorphableModel, raw_images: torch.Tensor, landmarks: torch.Tensor, config: FitConfig = FitConfig()
) -> FitResult:
    """Fit shared identity, per-view expressions and per-view poses to V views of a face.

    Args:
        mm: any :class:`MorphableModel` (it may live on another device; only the face region is moved).
        raw_images: (V, 3, H, W) images in [0, 1] (the 256x256 crops of the demo), V >= 1.
        landmarks: (V, 68, 2) iBUG landmarks in pixels of those images (x right, y down).
        config: weights and stages.
    Returns:
        :class:`FitResult` on the inputs' device; with V = 1 only the landmark stages run and
        ``single_view`` is True.
    Raises:
        ValueError: inputs of the wrong shape, range or device.
    """
    _check_inputs(raw_images, landmarks)
    with _intra_op_threads(config.num_threads):
        return _fit(mm, raw_images, landmarks, config)


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


def _fit(mm: MorphableModel, raw_images: torch.Tensor, landmarks: torch.Tensor, config: FitConfig) -> FitResult:
    """:func:`fit_multiview` on checked inputs."""
    start = time.perf_counter()
    device = raw_images.device
    dtype = mm.mean_shape.dtype
    images = raw_images.to(dtype)
    targets = landmarks.to(dtype)
    image_size = (int(raw_images.shape[2]), int(raw_images.shape[3]))
    single_view = raw_images.shape[0] == 1

    anchor = landmark_pose(mm, targets, image_size)
    region = _region_mesh(mm, config.photometric_points, device)
    problem = _Problem(images, targets, image_size, region)
    params = _Parameters(_denormalised(anchor), mm.shape_std.shape[0], mm.exp_std.shape[0])
    reports = [_report(problem, params, "initialisation", time.perf_counter() - start)]
    for stage in config.stages:
        if single_view and stage.photometric_weight > 0:
            continue
        stage_start = time.perf_counter()
        _run_stage(problem, params, stage, config)
        reports.append(_report(problem, params, stage.name, time.perf_counter() - stage_start))

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
    )


def _denormalised(pose: torch.Tensor) -> Pose:
    """Normalised (V, 6) pose -> :class:`Pose` (detached copies)."""
    return Pose(*(field.detach().clone() for field in denormalize_pose(pose)))
