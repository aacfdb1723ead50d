"""``python -m train.train``: the authors' two-stage training of DFNRMVS, from scratch or from weights.

Stage ``regressor`` pre-trains the RegressionNet alone with the landmark loss (``land3d_loss``) of the
mesh it produces: the mean face posed by its per-view pose, exactly the optimisation's initial mesh.
Stage ``optimizer`` then trains the optimisation layer (``opt_layer``: backbone, pyramids, step-size
and adaptive-basis nets) with the regressor frozen, on the authors' recipe (train/losses.py:
vert + aligned vert + 0.1 land + 100 normal + 0.01 edge over every optimisation step). Both use Adam
(lr 2e-5 by default) and batches of 2 by default.

Training from scratch (no ``--init``): the untrained optimisation layer first gets the start-up values of
train/initialisation.py (initial values only). Every step clips the gradients' global norm
(``--clip-grad-norm``) after an optional linear learning-rate warm-up (``--warmup-steps``). A batch whose
network output, loss terms or gradients are not finite is skipped (nothing is updated) and counted; past
``--max-skipped`` of them the run stops with one line naming the step and the term. Model files are
never written with non-finite weights.

Outputs in ``--out`` (written by rank 0 only; ``--keep`` picks the model files):
    model_last.pth, model_best.pth, model_epochNNN.pth   bare state dicts, the authors' format
    training_state.pt                                    model, optimiser, progress, RNG states (--resume)
    train_log.csv, val_log.csv, config.json              per-step losses, per-epoch validation, options

Multi-GPU: ``torchrun --nproc_per_node=G -m train.train ...`` (DistributedDataParallel; NCCL on
CUDA, Gloo on the CPU; ``--batch-size`` is per process). User errors end with exit status 2 and one line.
"""

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.errors import DFNRMVSError
from models.face_model.morphable_model import MorphableModel
from models.networks.checkpoint import load_checkpoint
from models.networks.fnrmvs_net import FNRMVSNet
from train.batch import Batch
from train.checkpoints import BEST_MODEL, EPOCH_MODEL, EPOCH_MODEL_GLOB, LAST_MODEL, save_model
from train.config import ConfigError, TrainConfig, parse_config
from train.distributed import DistributedContext, all_reduce_sum, barrier, init_distributed, shutdown_distributed
from train.errors import NonFiniteError
from train.initialisation import initialise_for_training, is_untrained
from train.loaders import ViewGroupedBatches, make_loaders
from train.logs import TRAIN_LOG, VAL_LOG, RunLog
from train.losses import LossFunction
from train.objectives import OBJECTIVES, STAGE_TERMS
from train.trainable import select_trainable, set_train_mode
from train.training_state import STATE_FILE, Progress, gather_rng_states, load_training_state, save_training_state
from train.validation import BEST_METRIC, Validation, validate

CONFIG_COPY = "config.json"
# Files that mark a folder as holding an earlier run (refused as --out unless resuming or overwriting).
RUN_FILES = (CONFIG_COPY, TRAIN_LOG, VAL_LOG, LAST_MODEL, BEST_MODEL, STATE_FILE)


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


ModelFactory = Callable[[MorphableModel, TrainConfig], FNRMVSNet]


def default_model(morphable_model: MorphableModel, config: TrainConfig) -> FNRMVSNet:
    """The authors' FNRMVSNet with fresh (seeded) weights and the configured regressor head sizes."""
    return FNRMVSNet(morphable_model, n_shape_para=config.n_shape_para, n_exp_para=config.n_exp_para)


def build_model(
    config: TrainConfig, morphable_model: MorphableModel, factory: ModelFactory = default_model
) -> tuple[FNRMVSNet, bool]:
    """The model with fresh weights or ``config.init`` loaded strictly; when ``config.initialise``, an
    optimisation layer that was never trained gets train/initialisation.py's start-up values.
    Returns the model and whether that initialisation was applied."""
    model = factory(morphable_model, config)
    if config.resume:
        return model, False  # the training state replaces every weight
    if config.init:
        load_checkpoint(model, config.init)
    initialise = config.initialise and is_untrained(model)
    if initialise:
        initialise_for_training(model)
    return model, initialise


