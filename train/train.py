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

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.errors import DFNRMVSError
from models.face_model.morphable_model import MorphableModel
from models.networks.checkpoint import load_checkpoint, save_state_dict
from models.networks.fnrmvs_net import FNRMVSNet
from train.batch import Batch
from train.config import TrainConfig, parse_config
from train.distributed import DistributedContext, all_reduce_sum, barrier, init_distributed, shutdown_distributed
from train.errors import TrainingError
from train.loaders import ResumableSampler, make_loaders
from train.logs import RunLog
from train.losses import LossFunction
from train.objectives import OBJECTIVES
from train.trainable import select_trainable, set_train_mode
from train.training_state import STATE_FILE, Progress, gather_rng_states, load_training_state, save_training_state
from train.validation import BEST_METRIC, Validation, validate

LAST_MODEL = "model_last.pth"
BEST_MODEL = "model_best.pth"
EPOCH_MODEL = "model_epoch{epoch:03d}.pth"
CONFIG_COPY = "config.json"


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
    criterion = LossFunction(mean_loss=True, bfm=morphable_model)
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
    except DFNRMVSError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
