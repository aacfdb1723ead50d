"""Errors of the training run."""

from models.errors import DFNRMVSError


class TrainingError(DFNRMVSError, RuntimeError):
    """A run cannot start or continue (bad resume state, missing package); one-line message."""
