"""The variables of the weights-free fit: DFNRMVS's parameterisation, in units of comparable effect."""

import math

import torch

from ..face_model.linear_model import LinearFaceModel
from ..geometry.camera import Pose, remove_depth_offset, transform_vertices

# Units of the pose variables the optimiser sees, chosen so that one unit moves a ~150 px wide face by about
# one pixel, like one unit of a normalised coefficient: rotations in centiradians, log-scale in 1e-2.
ANGLE_UNIT = 1e-2
LOG_SCALE_UNIT = 1e-2


class FitParameters:
    """The optimised variables: shared shape, per-view expression and per-view pose offsets.

    shape (ks,), expression (V, ke) normalised; rotation (V, 3) pitch/yaw/roll offsets in
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

    def prior(self, shape_weight: float, expression_weight: float) -> torch.Tensor:
        """``shape_weight ||shape||^2 + expression_weight mean_v ||expression_v||^2``."""
        shape_term = shape_weight * self.shape.square().sum()
        return shape_term + expression_weight * self.expression.square().sum(dim=1).mean()
