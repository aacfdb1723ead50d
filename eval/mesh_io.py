"""Readers and a writer for the evaluation's inputs; every problem becomes a one-line ``EvaluationError``.

* Meshes: Wavefront OBJ (``v`` and ``f`` records; texture/normal indices and extra vertex columns such
  as colours are ignored, polygons are split into triangle fans). Vertex order is kept exactly, which
  same-topology comparisons rely on.
* Landmarks: 7 points, one ``x y z`` row each (whitespace or commas), a NumPy ``.npy`` array of shape
  (7, 3), or a MeshLab picked-points ``.pp`` file (the format the NoW benchmark ships its scan
  landmarks in), in the order documented in ``eval.metrics``.
* Vertex index lists: integers one per line (or whitespace separated), or a ``.npy`` array of
  integer indices or a boolean per-vertex mask.
"""

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import NamedTuple

import numpy as np

from eval import EvaluationError


class TriangleMesh(NamedTuple):
    """vertices: (n, 3) float64 positions (the file's unit); faces: (m, 3) int64 zero-based indices."""

    vertices: np.ndarray
    faces: np.ndarray


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse_face(tokens: list[str], num_vertices: int, where: str) -> list[tuple[int, int, int]]:
    """OBJ face record (1-based or negative relative indices) -> zero-based triangle fan."""
    try:
        corners = [int(token.split("/")[0]) for token in tokens]
    except ValueError:
        raise EvaluationError(f"{where}: face record has a non-integer vertex index") from None
    if len(corners) < 3:
        raise EvaluationError(f"{where}: face record has fewer than 3 vertices")
    if 0 in corners:
        raise EvaluationError(f"{where}: face record uses vertex index 0 (OBJ indices start at 1)")
    corners = [c - 1 if c > 0 else num_vertices + c for c in corners]
    return [(corners[0], corners[k], corners[k + 1]) for k in range(1, len(corners) - 1)]


def read_obj(path: str | Path, require_faces: bool = True) -> TriangleMesh:
    """Read a Wavefront OBJ file; ``require_faces=False`` accepts a bare point cloud (no ``f`` records)."""
    path = Path(path)
    if path.suffix.lower() != ".obj":
        raise EvaluationError(f"{path}: only Wavefront .obj meshes are supported")
    vertices: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] == "v":
            try:
                vertices.append([float(value) for value in tokens[1:4]])
            except ValueError:
                raise EvaluationError(f"{path}:{number}: vertex record is not numeric") from None
            if len(vertices[-1]) != 3:
                raise EvaluationError(f"{path}:{number}: vertex record has fewer than 3 coordinates")
        elif tokens[0] == "f":
            faces.extend(_parse_face(tokens[1:], len(vertices), f"{path}:{number}"))
    if not vertices:
        raise EvaluationError(f"{path}: no vertices found (not an OBJ mesh?)")
    if require_faces and not faces:
        raise EvaluationError(f"{path}: no faces found (a triangle mesh is needed here)")
    vertex_array = np.asarray(vertices, dtype=np.float64)
    face_array = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if face_array.size and (face_array.min() < 0 or face_array.max() >= len(vertex_array)):
        raise EvaluationError(f"{path}: a face refers to a vertex outside 1..{len(vertex_array)}")
    if not np.isfinite(vertex_array).all():
        raise EvaluationError(f"{path}: vertex coordinates contain NaN or infinity")
    return TriangleMesh(vertex_array, face_array)


def write_obj(path: str | Path, mesh: TriangleMesh) -> None:
    """Write ``mesh`` as an OBJ file with 1-based ``f`` records."""
    lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in np.asarray(mesh.vertices, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(mesh.faces, dtype=np.int64)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_picked_points(path: Path) -> np.ndarray:
    """MeshLab ``.pp`` XML: ``<point x=.. y=.. z=.. />`` elements in file order -> (k, 3)."""
    try:
        root = ElementTree.fromstring(_read_text(path))
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
            rows = [line.replace(",", " ").split() for line in _read_text(path).splitlines()]
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
            values = np.array(_read_text(path).split(), dtype=np.int64)
        except ValueError:
            raise EvaluationError(f"{path}: vertex indices must be integers") from None
    if not np.issubdtype(values.dtype, np.integer) or values.ndim != 1:
        raise EvaluationError(f"{path}: expected a 1-D list of integer vertex indices")
    if values.size == 0:
        raise EvaluationError(f"{path}: no vertex indices")
    if values.min() < 0 or values.max() >= num_vertices:
        raise EvaluationError(f"{path}: vertex index outside 0..{num_vertices - 1}")
    return values.astype(np.int64)
