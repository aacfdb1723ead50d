"""Readers for the downloadable files from which face3d's ``generate.m`` builds the BFM ``Out/`` folder.

Every reader checks what it loads and raises :class:`UserInputError` with a one-line message that a
user can act on: which file is missing (what it is, which download has it, where to put it), or which
file holds a wrong or missing variable (the key and the expected shape).

Vocabulary used in the docstrings:

* ``N``: vertices of the Basel Face Model 2009 (53,490 for the real model).
* ``n``: vertices kept after removing neck and ears with 3DDFA's ``trimIndex`` (53,215 for the BFM).
* ``ntri``: triangles of the trimmed mesh (105,840 for the BFM).

Coordinates and per-vertex values are interleaved ``x0, y0, z0, x1, ...`` in columns of length
``3N`` or ``3n``. Index arrays are stored as in the files: MATLAB's 1-based numbers, mostly as
float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio

from models.errors import DFNRMVSError

# Where Xiangyu Zhu's files come from (face3d examples/Data/BFM/readme.md, step 2).
ZHU_DOWNLOADS = (
    "Xiangyu Zhu's 3DDFA / Face Profiling / HPEN downloads "
    "(http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm and .../projects/HPEN/main.htm)"
)

# Number of 3DDFA landmarks (iBUG 68-point layout), the length of model_info.mat's ``keypoints``.
LANDMARK_COUNT = 68

# Size of the int32 header of Exp_Pca.bin (number of expression components), in bytes.
EXP_PCA_HEADER_BYTES = 4

# Size of one float32 value in Exp_Pca.bin, in bytes.
FLOAT32_BYTES = 4


class UserInputError(DFNRMVSError):
    """A problem the user can fix (missing or malformed input, existing output); one line per problem."""


@dataclass(frozen=True)
class RawFile:
    """One downloadable input file.

    name: file name. what: what it holds. source: which download contains it.
    folder: the sub-folder face3d's generate.m reads it from (``raw``, ``3ddfa``, ``stn``), if any.
    """

    name: str
    what: str
    source: str
    folder: str | None = None


BASEL_MODEL = RawFile(
    "01_MorphableModel.mat",
    "the Basel Face Model 2009 (shape and texture PCA)",
    "the BFM 2009 download (PublicMM1.zip, folder PublicMM1) from "
    "https://faces.dmi.unibas.ch/bfm/main.php?nav=1-2&id=downloads",
    "raw",
)
MODEL_INFO = RawFile(
    "model_info.mat",
    "3DDFA's BFM information (trimIndex, keypoints, triangles, symmetry and segment lists)",
    ZHU_DOWNLOADS,
    "3ddfa",
)
MODEL_EXPRESSION = RawFile("Model_Expression.mat", "3DDFA's 29-component expression basis", ZHU_DOWNLOADS, "3ddfa")
MODEL_TRI_MOUTH = RawFile("Model_tri_mouth.mat", "3DDFA's mouth triangles", ZHU_DOWNLOADS, "3ddfa")
MODEL_FACE_CONTOUR = RawFile(
    "Model_face_contour_trimed.mat", "3DDFA's face contour vertex lists", ZHU_DOWNLOADS, "3ddfa"
)
MODELPLUS_NOSE_HOLE = RawFile("Modelplus_nose_hole.mat", "3DDFA's nose hole vertex lists", ZHU_DOWNLOADS, "3ddfa")
MODELPLUS_PARALLEL = RawFile(
    "Modelplus_parallel.mat", "3DDFA's contour parallels (landmark search lines)", ZHU_DOWNLOADS, "3ddfa"
)
VERTEX_CODE = RawFile(
    "vertex_code.mat", "3DDFA's PNCC vertex code (optional, copied to Out/pncc_code.mat)", ZHU_DOWNLOADS, "3ddfa"
)
STN_UV = RawFile(
    "BFM_UV.mat",
    "UV coordinates of the BFM vertices (3DMMasSTN)",
    "the 3DMMasSTN repository, https://github.com/anilbas/3DMMasSTN/blob/master/util/BFM_UV.mat",
    "stn",
)
EXP_PCA = RawFile(
    "Exp_Pca.bin",
    "Guo et al.'s expression basis for the trimmed BFM",
    "the 'CoarseData' download of Guo et al., https://github.com/Juyong/3DFace",
)
STD_EXP = RawFile(
    "std_exp.txt",
    "standard deviations of Exp_Pca.bin's components",
    "Deng et al.'s Deep3DFaceReconstruction repository, "
    "https://github.com/microsoft/Deep3DFaceReconstruction/blob/master/BFM/std_exp.txt",
)

REQUIRED_FILES = (
    BASEL_MODEL,
    MODEL_INFO,
    MODEL_EXPRESSION,
    MODEL_TRI_MOUTH,
    MODEL_FACE_CONTOUR,
    MODELPLUS_NOSE_HOLE,
    MODELPLUS_PARALLEL,
    STN_UV,
    EXP_PCA,
    STD_EXP,
)


@dataclass(frozen=True)
class BaselModel:
    """``01_MorphableModel.mat``; dtypes as stored (float32 / float64).

    shape_mu (3N, 1), shape_pc (3N, ks), shape_ev (ks, 1): shape PCA in micrometres.
    tex_mu (3N, 1), tex_pc (3N, kt), tex_ev (kt, 1): RGB texture PCA, values 0..255.
    """

    shape_mu: np.ndarray
    shape_pc: np.ndarray
    shape_ev: np.ndarray
    tex_mu: np.ndarray
    tex_pc: np.ndarray
    tex_ev: np.ndarray

    @property
    def n_vertices(self) -> int:
        """N, the number of untrimmed BFM vertices."""
        return self.shape_mu.shape[0] // 3


@dataclass(frozen=True)
class ModelInfo:
    """3DDFA's ``model_info.mat``; indices 1-based as stored.

    trim_index (n, 1): BFM vertex number (1..N) of each kept vertex, in the kept order.
    keypoints (1, 68): landmark vertex numbers in the trimmed mesh (1..n).
    tri (3, ntri): triangles of the trimmed mesh (1..n).
    symlist (2, *): mirrored vertex pairs; symlist_tri (2, *): mirrored triangle pairs.
    segbin (N, 4): untrimmed per-vertex segment flags (nose, eyes, mouth, rest).
    segbin_tri (ntri, 4): per-triangle segment flags.
    """

    trim_index: np.ndarray
    keypoints: np.ndarray
    tri: np.ndarray
    symlist: np.ndarray
    symlist_tri: np.ndarray
    segbin: np.ndarray
    segbin_tri: np.ndarray

    @property
    def n_kept(self) -> int:
        """n, the number of vertices after trimming."""
        return self.trim_index.shape[0]

    @property
    def kept_vertices(self) -> np.ndarray:
        """(n,) int64 0-based BFM vertex of each kept vertex."""
        return self.trim_index[:, 0].astype(np.int64) - 1


@dataclass(frozen=True)
class ExpressionBasis:
    """3DDFA's ``Model_Expression.mat``: mu_exp (3n, 1), w_exp (3n, ke), sigma_exp (ke, 1)."""

    mu_exp: np.ndarray
    w_exp: np.ndarray
    sigma_exp: np.ndarray


