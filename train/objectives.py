"""What each stage minimises: the regressor's landmark loss and the authors' recipe over the optimisation."""

from typing import NamedTuple

import torch
from torch import nn

from models.geometry import camera
from models.geometry.visibility import backface_visibility
from models.networks.fnrmvs_net import FNRMVSNet
from models.nrmvs.records import NRMVSResult
from train.batch import Batch
from train.errors import NonFiniteError
from train.losses import LossFunction

# Loss terms logged per stage (RecipeLoss fields, unweighted, or the landmark loss alone).
STAGE_TERMS = {"regressor": ("land",), "optimizer": ("vert", "aligned_vert", "land", "normal", "edge")}


class StageLoss(NamedTuple):
    """total: the scalar minimised; terms: its unweighted parts (detached scalars), per STAGE_TERMS."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class PosedMesh(NamedTuple):
    """vertices (N, V, n, 3) camera space; image_vertices (N, V, n, 3) image space; visible /
    full_visible (N, V, n) bool (face region / whole mesh)."""

    vertices: torch.Tensor
    image_vertices: torch.Tensor
    visible: torch.Tensor
    full_visible: torch.Tensor


def regressor_mesh(model: FNRMVSNet, images: torch.Tensor) -> PosedMesh:
    """The regressor's mesh: the mean face posed per view by the regressor (the optimisation's
    initial mesh, see models/nrmvs/unrolled.py), differentiable with respect to the regressor."""
    n_samples, n_views, _, height, width = images.shape
    face = model.opt_layer.face
    pose = model.regressor(images).pose.reshape(n_samples * n_views, 6)
    mean = face.mean_shape.view(1, face.num_vertices, 3).expand(pose.shape[0], -1, -1)
    vertices = camera.pose_vertices(mean, pose)
    full_visible = backface_visibility(vertices, face.triangles, face.adjacent_triangles)
    shape = (n_samples, n_views, face.num_vertices)
    return PosedMesh(
        vertices=vertices.view(*shape, 3),
        image_vertices=camera.to_image(vertices, height, width).view(*shape, 3),
        visible=(full_visible & face.face_region_mask).view(shape),
        full_visible=full_visible.view(shape),
    )


class RegressorObjective(nn.Module):
    """Stage 1: the landmark loss of :func:`regressor_mesh` (squared px)."""

    def __init__(self, model: FNRMVSNet, criterion: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: Batch) -> StageLoss:
        mesh = regressor_mesh(self.model, batch.images)
        if not torch.isfinite(mesh.vertices).all():
            raise NonFiniteError("the regressor's posed mesh is not finite")
        land = self.criterion.land3d_loss(
            mesh.image_vertices, batch.landmarks, batch.landmarks3d, mesh.full_visible, mesh.visible
        )
        return StageLoss(land, {"land": land.detach()})


def check_optimisation_finite(result: NRMVSResult) -> None:
    """Raise :class:`NonFiniteError` naming the first optimisation step whose vertices are not finite."""
    for level in result.levels:
        for index, step in enumerate(level.steps, start=1):
            if not torch.isfinite(step.vertices).all():
                raise NonFiniteError(f"the optimisation's vertices at level {level.level} step {index} are not finite")


class OptimizerObjective(nn.Module):
    """Stage 2: the authors' recipe (:class:`~train.losses.LossFunction`) over all optimisation steps."""

    def __init__(self, model: FNRMVSNet, criterion: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: Batch) -> StageLoss:
        output = self.model(batch.images, batch.raw_images, batch.landmarks)
        check_optimisation_finite(output.optimisation)
        try:
            loss = self.criterion(
                output.nested("vertices"),
                output.nested("image_vertices"),
                batch.vertices,
                self.criterion.vertex_normals(batch.vertices),
                batch.landmarks,
                batch.landmarks3d,
                output.nested("full_visible"),
                output.nested("visible"),
            )
        except torch.linalg.LinAlgError as error:  # the SVD of a Procrustes alignment overflowed
            raise NonFiniteError(f"the loss's Procrustes alignment failed ({str(error).splitlines()[0]})") from error
        terms = {
            "vert": loss.vert.loss,
            "aligned_vert": loss.aligned_vert.loss,
            "land": loss.land,
            "normal": loss.normal.loss,
            "edge": loss.edge,
        }
        return StageLoss(loss.total, {name: value.detach() for name, value in terms.items()})


OBJECTIVES = {"regressor": RegressorObjective, "optimizer": OptimizerObjective}
