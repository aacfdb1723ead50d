"""Mesh files: Wavefront OBJ read and written, its MTL materials and binary PLY with vertex colours written;
every reading problem becomes a one-line ``MeshFileError``.

* Reading OBJ: ``v`` and ``f`` records; texture/normal indices and extra vertex columns such as colours
  are ignored, polygons are split into triangle fans. Vertex order is kept exactly, which same-topology
  comparisons rely on.
* Writing OBJ: ``v`` and ``f`` records, optionally one texture coordinate per vertex (``vt``, the face
  records then read ``f a/a b/b c/c``) and a material from an MTL file (``mtllib`` / ``usemtl``).
* MTL: one material per texture image (``map_Kd``), white diffuse, no specular.
* PLY: binary little-endian, float32 positions, uchar RGB colours per vertex, int32 triangles.
"""

from collections.abc import Mapping
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


class MaterialRef(NamedTuple):
    """library: the MTL file's name (relative to the OBJ's folder); name: the material in it."""

    library: str
    name: str


def write_obj(
    path: str | Path,
    mesh: TriangleMesh,
    texture_coords: np.ndarray | None = None,
    material: MaterialRef | None = None,
) -> None:
    """Write ``mesh`` as an OBJ file with 1-based ``f`` records.

    Args:
        texture_coords: (n, 2) one (u, v) per vertex, v up, written as ``vt`` records in vertex order.
        material: the material the faces use (``mtllib`` and ``usemtl`` records).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64) + 1
    # One %-format over all values of a record kind: several times faster than a formatted string per line.
    parts = [] if material is None else [f"mtllib {material.library}\n"]
    parts.append(("v %.9g %.9g %.9g\n" * len(vertices)) % tuple(vertices.ravel().tolist()))
    if texture_coords is None:
        face_record = "f %d %d %d\n"
    else:
        uv = np.asarray(texture_coords, dtype=np.float64)
        if uv.shape != (vertices.shape[0], 2):
            raise ValueError(f"texture_coords must have shape ({vertices.shape[0]}, 2), got {uv.shape}")
        parts.append(("vt %.7g %.7g\n" * len(uv)) % tuple(uv.ravel().tolist()))
        face_record, faces = "f %d/%d %d/%d %d/%d\n", np.repeat(faces, 2, axis=1)
    if material is not None:
        parts.append(f"usemtl {material.name}\n")
    parts.append((face_record * len(faces)) % tuple(faces.ravel().tolist()))
    Path(path).write_text("".join(parts), encoding="utf-8")


def write_mtl(path: str | Path, textures: Mapping[str, str]) -> None:
    """Write an MTL file with one material per (name -> texture image file, relative to the MTL) entry."""
    blocks = [
        f"newmtl {name}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {image}\n"
        for name, image in textures.items()
    ]
    Path(path).write_text("\n".join(blocks), encoding="utf-8")


def write_ply(path: str | Path, mesh: TriangleMesh, colours: np.ndarray) -> None:
    """Write ``mesh`` as a binary PLY with one colour per vertex.

    Args:
        colours: (n, 3) RGB, uint8 or float in [0, 1].
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    colours = np.asarray(colours)
    if colours.shape != (vertices.shape[0], 3):
        raise ValueError(f"colours must have shape ({vertices.shape[0]}, 3), got {colours.shape}")
    if colours.dtype != np.uint8:
        colours = np.round(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)
    vertex_records = np.empty(vertices.shape[0], dtype=[("position", "<f4", 3), ("colour", "u1", 3)])
    vertex_records["position"], vertex_records["colour"] = vertices, colours
    face_records = np.empty(faces.shape[0], dtype=[("count", "u1"), ("corners", "<i4", 3)])
    face_records["count"], face_records["corners"] = 3, faces
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {vertices.shape[0]}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {faces.shape[0]}\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    Path(path).write_bytes(header.encode("ascii") + vertex_records.tobytes() + face_records.tobytes())