@dataclass(frozen=True)
class RawInputs:
    """Everything generate.m reads, checked for consistency.

    tri_mouth: (3, k) 1-based mouth triangles of the trimmed mesh.
    face_contour, nose_hole, parallel: the variables of those files in file order, passed through
    unchanged (vectors (1, k); ``parallel*`` are (k, 1) cell arrays, i.e. object arrays).
    uv: (N, 2) STN UV coordinates in [0, 1], or (n, 2) if the file is already in trimmed order.
    exp_pca, std_exp: paths of files that are copied byte for byte; exp_dim: Exp_Pca.bin's components.
    vertex_code: path of vertex_code.mat, or None when it is absent.
    """

    basel: BaselModel
    info: ModelInfo
    expression: ExpressionBasis
    tri_mouth: np.ndarray
    face_contour: dict[str, np.ndarray]
    nose_hole: dict[str, np.ndarray]
    parallel: dict[str, np.ndarray]
    uv: np.ndarray
    exp_pca: Path
    std_exp: Path
    exp_dim: int
    vertex_code: Path | None


def find_file(raw_dir: Path, spec: RawFile) -> Path | None:
    """``raw_dir/name``, else ``raw_dir/<generate.m folder>/name``, else None."""
    candidates = [raw_dir / spec.name]
    if spec.folder is not None:
        candidates.append(raw_dir / spec.folder / spec.name)
    return next((path for path in candidates if path.is_file()), None)


