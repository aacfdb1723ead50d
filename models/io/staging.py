"""Writing a folder or file all or nothing: build it beside its target, then move it into place.

Every writer of the project that produces a folder (a demo case, a generated training sample, face3d's
``Out/``, an evaluation report) or a file that must never be seen half-written goes through
:func:`staged_folder` / :func:`staged_file`. The staging path is a hidden sibling of the target (same file
system, so the final move is an atomic rename) named after the writing process; it is removed when the block
fails or is interrupted (Ctrl-C, and SIGTERM once :func:`terminate_on_sigterm` is in force), and so are the
parent folders the call created. Staging paths that a killed process left behind are removed by the next
write to the same target. A file system problem (no space, no permission, a file where a folder should be)
becomes a one-line :class:`~models.errors.OutputError` naming the target.
"""

import os
import re
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError

# Suffixes of the hidden sibling paths: the one being built, and the one a replaced target is parked at.
STAGING_SUFFIX = ".partial"
RETIRED_SUFFIX = ".old"
# Exit status of a process ended by SIGTERM (128 + the signal's number), as shells report it.
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM


def _sibling(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def _sibling_pattern(target: Path) -> re.Pattern:
    """Hidden siblings of ``target`` made by :func:`_sibling`: group 1 is the writing process's id."""
    suffixes = "|".join(re.escape(s) for s in (STAGING_SUFFIX, RETIRED_SUFFIX))
    return re.compile(rf"\.{re.escape(target.name)}\.(\d+)-[0-9a-f]{{32}}(?:{suffixes})(?:\..*)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the process exists but belongs to someone else
        return True
    return True


def remove_stale_siblings(target: Path) -> list[Path]:
    """Remove the staging / retired siblings of ``target`` whose writing process no longer runs; returns them."""
    removed = []
    if not target.parent.is_dir():
        return removed
    pattern = _sibling_pattern(target)
    for sibling in target.parent.iterdir():
        found = pattern.fullmatch(sibling.name)
        if found and int(found.group(1)) != os.getpid() and not _alive(int(found.group(1))):
            _remove(sibling)
            removed.append(sibling)
    return removed


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


def _make_parents(target: Path) -> list[Path]:
    """Create ``target``'s missing parent folders; returns those it created (to remove them on failure)."""
    created = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_empty(created)
        raise OutputError(f"{target}: cannot create its folder ({error.strerror or error})") from None
    return created


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
def _staged(target: Path, replace: bool, folder: bool, make: Callable[[Path], None]) -> Iterator[Path]:
    _check_target(target, replace, folder)
    created = _make_parents(target)
    remove_stale_siblings(target)
    staging = _sibling(target, STAGING_SUFFIX + ("" if folder else target.suffix))
    try:
        make(staging)
        yield staging
        if not staging.exists():
            raise OutputError(f"{target}: nothing was written")
        _commit(staging, target)
    except OSError as error:
        _remove(staging)
        _remove_empty(created)
        raise OutputError(f"{target}: cannot write it ({error.strerror or error})") from None
    except BaseException:
        _remove(staging)
        _remove_empty(created)
        raise


@contextmanager
def staged_folder(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` that becomes ``target`` when the block succeeds.

    Args:
        target: the folder to produce.
        replace: replace an existing ``target`` (else it must be absent or empty).
    Raises:
        OutputError: ``target`` exists and may not be replaced, is not a folder, or cannot be written.
    """
    with _staged(Path(target), replace, True, lambda path: path.mkdir()) as staging:
        yield staging


@contextmanager
def staged_file(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a path beside ``target`` to write; it becomes ``target`` when the block succeeds.

    Raises:
        OutputError: ``target`` exists and ``replace`` is False, is a folder, or cannot be written.
    """
    with _staged(Path(target), replace, False, lambda path: None) as staging:
        yield staging


def _raise_termination(signum: int, frame: object) -> None:
    raise SystemExit(SIGTERM_EXIT_STATUS)


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM ends the process through ``SystemExit`` (status 143), so that staged writes
    clean up as they do on Ctrl-C; the previous handler is restored afterwards. For command-line entry points
    (the main thread only)."""
    previous = signal.signal(signal.SIGTERM, _raise_termination)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
