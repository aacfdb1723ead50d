"""The run's logs: per-step losses and per-epoch validation as CSV files, and TensorBoard when asked."""

import csv
from pathlib import Path

from train.config import TrainConfig
from train.distributed import DistributedContext
from train.errors import TrainingError
from train.objectives import STAGE_TERMS
from train.validation import VAL_METRICS, Validation

TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"


class RunLog:
    """CSV logs (and TensorBoard when asked) of the main process; other processes log nothing."""

    def __init__(self, config: TrainConfig, context: DistributedContext, resumed_step: int) -> None:
        self.enabled = context.is_main
        self.stage = config.stage
        out = Path(config.out)
        self.train_path = out / TRAIN_LOG
        self.val_path = out / VAL_LOG
        terms = STAGE_TERMS[config.stage]
        self.train_fields = ["step", "epoch", "loss", *terms, "lr", "grad_norm", "skipped", "seconds"]
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
            for name in ("loss", *STAGE_TERMS[self.stage], "grad_norm"):
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
