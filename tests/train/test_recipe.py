"""The README's two-stage recipe from scratch converges: a few dozen steps of each stage on a tiny
generated set (tests/train/tiny_training.py), the second stage initialised from the first's model file.

Criterion of both stages: every loss finite, and the mean loss of the last quarter of the steps below half
the mean of the first quarter. The recipe's settings are the README's: Adam lr 1e-3 with a linear warm-up
(stage 1), gradient clipping, the start-up initialisation of train/initialisation.py.
"""

import numpy as np
import pytest
import torch

from models.networks.checkpoint import load_checkpoint, read_state_dict
from train import train as T
from train.config import TrainConfig
from train.initialisation import is_untrained
from train.training_state import STATE_FILE

from .tiny_training import compact, tiny_model, tiny_set

REGRESSOR_STEPS = 32
OPTIMIZER_STEPS = 16
LEARNING_RATE = 1e-3
REGRESSOR_WARMUP = 8


def _quarters(losses: list[float]) -> tuple[float, float]:
    quarter = len(losses) // 4
    return float(np.mean(losses[:quarter])), float(np.mean(losses[-quarter:]))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both stages on two samples (batch 2, so every step sees the whole set)."""
    root = tmp_path_factory.mktemp("recipe")
    mm = tiny_model()
    mm.save_npz(root / "mm.npz")
    tiny_set(mm, root / "data", count=2)
    common = {"data": str(root / "data"), "mm": str(root / "mm.npz"), "batch_size": 2, "lr": LEARNING_RATE}
    common.update(progress=False, device="cpu", epochs=1000)
    stage1 = TrainConfig(
        stage="regressor", out=str(root / "stage1"), max_steps=REGRESSOR_STEPS, warmup_steps=REGRESSOR_WARMUP, **common
    )
    first = T.train(stage1, compact)
    stage2 = TrainConfig(
        stage="optimizer",
        out=str(root / "stage2"),
        init=str(root / "stage1" / T.LAST_MODEL),
        max_steps=OPTIMIZER_STEPS,
        **common,
    )
    second = T.train(stage2, compact)
    return {"root": root, "mm": mm, "first": first, "second": second}


@pytest.mark.parametrize("stage", ["first", "second"])
def test_each_stage_halves_its_loss(recipe: dict, stage: str) -> None:
    losses = recipe[stage].losses
    assert len(losses) == (REGRESSOR_STEPS if stage == "first" else OPTIMIZER_STEPS)
    assert np.isfinite(losses).all() and recipe[stage].progress.skipped == 0
    first, last = _quarters(losses)
    assert last < 0.5 * first, losses


def test_stage_two_starts_from_stage_one_and_trains_only_the_optimisation(recipe: dict) -> None:
    """Stage 1 saved the start-up initialised optimisation layer; stage 2 loaded it (no re-initialisation)
    and changed only opt_layer; both folders hold the last model and the resume state, nothing else."""
    root, mm = recipe["root"], recipe["mm"]
    stage1 = read_state_dict(root / "stage1" / T.LAST_MODEL)
    stage2 = read_state_dict(root / "stage2" / T.LAST_MODEL)
    changed = {key.split(".")[0] for key, value in stage2.items() if not torch.equal(value, stage1[key])}
    assert changed == {"opt_layer"}
    model = compact(mm, TrainConfig())
    load_checkpoint(model, root / "stage1" / T.LAST_MODEL)
    assert not is_untrained(model)
    for stage in ("stage1", "stage2"):
        files = sorted(path.name for path in (root / stage).iterdir())
        assert files == sorted([T.CONFIG_COPY, T.LAST_MODEL, STATE_FILE, "train_log.csv", "val_log.csv"]), files
