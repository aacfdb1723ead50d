"""The evaluation's other input files: 3D landmarks of scans and vertex index lists.

* Landmarks: 7 points, one ``x y z`` row each (whitespace or commas), a NumPy ``.npy`` array of shape
  (7, 3), or a MeshLab picked-points ``.pp`` file (the format the NoW benchmark ships its scan
  landmarks in), in the order documented in ``eval.metrics``.
* Vertex index lists: integers one per line (or whitespace separated), or a ``.npy`` array of
  integer indices or a boolean per-vertex mask.

Every problem becomes a one-line :class:`~eval.EvaluationError`.
"""

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from eval import EvaluationError
from models.io.mesh_io import read_text


def _read_picked_points(path: Path) -> np.ndarray:
    """MeshLab ``.pp`` XML: ``<point x=.. y=.. z=.. />`` elements in file order -> (k, 3)."""
    try:
        root = ElementTree.fromstring(read_text(path))
        return np.array([[float(p.attrib[a]) for a in "xyz"] for p in root.iter("point")], dtype=np.float64)
    except (ElementTree.ParseError, KeyError, ValueError):
        raise EvaluationError(f"{path}: not a MeshLab picked-points file with x, y, z attributes") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: not a readable .npy array ({exc})") from None


def read_landmarks(path: str | Path, count: int = 7) -> np.ndarray:
    """Read ``count`` 3D landmarks -> (count, 3) float64 in the file's unit."""
    path = Path(path)
    if path.suffix.lower() == ".pp":
        points = _read_picked_points(path)
    elif path.suffix.lower() == ".npy":
        points = np.asarray(_read_npy(path), dtype=np.float64)
    else:
        try:
            rows = [line.replace(",", " ").split() for line in read_text(path).splitlines()]
            points = np.array([[float(v) for v in row] for row in rows if row], dtype=np.float64)
        except ValueError:
            raise EvaluationError(f"{path}: landmark rows must hold 3 numbers each") from None
    if points.shape != (count, 3):
        raise EvaluationError(f"{path}: expected {count} landmarks of 3 coordinates, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise EvaluationError(f"{path}: landmarks contain NaN or infinity")
    return points


def read_vertex_indices(path: str | Path, num_vertices: int) -> np.ndarray:
    """Read a vertex index list (kept in file order) or a boolean mask -> (k,) int64 indices < num_vertices."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        values = _read_npy(path)
        if values.dtype == np.bool_:
            if values.size != num_vertices:
                raise EvaluationError(f"{path}: mask has {values.size} entries, the mesh {num_vertices} vertices")
            values = np.flatnonzero(values)
    else:
        try:
            values = np.array(read_text(path).split(), dtype=np.int64)
        except ValueError:
            raise EvaluationError(f"{path}: vertex indices must be integers") from None
    if not np.issubdtype(values.dtype, np.integer) or values.ndim != 1:
        raise EvaluationError(f"{path}: expected a 1-D list of integer vertex indices")
    if values.size == 0:
        raise EvaluationError(f"{path}: no vertex indices")
    if values.min() < 0 or values.max() >= num_vertices:
        raise EvaluationError(f"{path}: vertex index outside 0..{num_vertices - 1}")
    return values.astype(np.int64)
