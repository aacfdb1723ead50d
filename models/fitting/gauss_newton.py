"""Levenberg-Marquardt for the dense landmark stages of the weights-free fit.

With dense landmarks and no photometric term, the energy is a weighted robust sum of squared 2D residuals plus
quadratic priors: a nonlinear least-squares problem of a few hundred variables. Gauss-Newton steps, with the
pseudo-Huber penalty handled by iteratively re-weighted least squares (its weight ``1 / sqrt(1 + r^2 / c^2)``
at the current residual makes a quadratic that lies above the penalty and touches it there, so a step that
lowers the quadratic lowers the energy) and Levenberg's damping of the normal equations (Marquardt's scaling by
their diagonal), converge in about ten iterations where L-BFGS needs hundreds: the problem is ill-conditioned
(depth trades against rotation between the views).

The Jacobian is written out: a point of view v is ``p = s R(pitch, yaw, roll) (mean + S shape + E expr_v - d) +
t`` (weak perspective, :mod:`models.geometry.camera`), its image position ``(p_x + W / 2, H / 2 - 1 - p_y)``.
"""

import math

import torch

from ..geometry.camera import remove_depth_offset, to_image
from .dense_landmarks import DenseLandmarkTerm
from .parameters import ANGLE_UNIT, LOG_SCALE_UNIT, FitParameters
from .photometric import pseudo_huber

# Levenberg-Marquardt damping: initial value, factors on a rejected and an accepted step, the most rejected steps
# in a row, and the floor added to the diagonal (relative to its largest entry) so that the system stays regular.
INITIAL_DAMPING = 1e-3
DAMPING_INCREASE = 4.0
DAMPING_DECREASE = 3.0
MAX_REJECTIONS = 8
DIAGONAL_FLOOR = 1e-12
# Stop a round when an accepted step lowers the energy by less than this fraction.
RELATIVE_DECREASE_TOLERANCE = 1e-7


