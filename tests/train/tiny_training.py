"""The tiny training setting shared by the training tests: a 20 x 20 grid face model, the compact network
(train/compact_network.py) and a generated set of faces the regressor can learn from two samples."""

from pathlib import Path

from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.networks.fnrmvs_net import FNRMVSNet
from models.synthesis.multiview_sample import SampleConfig
from train.compact_network import compact_network
from train.config import TrainConfig
from train.synthetic import generate_dataset

GRID_SIDE = 20
VIEWS = 2
# Faces near the grid model's mean (its bases are random fields), one expression per sample and yaws of
# +-15 degrees: what is left to learn from two samples is each view's pose (and, in stage 2, the steps).
TINY_SET = SampleConfig(identity_sigma=0.02, expression_sigma=0.0, expression_view_sigma=0.0, yaw_max_deg=15.0)


def tiny_model() -> MorphableModel:
    return synthetic_morphable_model(GRID_SIDE, GRID_SIDE)


def compact(mm: MorphableModel, config: TrainConfig) -> FNRMVSNet:
    """train.train's model factory for the tests (module level: picklable for spawned processes)."""
    return compact_network(mm, config.n_shape_para, config.n_exp_para)


def tiny_set(mm: MorphableModel, folder: Path, count: int, seed: int = 0) -> list[Path]:
    return generate_dataset(mm, folder, count=count, views=VIEWS, seed=seed, config=TINY_SET)