def prepare_out(config: TrainConfig, context: DistributedContext) -> Path:
    """The output folder, refusing one that holds an earlier run unless resuming or ``--overwrite``
    (which removes that run's files). Nothing is written: see :func:`start_out`."""
    out = Path(config.out)
    earlier = [name for name in RUN_FILES if (out / name).exists()] + [p.name for p in out.glob(EPOCH_MODEL_GLOB)]
    if earlier and not config.resume:
        if not config.overwrite:
            raise ConfigError(
                f"--out {out}: holds an earlier run ({earlier[0]}); continue it with --resume or replace it "
                "with --overwrite"
            )
        if context.is_main:
            for name in earlier:
                (out / name).unlink()
    barrier(context)
    return out


def start_out(config: TrainConfig, out: Path, context: DistributedContext) -> None:
    """Rank 0 creates the output folder and writes ``config.json``, once the inputs have loaded (a run
    refused for a bad data folder or model leaves nothing that would block its corrected rerun)."""
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_COPY).write_text(config.to_json())
    barrier(context)


def train(config: TrainConfig, model_factory: ModelFactory | None = None) -> TrainResult:
    """Run (or continue) one stage as configured; see the module docstring. Returns a summary.

    ``model_factory`` builds the network from the morphable model (None: :func:`default_model`, the authors'
    FNRMVSNet; tests and benchmarks pass train/compact_network.py's).
    """
    config.validate()
    context = init_distributed(config.device)
    try:
        return _train(config, context, model_factory or default_model)
    finally:
        shutdown_distributed()


