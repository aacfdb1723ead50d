"""Readers for the 3DMM files of the authors' face3d layout (``MM_base_dir/Out/...``).

What is read, and how (face3d's ``load_BFM`` / ``load_BFM_info`` / ``load_uv_coords`` and DFNRMVS's
``LoadExpBasis``):

* ``Out/BFM.mat``, struct ``model``: ``shapeMU`` (3n, 1), ``shapePC`` (3n, >=80), ``shapeEV`` (>=80, 1),
  ``tri`` (3, ntri) 1-based, ``kpt_ind`` (1, 68) 1-based. face3d casts the shape arrays to float32.
* ``Out/BFM_info.mat``, struct ``model_info``: ``nose_hole`` (0-based vertex indices).
* ``Out/BFM_UV.mat``: ``UV`` (n, 2) in [0, 1].
* ``Out/Exp_Pca.bin``: int32 ``exp_dim``, float32 ``expMU[3n]`` (unused), float32 ``expPC[exp_dim][3n]``.
* ``Out/std_exp.txt``: ``exp_dim`` standard deviations, one per line.

Every problem is reported as a :class:`~models.errors.MorphableModelError` naming the file
and what is wrong with it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import MorphableModelError

# Guo et al.'s Exp_Pca.bin stores its dimension as one little-endian int32 header.
EXP_PCA_HEADER_BYTES = 4
FLOAT32_BYTES = 4

# The authors' UV fit into the unit square (load_3DMM): shift v down by 0.11, then stretch u by 12/11
# and v by 4/3 about 0.5, evaluated left to right as the authors write it.
UV_V_SHIFT = 0.11
UV_U_STRETCH = (12.0, 11.0)
UV_V_STRETCH = (4.0, 3.0)

# What a missing face3d file tells the user: the converter that writes every Out/ file (README, 'Licensed assets').
MISSING_FILE_HINT = (
    "file not found (build the face3d files from the BFM downloads with "
    "`python -m tools.prepare_bfm --raw RAW --out DIR`; see README, 'Licensed assets')"
)


@dataclass
class Face3dArrays:
    """The raw arrays of a face3d-layout model, 0-based, before the authors' truncation.

    mean_shape (3n,) float32; shape_basis (3n, ks) float32; shape_std (ks,) float32;
    exp_basis (3n, ke) float32; exp_std (ke,) float32 (ke = exp_dim of Exp_Pca.bin);
    triangles (ntri, 3) int64; landmark_indices (68,) int64;
    nose_hole (k,) int64; uv_coords (n, 2) float64 as stored (before the authors' adjustment).
    """

    mean_shape: np.ndarray
    shape_basis: np.ndarray
    shape_std: np.ndarray
    exp_basis: np.ndarray
    exp_std: np.ndarray
    triangles: np.ndarray
    landmark_indices: np.ndarray
    nose_hole: np.ndarray
    uv_coords: np.ndarray


def _error(path: Path, problem: str) -> MorphableModelError:
    return MorphableModelError(f"{path}: {problem}")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise _error(path, MISSING_FILE_HINT)


def _load_struct(path: Path, struct: str) -> dict:
    _require_file(path)
    try:
        content = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        raise _error(path, f"not a readable MATLAB file ({error})") from error
    if struct not in content:
        raise _error(path, f"missing key '{struct}'")
    record = content[struct]
    if record.dtype.names is None:
        raise _error(path, f"'{struct}' is not a struct")
    record = record[0, 0]
    return {name: record[name] for name in record.dtype.names}


def _field(values: dict, path: Path, key: str, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    if key not in values:
        raise _error(path, f"missing key '{key}'")
    value = np.asarray(values[key])
    if (
        value.ndim != 2
        or (rows is not None and value.shape[0] != rows)
        or (cols is not None and value.shape[1] != cols)
    ):
        expected = f"({'any' if rows is None else rows}, {'any' if cols is None else cols})"
        raise _error(path, f"key '{key}' has shape {value.shape}, expected {expected}")
    if np.issubdtype(value.dtype, np.number) and not np.isfinite(value).all():
        raise _error(path, f"key '{key}' holds NaN or infinite values")
    return value


def _read_exp_pca(path: Path, num_values: int) -> tuple[np.ndarray, int]:
    _require_file(path)
    raw = path.read_bytes()
    if len(raw) < EXP_PCA_HEADER_BYTES:
        raise _error(path, "too short to hold the expression dimension header")
    exp_dim = int(np.frombuffer(raw[:EXP_PCA_HEADER_BYTES], dtype="<i4")[0])
    expected = EXP_PCA_HEADER_BYTES + FLOAT32_BYTES * num_values * (1 + max(exp_dim, 0))
    if exp_dim <= 0 or len(raw) < expected:
        raise _error(
            path,
            f"holds {len(raw)} bytes with exp_dim={exp_dim}, expected {expected} for "
            f"{num_values // 3} vertices (is it the Exp_Pca.bin of this model?)",
        )
    body = np.frombuffer(raw, dtype="<f4", count=num_values * (1 + exp_dim), offset=EXP_PCA_HEADER_BYTES)
    if not np.isfinite(body).all():
        raise _error(path, "holds NaN or infinite values")
    basis = body[num_values:].reshape(exp_dim, num_values).T.astype(np.float32)
    return basis, exp_dim


def _read_exp_std(path: Path, exp_dim: int) -> np.ndarray:
    _require_file(path)
    try:
        values = np.loadtxt(path, dtype=np.float64)
    except ValueError as error:
        raise _error(path, f"not a list of numbers ({error})") from error
    values = values.reshape(-1)
    if values.shape[0] != exp_dim:
        raise _error(path, f"holds {values.shape[0]} values, expected {exp_dim} (exp_dim of Exp_Pca.bin)")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise _error(path, "standard deviations must be finite and positive")
    return values.astype(np.float32)


def read_face3d_dir(base_dir: Path) -> Face3dArrays:
    """Read and validate every file of ``base_dir/Out`` (a missing ``base_dir`` is reported as its missing
    ``Out/BFM.mat``, the first file read)."""
    return read_face3d_out(base_dir / "Out")


def read_face3d_out(out_dir: Path) -> Face3dArrays:
    """Read and validate every file of a face3d ``Out`` folder (whatever its name)."""
    bfm_path = out_dir / "BFM.mat"
    model = _load_struct(bfm_path, "model")
    mean_shape = _field(model, bfm_path, "shapeMU", cols=1)
    num_values = mean_shape.shape[0]
    if num_values % 3:
        raise _error(bfm_path, f"shapeMU has {num_values} values, not a multiple of 3")
    n = num_values // 3
    shape_basis = _field(model, bfm_path, "shapePC", rows=num_values)
    shape_std = _field(model, bfm_path, "shapeEV", rows=shape_basis.shape[1], cols=1)
    triangles = _field(model, bfm_path, "tri", rows=3)
    landmarks = _field(model, bfm_path, "kpt_ind", rows=1, cols=68)

    info_path = out_dir / "BFM_info.mat"
    info = _load_struct(info_path, "model_info")
    nose_hole = _field(info, info_path, "nose_hole")

    uv_path = out_dir / "BFM_UV.mat"
    _require_file(uv_path)
    try:
        uv_file = scipy.io.loadmat(uv_path)
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        raise _error(uv_path, f"not a readable MATLAB file ({error})") from error
    uv_coords = _field(uv_file, uv_path, "UV", rows=n, cols=2)

    exp_basis, exp_dim = _read_exp_pca(out_dir / "Exp_Pca.bin", num_values)
    exp_std = _read_exp_std(out_dir / "std_exp.txt", exp_dim)

    triangles = triangles.T.astype(np.int64) - 1
    if triangles.min() < 0 or triangles.max() >= n:
        raise _error(bfm_path, f"key 'tri' indexes vertices outside 1..{n}")
    landmark_indices = landmarks.reshape(-1).astype(np.int64) - 1
    if landmark_indices.min() < 0 or landmark_indices.max() >= n:
        raise _error(bfm_path, f"key 'kpt_ind' indexes vertices outside 1..{n}")
    nose_hole = nose_hole.reshape(-1).astype(np.int64)
    if nose_hole.size and (nose_hole.min() < 0 or nose_hole.max() >= n):
        raise _error(info_path, f"key 'nose_hole' indexes vertices outside 0..{n - 1}")
    return Face3dArrays(
        mean_shape=mean_shape.reshape(-1).astype(np.float32),
        shape_basis=shape_basis.astype(np.float32),
        shape_std=shape_std.reshape(-1).astype(np.float32),
        exp_basis=exp_basis,
        exp_std=exp_std,
        triangles=triangles,
        landmark_indices=landmark_indices,
        nose_hole=nose_hole,
        uv_coords=np.array(uv_coords, dtype=np.float64, order="C"),
    )


def adjust_face3d_uv(uv_coords: np.ndarray) -> np.ndarray:
    """The authors' fit of face3d's BFM UV map into the unit square (load_3DMM), (n, 2) -> (n, 2)."""
    adjusted = np.array(uv_coords, dtype=np.float64)
    adjusted[:, 1] -= UV_V_SHIFT
    adjusted[:, 0] = (adjusted[:, 0] - 0.5) * UV_U_STRETCH[0] / UV_U_STRETCH[1] + 0.5
    adjusted[:, 1] = (adjusted[:, 1] - 0.5) * UV_V_STRETCH[0] / UV_V_STRETCH[1] + 0.5
    return adjusted
