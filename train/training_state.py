"""The resumable training state: progress, RNG states, model and optimiser, saved and restored for ``--resume``."""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from models.networks.checkpoint import MODEL_STATE_KEY
from models.networks.fnrmvs_net import FNRMVSNet
from train.config import TrainConfig
from train.distributed import DistributedContext
from train.errors import TrainingError

STATE_FILE = "training_state.pt"
STATE_FORMAT_VERSION = 1


@dataclass
class Progress:
    """Where training stands: ``step`` optimiser steps done; ``epoch`` the current epoch; ``batch``
    batches of it done (skipped ones included); ``best`` the best validation value of the stage's metric
    so far; ``skipped`` batches skipped for non-finite values."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float = math.inf
    skipped: int = 0


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
