"""Writing one demo case's outputs, named as the authors' ``demo.py`` names them, all or nothing.

Per view ``i`` (in the order of ``result.json``'s ``views``):

* ``face_full_view{i}.obj``: the whole mesh in the morphable model's topology;
* ``face_valid_view{i}.obj``: the face region without the nostrils, vertices outside it dropped
  (``MorphableModel.face_region_mask_no_nose_hole``);
* ``vis_view{i}.jpg``: the shaded grey mesh drawn over the 256x256 crop (the authors' overlay);
* ``crop_view{i}.png``: the crop itself; ``landmarks_view{i}.txt``: the 68 landmarks used ("x y" rows,
  crop pixels, y down);

plus ``result.json`` (inputs, crop boxes, poses, model, landmark backend, method, timings).

Meshes keep the original's convention: camera space of the 256x256 crop in pixels, x right, y up, origin
at the crop centre, the camera looking down -z; triangles are written reversed (``tri[:, [2, 1, 0]]``)
so that their normals point out of the face.
"""

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import OutputError
from ..geometry.camera import denormalize_pose
from ..geometry.mesh_ops import crop_mesh, outward_triangles
from .mesh_io import TriangleMesh, write_obj
from .overlay import overlay_image
from .preprocess import PreparedView
from .staging import staged_folder

FULL_MESH = "face_full_view{}.obj"
VALID_MESH = "face_valid_view{}.obj"
OVERLAY = "vis_view{}.jpg"
CROP = "crop_view{}.png"
LANDMARKS = "landmarks_view{}.txt"
RESULT = "result.json"
JPEG_QUALITY = 95
MESH_CONVENTION = (
    "camera space of the 256x256 crop in pixels: x right, y up, origin at the crop centre, camera looking "
    "down -z (orthographic); crop pixel (u, v) = (x + 128, 127 - y), then crop -> photo with the view's "
    "crop box; triangles reversed from the 3DMM's so normals point outwards"
)


def pose_record(pose: np.ndarray) -> dict:
    """JSON-ready pose: the normalised 6 values and the denormalised angles (degrees), scale and shift (pixels)."""
    values = denormalize_pose(torch.as_tensor(np.asarray(pose, dtype=np.float64)).view(1, 6))
    named = {name: float(value[0]) for name, value in values._asdict().items()}
    return {
        "normalised": [float(v) for v in pose],
        "pitch_deg": named["pitch"],
        "yaw_deg": named["yaw"],
        "roll_deg": named["roll"],
        "scale": named["scale"],
        "tx_px": named["tx"],
        "ty_px": named["ty"],
    }


def write_view(
    directory: Path, index: int, view: PreparedView, vertices: np.ndarray, triangles: np.ndarray, valid_mask: np.ndarray
) -> dict:
    """Write view ``index``'s five files; returns its JSON record (files, crop geometry, landmark source)."""
    outward = outward_triangles(triangles)
    valid = crop_mesh(vertices, outward, valid_mask)
    files = {
        "full_mesh": FULL_MESH.format(index),
        "valid_mesh": VALID_MESH.format(index),
        "overlay": OVERLAY.format(index),
        "crop": CROP.format(index),
        "landmarks": LANDMARKS.format(index),
    }
    write_obj(directory / files["full_mesh"], TriangleMesh(vertices, outward))
    write_obj(directory / files["valid_mesh"], TriangleMesh(valid.vertices, valid.triangles))
    overlay = overlay_image(vertices, triangles, view.crop, valid_mask)
    Image.fromarray(overlay).save(directory / files["overlay"], quality=JPEG_QUALITY)
    Image.fromarray(view.crop).save(directory / files["crop"])
    np.savetxt(directory / files["landmarks"], view.landmarks, fmt="%.3f")
    return {
        "input": str(view.path),
        "landmark_source": view.landmark_source,
        "face_note": view.face_note,
        "face_box_padded": [round(float(v), 3) for v in view.face_box],
        **view.geometry.as_dict(),
        "full_mesh_vertices": int(vertices.shape[0]),
        "valid_mesh_vertices": int(valid.vertices.shape[0]),
        "files": files,
    }