def missing_file_message(raw_dir: Path, spec: RawFile) -> str:
    """One line: which file is missing, what it is, which download contains it and where to put it."""
    where = f"{raw_dir}/"
    if spec.folder is not None:
        where += f" (or {raw_dir / spec.folder}/, face3d's layout)"
    return f"missing {spec.name}, {spec.what}: it comes with {spec.source}; put it in {where}"


def locate_inputs(raw_dir: Path) -> dict[str, Path]:
    """Paths of all required files by name; raises one message line per missing file."""
    found = {spec.name: find_file(raw_dir, spec) for spec in REQUIRED_FILES}
    missing = [missing_file_message(raw_dir, spec) for spec in REQUIRED_FILES if found[spec.name] is None]
    if missing:
        raise UserInputError("\n".join(missing))
    return {name: path for name, path in found.items() if path is not None}


def _format_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if dim is None else str(dim) for dim in shape) + ")"


class MatFile:
    """Variables of one MATLAB v5/v7 file, fetched with shape checks."""

    def __init__(self, path: Path, keys: tuple[str, ...]) -> None:
        self.path = path
        try:
            self.variables = sio.loadmat(path, variable_names=list(keys))
        except NotImplementedError as error:
            raise UserInputError(
                f"{path}: cannot read it ({error}); re-save it as a MATLAB v7 file (save -v7)"
            ) from None
        except (ValueError, TypeError, OSError, sio.matlab.MatReadError) as error:
            raise UserInputError(f"{path}: not a readable MATLAB .mat file ({error})") from None

    def get(self, key: str, shape: tuple[int | None, ...], cell: bool = False) -> np.ndarray:
        """Variable ``key`` of the given shape (None: any size); a cell array if ``cell``."""
        expected = f"a {_format_shape(shape)} {'cell array' if cell else 'numeric array'}"
        if key not in self.variables:
            raise UserInputError(f"{self.path}: no variable '{key}' (expected {expected})")
        value = np.asarray(self.variables[key])
        fits = value.ndim == len(shape) and all(
            want is None or want == have for want, have in zip(shape, value.shape, strict=True)
        )
        kind_ok = value.dtype == object if cell else np.issubdtype(value.dtype, np.number)
        if not (fits and kind_ok):
            raise UserInputError(f"{self.path}: '{key}' is a {value.shape} {value.dtype} array, expected {expected}")
        if not cell and not np.isfinite(value).all():
            raise UserInputError(f"{self.path}: '{key}' holds NaN or infinite values")
        return value


