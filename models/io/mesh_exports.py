"""A case's extra outputs: the texture fused from its views, textured and vertex-coloured meshes, meshes in the
morphable model's frame (mm) and the neutral identity. Written beside the demo's files (``case_outputs``)
and listed under ``exports`` in ``result.json``.

Files (V views, i = 0..V-1), each kind switched by :class:`ExportOptions`:

* ``texture.png``: the colour fused from all views (:func:`models.texture.fusion.fuse_texture`), S x S;
  ``albedo.png``: the same de-lit (an albedo estimate up to a global colour scale); ``texture.mtl``:
  materials ``face_texture`` and ``face_albedo`` (map one of them by editing an OBJ's ``usemtl`` line);
* ``face_textured_view{i}.obj``: ``face_full_view{i}.obj`` (crop camera space, pixels) with texture
  coordinates and material ``face_texture``; ``face_colored_view{i}.ply``: the same mesh with the texture's
  colour at each vertex (binary PLY);
* ``face_model_mm_view{i}.obj``: view i's mesh in the model's own frame in millimetres, its expression kept
  (textured when the texture is on) -- what ``eval.evaluate``'s depth-aligned metric needs;
* ``face_neutral.obj``: the identity with expression zero in the model's frame in millimetres (see
  :mod:`models.face_model.model_frame` for what "neutral" means for each method), textured;
  ``face_neutral_valid.obj``: its face region without the nostrils; ``face_neutral_landmarks7.txt``: its 7
  evaluation landmarks ("x y z" rows, mm), which ``eval.evaluate``'s scan protocol reads beside it.

Triangles are written reversed from the model's, as the demo's other meshes (normals point outwards).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..face_model.model_frame import MODEL_UNITS_PER_MM, evaluation_landmarks, model_frame_millimetres
from ..geometry.mesh_ops import crop_mesh, outward_triangles
from ..texture.fusion import DEFAULT_TEXTURE_SIZE, FusedTexture, TextureConfig, fuse_texture
from ..texture.textured_render import reprojection_errors
from .mesh_io import MaterialRef, TriangleMesh, write_mtl, write_obj, write_ply

TEXTURE = "texture.png"
ALBEDO = "albedo.png"
MATERIALS = "texture.mtl"
TEXTURE_MATERIAL = "face_texture"
ALBEDO_MATERIAL = "face_albedo"
TEXTURED_MESH = "face_textured_view{}.obj"
COLOURED_MESH = "face_colored_view{}.ply"
MODEL_FRAME_MESH = "face_model_mm_view{}.obj"
NEUTRAL_MESH = "face_neutral.obj"
NEUTRAL_VALID_MESH = "face_neutral_valid.obj"
NEUTRAL_LANDMARKS = "face_neutral_landmarks7.txt"
# zlib level of the texture PNGs: 1 writes a 1024x1024 face texture several times faster than the default 6,
# about 15 % larger.
PNG_COMPRESSION = 1


@dataclass(frozen=True)
class ExportOptions:
    """Which extra outputs to write (all are on by default: they cost well under a second per case).

    texture: the fused texture, textured OBJs and vertex-coloured PLYs. texture_size: its side in texels.
    albedo: the de-lit albedo texture too (needs ``texture``). model_frame: per-view meshes in the model's
    frame (mm). neutral: the neutral identity mesh (needs the identity coefficients).
    """

    texture: bool = True
    texture_size: int = DEFAULT_TEXTURE_SIZE
    albedo: bool = True
    model_frame: bool = True
    neutral: bool = True

    def __post_init__(self) -> None:
        TextureConfig(self.texture_size)  # validates the size


@dataclass
class CaseMeshes:
    """What the exports are made from (V views, n vertices of the morphable model).

    crops: (V, 256, 256, 3) uint8. vertices: (V, n, 3) crop camera space (pixels). poses: (V, 6) normalised.
    triangles: (t, 3) the model's (clockwise seen from the camera). valid_mask: (n,) bool face region
    without the nostrils. uv_coords: (n, 2) the model's UV map, or None (no texture). landmark_indices:
    (68,) or None. neutral: (n, 3) the neutral identity in model units, or None.
    """

    crops: np.ndarray
    vertices: np.ndarray
    poses: np.ndarray
    triangles: np.ndarray
    valid_mask: np.ndarray
    uv_coords: np.ndarray | None = None
    landmark_indices: np.ndarray | None = None
    neutral: np.ndarray | None = None


def _png(directory: Path, name: str, image: torch.Tensor) -> None:
    pixels = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(np.ascontiguousarray(pixels)).save(directory / name, compress_level=PNG_COMPRESSION)


def _texture(directory: Path, case: CaseMeshes, options: ExportOptions, files: dict) -> tuple[FusedTexture, dict]:
    """Fuse and write the texture(s) and their materials; returns the fusion and its result.json record."""
    start = time.perf_counter()
    fused = fuse_texture(
        torch.from_numpy(np.asarray(case.vertices, dtype=np.float32)),
        torch.from_numpy(np.asarray(case.crops)),
        torch.from_numpy(np.asarray(case.triangles, dtype=np.int64)),
        torch.from_numpy(np.asarray(case.uv_coords, dtype=np.float64)),
        TextureConfig(options.texture_size, options.albedo),
        torch.from_numpy(np.asarray(case.valid_mask, dtype=bool)),
    )
    seconds = time.perf_counter() - start
    errors = reprojection_errors(
        torch.from_numpy(np.asarray(case.vertices, dtype=np.float32)),
        torch.from_numpy(np.asarray(case.crops)),
        torch.from_numpy(np.asarray(case.triangles, dtype=np.int64)),
        fused.texture_uv,
        fused.texture,
        torch.from_numpy(np.asarray(case.valid_mask, dtype=bool)),
    )
    _png(directory, TEXTURE, fused.texture)
    materials = {TEXTURE_MATERIAL: TEXTURE}
    files["texture"] = TEXTURE
    if fused.albedo is not None:
        _png(directory, ALBEDO, fused.albedo)
        materials[ALBEDO_MATERIAL] = ALBEDO
        files["albedo"] = ALBEDO
    write_mtl(directory / MATERIALS, materials)
    files["materials"] = MATERIALS
    chart = fused.chart.mask()
    record = {
        "size": options.texture_size,
        "seen_fraction": round(float(fused.seen[chart].float().mean()), 4),
        "view_shares": [round(float(v), 4) for v in fused.view_shares],
        "reprojection_mae": [round(float(e), 5) for e in errors],
        "lighting_sh": None if fused.lighting is None else fused.lighting.double().cpu().numpy().round(5).tolist(),
        "fusion_seconds": round(seconds, 3),
    }
    return fused, record


def write_exports(directory: Path, case: CaseMeshes, options: ExportOptions | None = None) -> dict:
    """Write the extra outputs ``options`` selects into ``directory`` (see the module docstring).

    Returns:
        The ``exports`` record of ``result.json``: the files written, texture statistics (texels some view
        sees, each view's share, per-view mean absolute error of the textured mesh rendered back over the
        face region, in colour units of [0, 1], the fitted lights) and what was skipped and why.
    """
    options = options or ExportOptions()
    files: dict = {}
    record: dict = {"files": files, "units": {"model_frame": "mm", "camera": "crop pixels"}}
    skipped = {}
    outward = outward_triangles(case.triangles)
    views = np.asarray(case.vertices).shape[0]
    uv = material = colours = None
    if options.texture and case.uv_coords is not None:
        fused, record["texture"] = _texture(directory, case, options, files)
        uv = fused.texture_uv.double().cpu().numpy()
        material = MaterialRef(MATERIALS, TEXTURE_MATERIAL)
        colours = fused.vertex_colours.cpu().numpy()
        files["textured_meshes"] = [TEXTURED_MESH.format(i) for i in range(views)]
        files["colored_meshes"] = [COLOURED_MESH.format(i) for i in range(views)]
        for i in range(views):
            mesh = TriangleMesh(case.vertices[i], outward)
            write_obj(directory / files["textured_meshes"][i], mesh, uv, material)
            write_ply(directory / files["colored_meshes"][i], mesh, colours)
    elif options.texture:
        skipped["texture"] = "the morphable model has no UV coordinates"
    if options.model_frame:
        millimetres = model_frame_millimetres(case.vertices, case.poses)
        files["model_frame_meshes"] = [MODEL_FRAME_MESH.format(i) for i in range(views)]
        for i in range(views):
            write_obj(directory / files["model_frame_meshes"][i], TriangleMesh(millimetres[i], outward), uv, material)
    if options.neutral and case.neutral is not None:
        _write_neutral(directory, case, outward, uv, material, files)
    elif options.neutral:
        skipped["neutral"] = "the method gave no identity coefficients"
    if skipped:
        record["skipped"] = skipped
    return record


def _write_neutral(
    directory: Path,
    case: CaseMeshes,
    outward: np.ndarray,
    uv: np.ndarray | None,
    material: MaterialRef | None,
    files: dict,
) -> None:
    neutral = np.asarray(case.neutral, dtype=np.float64) / MODEL_UNITS_PER_MM
    write_obj(directory / NEUTRAL_MESH, TriangleMesh(neutral, outward), uv, material)
    valid = crop_mesh(neutral, outward, case.valid_mask)
    valid_uv = None if uv is None else uv[valid.kept_vertices]
    write_obj(directory / NEUTRAL_VALID_MESH, TriangleMesh(valid.vertices, valid.triangles), valid_uv, material)
    files["neutral_mesh"], files["neutral_valid_mesh"] = NEUTRAL_MESH, NEUTRAL_VALID_MESH
    if case.landmark_indices is not None:
        np.savetxt(directory / NEUTRAL_LANDMARKS, evaluation_landmarks(neutral, case.landmark_indices), fmt="%.6f")
        files["neutral_landmarks7"] = NEUTRAL_LANDMARKS


def export_file_names(views: int, options: ExportOptions | None = None) -> Sequence[str]:
    """The files :func:`write_exports` writes for ``views`` views with a textured model, identity and landmarks."""
    options = options or ExportOptions()
    names = []
    if options.texture:
        names += [TEXTURE, MATERIALS, *([ALBEDO] if options.albedo else [])]
        names += [name.format(i) for name in (TEXTURED_MESH, COLOURED_MESH) for i in range(views)]
    if options.model_frame:
        names += [MODEL_FRAME_MESH.format(i) for i in range(views)]
    if options.neutral:
        names += [NEUTRAL_MESH, NEUTRAL_VALID_MESH, NEUTRAL_LANDMARKS]
    return names
