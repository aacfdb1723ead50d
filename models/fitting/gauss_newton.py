"""Levenberg-Marquardt for the weights-free fit: the projection Jacobian of model points and the damped loop.

Every stage of the fit minimises sums of weighted squares of image-space residuals (landmark positions,
photometric colour differences) plus quadratic priors, over a few hundred variables: a nonlinear least-squares
problem. Gauss-Newton steps, robust penalties handled by iteratively re-weighted least squares (a concave
penalty phi(r^2) is replaced by the quadratic ``phi'(r0^2) r^2`` that lies above it and touches it at the
current residual, so a step that lowers the quadratic lowers the energy), and Levenberg's damping of the normal
equations (Marquardt's scaling by their diagonal) converge in a few iterations where L-BFGS needs hundreds: the
problem is ill-conditioned (depth trades against rotation between the views).

The Jacobian is written out: a point of view v is ``p = s R(pitch, yaw, roll) (mean + S shape + E expr_v - d) +
t`` (weak perspective, :mod:`models.geometry.camera`), its image position ``(p_x + W / 2, H / 2 - 1 - p_y)``.
Variables are ordered rotation (3), log_scale (1), translation (2) of each view, then shape (ks,) when fitted,
then expression (V, ke) when fitted.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..face_model.linear_model import LinearFaceModel
from ..geometry.camera import remove_depth_offset, to_image
from .parameters import ANGLE_UNIT, LOG_SCALE_UNIT, FitParameters

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


class Variables(NamedTuple):
    """Which variables a stage frees, and where each view's lie among them.

    size: P, the number of free variables. columns: per view, (c,) int64 indices of the variables that move its
    points (its pose, the shape, its expression), in :class:`PointJacobian`'s column order.
    """

    fit_shape: bool
    fit_expression: bool
    size: int
    columns: list[torch.Tensor]

    @classmethod
    def of(cls, params: FitParameters, fit_shape: bool, fit_expression: bool) -> "Variables":
        views = params.rotation.shape[0]
        device = params.rotation.device
        shape_count = params.shape.numel() if fit_shape else 0
        exp_count = params.expression.shape[1] if fit_expression else 0
        expressions = 6 * views + shape_count
        columns = [
            torch.cat(
                [
                    torch.arange(6 * v, 6 * v + 6),
                    torch.arange(6 * views, expressions),
                    torch.arange(expressions + v * exp_count, expressions + (v + 1) * exp_count),
                ]
            ).to(device)
            for v in range(views)
        ]
        return cls(fit_shape, fit_expression, expressions + views * exp_count, columns)

    def values(self, params: FitParameters) -> torch.Tensor:
        """(P,) float64 current values of the free variables."""
        values = [torch.cat([params.rotation, params.log_scale.unsqueeze(1), params.translation], dim=1).reshape(-1)]
        if self.fit_shape:
            values.append(params.shape.reshape(-1))
        if self.fit_expression:
            values.append(params.expression.reshape(-1))
        return torch.cat(values).double()

    def assign(self, params: FitParameters, values: torch.Tensor) -> None:
        """Set the free variables of ``params`` to ``values`` (P,)."""
        views = params.rotation.shape[0]
        pose = values[: 6 * views].view(views, 6).to(params.rotation.dtype)
        params.rotation, params.log_scale = pose[:, :3].clone(), pose[:, 3].clone()
        params.translation = pose[:, 4:].clone()
        offset = 6 * views
        if self.fit_shape:
            params.shape = values[offset : offset + params.shape.numel()].to(params.shape.dtype).clone()
            offset += params.shape.numel()
        if self.fit_expression:
            params.expression = values[offset:].view_as(params.expression).to(params.expression.dtype).clone()

    def prior(self, params: FitParameters, shape_weight: float, expression_weight: float) -> torch.Tensor:
        """(P,) diagonal d of the priors over the free variables: ``E_prior = sum_i d_i theta_i^2`` as
        :meth:`FitParameters.prior` (the pose has none)."""
        views = params.rotation.shape[0]
        parts = [params.rotation.new_zeros(6 * views, dtype=torch.float64)]
        if self.fit_shape:
            parts.append(torch.full((params.shape.numel(),), shape_weight, dtype=torch.float64))
        if self.fit_expression:
            parts.append(torch.full((params.expression.numel(),), expression_weight / views, dtype=torch.float64))
        return torch.cat([part.to(params.rotation.device) for part in parts])


class PointJacobian:
    """Image positions of a linear model's m points in every view, and their derivatives by the free variables.

    Args:
        points: the :class:`LinearFaceModel` of the points. image_size: (H, W). variables: the free variables.
    """

    def __init__(self, points: LinearFaceModel, image_size: tuple[int, int], variables: Variables) -> None:
        self.points = points
        self.image_size = image_size
        self.variables = variables

    def jacobians(
        self, params: FitParameters, points: torch.Tensor | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """(V, r, 2, c) each view's image positions' derivatives by its own variables (:attr:`Variables.columns`),
        for the points ``points`` (r,) (default: all m), in ``dtype``."""
        pose = params.pose()
        radians = [angle.double() * (math.pi / 180.0) for angle in (pose.pitch, pose.yaw, pose.roll)]
        rotation, derivatives = _rotations(*radians)
        scale = pose.scale.double().view(-1, 1, 1)
        face = self.points if points is None else self.points.take(points)
        model = remove_depth_offset(face.vertices(params.shape, params.expression)).double()  # (V, r, 3)
        views, count = model.shape[:2]
        flip = model.new_tensor([1.0, -1.0])  # image v = -y
        pose_columns = [ANGLE_UNIT * scale * (model @ d.mT)[..., :2] * flip for d in derivatives]
        pose_columns.append(LOG_SCALE_UNIT * (scale * (model @ rotation.mT))[..., :2] * flip)
        jacobian = model.new_empty(views, count, 2, self.variables.columns[0].numel(), dtype=dtype)
        jacobian[..., :4] = torch.stack(pose_columns, dim=-1)
        jacobian[..., 4:6] = torch.diag(flip)
        projection = (scale * rotation[:, :2] * flip.view(1, 2, 1)).to(dtype)  # (V, 2, 3): d(u, v) / d(model point)
        offset = 6
        bases = ((self.variables.fit_shape, face.shape_basis), (self.variables.fit_expression, face.exp_basis))
        for fitted, basis in bases:
            if fitted:
                rows = basis.view(count, 3, -1).to(dtype)
                jacobian[..., offset : offset + rows.shape[-1]] = torch.einsum("vij,kjc->vkic", projection, rows)
                offset += rows.shape[-1]
        return jacobian

    def positions(self, params: FitParameters) -> torch.Tensor:
        """(V, m, 2) image positions, pixels."""
        return to_image(params.camera_vertices(self.points), *self.image_size)[..., :2]


class NormalEquations:
    """``H = 2 sum w J^T J`` (P, P) and ``g = 2 sum w J^T r`` (P,), the Gauss-Newton system of ``sum w |r|^2``.

    H is accumulated from float32 products (a Gauss-Newton step needs no more: each step is accepted only if the
    energy falls), g in float64, except for the colour differences, sampled in float32 anyway.
    """

    def __init__(self, variables: Variables, like: torch.Tensor) -> None:
        self.variables = variables
        self.hessian = like.new_zeros(variables.size, variables.size, dtype=torch.float64)
        self.gradient = like.new_zeros(variables.size, dtype=torch.float64)

    def add_points(self, view: int, jacobian: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor) -> None:
        """Rows of one view: jacobian (r, k, c) by the view's variables, residual (r, k), weight (r,)."""
        rows = jacobian.reshape(-1, jacobian.shape[-1]).double()
        weighted = rows * (2.0 * weight.double()).repeat_interleave(jacobian.shape[1]).unsqueeze(1)
        columns = self.variables.columns[view]
        block = (weighted.float().mT @ rows.float()).double()
        self.hessian[columns.unsqueeze(1), columns.unsqueeze(0)] += block
        self.gradient[columns] += weighted.mT @ residual.reshape(-1).double()

    def add_differences(
        self,
        views: tuple[int, int],
        jacobians: tuple[torch.Tensor, torch.Tensor],
        difference: torch.Tensor,
        weight: torch.Tensor,
    ) -> None:
        """Rows ``f_i - f_j`` of a view pair (i, j): jacobians (r, k, c) of f_i and of f_j by their views'
        variables, difference (r, k), weight (r,)."""
        first, second = (jacobian.float() for jacobian in jacobians)
        rows = first.new_zeros(first.shape[0] * first.shape[1], self.variables.size)
        rows.index_add_(1, self.variables.columns[views[0]], first.reshape(rows.shape[0], -1))
        rows.index_add_(1, self.variables.columns[views[1]], -second.reshape(rows.shape[0], -1))
        weighted = rows * (2.0 * weight).float().repeat_interleave(first.shape[1]).unsqueeze(1)
        self.hessian += (weighted.mT @ rows).double()
        self.gradient += (weighted.mT @ difference.reshape(-1).float()).double()