def check_indices(path: Path, key: str, values: np.ndarray, upper: int) -> None:
    """Require whole numbers in 1..upper (MATLAB indices into something of length ``upper``)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size and (np.any(flat != np.round(flat)) or flat.min() < 1 or flat.max() > upper):
        raise UserInputError(
            f"{path}: '{key}' must hold 1-based indices in 1..{upper}, found values in {flat.min():g}..{flat.max():g}"
        )


def read_basel_model(path: Path) -> BaselModel:
    """``01_MorphableModel.mat``: shape and texture PCA of the untrimmed BFM."""
    mat = MatFile(path, ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV"))
    shape_mu = mat.get("shapeMU", (None, 1))
    if shape_mu.shape[0] % 3:
        raise UserInputError(f"{path}: 'shapeMU' has {shape_mu.shape[0]} rows, expected (3N, 1) for N vertices")
    rows = shape_mu.shape[0]
    shape_pc = mat.get("shapePC", (rows, None))
    tex_pc = mat.get("texPC", (rows, None))
    return BaselModel(
        shape_mu=shape_mu,
        shape_pc=shape_pc,
        shape_ev=mat.get("shapeEV", (shape_pc.shape[1], 1)),
        tex_mu=mat.get("texMU", (rows, 1)),
        tex_pc=tex_pc,
        tex_ev=mat.get("texEV", (tex_pc.shape[1], 1)),
    )


def read_model_info(path: Path, n_bfm: int) -> ModelInfo:
    """3DDFA's ``model_info.mat`` for a BFM of ``n_bfm`` vertices; checks every index range."""
    mat = MatFile(path, ("trimIndex", "keypoints", "tri", "symlist", "symlist_tri", "segbin", "segbin_tri"))
    trim_index = mat.get("trimIndex", (None, 1))
    check_indices(path, "trimIndex", trim_index, n_bfm)
    if np.unique(trim_index).size != trim_index.size:
        raise UserInputError(f"{path}: 'trimIndex' lists a BFM vertex more than once")
    n_kept = trim_index.shape[0]
    keypoints = mat.get("keypoints", (1, LANDMARK_COUNT))
    check_indices(path, "keypoints", keypoints, n_kept)
    tri = mat.get("tri", (3, None))
    check_indices(path, "tri", tri, n_kept)
    return ModelInfo(
        trim_index=trim_index,
        keypoints=keypoints,
        tri=tri,
        symlist=mat.get("symlist", (2, None)),
        symlist_tri=mat.get("symlist_tri", (2, None)),
        segbin=mat.get("segbin", (n_bfm, 4)),
        segbin_tri=mat.get("segbin_tri", (tri.shape[1], 4)),
    )


def read_expression(path: Path, n_kept: int) -> ExpressionBasis:
    """3DDFA's ``Model_Expression.mat`` for the trimmed mesh of ``n_kept`` vertices."""
    mat = MatFile(path, ("mu_exp", "w_exp", "sigma_exp"))
    w_exp = mat.get("w_exp", (3 * n_kept, None))
    return ExpressionBasis(
        mu_exp=mat.get("mu_exp", (3 * n_kept, 1)),
        w_exp=w_exp,
        sigma_exp=mat.get("sigma_exp", (w_exp.shape[1], 1)),
    )


def read_tri_mouth(path: Path, n_kept: int) -> np.ndarray:
    """3DDFA's ``Model_tri_mouth.mat``: (3, k) 1-based mouth triangles."""
    tri_mouth = MatFile(path, ("tri_mouth",)).get("tri_mouth", (3, None))
    check_indices(path, "tri_mouth", tri_mouth, n_kept)
    return tri_mouth


