"""Errors of the training run."""


class TrainingError(RuntimeError):
    """A run cannot start or continue (bad resume state, missing package); one-line message."""
