"""Evaluation of reconstructed face meshes against ground truth (``python -m eval.evaluate``).

``alignment`` holds the transforms (similarity Procrustes, depth shift, rigid ICP), ``metrics`` the
error definitions and statistics, ``input_files`` the readers of scan landmarks and vertex lists (meshes:
``models.io.mesh_io``), ``evaluate`` the command line.
"""

from models.errors import DFNRMVSError


class EvaluationError(DFNRMVSError):
    """Bad user input (missing file, unreadable mesh, mismatched sizes); the message is one line."""
