"""``python -m train.train``: the authors' two-stage training of DFNRMVS.

Stage ``regressor`` pre-trains the RegressionNet alone with the landmark loss (``land3d_loss``) of the
mesh it produces: the mean face posed by its per-view pose, exactly the optimisation's initial mesh.
Stage ``optimizer`` then trains the optimisation layer (``opt_layer``: backbone, pyramids, step-size
and adaptive-basis nets) with the regressor frozen, on the authors' recipe (train/losses.py:
vert + aligned vert + 0.1 land + 100 normal + 0.01 edge over every optimisation step). Both use Adam
(lr 2e-5) and batches of 2 by default.

Outputs in ``--out`` (written by rank 0 only):
    model_last.pth, model_epochNNN.pth, model_best.pth   bare state dicts, the authors' format
    training_state.pt                                    model, optimiser, step, epoch, RNG states (--resume)
    train_log.csv, val_log.csv, config.json              per-step losses, per-epoch validation, options

Multi-GPU: ``torchrun --nproc_per_node=G -m train.train ...`` (DistributedDataParallel; NCCL on
CUDA, Gloo on the CPU; ``--batch-size`` is per process). User errors end with exit status 2 and one line.
"""

import csv
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from models import camera
from models.checkpoint import MODEL_STATE_KEY, CheckpointError, load_checkpoint, save_state_dict
from models.errors import MorphableModelError
from models.fnrmvs_net import FNRMVSNet
from models.mesh_geometry import backface_visibility
from models.morphable_model import MorphableModel
from train.config import ConfigError, TrainConfig, parse_config
from train.dataset import DatasetError, MultiViewFaceDataset, collate_samples
from train.distributed import DistributedContext, all_reduce_sum, barrier, init_distributed, shutdown_distributed
from train.losses import LossFunction

STATE_FILE = "training_state.pt"
LAST_MODEL = "model_last.pth"
BEST_MODEL = "model_best.pth"
EPOCH_MODEL = "model_epoch{epoch:03d}.pth"
TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"
CONFIG_COPY = "config.json"
STATE_FORMAT_VERSION = 1

# Loss terms logged per stage (RecipeLoss fields, unweighted, or the landmark loss alone).
STAGE_TERMS = {"regressor": ("land",), "optimizer": ("vert", "aligned_vert", "land", "normal", "edge")}
VAL_METRICS = ("vertex_px", "vertex_mm", "landmark_px")
# The metric that picks model_best.pth per stage (the regressor only moves the pose, which the
# similarity-aligned vertex error ignores).
BEST_METRIC = {"regressor": "landmark_px", "optimizer": "vertex_mm"}
# Never used by the forward pass; the authors keep it only so that their checkpoints load.
UNUSED_PARAMETER_SUFFIX = "adap_bias_net.weight"


class TrainingError(RuntimeError):
    """A run cannot start or continue (bad resume state, missing package); one-line message."""


