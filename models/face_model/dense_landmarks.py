"""Where the points of a dense landmark layout lie on a morphable model's surface.

A dense detector (MediaPipe's face mesh, :mod:`models.face_model.mediapipe_layout`) returns hundreds of points
with fixed meanings. :class:`DenseLandmarks` places each of them on the model as a barycentric combination of
the three vertices of one triangle, so that the point moves with every identity, expression and pose:
``point_k = sum_j barycentrics[k, j] * vertex[triangle_vertices[k, j]]``.

The default model stores its correspondence to MediaPipe's layout in its ``.npz``
(``tools/build_default_face_model.py``); any other model can be given one from a file with the same arrays
(:meth:`DenseLandmarks.from_npz`, :meth:`MorphableModel.with_dense_landmarks
<models.face_model.morphable_model.MorphableModel.with_dense_landmarks>`).
"""

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import MorphableModelError

# Keys of the correspondence in a model's .npz, or in a correspondence file of its own.
LAYOUT_KEY = "dense_landmark_layout"
VERTICES_KEY = "dense_landmark_vertices"
BARYCENTRICS_KEY = "dense_landmark_barycentrics"
NPZ_KEYS = (LAYOUT_KEY, VERTICES_KEY, BARYCENTRICS_KEY)

# Barycentric coordinates must sum to 1 within this and lie in [-this, 1 + this].
BARYCENTRIC_TOLERANCE = 1e-4


class DenseLandmarks(NamedTuple):
    """layout: the layout's name (e.g. ``"mediapipe468"``). triangle_vertices: (K, 3) int64 vertex indices of
    the triangle holding each point. barycentrics: (K, 3) float32 weights of those vertices (rows sum to 1)."""

    layout: str
    triangle_vertices: torch.Tensor
    barycentrics: torch.Tensor

    @property
    def count(self) -> int:
        """K, the number of points."""
        return self.triangle_vertices.shape[0]

    def points(self, vertices: torch.Tensor) -> torch.Tensor:
        """(..., n, 3) vertices of the whole mesh -> (..., K, 3) the points on it."""
        corners = vertices[..., self.triangle_vertices.to(vertices.device), :]  # (..., K, 3, 3)
        weights = self.barycentrics.to(device=vertices.device, dtype=vertices.dtype)
        return (corners * weights.unsqueeze(-1)).sum(dim=-2)

    def to(self, device: torch.device | str) -> "DenseLandmarks":
        """A copy with its tensors on ``device``."""
        return DenseLandmarks(self.layout, self.triangle_vertices.to(device), self.barycentrics.to(device))

    def check(self, num_vertices: int) -> None:
        """Raise :class:`MorphableModelError` unless this fits a model of ``num_vertices`` vertices."""
        indices, weights = self.triangle_vertices, self.barycentrics
        if indices.dim() != 2 or indices.shape[1] != 3 or weights.shape != indices.shape or indices.shape[0] == 0:
            raise MorphableModelError(
                f"dense landmarks need (K, 3) triangle vertices and barycentrics, got {tuple(indices.shape)} "
                f"and {tuple(weights.shape)}"
            )
        if int(indices.min()) < 0 or int(indices.max()) >= num_vertices:
            raise MorphableModelError(f"dense landmark vertex indices must lie in [0, {num_vertices})")
        sums = weights.double().sum(dim=1)
        inside = (weights >= -BARYCENTRIC_TOLERANCE) & (weights <= 1 + BARYCENTRIC_TOLERANCE)
        if not bool(inside.all()) or float((sums - 1).abs().max()) > BARYCENTRIC_TOLERANCE:
            raise MorphableModelError("dense landmark barycentric coordinates must lie in [0, 1] and sum to 1")

    def arrays(self) -> dict[str, np.ndarray]:
        """The .npz arrays (:data:`NPZ_KEYS`)."""
        return {
            LAYOUT_KEY: np.array(self.layout),
            VERTICES_KEY: self.triangle_vertices.cpu().numpy().astype(np.int64),
            BARYCENTRICS_KEY: self.barycentrics.cpu().numpy().astype(np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "DenseLandmarks":
        """From the arrays of :meth:`arrays` (e.g. the contents of an .npz)."""
        return cls(
            str(arrays[LAYOUT_KEY]),
            torch.from_numpy(np.asarray(arrays[VERTICES_KEY], dtype=np.int64)),
            torch.from_numpy(np.asarray(arrays[BARYCENTRICS_KEY], dtype=np.float32)),
        )

    def save_npz(self, path: str | Path) -> None:
        """Write a correspondence file (the arrays of :meth:`arrays`)."""
        np.savez_compressed(path, **self.arrays())

    @classmethod
    def from_npz(cls, path: str | Path, num_vertices: int | None = None) -> "DenseLandmarks":
        """Read a correspondence file (or a model .npz that holds one).

        Args:
            num_vertices: when given, the correspondence is checked against a model of that many vertices.
        Raises:
            MorphableModelError: the file is missing or unreadable, lacks a key, or does not fit the model.
        """
        path = Path(path)
        if not path.is_file():
            raise MorphableModelError(f"{path}: dense landmark correspondence file not found")
        try:
            with np.load(path) as data:
                missing = [key for key in NPZ_KEYS if key not in data.files]
                arrays = {key: data[key] for key in NPZ_KEYS if key in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise MorphableModelError(f"{path}: not a readable .npz file ({error})") from error
        if missing:
            raise MorphableModelError(f"{path}: missing key(s) {', '.join(missing)}")
        dense = cls.from_arrays(arrays)
        if num_vertices is not None:
            try:
                dense.check(num_vertices)
            except MorphableModelError as error:
                raise MorphableModelError(f"{path}: {error}") from None
        return dense