@torch.no_grad()
def levenberg_marquardt(
    params: FitParameters,
    variables: Variables,
    prior: torch.Tensor,
    iterations: int,
    linearise: Callable[[], NormalEquations],
    data_energy: Callable[[], float],
) -> int:
    """Minimise ``data_energy() + sum(prior * theta^2)`` over the free variables theta, in place.

    Args:
        params: updated in place (left at the lowest energy found). variables: the free ones.
        prior: (P,) the priors' diagonal (:meth:`Variables.prior`). iterations: the most Gauss-Newton steps.
        linearise: the normal equations of the data terms at the current ``params``.
        data_energy: the data terms' energy at the current ``params``.
    Returns:
        The number of accepted steps.
    """
    theta = variables.values(params)
    current = data_energy() + float((prior * theta.square()).sum())
    damping = INITIAL_DAMPING
    accepted = 0
    for _ in range(iterations):
        system = linearise()
        hessian = system.hessian + torch.diag(2.0 * prior)
        gradient = system.gradient + 2.0 * prior * theta
        diagonal = hessian.diagonal().clamp(min=DIAGONAL_FLOOR * float(hessian.diagonal().max()))
        for _ in range(MAX_REJECTIONS):
            step = torch.linalg.solve(hessian + torch.diag(damping * diagonal), -gradient)
            variables.assign(params, theta + step)
            trial = data_energy() + float((prior * (theta + step).square()).sum())
            if trial < current:
                damping = max(damping / DAMPING_DECREASE, DIAGONAL_FLOOR)
                break
            damping *= DAMPING_INCREASE
        else:
            variables.assign(params, theta)
            break
        decrease = current - trial
        theta, current = theta + step, trial
        accepted += 1
        if decrease <= RELATIVE_DECREASE_TOLERANCE * abs(current):
            break
    return accepted