class StageLoss(NamedTuple):
    """total: the scalar minimised; terms: its unweighted parts (detached scalars), per STAGE_TERMS."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class Batch:
    """One batch on the device (N samples, V views, n vertices).

    images (N, V, 3, 256, 256) ImageNet-normalised; raw_images the same in [0, 1]; landmarks
    (N, V, 68, 2) px (x right, y down); vertices (N, V, n, 3) ground truth, camera space px (y up);
    landmarks3d (N, V, 68, 3) ground-truth 3D landmarks in image space (px, y down, as
    ``land3d_loss`` wants them); pose (N, V, 6) normalised ground-truth pose or None.
    """

    images: torch.Tensor
    raw_images: torch.Tensor
    landmarks: torch.Tensor
    vertices: torch.Tensor
    landmarks3d: torch.Tensor
    pose: torch.Tensor | None

    @classmethod
    def from_collated(cls, batch: dict, landmark_indices: torch.Tensor, device: torch.device) -> "Batch":
        """Move a collated dataset batch to ``device``; the camera-space ``landmarks3d`` (by default
        the ground-truth vertices at the landmark indices) are moved to image space."""
        vertices = batch["vertices"].to(device)
        landmarks3d = batch.get("landmarks3d")
        landmarks3d = vertices[:, :, landmark_indices] if landmarks3d is None else landmarks3d.to(device)
        height, width = batch["images"].shape[-2:]
        pose = batch.get("pose")
        return cls(
            images=batch["images"].to(device),
            raw_images=batch["raw_images"].to(device),
            landmarks=batch["landmarks"].to(device),
            vertices=vertices,
            landmarks3d=camera.to_image(landmarks3d, height, width),
            pose=None if pose is None else pose.to(device),
        )


# ------------------------------------------------------------------------------------------------ meshes
class PosedMesh(NamedTuple):
    """vertices (N, V, n, 3) camera space; image_vertices (N, V, n, 3) image space; visible /
    full_visible (N, V, n) bool (face region / whole mesh)."""

    vertices: torch.Tensor
    image_vertices: torch.Tensor
    visible: torch.Tensor
    full_visible: torch.Tensor


def regressor_mesh(model: FNRMVSNet, images: torch.Tensor) -> PosedMesh:
    """The regressor's mesh: the mean face posed per view by the regressor (the optimisation's
    initial mesh, see models/nrmvs.py), differentiable with respect to the regressor."""
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


# ------------------------------------------------------------------------------------------- objectives
class RegressorObjective(nn.Module):
    """Stage 1: the landmark loss of :func:`regressor_mesh` (squared px)."""

    def __init__(self, model: FNRMVSNet, criterion: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: Batch) -> StageLoss:
        mesh = regressor_mesh(self.model, batch.images)
        land = self.criterion.land3d_loss(
            mesh.image_vertices, batch.landmarks, batch.landmarks3d, mesh.full_visible, mesh.visible
        )
        return StageLoss(land, {"land": land.detach()})


class OptimizerObjective(nn.Module):
    """Stage 2: the authors' recipe (:class:`~train.losses.LossFunction`) over all optimisation steps."""

    def __init__(self, model: FNRMVSNet, criterion: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: Batch) -> StageLoss:
        result = self.model(batch.images, batch.raw_images, batch.landmarks).optimisation
        levels = result.levels
        loss = self.criterion(
            [result.initial_vertices, *([s.vertices for s in level.steps] for level in levels)],
            [result.initial_image_vertices, *([s.image_vertices for s in level.steps] for level in levels)],
            batch.vertices,
            self.criterion.vertex_normals(batch.vertices),
            batch.landmarks,
            batch.landmarks3d,
            [result.initial_full_visible, *([s.full_visible for s in level.steps] for level in levels)],
            [result.initial_visible, *([s.visible for s in level.steps] for level in levels)],
        )
        terms = {
            "vert": loss.vert.loss,
            "aligned_vert": loss.aligned_vert.loss,
            "land": loss.land,
            "normal": loss.normal.loss,
            "edge": loss.edge,
        }
        return StageLoss(loss.total, {name: value.detach() for name, value in terms.items()})


OBJECTIVES = {"regressor": RegressorObjective, "optimizer": OptimizerObjective}


def select_trainable(model: FNRMVSNet, stage: str) -> list[nn.Parameter]:
    """Freeze everything but the stage's network; returns the parameters to optimise.

    Stage "regressor" trains ``model.regressor``, stage "optimizer" ``model.opt_layer`` (without the
    never-used ``adap_bias_net``).
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    network = model.regressor if stage == "regressor" else model.opt_layer
    trainable = []
    for name, parameter in network.named_parameters():
        if not name.endswith(UNUSED_PARAMETER_SUFFIX):
            parameter.requires_grad_(True)
            trainable.append(parameter)
    return trainable


def set_train_mode(model: FNRMVSNet, stage: str) -> None:
    """Training mode for ``stage``: FNRMVSNet.train() keeps the regressor in eval, so stage
    "regressor" switches it back on (dropout active; its backbone BatchNorm stays frozen)."""
    model.train()
    if stage == "regressor":
        model.regressor.train()


# ------------------------------------------------------------------------------------------- validation
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
    landmark-corrected reconstruction) on this process's share of the data, reduced over processes."""
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
        vertex_px = criterion.dense_aligned_vert_loss(vertices, batch.vertices, root=True)  # (N, V)
        image_landmarks = camera.to_image(vertices[:, :, landmark_indices], height, width)[..., :2]
        landmark_px = (image_landmarks - batch.landmarks3d[..., :2]).norm(dim=-1).mean(dim=-1)
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