def _rotations(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """R = Rz(roll) Ry(yaw) Rx(pitch) (V, 3, 3) from angles in radians (V,), and its derivatives with respect to
    pitch, yaw and roll (the face3d convention of :func:`models.geometry.camera.euler_to_matrix`)."""

    def matrices(angle: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = angle.cos(), angle.sin()
        zero, one = torch.zeros_like(angle), torch.ones_like(angle)
        if axis == 0:
            rotation = [one, zero, zero, zero, cos, -sin, zero, sin, cos]
            derivative = [zero, zero, zero, zero, -sin, -cos, zero, cos, -sin]
        elif axis == 1:
            rotation = [cos, zero, sin, zero, one, zero, -sin, zero, cos]
            derivative = [-sin, zero, cos, zero, zero, zero, -cos, zero, -sin]
        else:
            rotation = [cos, -sin, zero, sin, cos, zero, zero, zero, one]
            derivative = [-sin, -cos, zero, cos, -sin, zero, zero, zero, zero]
        shape = (*angle.shape, 3, 3)
        return torch.stack(rotation, -1).view(shape), torch.stack(derivative, -1).view(shape)

    (rx, drx), (ry, dry), (rz, drz) = matrices(pitch, 0), matrices(yaw, 1), matrices(roll, 2)
    return rz @ ry @ rx, [rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx]


class _Linearisation:
    """Residuals (V, K, 2) of the dense points at the current parameters, and the normal equations of their
    weighted least squares over the free variables, in the order rotation (3), log_scale (1), translation (2) of
    each view, then shape (ks,) when fitted, then expression (V, ke) when fitted."""

    def __init__(self, term: DenseLandmarkTerm, fit_shape: bool, fit_expression: bool) -> None:
        self.term = term
        self.fit_shape = fit_shape
        self.fit_expression = fit_expression
        face = term.points
        count = face.num_vertices
        self.shape_basis = face.shape_basis.view(count, 3, -1).double()  # (K, 3, ks)
        self.exp_basis = face.exp_basis.view(count, 3, -1).double()  # (K, 3, ke)
        self.image_size = term.image_size
        self.targets = term.landmarks.double()
        self.flip = torch.tensor([1.0, -1.0], dtype=torch.float64, device=self.targets.device)  # image v = -y
        views = self.targets.shape[0]
        shape_count = self.shape_basis.shape[-1] if fit_shape else 0
        exp_count = self.exp_basis.shape[-1] if fit_expression else 0
        self.size = 6 * views + shape_count + views * exp_count
        self.columns = [  # each view's variables among all of them
            torch.cat(
                [
                    torch.arange(6 * v, 6 * v + 6),
                    torch.arange(6 * views, 6 * views + shape_count),
                    torch.arange(
                        6 * views + shape_count + v * exp_count, 6 * views + shape_count + (v + 1) * exp_count
                    ),
                ]
            ).to(self.targets.device)
            for v in range(views)
        ]

    def residuals(self, params: FitParameters) -> torch.Tensor:
        points = params.camera_vertices(self.term.points).double()
        return to_image(points, *self.image_size)[..., :2] - self.targets

    def jacobians(self, params: FitParameters) -> torch.Tensor:
        """(V, K * 2, c) each view's residuals' derivatives by its own variables (:attr:`columns`)."""
        pose = params.pose()
        radians = [angle.double() * (math.pi / 180.0) for angle in (pose.pitch, pose.yaw, pose.roll)]
        rotation, derivatives = _rotations(*radians)
        scale = pose.scale.double().view(-1, 1, 1)
        model = remove_depth_offset(self.term.points.vertices(params.shape, params.expression).double())  # (V, K, 3)
        views, count = model.shape[:2]
        flip = self.flip
        pose_columns = [ANGLE_UNIT * scale * (model @ d.mT)[..., :2] * flip for d in derivatives]
        pose_columns.append(LOG_SCALE_UNIT * (scale * (model @ rotation.mT))[..., :2] * flip)
        columns = [torch.stack(pose_columns, dim=-1), torch.diag(flip).expand(views, count, 2, 2)]
        projection = scale * rotation[:, :2] * flip.view(1, 2, 1)  # (V, 2, 3): d(u, v) / d(model point)
        if self.fit_shape:
            columns.append(torch.einsum("vij,kjc->vkic", projection, self.shape_basis))
        if self.fit_expression:
            columns.append(torch.einsum("vij,kjc->vkic", projection, self.exp_basis))
        return torch.cat(columns, dim=-1).reshape(views, count * 2, -1)

    def normal_equations(
        self, params: FitParameters, residual: torch.Tensor, row_weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``J^T W J`` (P, P) and ``J^T W r`` (P,) with W = diag(row_weights), row_weights (V, K)."""
        jacobians = self.jacobians(params)
        hessian = residual.new_zeros(self.size, self.size)
        gradient = residual.new_zeros(self.size)
        for view, columns in enumerate(self.columns):
            weighted = jacobians[view] * row_weights[view].repeat_interleave(2).unsqueeze(1)
            hessian[columns.unsqueeze(1), columns.unsqueeze(0)] += weighted.mT @ jacobians[view]
            gradient[columns] += weighted.mT @ residual[view].reshape(-1)
        return hessian, gradient


def _variables(params: FitParameters, fit_shape: bool, fit_expression: bool) -> list[torch.Tensor]:
    """The free variables in the Jacobian's column order (pose of each view interleaved, see _Linearisation)."""
    variables = [torch.cat([params.rotation, params.log_scale.unsqueeze(1), params.translation], dim=1).reshape(-1)]
    if fit_shape:
        variables.append(params.shape.reshape(-1))
    if fit_expression:
        variables.append(params.expression.reshape(-1))
    return variables


def _assign(params: FitParameters, values: torch.Tensor, fit_shape: bool, fit_expression: bool) -> None:
    views = params.rotation.shape[0]
    pose = values[: 6 * views].view(views, 6).to(params.rotation.dtype)
    params.rotation, params.log_scale, params.translation = pose[:, :3].clone(), pose[:, 3].clone(), pose[:, 4:].clone()
    offset = 6 * views
    if fit_shape:
        params.shape = values[offset : offset + params.shape.numel()].to(params.shape.dtype).clone()
        offset += params.shape.numel()
    if fit_expression:
        params.expression = values[offset:].view_as(params.expression).to(params.expression.dtype).clone()


@torch.no_grad()
def gauss_newton_round(
    term: DenseLandmarkTerm,
    params: FitParameters,
    weights: torch.Tensor,
    iterations: int,
    fit_shape: bool,
    fit_expression: bool,
    landmark_weight: float,
    shape_prior_weight: float,
    expression_prior_weight: float,
) -> int:
    """Minimise ``landmark_weight * E_dense + priors`` in place with the points' weights held fixed.

    Args:
        term: the dense term (its targets, robust scale and point model). params: updated in place.
        weights: (V, K) the points' weights a_vk for this round. iterations: the most Gauss-Newton steps.
        fit_shape, fit_expression: which coefficients are free (the pose always is).
        landmark_weight, shape_prior_weight, expression_prior_weight: as in
            :class:`~models.fitting.multiview_fit.FitConfig`.
    Returns:
        The number of accepted steps.
    """
    linear = _Linearisation(term, fit_shape, fit_expression)
    weights = weights.double()
    views = weights.shape[0]
    scale = term.robust_scale
    data_weight = landmark_weight / float(weights.sum().clamp(min=1.0))
    prior_diagonal = [torch.zeros(6 * views, dtype=torch.float64, device=weights.device)]
    if fit_shape:
        prior_diagonal.append(torch.full_like(params.shape, shape_prior_weight, dtype=torch.float64).reshape(-1))
    if fit_expression:
        per_view = torch.full_like(params.expression, expression_prior_weight / views, dtype=torch.float64)
        prior_diagonal.append(per_view.reshape(-1))
    prior = torch.cat(prior_diagonal)  # E_prior = sum(prior * theta^2) over the free variables

    def energy(residual: torch.Tensor, theta: torch.Tensor) -> float:
        penalty = 2.0 * pseudo_huber(residual.square().sum(dim=-1), scale)
        return float(data_weight * (weights * penalty).sum() + (prior * theta.square()).sum())

    theta = torch.cat(_variables(params, fit_shape, fit_expression)).double()
    residual = linear.residuals(params)
    current = energy(residual, theta)
    damping = INITIAL_DAMPING
    accepted = 0
    for _ in range(iterations):
        robust = weights / torch.sqrt(1.0 + residual.square().sum(dim=-1) / scale**2)  # (V, K)
        hessian, gradient = linear.normal_equations(params, residual, 2.0 * data_weight * robust)
        hessian = hessian + torch.diag(2.0 * prior)
        gradient = gradient + 2.0 * prior * theta
        diagonal = hessian.diagonal().clamp(min=DIAGONAL_FLOOR * float(hessian.diagonal().max()))
        for _ in range(MAX_REJECTIONS):
            step = torch.linalg.solve(hessian + torch.diag(damping * diagonal), -gradient)
            _assign(params, theta + step, fit_shape, fit_expression)
            trial_residual = linear.residuals(params)
            trial = energy(trial_residual, theta + step)
            if trial < current:
                damping = max(damping / DAMPING_DECREASE, DIAGONAL_FLOOR)
                break
            damping *= DAMPING_INCREASE
        else:
            _assign(params, theta, fit_shape, fit_expression)
            break
        decrease = current - trial
        theta, residual, current = theta + step, trial_residual, trial
        accepted += 1
        if decrease <= RELATIVE_DECREASE_TOLERANCE * abs(current):
            break
    return accepted
