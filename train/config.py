"""Configuration of ``python -m train.train``: defaults < a JSON/YAML file (``--config``) < flags.

Every field of :class:`TrainConfig` is a flag (``batch_size`` -> ``--batch-size``) and a key of the
config file. A bad file or value ends with a one-line :class:`ConfigError` naming it.
"""

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.errors import DFNRMVSError

# The authors' optimiser settings (project issue "Training": Adam, learning rate 2e-5, batch 2).
DEFAULT_LEARNING_RATE = 2e-5
DEFAULT_BATCH_SIZE = 2
# Regressor head sizes of the released checkpoints (FNRMVSNet's defaults).
DEFAULT_SHAPE_PARA = 199
DEFAULT_EXP_PARA = 29
# 3DMM units per millimetre for the validation error: the BFM is in micrometres.
DEFAULT_MODEL_UNITS_PER_MM = 1000.0
# Gradient clipping (global L2 norm over the trained parameters) and learning-rate warm-up of this
# project's recipe (README "Training"; measured on generated data, bench/benchmark_training.py).
DEFAULT_CLIP_GRAD_NORM = 10.0
DEFAULT_WARMUP_STEPS = 0
# Batches with non-finite losses or gradients a run skips before it stops.
DEFAULT_MAX_SKIPPED = 10

# The model files a run can keep (bare state dicts): the latest, the best on validation, one per epoch.
KEEP_CHOICES = ("last", "best", "epochs")
DEFAULT_KEEP = "last,best"

STAGES = ("regressor", "optimizer")
YAML_SUFFIXES = (".yaml", ".yml")


class ConfigError(DFNRMVSError, ValueError):
    """A configuration file or value is invalid (one-line message)."""


@dataclass
class TrainConfig:
    """Everything one training run needs.

    stage: "regressor" (pre-train the RegressionNet on the landmark loss) or "optimizer" (train the
        optimisation layer with the regressor frozen, full recipe loss).
    data: training data folder (train/dataset.py). val_data: validation folder, or None for none.
    mm: the morphable model: a face3d base directory or a ``.npz`` (MorphableModel.load).
    out: output folder (checkpoints, ``log.csv``, ``config.json``).
    init: model weights to start from (a bare state dict, e.g. the stage-1 result or an authors'
        checkpoint, or a training checkpoint), loaded strictly; None starts from fresh weights.
    resume: a ``training_state.pt`` to continue from (model, optimiser, step, epoch, RNG states).
    epochs: passes over the training data. max_steps: stop after this many optimiser steps (None: no limit).
    batch_size: samples per step and process (the global batch is batch_size x processes).
    lr: Adam learning rate. seed: seed of the weights, the sample order and dropout.
    workers: DataLoader worker processes. device: "cpu", "cuda", "cuda:1", ...; None picks
        cuda:LOCAL_RANK when CUDA is available, else the CPU.
    save_every: also write the training state every this many steps (0: at the end of each epoch only).
    model_units_per_mm: 3DMM units per millimetre (1000 for the BFM's micrometres).
    progress: show a progress bar. tensorboard: also log to TensorBoard (needs the tensorboard package).
    n_shape_para, n_exp_para: regressor head sizes (199 / 29 for the released checkpoints).
    keep: comma-separated model files to keep, of "last" (model_last.pth), "best" (model_best.pth, written
        only with val_data) and "epochs" (model_epochNNN.pth); bare state dicts in the authors' format.
    save_state: write training_state.pt (what --resume needs: optimiser, progress, RNG states).
    overwrite: replace an earlier run in ``out`` (else a folder holding one is refused unless resuming).
    initialise: start fresh (or never-trained) optimisation layers with train/initialisation.py.
    clip_grad_norm: clip the global L2 norm of the gradients to this (0: no clipping).
    warmup_steps: raise the learning rate linearly from lr / warmup_steps to lr over this many steps.
    max_skipped: batches with non-finite values skipped before the run stops (0: stop at the first).
    """

    stage: str = "optimizer"
    data: str = ""
    mm: str = ""
    out: str = ""
    val_data: str | None = None
    init: str | None = None
    resume: str | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LEARNING_RATE
    seed: int = 0
    workers: int = 0
    device: str | None = None
    save_every: int = 0
    model_units_per_mm: float = DEFAULT_MODEL_UNITS_PER_MM
    progress: bool = True
    tensorboard: bool = False
    n_shape_para: int = DEFAULT_SHAPE_PARA
    n_exp_para: int = DEFAULT_EXP_PARA
    keep: str = DEFAULT_KEEP
    save_state: bool = True
    overwrite: bool = False
    initialise: bool = True
    clip_grad_norm: float = DEFAULT_CLIP_GRAD_NORM
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    max_skipped: int = DEFAULT_MAX_SKIPPED

    @property
    def kept_models(self) -> frozenset[str]:
        """The entries of ``keep`` (validated by :meth:`validate`)."""
        return frozenset(item.strip() for item in self.keep.split(",") if item.strip())

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first invalid value (one line naming the flag)."""
        if self.stage not in STAGES:
            raise ConfigError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        for name in ("data", "mm", "out"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required (flag {_flag(name)} or key {name!r})")
        for name in ("lr", "model_units_per_mm", "clip_grad_norm"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"{_flag(name)} must be a finite number, got {value}")
        positive = ["epochs", "batch_size", "lr", "model_units_per_mm", "n_shape_para", "n_exp_para"]
        if self.max_steps is not None:
            positive.append("max_steps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("workers", "save_every", "clip_grad_norm", "warmup_steps", "max_skipped"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must not be negative, got {getattr(self, name)}")
        unknown = sorted(self.kept_models - set(KEEP_CHOICES))
        if unknown or not self.kept_models:
            raise ConfigError(f"--keep takes a comma-separated list of {', '.join(KEEP_CHOICES)}, got {self.keep!r}")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


_FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _coerce(name: str, value: Any, source: str) -> Any:
    """A file value converted to the field's type (ints for floats are fine, not the reverse)."""
    kind = _FIELD_TYPES[name]
    optional = kind in (str | None, int | None)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {name!r} must not be null")
    base = {str | None: str, int | None: int}.get(kind, kind)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, Path):
        return str(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {name!r} must be {base.__name__}, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Keys of a JSON (``.json``) or YAML (``.yaml`` / ``.yml``, needs PyYAML) config file, checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix.lower() in YAML_SUFFIXES:
        try:
            import yaml
        except ImportError as error:
            raise ConfigError(f"{path}: reading YAML needs the PyYAML package (or use a .json file)") from error
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
    else:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: must hold a mapping of option names to values")
    unknown = sorted(key for key in content if key not in _FIELD_TYPES)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(map(str, unknown))}")
    return {key: _coerce(key, value, str(path)) for key, value in content.items()}


