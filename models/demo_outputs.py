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
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eval.mesh_io import TriangleMesh, write_obj
from models.camera import denormalize_pose
from models.mesh_geometry import crop_mesh
from models.preprocess import PreparedView
from models.renderer import render_geometry_overlay

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


class OutputError(RuntimeError):
    """An output folder cannot be written (it exists, or is not a folder); one-line message."""


@dataclass
class CaseResult:
    """A reconstructed case, ready to be written.

    name: the case's name. views: its :class:`~models.preprocess.PreparedView` s, in output order.
    vertices: (V, n, 3) camera-space meshes (see module docstring). poses: (V, 6) normalised
    weak-perspective poses (pitch, yaw, roll [rad], s_norm, tx_norm, ty_norm). method: "learned" or
    "fitting". model: where the morphable model came from. checkpoint: the weights file, if any.
    landmark_backend: the detector's name. device: torch device used. timings: seconds per phase.
    details: method-specific JSON-ready facts (e.g. the fitting's per-stage errors).
    """

    name: str
    views: list[PreparedView]
    vertices: np.ndarray
    poses: np.ndarray
    method: str
    model: str
    checkpoint: str | None
    landmark_backend: str
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)


def outward_triangles(triangles: np.ndarray) -> np.ndarray:
    """The 3DMM's triangles (t, 3), clockwise seen from the camera, reversed as the authors write them."""
    return np.ascontiguousarray(np.asarray(triangles, dtype=np.int64)[:, ::-1])


def overlay_image(vertices: np.ndarray, triangles: np.ndarray, crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(256, 256, 3) uint8 overlay of the masked mesh (n, 3) with the 3DMM's triangles over ``crop`` (uint8)."""
    image = render_geometry_overlay(
        torch.from_numpy(np.asarray(vertices, dtype=np.float32)),
        torch.from_numpy(np.asarray(triangles, dtype=np.int64)),
        torch.from_numpy(crop.astype(np.float32) / 255.0),
        torch.from_numpy(np.asarray(mask, dtype=bool)),
    )
    return (image.numpy() * 255.0).round().astype(np.uint8)


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
        "face_box_padded": [round(float(v), 3) for v in view.face_box],
        **view.geometry.as_dict(),
        "full_mesh_vertices": int(vertices.shape[0]),
        "valid_mesh_vertices": int(valid.vertices.shape[0]),
        "files": files,
    }


def write_case(directory: Path, result: CaseResult, triangles: np.ndarray, valid_mask: np.ndarray) -> None:
    """Write every output of ``result`` into the existing, empty ``directory``.

    Args:
        triangles: (t, 3) the morphable model's triangles (clockwise seen from the camera).
        valid_mask: (n,) bool, the face region without the nose hole.
    """
    views = []
    for index, view in enumerate(result.views):
        record = write_view(directory, index, view, result.vertices[index], triangles, valid_mask)
        record["pose"] = pose_record(result.poses[index])
        views.append(record)
    summary = {
        "case": result.name,
        "method": result.method,
        "model": result.model,
        "checkpoint": result.checkpoint,
        "landmarks": result.landmark_backend,
        "device": result.device,
        "mesh_convention": MESH_CONVENTION,
        "views": views,
        "timings_s": {name: round(seconds, 3) for name, seconds in result.timings.items()},
        "details": result.details,
    }
    (directory / RESULT).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


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


@contextmanager
def staged_directory(target: Path, overwrite: bool = False, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target``, on error it is removed.

    Folders created above ``target`` are removed again when the case fails and they stayed empty.
    """
    check_target(target, overwrite, inputs)
    created = [parent for parent in (target.parent, *target.parent.parents) if not parent.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            retired = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
