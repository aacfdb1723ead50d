"""The model files of a run: bare state dicts in the authors' format, written whole and never non-finite."""

from pathlib import Path

import torch
from torch import nn

from models.io.staging import staged_file
from train.errors import NonFiniteError

LAST_MODEL = "model_last.pth"
BEST_MODEL = "model_best.pth"
EPOCH_MODEL = "model_epoch{epoch:03d}.pth"
EPOCH_MODEL_GLOB = "model_epoch*.pth"


def non_finite_entries(model: nn.Module) -> list[str]:
    """Names of the floating-point state-dict entries of ``model`` holding NaN or infinity."""
    return [
        name
        for name, value in model.state_dict().items()
        if value.is_floating_point() and not torch.isfinite(value).all()
    ]


def save_model(model: nn.Module, path: Path) -> None:
    """Write ``model``'s bare state dict to ``path`` (replacing it atomically); refuses non-finite weights.

    Raises:
        NonFiniteError: an entry is not finite (``path`` is left as it was).
    """
    bad = non_finite_entries(model)
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise NonFiniteError(f"{path}: not saved, {len(bad)} weight tensor(s) are not finite: {bad[0]}{more}")
    with staged_file(path, replace=True) as staging:
        torch.save(model.state_dict(), staging)
