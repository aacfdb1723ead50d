"""All-or-nothing writers: a staged folder or file appears whole or not at all."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import OutputError
from models.io.staging import SIGTERM_EXIT_STATUS, staged_file, staged_folder

REPO_ROOT = Path(__file__).resolve().parents[2]


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_staged_folder_appears_whole(tmp_path):
    target = tmp_path / "a" / "b" / "case"
    with staged_folder(target) as staging:
        assert staging.parent == target.parent and not target.exists()
        (staging / "x.txt").write_text("x")
    assert (target / "x.txt").read_text() == "x"
    assert _hidden(target.parent) == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_block_leaves_nothing(tmp_path, error):
    target = tmp_path / "new" / "deeper" / "case"
    with pytest.raises(type(error)):
        with staged_folder(target) as staging:
            (staging / "half.txt").write_text("half")
            raise error
    assert not (tmp_path / "new").exists()  # the parents it created are gone too
    assert list(tmp_path.iterdir()) == []


def test_existing_folders_are_kept_unless_replaced(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        with staged_folder(target):
            pass
    assert (target / "mine.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="failed"):
        with staged_folder(target, replace=True) as staging:
            (staging / "new.txt").write_text("new")
            raise ValueError("failed")
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]  # a failure keeps the old folder
    with staged_folder(target, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _hidden(tmp_path) == []


def test_empty_folders_may_be_filled_and_files_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with staged_folder(tmp_path / "empty") as staging:
        (staging / "x").write_text("x")
    assert (tmp_path / "empty" / "x").exists()
    (tmp_path / "file").write_text("f")
    with pytest.raises(OutputError, match="not a folder"):
        with staged_folder(tmp_path / "file", replace=True):
            pass


def test_staged_files(tmp_path):
    target = tmp_path / "out" / "model.npz"
    with staged_file(target) as staging:
        np.savez(staging, a=np.arange(3))  # numpy keeps a name that already ends in .npz
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    with pytest.raises(OutputError, match="already exists"):
        with staged_file(target):
            pass
    with pytest.raises(OutputError, match="nothing was written"):
        with staged_file(target, replace=True):
            pass
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert _hidden(target.parent) == []


def test_file_system_problems_are_one_line_output_errors(tmp_path):
    (tmp_path / "plain").write_text("a file where a folder is needed")
    with pytest.raises(OutputError, match=r"plain/case: cannot create its folder"):
        with staged_folder(tmp_path / "plain" / "case"):
            pass
    target = tmp_path / "case"
    with pytest.raises(OutputError, match=r"case: cannot write it \(No space left on device\)"):
        with staged_folder(target) as staging:
            (staging / "x").write_text("x")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == [tmp_path / "plain"]


def test_stale_staging_of_dead_writers_is_removed(tmp_path):
    target = tmp_path / "case"
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    stale = tmp_path / f".case.{dead}-{'0' * 32}.partial"
    stale.mkdir()
    (stale / "half.obj").write_text("v 0 0 0")
    stale_file = tmp_path / f".case.{dead}-{'1' * 32}.old"
    stale_file.write_text("old")
    other = tmp_path / f".other.{dead}-{'2' * 32}.partial"
    other.mkdir()
    with staged_folder(target) as staging:
        (staging / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["case", other.name])


SIGTERM_SCRIPT = """
import os, signal, sys
from pathlib import Path
from models.io.staging import staged_folder, terminate_on_sigterm
with terminate_on_sigterm():
    with staged_folder(Path(sys.argv[1])) as staging:
        (staging / "half.txt").write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not end the block")
"""


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    target = tmp_path / "out" / "case"
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(target)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == SIGTERM_EXIT_STATUS, done.stderr
    assert list(tmp_path.iterdir()) == []