def _train(config: TrainConfig, context: DistributedContext, model_factory: ModelFactory) -> TrainResult:
    seed_everything(config.seed)
    out = prepare_out(config, context)
    morphable_model = MorphableModel.load(config.mm)
    # Data first: a bad data folder fails before the (slow) model is built.
    train_loader, val_loader, sampler = make_loaders(config, context, morphable_model.num_vertices)
    model, initialised = build_model(config, morphable_model, model_factory)
    start_out(config, out, context)
    if context.is_main and initialised:
        print(
            "note: untrained optimisation layer: start-up initialisation applied (train/initialisation.py)",
            file=sys.stderr,
        )
    if context.is_main and config.stage == "optimizer" and not config.init and not config.resume:
        print("warning: stage optimizer without --init: the regressor is untrained", file=sys.stderr)
    criterion = LossFunction(mean_loss=True, bfm=morphable_model)
    trainable = select_trainable(model, config.stage)
    model.to(context.device)
    criterion.to(context.device)
    # fused: one kernel over all parameters (5x faster than the per-tensor loop on the CPU), same update rule
    optimizer = torch.optim.Adam(trainable, lr=config.lr, fused=True)

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
    names = {parameter: name for name, parameter in model.named_parameters()}
    trainer = Trainer(
        config=config,
        context=context,
        model=model,
        criterion=criterion,
        objective=objective,
        optimizer=optimizer,
        trainable=[(names[p], p) for p in trainable],
        train_loader=train_loader,
        val_loader=val_loader,
        sampler=sampler,
        out=out,
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
    trainable: list[tuple[str, nn.Parameter]]  # (state-dict name, parameter) of the trained parameters
    train_loader: DataLoader
    val_loader: DataLoader | None
    sampler: ViewGroupedBatches
    out: Path
    log: RunLog
    result: TrainResult

    @property
    def progress(self) -> Progress:
        return self.result.progress

    def reached_max_steps(self) -> bool:
        return self.config.max_steps is not None and self.progress.step >= self.config.max_steps

    def run(self) -> None:
        """Epochs until ``epochs`` or ``max_steps``; a run stopped inside an epoch saves its state there."""
        while self.progress.epoch < self.config.epochs and not self.reached_max_steps():
            self.sampler.set_epoch(self.progress.epoch)
            batches_per_epoch = len(self.sampler.epoch_batches())
            self.train_epoch(batches_per_epoch)
            if self.progress.batch < batches_per_epoch:
                self.save_state()  # stopped by max_steps: --resume continues this epoch
                return
            self.end_epoch()

    def train_epoch(self, batches_per_epoch: int) -> None:
        """The rest of the current epoch (all of it unless resumed inside it), or up to ``max_steps``."""
        config, progress = self.config, self.progress
        self.sampler.start = progress.batch
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
            if row is not None:
                bar.set_postfix(loss=f"{row['loss']:.4g}")
                if config.save_every and progress.step % config.save_every == 0:
                    self.save_state()
            if self.reached_max_steps():
                break
        bar.close()

    def learning_rate(self) -> float:
        """The configured rate, ramped linearly over the first ``warmup_steps`` steps."""
        warmup = self.config.warmup_steps
        return self.config.lr * min(1.0, (self.progress.step + 1) / warmup) if warmup else self.config.lr

    def step(self, collated: dict) -> dict | None:
        """One optimiser step on a collated batch; returns the logged row (losses averaged over
        processes), or None when the batch was skipped for non-finite values."""
        started = time.perf_counter()
        progress, config = self.progress, self.config
        terms = STAGE_TERMS[config.stage]
        batch = Batch.from_collated(collated, self.criterion.landmark_indices, self.context.device)
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        problem = None
        try:
            loss = self.objective(batch)
            values = torch.stack([loss.total.detach(), *(loss.terms[name] for name in terms)]).double()
        except NonFiniteError as error:
            problem = str(error)
            values = torch.full((1 + len(terms),), math.nan, dtype=torch.float64, device=self.context.device)
        # Every process takes the same decision (DistributedDataParallel needs all or none to step).
        values = all_reduce_sum(values, self.context) / self.context.world_size
        progress.batch += 1
        if not torch.isfinite(values).all():
            if problem is None:
                named = zip(("loss", *terms), values.tolist(), strict=True)
                bad = [name for name, value in named if not math.isfinite(value)]
                problem = f"non-finite loss ({', '.join(bad)})"
            self.skip(problem, collated["name"])
            return None
        loss.total.backward()
        max_norm = config.clip_grad_norm or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], max_norm))
        if not math.isfinite(grad_norm):
            bad = [name for name, p in self.trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
            more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
            self.optimizer.zero_grad(set_to_none=True)
            self.skip(f"non-finite gradient of {bad[0] if bad else 'the loss'}{more}", collated["name"])
            return None
        self.optimizer.step()
        progress.step += 1
        self.result.losses.append(float(values[0]))
        row = {"step": progress.step, "epoch": progress.epoch, "loss": float(values[0])}
        row.update({name: float(v) for name, v in zip(terms, values[1:], strict=True)})
        row.update(lr=lr, grad_norm=grad_norm, skipped=progress.skipped)
        row.update(seconds=round(time.perf_counter() - started, 3))
        self.log.train_step(row)
        return row

    def skip(self, problem: str, samples: list[str]) -> None:
        """Count a skipped batch; past ``max_skipped`` stop the run with one line naming step and term."""
        self.progress.skipped += 1
        step = self.progress.step + 1
        where = f"step {step} (samples {', '.join(samples)})"
        if self.progress.skipped > self.config.max_skipped:
            raise NonFiniteError(
                f"{where}: {problem}; stopped after {self.progress.skipped} skipped batch(es) (--max-skipped "
                f"{self.config.max_skipped}): lower --lr, keep --initialise on, or clip gradients (--clip-grad-norm)"
            )
        if self.context.is_main:
            print(
                f"warning: {where}: {problem}; batch skipped ({self.progress.skipped} of at most "
                f"{self.config.max_skipped})",
                file=sys.stderr,
            )

    def end_epoch(self) -> None:
        """Validate, keep the best (and the epoch's model when asked), save the state."""
        progress = self.progress
        finished = progress.epoch
        progress.epoch += 1
        progress.batch = 0
        kept = self.config.kept_models
        if self.val_loader is not None:
            validation = validate(self.model, self.criterion, self.val_loader, self.config, self.context)
            self.result.validations.append(validation)
            self.log.validation(progress.step, finished, validation)
            metric = getattr(validation, BEST_METRIC[self.config.stage])
            if math.isnan(metric):
                metric = validation.vertex_px
            if math.isinf(metric) and self.context.is_main:
                print(
                    f"warning: validation after epoch {finished + 1}: the model's mesh is not finite for some "
                    f"validation samples (their errors count as infinite, so this epoch is not the best)",
                    file=sys.stderr,
                )
            if metric < progress.best:
                progress.best = metric
                if self.context.is_main and "best" in kept:
                    save_model(self.model, self.out / BEST_MODEL)
        if self.context.is_main and "epochs" in kept:
            save_model(self.model, self.out / EPOCH_MODEL.format(epoch=finished + 1))
        self.save_state()

    def save_state(self) -> None:
        """Write model_last.pth and training_state.pt (as configured; rank 0) after gathering every
        process's RNG state."""
        states = gather_rng_states(self.context)
        if self.context.is_main:
            if "last" in self.config.kept_models:
                save_model(self.model, self.out / LAST_MODEL)
            if self.config.save_state:
                save_training_state(
                    self.out / STATE_FILE, self.model, self.optimizer, self.progress, self.config, states
                )
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