def read_row_vectors(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Variables that pass through unchanged, each a (1, k) row vector."""
    mat = MatFile(path, keys)
    return {key: mat.get(key, (1, None)) for key in keys}


def read_parallel(path: Path) -> dict[str, np.ndarray]:
    """3DDFA's ``Modelplus_parallel.mat``: two (k, 1) cell arrays of vertex-number rows."""
    keys = ("parallel", "parallel_face_contour")
    mat = MatFile(path, keys)
    return {key: mat.get(key, (None, 1), cell=True) for key in keys}


def read_stn_uv(path: Path, n_bfm: int, n_kept: int) -> np.ndarray:
    """3DMMasSTN's ``BFM_UV.mat``: ``UV`` (N, 2) per BFM vertex, or (n, 2) already trimmed."""
    mat = MatFile(path, ("UV",))
    uv = mat.get("UV", (None, 2))
    if uv.shape[0] not in (n_bfm, n_kept):
        raise UserInputError(
            f"{path}: 'UV' is a {uv.shape} array, expected ({n_bfm}, 2) (one row per BFM vertex) "
            f"or ({n_kept}, 2) (already trimmed)"
        )
    return uv


def read_exp_pca_dim(path: Path, n_kept: int) -> int:
    """Components of Guo et al.'s ``Exp_Pca.bin``; checks its size against ``n_kept`` vertices.

    Layout: little-endian int32 ``exp_dim``, float32 ``expMU[3n]``, float32 ``expPC[exp_dim][3n]``.
    """
    size = path.stat().st_size
    header = np.fromfile(path, dtype="<i4", count=1)
    exp_dim = int(header[0]) if header.size else 0
    values = 3 * n_kept * (1 + exp_dim)
    if exp_dim < 1 or size != EXP_PCA_HEADER_BYTES + FLOAT32_BYTES * values:
        raise UserInputError(
            f"{path}: {size} bytes with exp_dim = {exp_dim}, expected int32 exp_dim then float32 "
            f"expMU[3*{n_kept}] and expPC[exp_dim][3*{n_kept}] "
            f"({EXP_PCA_HEADER_BYTES} + {FLOAT32_BYTES} * 3*{n_kept} * (1 + exp_dim) bytes)"
        )
    body = np.fromfile(path, dtype="<f4", offset=EXP_PCA_HEADER_BYTES)
    if not np.isfinite(body).all():
        raise UserInputError(f"{path}: holds NaN or infinite values")
    return exp_dim


def check_std_exp(path: Path, exp_dim: int) -> None:
    """``std_exp.txt`` must hold ``exp_dim`` numbers, one per Exp_Pca.bin component."""
    try:
        values = np.loadtxt(path, ndmin=1)
    except ValueError as error:
        raise UserInputError(f"{path}: not a list of numbers ({error})") from None
    if values.size != exp_dim:
        raise UserInputError(f"{path}: {values.size} values, expected {exp_dim} (one per Exp_Pca.bin component)")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise UserInputError(f"{path}: standard deviations must be finite and positive")


def read_vertex_code_path(path: Path | None, n_kept: int) -> Path | None:
    """Path of the optional vertex_code.mat, or None; when present its ``vertex_code`` must be (3, n)."""
    if path is not None:
        MatFile(path, ("vertex_code",)).get("vertex_code", (3, n_kept))
    return path


def read_raw_inputs(raw_dir: Path) -> RawInputs:
    """Locate, read and cross-check every input in ``raw_dir`` (flat, or face3d's raw/3ddfa/stn layout)."""
    paths = locate_inputs(raw_dir)
    basel = read_basel_model(paths[BASEL_MODEL.name])
    n_bfm = basel.n_vertices
    info = read_model_info(paths[MODEL_INFO.name], n_bfm)
    n_kept = info.n_kept
    exp_dim = read_exp_pca_dim(paths[EXP_PCA.name], n_kept)
    check_std_exp(paths[STD_EXP.name], exp_dim)
    return RawInputs(
        basel=basel,
        info=info,
        expression=read_expression(paths[MODEL_EXPRESSION.name], n_kept),
        tri_mouth=read_tri_mouth(paths[MODEL_TRI_MOUTH.name], n_kept),
        face_contour=read_row_vectors(
            paths[MODEL_FACE_CONTOUR.name],
            ("face_contour", "face_contour_line", "face_contour_front", "face_contour_front_line"),
        ),
        nose_hole=read_row_vectors(paths[MODELPLUS_NOSE_HOLE.name], ("nose_hole", "nose_hole_right", "nose_hole_left")),
        parallel=read_parallel(paths[MODELPLUS_PARALLEL.name]),
        uv=read_stn_uv(paths[STN_UV.name], n_bfm, n_kept),
        exp_pca=paths[EXP_PCA.name],
        std_exp=paths[STD_EXP.name],
        exp_dim=exp_dim,
        vertex_code=read_vertex_code_path(find_file(raw_dir, VERTEX_CODE), n_kept),
    )
