"""Wavefront OBJ triangle meshes; every reading problem becomes a one-line ``MeshFileError``.

* Meshes: Wavefront OBJ (``v`` and ``f`` records; texture/normal indices and extra vertex columns such
  as colours are ignored, polygons are split into triangle fans). Vertex order is kept exactly, which
  same-topology comparisons rely on.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import MeshFileError


class TriangleMesh(NamedTuple):
    """vertices: (n, 3) float64 positions (the file's unit); faces: (m, 3) int64 zero-based indices."""

    vertices: np.ndarray
    faces: np.ndarray


def read_text(path: Path) -> str:
    """The file's text (UTF-8, undecodable bytes replaced)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise MeshFileError(f"{path}: file not found") from None
    except OSError as exc:
        raise MeshFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse_face(tokens: list[str], num_vertices: int, where: str) -> list[tuple[int, int, int]]:
    """OBJ face record (1-based or negative relative indices) -> zero-based triangle fan."""
    try:
        corners = [int(token.split("/")[0]) for token in tokens]
    except ValueError:
        raise MeshFileError(f"{where}: face record has a non-integer vertex index") from None
    if len(corners) < 3:
        raise MeshFileError(f"{where}: face record has fewer than 3 vertices")
    if 0 in corners:
        raise MeshFileError(f"{where}: face record uses vertex index 0 (OBJ indices start at 1)")
    corners = [c - 1 if c > 0 else num_vertices + c for c in corners]
    return [(corners[0], corners[k], corners[k + 1]) for k in range(1, len(corners) - 1)]


def read_obj(path: str | Path, require_faces: bool = True) -> TriangleMesh:
    """Read a Wavefront OBJ file; ``require_faces=False`` accepts a bare point cloud (no ``f`` records)."""
    path = Path(path)
    if path.suffix.lower() != ".obj":
        raise MeshFileError(f"{path}: only Wavefront .obj meshes are supported")
    vertices: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] == "v":
            try:
                vertices.append([float(value) for value in tokens[1:4]])
            except ValueError:
                raise MeshFileError(f"{path}:{number}: vertex record is not numeric") from None
            if len(vertices[-1]) != 3:
                raise MeshFileError(f"{path}:{number}: vertex record has fewer than 3 coordinates")
        elif tokens[0] == "f":
            faces.extend(_parse_face(tokens[1:], len(vertices), f"{path}:{number}"))
    if not vertices:
        raise MeshFileError(f"{path}: no vertices found (not an OBJ mesh?)")
    if require_faces and not faces:
        raise MeshFileError(f"{path}: no faces found (a triangle mesh is needed here)")
    vertex_array = np.asarray(vertices, dtype=np.float64)
    face_array = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if face_array.size and (face_array.min() < 0 or face_array.max() >= len(vertex_array)):
        raise MeshFileError(f"{path}: a face refers to a vertex outside 1..{len(vertex_array)}")
    if not np.isfinite(vertex_array).all():
        raise MeshFileError(f"{path}: vertex coordinates contain NaN or infinity")
    return TriangleMesh(vertex_array, face_array)


def write_obj(path: str | Path, mesh: TriangleMesh) -> None:
    """Write ``mesh`` as an OBJ file with 1-based ``f`` records."""
    lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in np.asarray(mesh.vertices, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(mesh.faces, dtype=np.int64)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