def build_parser() -> argparse.ArgumentParser:
    """Flags for every :class:`TrainConfig` field; unset flags stay None (so files and defaults apply)."""
    parser = argparse.ArgumentParser(
        prog="python -m train.train",
        description="Train DFNRMVS: stage 'regressor' (landmark pre-training), then stage 'optimizer'.",
    )
    parser.add_argument("--config", help="JSON or YAML file of options (flags override it)")
    parser.add_argument("--stage", choices=STAGES, help="training stage (default optimizer)")
    parser.add_argument("--data", help="training data folder (one sub-folder per sample)")
    parser.add_argument("--val-data", help="validation data folder (validated after every epoch)")
    parser.add_argument("--mm", help="morphable model: face3d base directory or .npz")
    parser.add_argument("--out", help="output folder for checkpoints and logs")
    parser.add_argument("--init", help="initial weights (bare state dict or checkpoint), loaded strictly")
    parser.add_argument("--resume", help="training_state.pt to continue from")
    parser.add_argument("--epochs", type=int, help="passes over the data (default 1)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--batch-size", type=int, help=f"samples per step and process (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default {DEFAULT_LEARNING_RATE})")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default 0)")
    parser.add_argument("--device", help="cpu, cuda or cuda:K (default: cuda:LOCAL_RANK if available, else cpu)")
    parser.add_argument("--save-every", type=int, help="write the training state every N steps (default: per epoch)")
    parser.add_argument("--model-units-per-mm", type=float, help="3DMM units per mm (default 1000, the BFM)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default on)")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="TensorBoard log (default off)")
    parser.add_argument("--n-shape-para", type=int, help=f"regressor shape head size (default {DEFAULT_SHAPE_PARA})")
    parser.add_argument("--n-exp-para", type=int, help=f"regressor expression head size (default {DEFAULT_EXP_PARA})")
    choices = ", ".join(KEEP_CHOICES)
    parser.add_argument("--keep", help=f"model files to keep, comma-separated: {choices} (default {DEFAULT_KEEP})")
    parser.add_argument(
        "--save-state", action=argparse.BooleanOptionalAction, help="write training_state.pt for --resume (default on)"
    )
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, help="replace an earlier run in --out")
    parser.add_argument(
        "--initialise",
        action=argparse.BooleanOptionalAction,
        help="start-up initialisation of untrained optimisation layers (train/initialisation.py; default on)",
    )
    parser.add_argument(
        "--clip-grad-norm", type=float, help=f"clip the global gradient norm (default {DEFAULT_CLIP_GRAD_NORM}, 0: off)"
    )
    parser.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up steps (default 0)")
    parser.add_argument(
        "--max-skipped", type=int, help=f"non-finite batches skipped before stopping (default {DEFAULT_MAX_SKIPPED})"
    )
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then ``--config``'s keys, then the flags given; validated."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config")
    if config_file:
        values.update(read_config_file(config_file))
    values.update({key: value for key, value in args.items() if value is not None})
    config = TrainConfig(**values)
    config.validate()
    return config