def write_case(
    directory: Path,
    views: Sequence[PreparedView],
    vertices: np.ndarray,
    poses: np.ndarray,
    triangles: np.ndarray,
    valid_mask: np.ndarray,
    summary: dict,
) -> None:
    """Write every output of a reconstructed case into the existing, empty ``directory``.

    Args:
        views: the case's :class:`~models.io.preprocess.PreparedView` s, in output order.
        vertices: (V, n, 3) camera-space meshes (see module docstring). poses: (V, 6) normalised
            weak-perspective poses (pitch, yaw, roll [rad], s_norm, tx_norm, ty_norm).
        triangles: (t, 3) the morphable model's triangles (clockwise seen from the camera).
        valid_mask: (n,) bool, the face region without the nose hole.
        summary: JSON-ready facts about the case (name, method, model, timings, ...), written to
            ``result.json`` with the mesh convention and one record per view.
    """
    records = []
    for index, view in enumerate(views):
        record = write_view(directory, index, view, vertices[index], triangles, valid_mask)
        record["pose"] = pose_record(poses[index])
        records.append(record)
    content = {**summary, "mesh_convention": MESH_CONVENTION, "views": records}
    (directory / RESULT).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def is_earlier_result(target: Path, inputs: Sequence[Path]) -> bool:
    """Whether ``target`` holds this demo's result of exactly these photos (its ``result.json`` lists them).

    Re-running the demo on the same photos refreshes such a folder (as ``python demo.py`` does with the
    shipped ``out_dir/``); anything else needs ``--overwrite``.
    """
    try:
        record = json.loads((target / RESULT).read_text(encoding="utf-8"))
        stored = [Path(view["input"]).resolve() for view in record["views"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(inputs) and sorted(stored) == sorted(Path(path).resolve() for path in inputs)


def check_target(target: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Raise :class:`OutputError` when ``target`` may not be (re)written (see :func:`is_earlier_result`)."""
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite and not is_earlier_result(target, inputs):
        raise OutputError(f"{target} already exists and is not this demo's result of these photos (use --overwrite)")


def _listed_files(record: object) -> set[str]:
    """Every file name a ``result.json`` lists (the values of its ``files`` mappings, at any depth)."""
    names: set[str] = set()
    if isinstance(record, dict):
        for key, value in record.items():
            if key == "files" and isinstance(value, dict):
                for entry in value.values():
                    names.update(str(name) for name in (entry if isinstance(entry, list) else [entry]))
            else:
                names |= _listed_files(value)
    elif isinstance(record, list):
        for item in record:
            names |= _listed_files(item)
    return names


def demo_files(target: Path) -> set[str]:
    """Names in ``target`` that this demo wrote: ``result.json`` and the files it lists."""
    try:
        record = json.loads((target / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {RESULT} | _listed_files(record)


def _carry_over(target: Path, staging: Path) -> None:
    """Hard-link (or copy) into ``staging`` every entry of ``target`` the demo did not write and did not just
    write again, so that replacing ``target`` keeps the user's own files."""
    if not target.is_dir():
        return
    own = demo_files(target)
    for entry in target.iterdir():
        if entry.name in own or (staging / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, staging / entry.name)


def _link_or_copy(source: str | Path, destination: str | Path) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


@contextmanager
def staged_directory(target: Path, overwrite: bool = False, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` when the block succeeds (see
    :func:`check_target` for when an existing ``target`` may be replaced); nothing is left on failure.

    Only the demo's own files are replaced: anything else in ``target`` (a file the user added, or every file
    of a folder that was not a demo result, with ``--overwrite``) is kept, unless the new result writes a
    file of the same name.
    """
    check_target(target, overwrite, inputs)
    with staged_folder(target, replace=True) as staging:
        yield staging
        _carry_over(target, staging)
