"""The 3D morphable model (3DMM) DFNRMVS reconstructs faces with, and its derived tables.

Two on-disk forms load into the same :class:`MorphableModel`:

* the authors' face3d layout, a base directory ``DIR`` holding ``DIR/Out/BFM.mat``,
  ``DIR/Out/BFM_info.mat``, ``DIR/Out/BFM_UV.mat``, ``DIR/Out/Exp_Pca.bin`` and ``DIR/Out/std_exp.txt``
  (:meth:`MorphableModel.from_face3d_dir`, reproducing the authors' ``load_3DMM``);
* the project's self-describing ``.npz`` (:meth:`MorphableModel.save_npz` / :meth:`MorphableModel.from_npz`),
  which needs no ``.mat`` parsing.

Vertices are stored flattened and interleaved, ``x0, y0, z0, x1, ...`` (3n values), as the BFM does.
Coefficients are *normalised*: the basis is multiplied by ``coeff * std`` (the authors' ``normal_manual``
mode, where the BFM's ``shapeEV`` / ``std_exp.txt`` are used as per-component standard deviations).
"""

import zipfile
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MorphableModelError
from .dense_landmarks import NPZ_KEYS as DENSE_LANDMARK_KEYS
from .dense_landmarks import DenseLandmarks
from .face3d_files import Face3dArrays, adjust_face3d_uv, read_face3d_dir, read_face3d_out
from .face_region import tight_face_region
from .landmark_layout import NUM_LANDMARKS
from .linear_model import LinearFaceModel
from .mesh_topology import adjacent_triangles, neighbour_vertices
from .uv_raster import UV_SIZES, UVRasterTable, rasterize_uv, uv_to_pixels

# Components the authors keep (load_3DMM): the first 80 of the BFM's 199 identity components and the
# first 64 of the 79 expression components of Guo et al.'s Exp_Pca.bin.
NUM_SHAPE_COMPONENTS = 80
NUM_EXPRESSION_COMPONENTS = 64

NPZ_FORMAT_VERSION = 1


