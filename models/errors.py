"""User-facing errors of the library, under one base class.

Each carries a one-line message naming the file, flag or argument and the problem, so that the command-line
tools print it as it is (``error: <message>``), without a traceback. The CLIs catch :class:`DFNRMVSError` once;
errors of ``train/``, ``eval/`` and ``tools/`` derive from it too. Each class also derives from the built-in
exception that describes it best (``ValueError`` for bad data, ``RuntimeError`` for an unusable backend), so
``except ValueError`` keeps working for callers that expect it.
"""


class DFNRMVSError(Exception):
    """Base of every user-facing error: one line naming the file or flag and what is wrong with it."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class MorphableModelError(DFNRMVSError, ValueError):
    """A morphable-model file is missing, lacks a key, or holds data of the wrong shape."""


class CheckpointError(DFNRMVSError, ValueError):
    """A checkpoint file is missing, unreadable or does not match the model."""


class InputError(DFNRMVSError, ValueError):
    """A photo cannot be used (unreadable, no face, bad landmark file)."""


class LandmarkError(DFNRMVSError, RuntimeError):
    """A landmark backend cannot be used (package or model files missing)."""


class OutputError(DFNRMVSError, RuntimeError):
    """An output folder or file cannot be written (it exists, or is not a folder)."""


class ReconstructionError(DFNRMVSError, RuntimeError):
    """A reconstruction gave unusable numbers (non-finite vertices or poses); nothing is written."""


class MeshFileError(DFNRMVSError, ValueError):
    """A mesh, landmark or vertex-index file is missing or unreadable."""


class SyntheticDataError(DFNRMVSError, ValueError):
    """Bad settings of the synthetic-face generator, or an unreadable generated sample."""
