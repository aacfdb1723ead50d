"""Every Python snippet of README.md runs as written.

Each ```python block runs in a fresh process, in an empty folder outside the checkout:

* a snippet whose first line starts with ``# needs the licensed assets`` is skipped, for that stated reason
  (the BFM and the authors' checkpoints cannot be shipped);
* a snippet whose first line starts with ``# after `pip install .``` imports the installed package
  ``dfnrmvs``; where it is not installed (CI runs from the checkout), ``models/`` is made importable under
  that name, as the wheel installs it (tests/test_packaging.py checks the wheel's mapping), and the checkout is
  not on the path;
* any other snippet runs as from the repository root: the checkout is on the path and ``examples/`` is
  reachable from the working folder.

Besides exiting cleanly, every folder a snippet ``.save()``s must hold a ``result.json`` for its photos.
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"

LICENSED_MARKER = "# needs the licensed assets"
INSTALLED_MARKER = "# after `pip install .`"
SNIPPET_TIMEOUT_S = 600

# A ```python fence, possibly indented inside a list item; the body ends at the matching closing fence.
PYTHON_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def readme_snippets() -> list[tuple[int, str]]:
    """(line number of the fence, dedented code) of every ```python block of README.md."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, textwrap.dedent(match.group("body")))
        for match in PYTHON_BLOCK.finditer(text)
    ]


def saved_folders(code: str) -> list[str]:
    """The folders a snippet passes to ``.save(...)`` as string literals."""
    folders = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "save":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                folders.append(node.args[0].value)
    return folders


def _installed_layout(root: Path) -> Path:
    """A folder from which ``import dfnrmvs`` finds the library as ``pip install .`` lays it out."""
    site = root / "site"
    site.mkdir()
    (site / "dfnrmvs").symlink_to(REPO_ROOT / "models", target_is_directory=True)
    return site


def run_snippet(code: str, root: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from ``root/work`` (see the module docstring for the set-up)."""
    work = root / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if code.startswith(INSTALLED_MARKER):
        if importlib.util.find_spec("dfnrmvs") is None:
            env["PYTHONPATH"] = str(_installed_layout(root))
    else:
        env["PYTHONPATH"] = str(REPO_ROOT)
        (work / "examples").symlink_to(REPO_ROOT / "examples", target_is_directory=True)
    script = root / "snippet.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT_S,
    )


SNIPPETS = readme_snippets()


def test_the_readme_has_snippets_of_each_kind():
    firsts = [code.splitlines()[0] for _, code in SNIPPETS]
    assert len(SNIPPETS) >= 4
    assert any(first.startswith(LICENSED_MARKER) for first in firsts)
    assert any(first.startswith(INSTALLED_MARKER) for first in firsts)
    assert any(not first.startswith(("#",)) for first in firsts)


@pytest.mark.parametrize(("line", "code"), SNIPPETS, ids=[f"README.md:{line}" for line, _ in SNIPPETS])
def test_readme_snippet_runs_as_written(line, code, tmp_path):
    first = code.splitlines()[0]
    if first.startswith(LICENSED_MARKER):
        pytest.skip(f"README.md:{line}: {first.lstrip('# ')}")
    completed = run_snippet(code, tmp_path)
    assert completed.returncode == 0, f"README.md:{line} failed:\n{completed.stderr[-3000:]}"
    assert "Traceback" not in completed.stderr
    for folder in saved_folders(code):
        result = json.loads((tmp_path / "work" / folder / "result.json").read_text(encoding="utf-8"))
        assert result["views"] and all(Path(view["files"]["full_mesh"]).suffix == ".obj" for view in result["views"])
        for view in result["views"]:
            assert (tmp_path / "work" / folder / view["files"]["full_mesh"]).stat().st_size > 0


def test_snippet_runner_reports_a_failing_snippet(tmp_path):
    """The runner really runs the code: a snippet that raises fails with its traceback."""
    completed = run_snippet("from pathlib import Path\n\nPath('examples/no_such_photo.png').read_bytes()\n", tmp_path)
    assert completed.returncode != 0 and "FileNotFoundError" in completed.stderr
