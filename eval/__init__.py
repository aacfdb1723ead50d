"""Evaluation of reconstructed face meshes against ground truth (``python -m eval.evaluate``).

``alignment`` holds the transforms (similarity Procrustes, depth shift, rigid ICP), ``metrics`` the
error definitions and statistics, ``mesh_io`` the file readers, ``evaluate`` the command line.
"""


class EvaluationError(Exception):
    """Bad user input (missing file, unreadable mesh, mismatched sizes); the message is one line."""
