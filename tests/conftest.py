"""Shared fixtures: where the equivalence contract in ``../shared`` lives, and how to react when it is absent."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("DFNRMVS_SHARED", REPO_ROOT.parent / "shared"))


def _shared_path(relative: str) -> Path:
    """Path below ``../shared``; skips the test where it is absent, fails under CI (``CI=true``)."""
    path = SHARED_DIR / relative
    if not path.exists():
        message = f"{path} is absent: the reference data in ../shared (or $DFNRMVS_SHARED) is needed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " and CI=true")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``: synthetic 3DMM in the original's layout plus the oracle outputs."""
    return _shared_path("reference")


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """``../shared/examples``: the authors' example photos and published overlays."""
    return _shared_path("examples")


# The core numerical tests take the ``device`` fixture: they run on the CPU, and on CUDA too where present.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """A torch device to run on: "cpu", then "cuda" when a GPU is available."""
    return torch.device(request.param)
