"""tools.prepare_bfm on a tiny synthetic BFM written in the official raw formats.

The synthetic "BFM" is a 26 x 28 latitude/longitude grid on an ellipsoid with a nose bump (face towards
+z, x right, y up, micrometre-like units). Its bottom row (neck) and the outermost columns of eight
middle rows (ears) are trimmed away; trimIndex lists the kept vertices in a rotated, non-monotonic
order so that the test can tell "kept order" from "vertex numbering". 68 landmarks sit on the nearest
grid vertices of an iBUG-like layout. Indices are 1-based float64 as in 3DDFA's files, nose holes int32.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from models.face_model.morphable_model import MorphableModel
from tools.bfm_raw_formats import REQUIRED_FILES
from tools.prepare_bfm import (
    BFM_TRIMMED_VERTEX_COUNT,
    GENERATE_M_FIXUPS,
    NO_FIXUPS,
    Fixups,
    UvRepair,
    fixups_for,
    main,
    prepare,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Synthetic grid: latitude rows (row 0 = neck) x longitude columns, angles in degrees.
ROWS, COLS = 26, 28
LATITUDES = np.linspace(-65.0, 75.0, ROWS)
LONGITUDES = np.linspace(-100.0, 100.0, COLS)
EAR_ROWS = range(8, 16)
N_BFM = ROWS * COLS
N_KEPT = N_BFM - COLS - 2 * len(EAR_ROWS)

# Component counts of the real files: BFM 2009 shape/texture, 3DDFA expression, Guo et al.'s Exp_Pca.bin.
N_SHAPE, N_TEX, N_EXP_3DDFA, EXP_DIM = 199, 199, 29, 79

# iBUG 68-point layout as (longitude, latitude) in degrees; image left (-x) is the subject's right.
_JAW = [(65 * np.cos(t), -5 + 50 * np.sin(t)) for t in np.linspace(np.pi, 2 * np.pi, 17)]
_BROWS = [(-50, 26), (-40, 29), (-31, 30), (-22, 29), (-13, 27)]
_BROWS += [(-lon, lat) for lon, lat in reversed(_BROWS)]
_NOSE = [(0, 20), (0, 13), (0, 6), (0, -2), (-12, -10), (-6, -12), (0, -13), (6, -12), (12, -10)]
_RIGHT_EYE = [(-42, 16), (-34, 20), (-24, 20), (-16, 16), (-24, 12), (-34, 12)]
_LEFT_EYE = [(16, 16), (24, 20), (34, 20), (42, 16), (34, 12), (24, 12)]
_MOUTH = [(-24, -28), (-15, -24), (-7, -22), (0, -23), (7, -22), (15, -24), (24, -28)]
_MOUTH += [(15, -34), (7, -36), (0, -37), (-7, -36), (-15, -34)]
_MOUTH += [(-18, -28), (-7, -27), (0, -27), (7, -27), (18, -28), (7, -31), (0, -31), (-7, -31)]
LANDMARK_ANGLES = np.array(_JAW + _BROWS + _NOSE + _RIGHT_EYE + _LEFT_EYE + _MOUTH)

# Landmarks the project's loader uses for its face region (nose tip, eye corners): placed first.
PRIORITY_LANDMARKS = (30, 36, 39, 42, 45)

# Field order of generate.m's structs (MATLAB keeps the order of first assignment).
MODEL_FIELDS = [
    "shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tri", "kpt_ind",
    "expMU", "expPC", "expEV", "tri_mouth",
]  # fmt: skip
MODEL_INFO_FIELDS = [
    "kpt_ind", "trimIndex", "symlist", "symlist_tri", "segbin", "segbin_tri", "tri_mouth",
    "face_contour", "face_contour_line", "face_contour_front", "face_contour_front_line",
    "nose_hole", "nose_hole_right", "nose_hole_left", "parallel", "parallel_face_contour", "uv_coords",
]  # fmt: skip
OUT_FILES = {"BFM.mat", "BFM_info.mat", "BFM_UV.mat", "Exp_Pca.bin", "std_exp.txt", "pncc_code.mat"}

# generate.m's sub-folder of each raw file.
FACE3D_LAYOUT = {
    "01_MorphableModel.mat": "raw",
    "BFM_UV.mat": "stn",
    "Exp_Pca.bin": ".",
    "std_exp.txt": ".",
}


@dataclass(frozen=True)
class SyntheticRaw:
    """The synthetic downloads and the facts the tests check against.

    raw_dir: folder with all raw files. vertices: (N, 3) float32 BFM mean shape.
    kept: (n,) 0-based BFM vertex of each kept vertex, in trimIndex order.
    landmarks: (68,) 0-based BFM vertex of each landmark. variables: file name -> variables written.
    """

    raw_dir: Path
    vertices: np.ndarray
    kept: np.ndarray
    landmarks: np.ndarray
    variables: dict[str, dict[str, np.ndarray]]

    @property
    def n_bfm(self) -> int:
        return self.vertices.shape[0]

    @property
    def n_kept(self) -> int:
        return self.kept.shape[0]


def _cell(rows: list[np.ndarray]) -> np.ndarray:
    """(k, 1) object array = MATLAB cell of (1, m) float64 rows."""
    cell = np.empty((len(rows), 1), dtype=object)
    for i, row in enumerate(rows):
        cell[i, 0] = np.asarray(row, dtype=np.float64).reshape(1, -1)
    return cell


def _grid_vertices() -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 ellipsoid-with-nose vertices and (N, 2) their (longitude, latitude) in degrees."""
    lat_deg, lon_deg = np.meshgrid(LATITUDES, LONGITUDES, indexing="ij")
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    nose = 2.5e4 * np.exp(-((lon_deg / 12.0) ** 2 + ((lat_deg + 2.0) / 14.0) ** 2))
    x = 8.0e4 * np.sin(lon) * np.cos(lat)
    y = 1.05e5 * np.sin(lat)
    z = 8.0e4 * np.cos(lon) * np.cos(lat) + nose + 2.0e4
    vertices = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)
    return vertices, np.stack([lon_deg, lat_deg], axis=-1).reshape(-1, 2)


