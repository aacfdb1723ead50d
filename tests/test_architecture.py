"""The package layout's rules: dependencies point one way, and user-facing errors share one base class."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import models
from models.errors import DFNRMVSError

REPO_ROOT = Path(__file__).resolve().parents[1]

# What each part of ``models`` may import (besides itself); everything above a part in this list may use it.
ALLOWED = {
    "errors": set(),
    "geometry": {"errors"},
    "face_model": {"errors", "geometry"},
    "nrmvs": {"errors", "geometry", "face_model"},
    "networks": {"errors", "geometry", "face_model", "nrmvs"},
    "fitting": {"errors", "geometry", "face_model", "nrmvs"},
    "synthesis": {"errors", "geometry", "face_model", "fitting"},
    "texture": {"errors", "geometry", "face_model"},
    "io": {"errors", "geometry", "face_model", "texture"},
    "reconstruction": {"errors", "geometry", "face_model", "nrmvs", "networks", "fitting", "io", "texture"},
}
TOP_LEVEL_PACKAGES = ("models", "train", "eval", "tools", "bench", "demo")


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, *(node.module.split(".") if node.module else [])]))
            else:
                names.append(node.module)
    return names


def _part(module: str) -> str | None:
    """The part of ``models`` a module name belongs to (None outside ``models``)."""
    parts = module.split(".")
    if parts[0] != "models" or len(parts) < 2:
        return None
    return parts[1]


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "models").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_models_depend_one_way(path):
    own = _part(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    for module in _imported_modules(path):
        top = module.split(".")[0]
        assert top not in TOP_LEVEL_PACKAGES[1:], f"{path.name} imports {module}: the library never imports {top}"
        part = _part(module)
        if own is not None and part is not None and part != own:
            assert part in ALLOWED[own], f"{path.name} ({own}) imports {module} ({part})"


def test_every_part_is_listed():
    parts = {info.name for info in pkgutil.iter_modules(models.__path__)} - {"__init__"}
    assert parts == set(ALLOWED), "a new part of models/ needs its place in ALLOWED"


def test_user_facing_errors_share_one_base():
    names = [
        "models.errors",
        "train.errors",
        "train.config",
        "train.dataset",
        "eval",
        "tools.bfm_raw_formats",
        "tools.check_reference",
        "demo",
    ]
    errors = []
    for name in names:
        module = importlib.import_module(name)
        errors += [
            obj
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, Exception) and obj.__module__ == module.__name__
        ]
    assert len(errors) >= 12
    assert all(issubclass(error, DFNRMVSError) for error in errors), [
        e for e in errors if not issubclass(e, DFNRMVSError)
    ]


def test_public_api_names_resolve():
    for name in models.__all__:
        assert getattr(models, name) is not None
    with pytest.raises(AttributeError):
        models.not_a_name  # noqa: B018