@dataclass
class MorphableModel:
    """A linear face model with everything DFNRMVS derives from it.

    Shapes (n vertices, ntri triangles); every field is a torch tensor, on one device:

    mean_shape: (3n,) float32, the BFM's shapeMU (model units; micrometres for the BFM).
    shape_basis: (3n, 80) float32; shape_std: (80,) float32.
    exp_basis: (3n, 64) float32; exp_std: (64,) float32 (Guo et al.'s basis, Deng et al.'s std).
    triangles: (ntri, 3) int64, 0-based, clockwise seen from the camera (normals point into the head).
    landmark_indices: (68,) int64 vertex indices of the iBUG landmarks.
    face_region_mask: (n,) bool, the tight face region the feature loss and adaptive basis use.
    face_region_mask_no_nose_hole: (n,) bool, the same without the nostrils (the demo's valid crop).
    adjacent_triangles: (n, k) int64, padded with ntri. neighbour_vertices: (n, m) int64, padded with n.
    neighbour_counts: (n,) int64.
    uv_coords: (n, 2) float64 UV coordinates in [0, 1] (v up), after the authors' adjustment.
    uv_tables: {32, 64, 128} -> :class:`UVRasterTable` rasterisation tables (as tensors).
    dense_landmarks: where a dense landmark layout's points lie on the surface
    (:class:`~models.face_model.dense_landmarks.DenseLandmarks`), or None (68-point landmarks only).
    """

    mean_shape: torch.Tensor
    shape_basis: torch.Tensor
    shape_std: torch.Tensor
    exp_basis: torch.Tensor
    exp_std: torch.Tensor
    triangles: torch.Tensor
    landmark_indices: torch.Tensor
    face_region_mask: torch.Tensor
    face_region_mask_no_nose_hole: torch.Tensor
    adjacent_triangles: torch.Tensor
    neighbour_vertices: torch.Tensor
    neighbour_counts: torch.Tensor
    uv_coords: torch.Tensor
    uv_tables: dict[int, UVRasterTable] = field(default_factory=dict)
    dense_landmarks: DenseLandmarks | None = None
    _linear: LinearFaceModel | None = field(default=None, init=False, repr=False, compare=False)
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.num_vertices
        expected = {
            "shape_basis": (3 * n, None),
            "exp_basis": (3 * n, None),
            "face_region_mask": (n,),
            "face_region_mask_no_nose_hole": (n,),
            "neighbour_counts": (n,),
            "uv_coords": (n, 2),
            "landmark_indices": (NUM_LANDMARKS,),
        }
        for name, shape in expected.items():
            actual = tuple(getattr(self, name).shape)
            if len(actual) != len(shape) or any(e is not None and e != a for e, a in zip(shape, actual, strict=True)):
                raise MorphableModelError(f"{name} has shape {actual}, expected {shape} for {n} vertices")
        if self.shape_basis.shape[1] != self.shape_std.shape[0] or self.exp_basis.shape[1] != self.exp_std.shape[0]:
            raise MorphableModelError("basis and std have different numbers of components")
        for name in ("mean_shape", "shape_basis", "shape_std", "exp_basis", "exp_std", "uv_coords"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise MorphableModelError(f"{name} holds NaN or infinite values")
        if self.dense_landmarks is not None:
            self.dense_landmarks.check(n)

    # ------------------------------------------------------------------ properties
    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0] // 3

    @property
    def num_triangles(self) -> int:
        return self.triangles.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mean_shape.device

    # ------------------------------------------------------------------ geometry
    @property
    def linear(self) -> LinearFaceModel:
        """The linear shape and expression model of all vertices (computed once per model)."""
        if self._linear is None:
            self._linear = LinearFaceModel.from_std(
                self.mean_shape, self.shape_basis, self.shape_std, self.exp_basis, self.exp_std
            )
        return self._linear

    def derived(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """What ``make()`` derives from this model, computed once per ``key`` and kept with the model (like
        :attr:`linear`, this treats the model's tensors as fixed once made)."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def vertices(
        self,
        shape_coeffs: torch.Tensor,
        exp_coeffs: torch.Tensor | None = None,
        subset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model-space vertices from normalised coefficients (:meth:`LinearFaceModel.vertices`).

        Args:
            shape_coeffs: (B, 80) or (B, 80, 1) normalised identity coefficients (B = 1 is shared by
                every expression).
            exp_coeffs: (B, 64) or (B, 64, 1) normalised expression coefficients, or None for none.
            subset: (k,) vertex indices to evaluate (all when None).
        Returns:
            (B, n, 3) vertices in model units, or (B, k, 3) with ``subset``.
        """
        linear = self.linear if subset is None else self.linear.take(subset)
        return linear.vertices(shape_coeffs, exp_coeffs)

    def to(self, device: torch.device | str) -> "MorphableModel":
        """A copy with every tensor on ``device``."""
        composite = ("uv_tables", "dense_landmarks")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name not in composite}
        moved = {name: value.to(device) for name, value in values.items()}
        tables = {size: UVRasterTable(*(t.to(device) for t in table)) for size, table in self.uv_tables.items()}
        dense = None if self.dense_landmarks is None else self.dense_landmarks.to(device)
        return MorphableModel(**moved, uv_tables=tables, dense_landmarks=dense)

    def with_dense_landmarks(self, dense_landmarks: DenseLandmarks | None) -> "MorphableModel":
        """A copy (sharing the tensors) with ``dense_landmarks`` as its dense correspondence.

        Raises:
            MorphableModelError: the correspondence refers to vertices the model does not have.
        """
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        values["dense_landmarks"] = None if dense_landmarks is None else dense_landmarks.to(self.device)
        return MorphableModel(**values)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        mean_shape: np.ndarray,
        shape_basis: np.ndarray,
        shape_std: np.ndarray,
        exp_basis: np.ndarray,
        exp_std: np.ndarray,
        triangles: np.ndarray,
        landmark_indices: np.ndarray,
        uv_coords: np.ndarray,
        face_region_mask: np.ndarray | None = None,
        nose_hole: np.ndarray | None = None,
        dense_landmarks: DenseLandmarks | None = None,
    ) -> "MorphableModel":
        """Build the model and every derived table from its raw arrays (numpy, 0-based indices).

        Args:
            mean_shape: (3n,) interleaved mean vertices. shape_basis: (3n, ks); shape_std: (ks,).
            exp_basis: (3n, ke); exp_std: (ke,). triangles: (ntri, 3). landmark_indices: (68,).
            uv_coords: (n, 2) UV coordinates in [0, 1], v up, already adjusted.
            face_region_mask: (n,) bool; computed with the authors' rule when None.
            nose_hole: vertex indices removed from the demo's valid crop (default none).
            dense_landmarks: the model's dense landmark correspondence, if any.
        """
        mean_shape = np.asarray(mean_shape, dtype=np.float32).reshape(-1)
        n = mean_shape.shape[0] // 3
        triangles = np.asarray(triangles, dtype=np.int64)
        landmark_indices = np.asarray(landmark_indices, dtype=np.int64).reshape(-1)
        if landmark_indices.shape != (NUM_LANDMARKS,):
            raise MorphableModelError(f"expected {NUM_LANDMARKS} landmark indices, got {landmark_indices.shape[0]}")
        if landmark_indices.min() < 0 or landmark_indices.max() >= n:
            raise MorphableModelError(f"landmark indices must lie in [0, {n})")
        if face_region_mask is None:
            face_region_mask = tight_face_region(mean_shape.astype(np.float64).reshape(n, 3), landmark_indices)
        face_region_mask = np.asarray(face_region_mask, dtype=bool).reshape(-1)
        no_nose_hole = face_region_mask.copy()
        if nose_hole is not None:
            no_nose_hole[np.asarray(nose_hole, dtype=np.int64).reshape(-1)] = False
        tri_table = adjacent_triangles(triangles, n)
        neighbours = neighbour_vertices(triangles, tri_table, n)
        uv_coords = np.asarray(uv_coords, dtype=np.float64)
        tables = {}
        for size in UV_SIZES:
            tables[size] = rasterize_uv(uv_to_pixels(uv_coords, size), triangles, size)
        return cls(
            mean_shape=torch.from_numpy(mean_shape),
            shape_basis=torch.from_numpy(np.ascontiguousarray(shape_basis, dtype=np.float32)),
            shape_std=torch.from_numpy(np.asarray(shape_std, dtype=np.float32).reshape(-1)),
            exp_basis=torch.from_numpy(np.ascontiguousarray(exp_basis, dtype=np.float32)),
            exp_std=torch.from_numpy(np.asarray(exp_std, dtype=np.float32).reshape(-1)),
            triangles=torch.from_numpy(triangles),
            landmark_indices=torch.from_numpy(landmark_indices),
            face_region_mask=torch.from_numpy(face_region_mask),
            face_region_mask_no_nose_hole=torch.from_numpy(no_nose_hole),
            adjacent_triangles=torch.from_numpy(tri_table),
            neighbour_vertices=torch.from_numpy(neighbours.indices),
            neighbour_counts=torch.from_numpy(neighbours.counts),
            uv_coords=torch.from_numpy(uv_coords),
            uv_tables=tables,
            dense_landmarks=dense_landmarks,
        )

    @classmethod
    def from_face3d_dir(cls, base_dir: str | Path) -> "MorphableModel":
        """Load the authors' face3d layout (``base_dir/Out/...``) exactly as their ``load_3DMM`` does.

        Raises:
            MorphableModelError: a file is missing or unreadable, a key is absent, or a shape is wrong.
        """
        return cls._from_face3d_arrays(read_face3d_dir(Path(base_dir)), Path(base_dir))

    @classmethod
    def from_face3d_out(cls, out_dir: str | Path) -> "MorphableModel":
        """Load a face3d ``Out`` folder itself (e.g. one being written); see :meth:`from_face3d_dir`."""
        return cls._from_face3d_arrays(read_face3d_out(Path(out_dir)), Path(out_dir))

    @classmethod
    def _from_face3d_arrays(cls, raw: Face3dArrays, where: Path) -> "MorphableModel":
        try:
            return cls.from_arrays(
                mean_shape=raw.mean_shape,
                shape_basis=raw.shape_basis[:, :NUM_SHAPE_COMPONENTS],
                shape_std=raw.shape_std[:NUM_SHAPE_COMPONENTS],
                exp_basis=raw.exp_basis[:, :NUM_EXPRESSION_COMPONENTS],
                exp_std=raw.exp_std[:NUM_EXPRESSION_COMPONENTS],
                triangles=raw.triangles,
                landmark_indices=raw.landmark_indices,
                uv_coords=adjust_face3d_uv(raw.uv_coords),
                nose_hole=raw.nose_hole,
            )
        except MorphableModelError as error:
            raise MorphableModelError(f"{where}: {error}") from None

    # ------------------------------------------------------------------ npz form
    _ARRAY_FIELDS = (
        "mean_shape",
        "shape_basis",
        "shape_std",
        "exp_basis",
        "exp_std",
        "triangles",
        "landmark_indices",
        "face_region_mask",
        "face_region_mask_no_nose_hole",
        "adjacent_triangles",
        "neighbour_vertices",
        "neighbour_counts",
        "uv_coords",
    )

    def save_npz(self, path: str | Path) -> None:
        """Write every field (derived tables and the dense landmark correspondence included) to one
        compressed ``.npz``."""
        arrays = {name: getattr(self, name).cpu().numpy() for name in self._ARRAY_FIELDS}
        for size, table in self.uv_tables.items():
            for name, value in table._asdict().items():
                arrays[f"uv{size}_{name}"] = value.cpu().numpy()
        if self.dense_landmarks is not None:
            arrays.update(self.dense_landmarks.arrays())
        arrays["format_version"] = np.array(NPZ_FORMAT_VERSION)
        np.savez_compressed(path, **arrays)

    @classmethod
    def from_npz(cls, path: str | Path) -> "MorphableModel":
        """Load a model written by :meth:`save_npz` (the dense landmark correspondence is optional).

        Raises:
            MorphableModelError: the file is missing, not an ``.npz``, or lacks a key.
        """
        path = Path(path)
        if not path.is_file():
            raise MorphableModelError(f"{path}: morphable model file not found")
        try:
            with np.load(path) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise MorphableModelError(f"{path}: not a readable .npz file ({error})") from error
        missing = [name for name in (*cls._ARRAY_FIELDS, "format_version") if name not in arrays]
        tables = {}
        for size in UV_SIZES:
            keys = [f"uv{size}_{name}" for name in UVRasterTable._fields]
            missing += [key for key in keys if key not in arrays]
            if all(key in arrays for key in keys):
                tables[size] = UVRasterTable(*(torch.from_numpy(arrays[key]) for key in keys))
        if missing:
            raise MorphableModelError(f"{path}: missing key(s) {', '.join(missing)}")
        if int(arrays["format_version"]) != NPZ_FORMAT_VERSION:
            raise MorphableModelError(f"{path}: format version {int(arrays['format_version'])} is not supported")
        values = {name: torch.from_numpy(arrays[name]) for name in cls._ARRAY_FIELDS}
        dense_keys = [key for key in DENSE_LANDMARK_KEYS if key in arrays]
        if dense_keys and len(dense_keys) != len(DENSE_LANDMARK_KEYS):
            missing = sorted(set(DENSE_LANDMARK_KEYS) - set(dense_keys))
            raise MorphableModelError(f"{path}: incomplete dense landmarks, missing {', '.join(missing)}")
        dense = DenseLandmarks.from_arrays(arrays) if dense_keys else None
        try:
            return cls(**values, uv_tables=tables, dense_landmarks=dense)
        except MorphableModelError as error:
            raise MorphableModelError(f"{path}: {error}") from error

    @classmethod
    def load(cls, path: str | Path) -> "MorphableModel":
        """Load either form: an ``.npz`` file, or a face3d base directory containing ``Out/`` (a path that does
        not exist and has no suffix is taken for the latter, so that the error names its missing ``Out/BFM.mat``)."""
        path = Path(path)
        if path.is_dir() or (not path.exists() and not path.suffix):
            return cls.from_face3d_dir(path)
        return cls.from_npz(path)