# ----------------------------------------------------------------------------------------- data loading
class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, one share per process) that can skip the
    first ``start`` indices of its share, to continue an epoch after ``--resume``."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def make_loaders(
    config: TrainConfig, context: DistributedContext, num_vertices: int
) -> tuple[DataLoader, DataLoader | None, ResumableSampler]:
    """Training loader (sharded and shuffled) and validation loader (each process a disjoint share)."""
    train_set = MultiViewFaceDataset(config.data, num_vertices=num_vertices)
    sampler = ResumableSampler(train_set, context.world_size, context.rank, config.seed)
    # A private generator keeps the loader from consuming the global RNG (dropout), so a resumed
    # run draws the same random numbers as an uninterrupted one.
    common = {"collate_fn": collate_samples, "num_workers": config.workers, "pin_memory": context.device.type == "cuda"}
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(config.seed),
        **common,
    )
    val_loader = None
    if config.val_data:
        val_set = MultiViewFaceDataset(config.val_data, num_vertices=num_vertices)
        share = Subset(val_set, range(context.rank, len(val_set), context.world_size))
        val_loader = DataLoader(share, batch_size=config.batch_size, shuffle=False, **common)
    return train_loader, val_loader, sampler


# --------------------------------------------------------------------------------------------- logging
class RunLog:
    """CSV logs (and TensorBoard when asked) of the main process; other processes log nothing."""

    def __init__(self, config: TrainConfig, context: DistributedContext, resumed_step: int) -> None:
        self.enabled = context.is_main
        out = Path(config.out)
        self.train_path = out / TRAIN_LOG
        self.val_path = out / VAL_LOG
        self.train_fields = ["step", "epoch", "loss", *STAGE_TERMS[config.stage], "lr", "seconds"]
        self.val_fields = ["step", "epoch", *VAL_METRICS, "views"]
        self.writer = None
        if not self.enabled:
            return
        self._start(self.train_path, self.train_fields, resumed_step)
        self._start(self.val_path, self.val_fields, resumed_step)
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise TrainingError("--tensorboard needs the tensorboard package (pip install tensorboard)") from error
            self.writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=resumed_step + 1)

    @staticmethod
    def _start(path: Path, fields: list[str], resumed_step: int) -> None:
        """New file with a header; on resume, keep only the rows up to the resumed step."""
        rows = []
        if resumed_step and path.is_file():
            with path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resumed_step]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def _append(self, path: Path, fields: list[str], row: dict) -> None:
        with path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=fields).writerow(row)

    def train_step(self, row: dict) -> None:
        if not self.enabled:
            return
        self._append(self.train_path, self.train_fields, row)
        if self.writer is not None:
            for name in ("loss", *self.train_fields[3:-2]):
                self.writer.add_scalar(f"train/{name}", row[name], row["step"])

    def validation(self, step: int, epoch: int, result: Validation) -> None:
        if not self.enabled:
            return
        self._append(self.val_path, self.val_fields, {"step": step, "epoch": epoch, **result.__dict__})
        if self.writer is not None:
            for name in VAL_METRICS:
                self.writer.add_scalar(f"val/{name}", getattr(result, name), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------------ checkpoints
@dataclass
class Progress:
    """Where training stands: ``step`` optimiser steps done; ``epoch`` the current epoch; ``batch``
    batches of it done; ``best`` the best validation value of the stage's metric so far."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float = math.inf


def rng_state(context: DistributedContext) -> dict:
    """This process's torch random-number-generator states (CPU and CUDA). Training draws random
    numbers from torch only: dropout here, the sample order from the sampler's own seeded generator."""
    state = {"torch": torch.get_rng_state()}
    if context.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(context.device)
    return state


def set_rng_state(state: dict, context: DistributedContext) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and context.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], context.device)


def gather_rng_states(context: DistributedContext) -> list[dict]:
    """Every process's RNG states, indexed by rank (collective: all processes must call it)."""
    state = rng_state(context)
    if not context.distributed:
        return [state]
    states: list = [None] * context.world_size
    dist.all_gather_object(states, state)
    return states


