"""Exceptions for user-facing problems: each carries a one-line message naming the file and the problem."""


class MorphableModelError(ValueError):
    """A morphable-model file is missing, lacks a key, or holds data of the wrong shape."""
