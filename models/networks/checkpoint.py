"""Loading and saving FNRMVSNet weights in exactly the authors' state-dict format.

The released ``2views_model.pth`` / ``3views_finetune_model.pth`` are plain state dicts of the authors'
``FNRMVSNet`` (733 entries for their code; ``opt_layer.adap_B_net2.adapBias`` scales with the 3DMM's
vertex count). They load here unchanged, with ``torch.load(..., weights_only=True)`` (no pickled code is
executed) and ``strict=True``. Training checkpoints of this project wrap the same dict with optimiser
state; :func:`load_checkpoint` accepts both.
"""

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, first_line

# Key under which this project's training checkpoints store the bare model state dict.
MODEL_STATE_KEY = "model"

# torch's weights_only refusal names the global it met: "Unsupported global: GLOBAL builtins.print".
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")

# At most this many names are listed per kind of mismatch in an error message.
MAX_LISTED_KEYS = 8


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_KEYS])
    return shown + (f" (+{len(names) - MAX_LISTED_KEYS} more)" if len(names) > MAX_LISTED_KEYS else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict stored in ``path`` (a bare state dict or a training checkpoint), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (see README, 'Licensed assets')")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _UNSUPPORTED_GLOBAL.search(str(error))
        if refused is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line(error)})") from None
        raise CheckpointError(
            f"{path}: refused: besides tensors it stores Python objects ({refused.group(1)}), which could run code "
            "when loaded; load it with the code that wrote it and save its state_dict() instead"
        ) from None
    except Exception as error:  # torch raises many types for corrupt files
        reason = f"{type(error).__name__}: {first_line(error)}"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if isinstance(content, dict) and MODEL_STATE_KEY in content and isinstance(content[MODEL_STATE_KEY], dict):
        content = content[MODEL_STATE_KEY]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return content


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and wrongly shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_keys = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong_keys]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_listing(wrong)}")
    if problems:
        hint = ""
        if any(k.endswith("adapBias") for k in (*missing, *wrong_keys)):
            hint = " (adapBias scales with the 3DMM's vertex count: is --mm-dir the model it was trained with?)"
        raise CheckpointError(f"{source}: does not match FNRMVSNet: {'; '.join(problems)}{hint}")


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model`` strictly, after checking every key and shape."""
    state = read_state_dict(path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)


def save_state_dict(model: nn.Module, path: str | Path) -> None:
    """Write the bare state dict, in the authors' format (loadable by their code and by :func:`load_checkpoint`)."""
    torch.save(model.state_dict(), path)
