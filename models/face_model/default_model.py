"""The project's built-in default face model: a morphable model made from public-domain material.

``models/face_model/data/default_face_model.npz`` is written by ``python -m tools.build_default_face_model``:
MediaPipe's face mesh of one public-domain portrait (mirror-symmetrised, subdivided, in the BFM's units and
orientation), iBUG landmarks calibrated with dlib, and Gaussian-process identity/expression bases. It stands in
for the Basel Face Model, which cannot be shipped; it has the same conventions but not the BFM's topology, so
the authors' checkpoints do not apply to it. Loading it needs none of the packages that built it.
"""

from pathlib import Path

import torch

from ..errors import MorphableModelError
from .morphable_model import MorphableModel

# Where the repository ships the model (written by tools/build_default_face_model.py).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "data" / "default_face_model.npz"


def load_default_model(device: torch.device | str = "cpu") -> MorphableModel:
    """The built-in default :class:`MorphableModel`, on ``device``.

    Raises:
        MorphableModelError: the shipped file is missing or unreadable.
    """
    if not DEFAULT_MODEL_PATH.is_file():
        raise MorphableModelError(
            f"{DEFAULT_MODEL_PATH}: the built-in default face model is missing; "
            "rebuild it with `python -m tools.build_default_face_model` (needs the build-time packages)"
        )
    return MorphableModel.from_npz(DEFAULT_MODEL_PATH).to(device)