def _kept_vertices() -> np.ndarray:
    """(n,) 0-based kept BFM vertices in trimIndex order: no neck row, no ears, rotated order."""
    removed = {c for c in range(COLS)} | {r * COLS + c for r in EAR_ROWS for c in (0, COLS - 1)}
    kept = np.array([v for v in range(ROWS * COLS) if v not in removed])
    return np.roll(kept, 37)


def _grid_triangles() -> np.ndarray:
    """(t, 3) 0-based BFM triangles, clockwise seen from +z (cross(p0-p1, p0-p2) points into the head)."""
    triangles = []
    for r in range(ROWS - 1):
        for c in range(COLS - 1):
            a, b, c2, d = r * COLS + c, (r + 1) * COLS + c, (r + 1) * COLS + c + 1, r * COLS + c + 1
            triangles += [(a, b, c2), (a, c2, d)]
    return np.array(triangles)


def _landmark_vertices(angles: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(68,) distinct 0-based kept vertices nearest to the landmark angles; priority landmarks first."""
    order = list(PRIORITY_LANDMARKS) + [i for i in range(68) if i not in PRIORITY_LANDMARKS]
    landmarks = np.zeros(68, dtype=np.int64)
    free = set(kept.tolist())
    for i in order:
        candidates = np.array(sorted(free))
        nearest = candidates[np.argmin(np.sum((angles[candidates] - LANDMARK_ANGLES[i]) ** 2, axis=1))]
        landmarks[i] = nearest
        free.remove(int(nearest))
    return landmarks


def _segments(angles: np.ndarray) -> np.ndarray:
    """(N, 4) float64 one-hot segment flags (nose, eyes, mouth, rest)."""
    lon, lat = np.abs(angles[:, 0]), angles[:, 1]
    nose = (lon < 15) & (lat > -15) & (lat < 25)
    eyes = ~nose & (lon > 12) & (lon < 46) & (lat > 8) & (lat < 24)
    mouth = ~nose & (lon < 28) & (lat > -40) & (lat < -18)
    rest = ~(nose | eyes | mouth)
    return np.stack([nose, eyes, mouth, rest], axis=1).astype(np.float64)


def write_synthetic_raw(raw_dir: Path) -> SyntheticRaw:
    """Write every raw input of tools.prepare_bfm for the synthetic model into ``raw_dir``."""
    rng = np.random.default_rng(2020)
    vertices, angles = _grid_vertices()
    n_bfm = vertices.shape[0]
    kept = _kept_vertices()
    n_kept = kept.shape[0]
    position = np.full(n_bfm, -1)
    position[kept] = np.arange(n_kept)
    raw_triangles = _grid_triangles()
    triangles = raw_triangles[np.all(position[raw_triangles] >= 0, axis=1)]
    tri = (position[triangles] + 1).T.astype(np.float64)
    landmarks = _landmark_vertices(angles, kept)
    segbin = _segments(angles)
    mouth_tri = np.flatnonzero(np.all(segbin[triangles][:, :, 2] == 1, axis=1))[:6]
    mirror = (np.arange(n_bfm) // COLS) * COLS + (COLS - 1 - np.arange(n_bfm) % COLS)
    left = kept[(kept % COLS < COLS // 2) & (position[mirror[kept]] >= 0)]

    def kept_numbers(count: int) -> np.ndarray:
        """(1, count) distinct vertex numbers in 1..n-1, valid whether read 1-based or 0-based."""
        return (rng.choice(n_kept - 1, size=(1, count), replace=False) + 1).astype(np.float64)

    variables = {
        "01_MorphableModel.mat": {
            "shapeMU": vertices.reshape(-1, 1),
            "shapePC": (rng.standard_normal((3 * n_bfm, N_SHAPE)) * 1e-2).astype(np.float32),
            "shapeEV": np.geomspace(4e5, 1e4, N_SHAPE).reshape(-1, 1),
            "texMU": rng.uniform(70, 205, (3 * n_bfm, 1)),
            "texPC": (rng.standard_normal((3 * n_bfm, N_TEX)) * 1e-2).astype(np.float32),
            "texEV": np.geomspace(4e3, 4e2, N_TEX).reshape(-1, 1),
            "tl": (raw_triangles + 1).astype(np.float64),
        },
        "model_info.mat": {
            "trimIndex": (kept + 1).reshape(-1, 1).astype(np.float64),
            "keypoints": (position[landmarks] + 1).reshape(1, -1).astype(np.float64),
            "tri": tri,
            "symlist": np.stack([position[left], position[mirror[left]]]).astype(np.float64) + 1,
            "symlist_tri": np.arange(1, tri.shape[1] + 1, dtype=np.float64).reshape(2, -1),
            "segbin": segbin,
            "segbin_tri": segbin[triangles[:, 0]],
        },
        "Model_Expression.mat": {
            "mu_exp": rng.uniform(-40, 40, (3 * n_kept, 1)),
            "w_exp": (rng.standard_normal((3 * n_kept, N_EXP_3DDFA)) * 1e-2).astype(np.float32),
            "sigma_exp": np.geomspace(3e5, 2e4, N_EXP_3DDFA).reshape(-1, 1),
        },
        "Model_tri_mouth.mat": {"tri_mouth": tri[:, mouth_tri]},
        "Model_face_contour_trimed.mat": {
            "face_contour": kept_numbers(28),
            "face_contour_line": kept_numbers(60),
            "face_contour_front": kept_numbers(28),
            "face_contour_front_line": kept_numbers(60),
        },
        "Modelplus_nose_hole.mat": {
            "nose_hole": kept_numbers(6).astype(np.int32),
            "nose_hole_right": kept_numbers(3).astype(np.int32),
            "nose_hole_left": kept_numbers(3).astype(np.int32),
        },
        "Modelplus_parallel.mat": {
            "parallel": _cell([kept_numbers(8) for _ in range(17)]),
            "parallel_face_contour": _cell([kept_numbers(8) for _ in range(28)]),
        },
        "vertex_code.mat": {"vertex_code": rng.uniform(0, 1, (3, n_kept))},
        "BFM_UV.mat": {"UV": 0.05 + 0.9 * (angles + (100.0, 65.0)) / (200.0, 140.0)},
    }
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, content in variables.items():
        sio.savemat(raw_dir / name, content, format="5", oned_as="column")
    exp_pca = np.concatenate(
        [rng.uniform(-40, 40, 3 * n_kept), (rng.standard_normal((EXP_DIM, 3 * n_kept)) * 1e-2).ravel()]
    )
    with open(raw_dir / "Exp_Pca.bin", "wb") as file:
        file.write(np.array([EXP_DIM], dtype="<i4").tobytes() + exp_pca.astype("<f4").tobytes())
    np.savetxt(raw_dir / "std_exp.txt", np.geomspace(2e4, 1e2, EXP_DIM), fmt="%.6e")
    return SyntheticRaw(raw_dir, vertices, kept, landmarks, variables)


def load_struct(path: Path, name: str) -> dict[str, np.ndarray]:
    """Fields of the scalar struct ``name`` in a .mat file, in file order."""
    struct = sio.loadmat(path)[name][0, 0]
    return {field: struct[field] for field in struct.dtype.names}


def assert_mat_files_equal(got: Path, want: Path) -> None:
    """Same variables, struct fields (in order), shapes, dtypes and values; cells compared element-wise."""
    got_vars, want_vars = sio.loadmat(got), sio.loadmat(want)
    names = [key for key in want_vars if not key.startswith("__")]
    assert [key for key in got_vars if not key.startswith("__")] == names
    for name in names:
        a, b = got_vars[name], want_vars[name]
        if b.dtype.names:
            assert a.dtype.names == b.dtype.names, name
            a, b = a[0, 0], b[0, 0]
        for field in b.dtype.names or (None,):
            x, y = (a, b) if field is None else (a[field], b[field])
            assert x.shape == y.shape and x.dtype == y.dtype, (name, field)
            for u, v in zip(x.ravel(), y.ravel(), strict=True) if x.dtype == object else [(x, y)]:
                np.testing.assert_array_equal(u, v, err_msg=f"{name}.{field}")


def copy_raw(synthetic: SyntheticRaw, target: Path) -> Path:
    shutil.copytree(synthetic.raw_dir, target)
    return target


def run_cli(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRaw:
    return write_synthetic_raw(tmp_path_factory.mktemp("bfm") / "downloads")


@pytest.fixture(scope="module")
def converted(synthetic: SyntheticRaw, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base folder (the one holding Out/) written by the CLI from the synthetic downloads."""
    base = tmp_path_factory.mktemp("converted") / "BFM"
    assert run_cli("--raw", synthetic.raw_dir, "--out", base) == 0
    return base


def test_writes_exactly_the_out_files_and_no_leftovers(converted: Path) -> None:
    assert sorted(p.name for p in converted.iterdir()) == ["Out"]
    assert {p.name for p in (converted / "Out").iterdir()} == OUT_FILES


def test_bfm_mat_fields_shapes_dtypes(converted: Path, synthetic: SyntheticRaw) -> None:
    model = load_struct(converted / "Out" / "BFM.mat", "model")
    n3, ntri = 3 * synthetic.n_kept, synthetic.variables["model_info.mat"]["tri"].shape[1]
    expected = {
        "shapeMU": ((n3, 1), np.float32),
        "shapePC": ((n3, N_SHAPE), np.float32),
        "shapeEV": ((N_SHAPE, 1), np.float64),
        "texMU": ((n3, 1), np.float64),
        "texPC": ((n3, N_TEX), np.float32),
        "texEV": ((N_TEX, 1), np.float64),
        "tri": ((3, ntri), np.float64),
        "kpt_ind": ((1, 68), np.float64),
        "expMU": ((n3, 1), np.float64),
        "expPC": ((n3, N_EXP_3DDFA), np.float32),
        "expEV": ((N_EXP_3DDFA, 1), np.float64),
        "tri_mouth": ((3, 6), np.float64),
    }
    assert list(model) == MODEL_FIELDS
    assert {key: (value.shape, value.dtype) for key, value in model.items()} == {
        key: (shape, np.dtype(dtype)) for key, (shape, dtype) in expected.items()
    }
    expression = synthetic.variables["Model_Expression.mat"]
    for out_key, raw_key in (("expMU", "mu_exp"), ("expPC", "w_exp"), ("expEV", "sigma_exp")):
        np.testing.assert_array_equal(model[out_key], expression[raw_key])
    basel = synthetic.variables["01_MorphableModel.mat"]
    np.testing.assert_array_equal(model["shapeEV"], basel["shapeEV"])
    np.testing.assert_array_equal(model["texEV"], basel["texEV"])


def test_bfm_info_fields_shapes_dtypes(converted: Path, synthetic: SyntheticRaw) -> None:
    info = load_struct(converted / "Out" / "BFM_info.mat", "model_info")
    assert list(info) == MODEL_INFO_FIELDS
    raw_info = synthetic.variables["model_info.mat"]
    ntri = raw_info["tri"].shape[1]
    assert info["segbin"].shape == (4, synthetic.n_kept) and info["segbin"].dtype == np.float64
    assert info["segbin_tri"].shape == (4, ntri)
    np.testing.assert_array_equal(info["segbin_tri"], raw_info["segbin_tri"].T)
    assert info["uv_coords"].shape == (synthetic.n_kept, 2) and info["uv_coords"].dtype == np.float64
    for name in ("Model_face_contour_trimed.mat", "Modelplus_nose_hole.mat"):
        for key, value in synthetic.variables[name].items():
            assert info[key].dtype == value.dtype, key
            np.testing.assert_array_equal(info[key], value, err_msg=key)
    for key, value in synthetic.variables["Modelplus_parallel.mat"].items():
        assert info[key].dtype == object and info[key].shape == value.shape
        for got, want in zip(info[key].ravel(), value.ravel(), strict=True):
            np.testing.assert_array_equal(got, want)
    uv = sio.loadmat(converted / "Out" / "BFM_UV.mat")["UV"]
    assert uv.shape == (synthetic.n_kept, 2) and uv.dtype == np.float64
    np.testing.assert_array_equal(uv, info["uv_coords"])


def test_trimming_keeps_trim_index_vertices_in_trim_index_order(converted: Path, synthetic: SyntheticRaw) -> None:
    model = load_struct(converted / "Out" / "BFM.mat", "model")
    info = load_struct(converted / "Out" / "BFM_info.mat", "model_info")
    basel = synthetic.variables["01_MorphableModel.mat"]
    kept = synthetic.kept
    assert (synthetic.n_bfm, synthetic.n_kept) == (N_BFM, N_KEPT)
    assert not np.all(np.diff(kept) > 0), "the synthetic trimIndex must not be sorted"
    np.testing.assert_array_equal(model["shapeMU"].reshape(-1, 3), synthetic.vertices[kept])
    for key in ("shapePC", "texMU", "texPC"):
        per_vertex = basel[key].reshape(synthetic.n_bfm, 3, -1)[kept]
        np.testing.assert_array_equal(model[key], per_vertex.reshape(3 * synthetic.n_kept, -1), err_msg=key)
    np.testing.assert_array_equal(info["segbin"], synthetic.variables["model_info.mat"]["segbin"][kept].T)
    np.testing.assert_array_equal(info["uv_coords"], synthetic.variables["BFM_UV.mat"]["UV"][kept])
    np.testing.assert_array_equal(info["trimIndex"], (kept + 1).reshape(-1, 1))


def test_index_bases_are_kept(converted: Path, synthetic: SyntheticRaw) -> None:
    """tri, kpt_ind, tri_mouth stay 1-based float64 in both structs; nose holes stay int32 as stored."""
    model = load_struct(converted / "Out" / "BFM.mat", "model")
    info = load_struct(converted / "Out" / "BFM_info.mat", "model_info")
    raw_info = synthetic.variables["model_info.mat"]
    assert model["tri"].min() == 1 and model["tri"].max() == synthetic.n_kept
    np.testing.assert_array_equal(model["tri"], raw_info["tri"])
    np.testing.assert_array_equal(model["kpt_ind"], raw_info["keypoints"])
    np.testing.assert_array_equal(info["kpt_ind"], raw_info["keypoints"])
    np.testing.assert_array_equal(model["tri_mouth"], synthetic.variables["Model_tri_mouth.mat"]["tri_mouth"])
    np.testing.assert_array_equal(info["tri_mouth"], model["tri_mouth"])
    np.testing.assert_array_equal(info["symlist"], raw_info["symlist"])
    assert info["nose_hole"].dtype == np.int32


def test_landmarks_land_on_the_same_vertices_after_reindexing(converted: Path, synthetic: SyntheticRaw) -> None:
    """kpt_ind (1-based, trimmed numbering) picks the BFM vertices the landmarks were placed on."""
    model = load_struct(converted / "Out" / "BFM.mat", "model")
    info = load_struct(converted / "Out" / "BFM_info.mat", "model_info")
    kpt = model["kpt_ind"].ravel().astype(np.int64) - 1
    vertices = model["shapeMU"].reshape(-1, 3)
    np.testing.assert_array_equal(vertices[kpt], synthetic.vertices[synthetic.landmarks])
    np.testing.assert_array_equal(info["trimIndex"].ravel()[kpt].astype(np.int64) - 1, synthetic.landmarks)
    assert vertices[kpt[30], 2] == vertices[:, 2].max(), "landmark 30 is the nose tip"


def test_copied_files_are_byte_identical(converted: Path, synthetic: SyntheticRaw) -> None:
    copies = {"Exp_Pca.bin": "Exp_Pca.bin", "std_exp.txt": "std_exp.txt", "vertex_code.mat": "pncc_code.mat"}
    for source, target in copies.items():
        assert (converted / "Out" / target).read_bytes() == (synthetic.raw_dir / source).read_bytes()


def test_generate_m_fixups_are_applied(synthetic: SyntheticRaw, tmp_path: Path) -> None:
    fixups = Fixups(
        uv_repairs=(UvRepair(5, (6, 7)), UvRepair(40, (41, 42, 43))),
        added_mouth_triangles=((1, 2, 3), (4, 5, 6)),
    )
    prepare(synthetic.raw_dir, tmp_path, fixups=fixups)
    model = load_struct(tmp_path / "Out" / "BFM.mat", "model")
    info = load_struct(tmp_path / "Out" / "BFM_info.mat", "model_info")
    expected_uv = synthetic.variables["BFM_UV.mat"]["UV"][synthetic.kept]
    expected_uv[4] = expected_uv[[5, 6]].mean(axis=0)
    expected_uv[39] = expected_uv[[40, 41, 42]].mean(axis=0)
    np.testing.assert_array_equal(info["uv_coords"], expected_uv)
    np.testing.assert_array_equal(sio.loadmat(tmp_path / "Out" / "BFM_UV.mat")["UV"], expected_uv)
    raw_mouth = synthetic.variables["Model_tri_mouth.mat"]["tri_mouth"]
    expected_mouth = np.concatenate([raw_mouth, [[1, 4], [2, 5], [3, 6]]], axis=1)
    assert model["tri_mouth"].dtype == np.float64
    np.testing.assert_array_equal(model["tri_mouth"], expected_mouth)
    np.testing.assert_array_equal(info["tri_mouth"], expected_mouth)


def test_generate_m_fixups_only_for_the_trimmed_bfm(
    synthetic: SyntheticRaw, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fixups_for(BFM_TRIMMED_VERTEX_COUNT) is GENERATE_M_FIXUPS
    assert fixups_for(synthetic.n_kept) is NO_FIXUPS
    assert [(r.vertex, r.neighbours) for r in GENERATE_M_FIXUPS.uv_repairs] == [
        (10032, (10033, 10158)),
        (10155, (10534, 10157, 10661)),
        (10280, (10916, 10286)),
    ]
    assert len(GENERATE_M_FIXUPS.added_mouth_triangles) == 7
    assert GENERATE_M_FIXUPS.added_mouth_triangles[0] == (6420, 6542, 6664)
    assert GENERATE_M_FIXUPS.added_mouth_triangles[-1] == (6168, 6295, 6039)
    assert run_cli("--raw", synthetic.raw_dir, "--out", tmp_path) == 0
    assert "repairs were not applied" in capsys.readouterr().out


def test_face3d_folder_layout_and_already_trimmed_uv(synthetic: SyntheticRaw, converted: Path, tmp_path: Path) -> None:
    """Files in generate.m's raw/, 3ddfa/, stn/ folders are found; a (n, 2) UV is taken as trimmed."""
    raw = tmp_path / "BFM"
    for source in synthetic.raw_dir.iterdir():
        folder = raw / FACE3D_LAYOUT.get(source.name, "3ddfa")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / source.name)
    sio.savemat(raw / "stn" / "BFM_UV.mat", {"UV": synthetic.variables["BFM_UV.mat"]["UV"][synthetic.kept]})
    assert run_cli("--raw", raw, "--out", raw) == 0
    for name in ("BFM.mat", "BFM_info.mat", "BFM_UV.mat"):
        assert_mat_files_equal(raw / "Out" / name, converted / "Out" / name)


@pytest.mark.parametrize("spec", REQUIRED_FILES, ids=lambda spec: spec.name)
def test_missing_file_message(spec, synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    raw = copy_raw(synthetic, tmp_path / "raw")
    (raw / spec.name).unlink()
    base = tmp_path / "BFM"
    assert run_cli("--raw", raw, "--out", base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: missing {spec.name}") and spec.source in err and str(raw) in err
    assert not base.exists()


def test_every_missing_file_gets_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert run_cli("--raw", tmp_path / "empty", "--out", tmp_path / "BFM") == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[2].rstrip(",") for line in lines] == [spec.name for spec in REQUIRED_FILES]


def _rewrite(raw: Path, name: str, **changes: np.ndarray | None) -> None:
    """Rewrite a raw .mat file with variables replaced (or removed, for None)."""
    variables = {k: v for k, v in sio.loadmat(raw / name).items() if not k.startswith("__")}
    for key, value in changes.items():
        if value is None:
            del variables[key]
        else:
            variables[key] = value
    sio.savemat(raw / name, variables, format="5", oned_as="column")


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("model_info.mat", {"keypoints": None}, "no variable 'keypoints' (expected a (1, 68) numeric array)"),
        (
            "01_MorphableModel.mat",
            {"shapeEV": np.ones((5, 1))},
            "'shapeEV' is a (5, 1) float64 array, expected a (199, 1)",
        ),
        (
            "Model_Expression.mat",
            {"w_exp": np.ones((9, 29), np.float32)},
            f"expected a ({3 * N_KEPT}, *) numeric array",
        ),
        ("Modelplus_parallel.mat", {"parallel": np.ones((17, 1))}, "expected a (*, 1) cell array"),
        (
            "model_info.mat",
            {"keypoints": np.full((1, 68), 9999.0)},
            f"'keypoints' must hold 1-based indices in 1..{N_KEPT}",
        ),
        ("BFM_UV.mat", {"UV": np.ones((10, 2))}, f"expected ({N_BFM}, 2) (one row per BFM vertex) or ({N_KEPT}, 2)"),
    ],
    ids=["missing-key", "wrong-shape", "wrong-rows", "not-a-cell", "index-range", "uv-rows"],
)
def test_wrong_key_or_shape_message(name, change, expected, synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    raw = copy_raw(synthetic, tmp_path / "raw")
    _rewrite(raw, name, **change)
    base = tmp_path / "BFM"
    assert run_cli("--raw", raw, "--out", base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {raw / name}: ") and expected in err, err
    assert not base.exists()


def test_exp_pca_of_wrong_size(synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    raw = copy_raw(synthetic, tmp_path / "raw")
    with open(raw / "Exp_Pca.bin", "ab") as file:
        file.write(b"\0" * 8)
    assert run_cli("--raw", raw, "--out", tmp_path / "BFM") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {raw / 'Exp_Pca.bin'}: ") and "exp_dim = 79" in err


def test_refuses_to_overwrite_without_force(synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    base = tmp_path / "BFM"
    (base / "Out").mkdir(parents=True)
    (base / "Out" / "mine.txt").write_text("keep me")
    assert run_cli("--raw", synthetic.raw_dir, "--out", base) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert [p.name for p in (base / "Out").iterdir()] == ["mine.txt"]
    assert run_cli("--raw", synthetic.raw_dir, "--out", base, "--force") == 0
    assert {p.name for p in (base / "Out").iterdir()} == OUT_FILES
    assert sorted(p.name for p in base.iterdir()) == ["Out"]


def test_failure_leaves_no_partial_output(synthetic: SyntheticRaw, tmp_path: Path, monkeypatch) -> None:
    def broken_loader(out_dir: Path, target: Path) -> None:
        assert (out_dir / "BFM.mat").is_file()
        raise RuntimeError("loader failed")

    monkeypatch.setattr("tools.prepare_bfm.write_npz", broken_loader)
    base, npz = tmp_path / "BFM", tmp_path / "models" / "bfm.npz"
    with pytest.raises(RuntimeError, match="loader failed"):
        prepare(synthetic.raw_dir, base, npz=npz)
    # nothing is left, not even the folders the call created for its outputs
    assert not base.exists() and not npz.parent.exists()


def test_cli_exit_status_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tools.prepare_bfm", "--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: missing 01_MorphableModel.mat")


def _assert_same(a: object, b: object, where: str = "model") -> None:
    """Recursive equality of arrays, tensors, dataclasses, dicts and sequences (dtype included)."""
    import torch

    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype == object:
            for i, (x, y) in enumerate(zip(a.ravel(), b.ravel(), strict=True)):
                _assert_same(x, y, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            _assert_same(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__"):
        _assert_same(vars(a), vars(b), where)
    else:
        assert a == b, where


def test_round_trip_through_the_project_loader(synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    base, npz = tmp_path / "BFM", tmp_path / "bfm.npz"
    assert run_cli("--raw", synthetic.raw_dir, "--out", base, "--npz", npz) == 0
    from_dir = MorphableModel.from_face3d_dir(base)
    from_npz = MorphableModel.from_npz(npz)
    _assert_same(from_dir, from_npz)
    assert run_cli("--raw", synthetic.raw_dir, "--out", tmp_path / "other", "--npz", npz) == 2
    assert f"{npz} already exists; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["std_exp", "exp_pca", "mat"])
def test_non_finite_inputs_are_refused(where, synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    raw = copy_raw(synthetic, tmp_path / "raw")
    if where == "std_exp":
        values = np.loadtxt(raw / "std_exp.txt")
        values[7] = np.nan
        np.savetxt(raw / "std_exp.txt", values)
        name, expected = "std_exp.txt", "standard deviations must be finite and positive"
    elif where == "exp_pca":
        data = bytearray((raw / "Exp_Pca.bin").read_bytes())
        data[-4:] = np.array([np.inf], "<f4").tobytes()
        (raw / "Exp_Pca.bin").write_bytes(bytes(data))
        name, expected = "Exp_Pca.bin", "holds NaN or infinite values"
    else:
        shape_ev = np.ones((199, 1))
        shape_ev[0] = np.nan
        _rewrite(raw, "01_MorphableModel.mat", shapeEV=shape_ev)
        name, expected = "01_MorphableModel.mat", "'shapeEV' holds NaN or infinite values"
    base = tmp_path / "BFM"
    assert run_cli("--raw", raw, "--out", base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {raw / name}: ") and expected in err, err
    assert not base.exists()


def test_output_that_is_a_file_is_one_line(synthetic: SyntheticRaw, tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").write_text("a file")
    assert run_cli("--raw", synthetic.raw_dir, "--out", tmp_path / "taken" / "BFM") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taken/BFM/Out: cannot create its folder" in err, err
    assert (tmp_path / "taken").read_text() == "a file"
