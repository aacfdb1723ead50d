"""Writing a folder or file all or nothing: build it beside its target, then move it into place.

Every writer of the project that produces a folder (a demo case, a generated training sample, face3d's
``Out/``) or a file that must never be seen half-written goes through :func:`staged_folder` /
:func:`staged_file`. The staging path is a hidden sibling of the target (same file system, so the final
move is an atomic rename); it is removed when the block fails or is interrupted (Ctrl-C included), and so
are the parent folders the call created.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError

# Suffixes of the hidden sibling paths: the one being built, and the one a replaced target is parked at.
STAGING_SUFFIX = ".partial"
RETIRED_SUFFIX = ".old"


def _sibling(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}.{uuid.uuid4().hex}{suffix}"


def _missing_parents(target: Path) -> list[Path]:
    return [parent for parent in (target.parent, *target.parent.parents) if not parent.exists()]


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_target(target: Path, replace: bool, folder: bool) -> None:
    kind = "folder" if folder else "file"
    if target.exists() or target.is_symlink():
        if folder and not target.is_dir():
            raise OutputError(f"{target} exists and is not a folder")
        if not folder and target.is_dir():
            raise OutputError(f"{target} is a folder, not a file")
        if not replace and not (folder and target.is_dir() and not any(target.iterdir())):
            raise OutputError(f"{target} already exists; not replacing this {kind}")


def _commit(staged: Path, target: Path) -> None:
    """Move ``staged`` onto ``target``, replacing it; the old target is removed only after the move."""
    if target.exists() or target.is_symlink():
        retired = _sibling(target, RETIRED_SUFFIX)
        os.replace(target, retired)
        os.replace(staged, target)
        _remove(retired)
    else:
        os.replace(staged, target)


@contextmanager
def staged_folder(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` that becomes ``target`` when the block succeeds.

    Args:
        target: the folder to produce.
        replace: replace an existing ``target`` (else it must be absent or empty).
    Raises:
        OutputError: ``target`` exists and may not be replaced, or is not a folder.
    """
    target = Path(target)
    _check_target(target, replace, folder=True)
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, STAGING_SUFFIX)
    staging.mkdir()
    try:
        yield staging
        _commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


@contextmanager
def staged_file(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a path beside ``target`` to write; it becomes ``target`` when the block succeeds.

    Raises:
        OutputError: ``target`` exists and ``replace`` is False, or ``target`` is a folder.
    """
    target = Path(target)
    _check_target(target, replace, folder=False)
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, STAGING_SUFFIX + target.suffix)
    try:
        yield staging
        if not staging.exists():
            raise OutputError(f"{target}: nothing was written")
        _commit(staging, target)
    except BaseException:
        _remove(staging)
        _remove_empty(created)
        raise