def save_training_state(
    path: Path,
    model: FNRMVSNet,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    config: TrainConfig,
    rng_states: list[dict],
) -> None:
    """Write the resumable state atomically (a temporary file renamed over ``path``)."""
    state = {
        "format_version": STATE_FORMAT_VERSION,
        MODEL_STATE_KEY: model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": progress.__dict__,
        "stage": config.stage,
        "world_size": len(rng_states),
        "batch_size": config.batch_size,
        "rng": rng_states,
        "config": config.to_json(),
    }
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_training_state(
    path: str | Path,
    model: FNRMVSNet,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    context: DistributedContext,
) -> Progress:
    """Restore model, optimiser and this process's RNG states from ``path``; returns the progress."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: training state not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise TrainingError(f"{path}: not a readable training state ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format_version") != STATE_FORMAT_VERSION:
        raise TrainingError(f"{path}: not a training state of this version (written by python -m train.train?)")
    for key, expected in (("stage", config.stage), ("world_size", context.world_size)):
        if state[key] != expected:
            raise TrainingError(f"{path}: written with {key} {state[key]!r}, this run has {expected!r}")
    if state["batch_size"] != config.batch_size:
        raise TrainingError(f"{path}: written with batch_size {state['batch_size']}, this run has {config.batch_size}")
    try:
        model.load_state_dict(state[MODEL_STATE_KEY], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as error:
        raise TrainingError(f"{path}: does not match this model ({' '.join(str(error).split())[:300]})") from error
    set_rng_state(state["rng"][context.rank], context)
    return Progress(**state["progress"])


# ------------------------------------------------------------------------------------------------ train
@dataclass
class TrainResult:
    """What :func:`train` did: losses of the steps it ran (in order), the final progress, the
    validations of the epochs it finished and the trained model (this process's copy)."""

    losses: list[float] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    validations: list[Validation] = field(default_factory=list)
    model: FNRMVSNet | None = None


def seed_everything(seed: int) -> None:
    """Seed torch (the only source of randomness here) and make cuDNN deterministic."""
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_model(config: TrainConfig, morphable_model: MorphableModel) -> FNRMVSNet:
    """FNRMVSNet with fresh weights (seeded) or ``config.init`` loaded strictly."""
    model = FNRMVSNet(morphable_model, n_shape_para=config.n_shape_para, n_exp_para=config.n_exp_para)
    if config.init and not config.resume:
        load_checkpoint(model, config.init)
    return model


def train(config: TrainConfig) -> TrainResult:
    """Run (or continue) one stage as configured; see the module docstring. Returns a summary."""
    config.validate()
    context = init_distributed(config.device)
    try:
        return _train(config, context)
    finally:
        shutdown_distributed()


def _train(config: TrainConfig, context: DistributedContext) -> TrainResult:
    seed_everything(config.seed)
    out = Path(config.out)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_COPY).write_text(config.to_json())
    morphable_model = MorphableModel.load(config.mm)
    # Data first: a bad data folder fails before the (slow) model is built.
    train_loader, val_loader, sampler = make_loaders(config, context, morphable_model.num_vertices)
    model = build_model(config, morphable_model)
    if context.is_main and config.stage == "optimizer" and not config.init and not config.resume:
        print("warning: stage optimizer without --init: the regressor is untrained", file=sys.stderr)
    criterion = LossFunction(
        morphable_model.triangles,
        morphable_model.landmark_indices,
        morphable_model.face_region_mask,
        adjacent_triangles=morphable_model.adjacent_triangles,
        neighbour_vertices=morphable_model.neighbour_vertices,
    )
    trainable = select_trainable(model, config.stage)
    model.to(context.device)
    criterion.to(context.device)
    optimizer = torch.optim.Adam(trainable, lr=config.lr)

    progress = Progress()
    if config.resume:
        progress = load_training_state(config.resume, model, optimizer, config, context)
    else:
        # Processes share the weights (DDP also broadcasts rank 0's) but draw different dropout masks.
        torch.manual_seed(config.seed + context.rank)

    objective: nn.Module = OBJECTIVES[config.stage](model, criterion)
    if context.distributed:
        # The frozen network and the unused pyramid outputs get no gradient; buffers are constant
        # (frozen BatchNorm, morphable-model tables), so they are synchronised once, not every step.
        objective = DistributedDataParallel(
            objective,
            device_ids=[context.device] if context.device.type == "cuda" else None,
            find_unused_parameters=True,
            forward_sync_buffers=False,
        )
    trainer = Trainer(
        config=config,
        context=context,
        model=model,
        criterion=criterion,
        objective=objective,
        optimizer=optimizer,
        train_loader=train_loader,
        val_loader=val_loader,
        sampler=sampler,
        log=RunLog(config, context, progress.step),
        result=TrainResult(progress=progress, model=model),
    )
    try:
        trainer.run()
    finally:
        trainer.log.close()
    return trainer.result


