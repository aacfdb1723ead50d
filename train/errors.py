"""Errors of the training run."""

from models.errors import DFNRMVSError


class TrainingError(DFNRMVSError, RuntimeError):
    """A run cannot start or continue (bad resume state, missing package, divergence); one-line message."""


class NonFiniteError(TrainingError):
    """A network output, loss term or gradient of one batch is not finite; the message names it."""
