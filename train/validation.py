"""Validation of a stage's output mesh: vertex and landmark errors, averaged over processes."""

import math
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from models.geometry import camera
from models.networks.fnrmvs_net import FNRMVSNet
from train.batch import Batch
from train.config import TrainConfig
from train.distributed import DistributedContext, all_reduce_sum
from train.losses import LossFunction
from train.objectives import regressor_mesh

VAL_METRICS = ("vertex_px", "vertex_mm", "landmark_px")
# The metric that picks model_best.pth per stage (the regressor only moves the pose, which the
# similarity-aligned vertex error ignores).
BEST_METRIC = {"regressor": "landmark_px", "optimizer": "vertex_mm"}


@dataclass
class Validation:
    """Means over all validation views. vertex_px: similarity-aligned vertex error over the face
    region (crop pixels); vertex_mm: the same in mm (NaN unless every sample has ``pose``);
    landmark_px: 2D distance of the landmark vertices to the ground-truth landmarks."""

    vertex_px: float
    vertex_mm: float
    landmark_px: float
    views: int


@torch.no_grad()
def validate(
    model: FNRMVSNet,
    criterion: LossFunction,
    loader: DataLoader,
    config: TrainConfig,
    context: DistributedContext,
) -> Validation:
    """Evaluate the stage's output mesh (regressor: the posed mean face; optimizer: the final,
    landmark-corrected reconstruction) on this process's share of the data, reduced over processes. A sample
    whose mesh is not finite in some view (a diverged model) counts as an infinite error in every view."""
    was_training = model.training
    model.eval()
    landmark_indices = criterion.landmark_indices
    # vertex_px sum, vertex_mm sum, landmark_px sum, views, views with a pose.
    sums = torch.zeros(5, dtype=torch.float64, device=context.device)
    for collated in loader:
        batch = Batch.from_collated(collated, landmark_indices, context.device)
        if config.stage == "regressor":
            vertices = regressor_mesh(model, batch.images).vertices
        else:
            vertices = model(batch.images, batch.raw_images, batch.landmarks).vertices
        height, width = batch.images.shape[-2:]
        finite = torch.isfinite(vertices).flatten(1).all(dim=1)  # (N,) samples whose every view is finite
        vertex_px = vertices.new_full(vertices.shape[:2], math.inf)  # (N, V)
        if finite.any():  # the similarity alignment's SVD fails on non-finite points
            vertex_px[finite] = criterion.dense_aligned_vert_loss(vertices[finite], batch.vertices[finite], root=True)
        image_landmarks = camera.to_image(vertices[:, :, landmark_indices], height, width)[..., :2]
        landmark_px = (image_landmarks - batch.landmarks3d[..., :2]).norm(dim=-1).mean(dim=-1)
        landmark_px = torch.where(finite.unsqueeze(1), landmark_px, math.inf)
        sums[0] += vertex_px.sum()
        sums[2] += landmark_px.sum()
        sums[3] += vertex_px.numel()
        if batch.pose is not None:
            scale = camera.denormalize_pose(batch.pose).scale  # model units -> px
            sums[1] += (vertex_px / scale / config.model_units_per_mm).sum()
            sums[4] += vertex_px.numel()
    sums = all_reduce_sum(sums, context)
    model.train(was_training)
    views = int(sums[3])
    mm = float(sums[1] / sums[4]) if sums[4] == sums[3] and views else math.nan
    return Validation(
        vertex_px=float(sums[0] / max(views, 1)),
        vertex_mm=mm,
        landmark_px=float(sums[2] / max(views, 1)),
        views=views,
    )