@dataclass
class Trainer:
    """The training loop of one process over the prepared parts (see :func:`train`)."""

    config: TrainConfig
    context: DistributedContext
    model: FNRMVSNet
    criterion: LossFunction
    objective: nn.Module  # the stage's objective, wrapped in DistributedDataParallel when distributed
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader | None
    sampler: ResumableSampler
    log: RunLog
    result: TrainResult

    @property
    def progress(self) -> Progress:
        return self.result.progress

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def reached_max_steps(self) -> bool:
        return self.config.max_steps is not None and self.progress.step >= self.config.max_steps

    def run(self) -> None:
        """Epochs until ``epochs`` or ``max_steps``; a run stopped inside an epoch saves its state there."""
        batches_per_epoch = math.ceil(self.sampler.num_samples / self.config.batch_size)
        while self.progress.epoch < self.config.epochs and not self.reached_max_steps():
            self.train_epoch(batches_per_epoch)
            if self.progress.batch < batches_per_epoch:
                self.save_state()  # stopped by max_steps: --resume continues this epoch
                return
            self.end_epoch()

    def train_epoch(self, batches_per_epoch: int) -> None:
        """The rest of the current epoch (all of it unless resumed inside it), or up to ``max_steps``."""
        config, progress = self.config, self.progress
        self.sampler.set_epoch(progress.epoch)
        self.sampler.start = progress.batch * config.batch_size
        set_train_mode(self.model, config.stage)
        bar = tqdm(
            self.train_loader,
            total=batches_per_epoch,
            initial=progress.batch,
            desc=f"{config.stage} epoch {progress.epoch + 1}/{config.epochs}",
            disable=not (config.progress and self.context.is_main),
            dynamic_ncols=True,
        )
        for collated in bar:
            row = self.step(collated)
            bar.set_postfix(loss=f"{row['loss']:.4g}")
            if config.save_every and progress.step % config.save_every == 0:
                self.save_state()
            if self.reached_max_steps():
                break
        bar.close()

    def step(self, collated: dict) -> dict:
        """One optimiser step on a collated batch; returns the logged row (losses averaged over processes)."""
        started = time.perf_counter()
        progress = self.progress
        batch = Batch.from_collated(collated, self.criterion.landmark_indices, self.context.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch)
        loss.total.backward()
        values = torch.stack([loss.total.detach(), *loss.terms.values()]).double()
        values = all_reduce_sum(values, self.context) / self.context.world_size
        if not torch.isfinite(values).all():
            raise TrainingError(
                f"non-finite loss at step {progress.step + 1} (samples {', '.join(collated['name'])}): the "
                "optimisation diverged; start from trained weights (--init) or lower --lr"
            )
        self.optimizer.step()
        progress.step += 1
        progress.batch += 1
        self.result.losses.append(float(values[0]))
        row = {"step": progress.step, "epoch": progress.epoch, "loss": float(values[0])}
        row.update({name: float(v) for name, v in zip(loss.terms, values[1:], strict=True)})
        row.update(lr=self.optimizer.param_groups[0]["lr"], seconds=round(time.perf_counter() - started, 3))
        self.log.train_step(row)
        return row

    def end_epoch(self) -> None:
        """Validate, keep the best and the epoch's model, save the state."""
        progress = self.progress
        finished = progress.epoch
        progress.epoch += 1
        progress.batch = 0
        if self.val_loader is not None:
            validation = validate(self.model, self.criterion, self.val_loader, self.config, self.context)
            self.result.validations.append(validation)
            self.log.validation(progress.step, finished, validation)
            metric = getattr(validation, BEST_METRIC[self.config.stage])
            if math.isnan(metric):
                metric = validation.vertex_px
            if metric < progress.best:
                progress.best = metric
                if self.context.is_main:
                    save_state_dict(self.model, self.out / BEST_MODEL)
        if self.context.is_main:
            save_state_dict(self.model, self.out / EPOCH_MODEL.format(epoch=finished + 1))
        self.save_state()

    def save_state(self) -> None:
        """Write training_state.pt and model_last.pth (rank 0) after gathering every process's RNG state."""
        states = gather_rng_states(self.context)
        if self.context.is_main:
            save_training_state(self.out / STATE_FILE, self.model, self.optimizer, self.progress, self.config, states)
            save_state_dict(self.model, self.out / LAST_MODEL)
        barrier(self.context)


def one_line(error: Exception) -> str:
    """The error's message on one line; for an error re-raised from a DataLoader worker (whose message
    carries the worker's traceback) the original message."""
    lines = str(error).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught "):
        return lines[-1].split(": ", 1)[-1]
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
        train(config)
    except (ConfigError, DatasetError, CheckpointError, MorphableModelError, TrainingError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
