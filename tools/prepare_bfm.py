"""Build face3d's BFM ``Out/`` folder from the downloadable files, without Matlab.

    python -m tools.prepare_bfm --raw DIR --out external/face3d/examples/Data/BFM [--npz PATH] [--force]

Reproduces face3d's ``examples/Data/BFM/generate.m`` (zqbai-jeremy fork) and the two manual copies of
the DFNRMVS README, writing under ``OUT/Out/`` exactly what the original's ``load_3DMM`` reads:

* ``BFM.mat``: struct ``model`` (BFM shape/texture trimmed to 3DDFA's vertices, 3DDFA's expression
  basis, triangles, mouth triangles, landmarks; indices 1-based),
* ``BFM_info.mat``: struct ``model_info`` (3DDFA's index lists, trimmed segments, UV coordinates),
* ``BFM_UV.mat``: ``UV`` (n, 2), the trimmed and repaired UV coordinates,
* ``Exp_Pca.bin`` and ``std_exp.txt``: copied unchanged,
* ``pncc_code.mat``: copy of ``vertex_code.mat`` when that optional file is present (generate.m step 7).

``--npz PATH`` also writes the project's own morphable model file (``models.morphable_model``).
Input files may sit directly in ``--raw`` or in generate.m's ``raw/``, ``3ddfa/`` and ``stn/`` folders.
Everything is written to a temporary folder next to the target and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio

from models.errors import DFNRMVSError, MorphableModelError
from models.face_model.morphable_model import MorphableModel
from models.io.staging import staged_file, staged_folder
from tools.bfm_raw_formats import RawInputs, UserInputError, read_raw_inputs

# Vertices of the BFM after 3DDFA's trimIndex (face3d load.py docstring: nver = 53215); the
# generate.m repairs below use vertex numbers of this mesh and are applied only to it.
BFM_TRIMMED_VERTEX_COUNT = 53215

# Default --out: where the original's load_3DMM looks for Out/ (DFNRMVS data/BFM/utils.py).
DEFAULT_BASE_DIR = Path("external/face3d/examples/Data/BFM")

# Name of the folder, below the base folder, that the original reads (generate.m's save paths).
OUT_FOLDER = "Out"


@dataclass(frozen=True)
class UvRepair:
    """UV of the 1-based trimmed ``vertex`` replaced by the mean UV of the 1-based ``neighbours``."""

    vertex: int
    neighbours: tuple[int, ...]


@dataclass(frozen=True)
class Fixups:
    """Mesh-specific edits of generate.m, in 1-based vertex numbers of the trimmed mesh.

    uv_repairs: applied in order to the trimmed UV coordinates ("modify bad vers").
    added_mouth_triangles: appended as columns to tri_mouth ("modify tri mouth").
    """

    uv_repairs: tuple[UvRepair, ...] = ()
    added_mouth_triangles: tuple[tuple[int, int, int], ...] = ()


# generate.m's edits for the 53,215-vertex BFM. It also means to drop mouth triangle 38 (ind_bad) but
# passes the vertex numbers bad_ind to setdiff over the triangle columns, so no column is dropped; the
# output here matches what generate.m writes.
GENERATE_M_FIXUPS = Fixups(
    uv_repairs=(
        UvRepair(10032, (10033, 10158)),
        UvRepair(10155, (10534, 10157, 10661)),
        UvRepair(10280, (10916, 10286)),
    ),
    added_mouth_triangles=(
        (6420, 6542, 6664),
        (6420, 6294, 6167),
        (6167, 6297, 6420),
        (6167, 6297, 6296),
        (6167, 6296, 6295),
        (6167, 6295, 6039),
        (6168, 6295, 6039),
    ),
)

NO_FIXUPS = Fixups()


def fixups_for(n_kept: int) -> Fixups:
    """generate.m's edits for the trimmed BFM; none for any other mesh (their vertex numbers are BFM's)."""
    return GENERATE_M_FIXUPS if n_kept == BFM_TRIMMED_VERTEX_COUNT else NO_FIXUPS


@dataclass(frozen=True)
class Face3dOut:
    """Contents of the three .mat files, as generate.m saves them.

    model: fields of struct ``model`` in BFM.mat, in generate.m's order. shapeMU/texMU (3n, 1),
    shapePC (3n, ks), texPC (3n, kt), shapeEV (ks, 1), texEV (kt, 1), expMU (3n, 1), expPC (3n, ke),
    expEV (ke, 1), tri (3, ntri), tri_mouth (3, k), kpt_ind (1, 68); indices 1-based; dtypes as read.
    model_info: fields of struct ``model_info`` in BFM_info.mat, in generate.m's order; ``segbin``
    (4, n) and ``segbin_tri`` (4, ntri) transposed, ``uv_coords`` (n, 2), the rest as read.
    uv: ``UV`` of BFM_UV.mat, (n, 2), equal to ``model_info['uv_coords']``.
    """

    model: dict[str, np.ndarray]
    model_info: dict[str, np.ndarray]
    uv: np.ndarray


@dataclass(frozen=True)
class PrepareSummary:
    """What :func:`prepare` wrote: the Out/ folder, the optional .npz, the mesh sizes, the edits used."""

    out_dir: Path
    npz: Path | None
    n_bfm: int
    n_kept: int
    n_triangles: int
    fixups: Fixups


def interleaved_rows(kept_vertices: np.ndarray) -> np.ndarray:
    """(3n,) rows of an interleaved (3N, k) array for 0-based kept vertices (n,): x, y, z of each in turn."""
    return (3 * kept_vertices[:, None] + np.arange(3)).ravel()


def trimmed_uv(uv: np.ndarray, kept_vertices: np.ndarray, n_bfm: int, fixups: Fixups) -> np.ndarray:
    """(n, 2) UV of the 0-based kept vertices (n,), repaired.

    ``uv`` is (N, 2) with one row per BFM vertex (3DMMasSTN's file, trimmed here as generate.m does)
    or, when it has n != N rows, already in trimmed order (e.g. a face3d Out/BFM_UV.mat).
    """
    trimmed = uv[kept_vertices] if uv.shape[0] == n_bfm else uv.copy()
    for repair in fixups.uv_repairs:
        trimmed[repair.vertex - 1] = trimmed[np.asarray(repair.neighbours) - 1].mean(axis=0)
    return trimmed


def repaired_tri_mouth(tri_mouth: np.ndarray, fixups: Fixups) -> np.ndarray:
    """(3, k + a) mouth triangles with the fixups' triangles appended, 1-based, dtype of ``tri_mouth``."""
    added = np.asarray(fixups.added_mouth_triangles, dtype=tri_mouth.dtype).reshape(-1, 3).T
    return np.concatenate([tri_mouth, added], axis=1)


def build_face3d_out(raw: RawInputs, fixups: Fixups) -> Face3dOut:
    """generate.m's arithmetic: trim the BFM (step 1), add 3DDFA's data (steps 2-6), repair UV and mouth."""
    kept = raw.info.kept_vertices
    rows = interleaved_rows(kept)
    tri_mouth = repaired_tri_mouth(raw.tri_mouth, fixups)
    uv = trimmed_uv(raw.uv, kept, raw.basel.n_vertices, fixups)
    basel, info, expression = raw.basel, raw.info, raw.expression
    model = {
        "shapeMU": basel.shape_mu[rows],
        "shapePC": basel.shape_pc[rows],
        "shapeEV": basel.shape_ev,
        "texMU": basel.tex_mu[rows],
        "texPC": basel.tex_pc[rows],
        "texEV": basel.tex_ev,
        "tri": info.tri,
        "kpt_ind": info.keypoints,
        "expMU": expression.mu_exp,
        "expPC": expression.w_exp,
        "expEV": expression.sigma_exp,
        "tri_mouth": tri_mouth,
    }
    model_info = {
        "kpt_ind": info.keypoints,
        "trimIndex": info.trim_index,
        "symlist": info.symlist,
        "symlist_tri": info.symlist_tri,
        "segbin": info.segbin[kept].T,
        "segbin_tri": info.segbin_tri.T,
        "tri_mouth": tri_mouth,
        **raw.face_contour,
        **raw.nose_hole,
        **raw.parallel,
        "uv_coords": uv,
    }
    return Face3dOut(model=model, model_info=model_info, uv=uv)


def _save_mat(path: Path, variables: dict[str, object]) -> None:
    """MATLAB v5 file (what scipy.io.loadmat reads), dicts saved as structs, uncompressed."""
    sio.savemat(path, variables, format="5", do_compression=False, oned_as="column")


def write_out_folder(out: Face3dOut, raw: RawInputs, folder: Path) -> None:
    """Write the Out/ files into the existing, empty ``folder``."""
    _save_mat(folder / "BFM.mat", {"model": out.model})
    _save_mat(folder / "BFM_info.mat", {"model_info": out.model_info})
    _save_mat(folder / "BFM_UV.mat", {"UV": out.uv})
    shutil.copyfile(raw.exp_pca, folder / "Exp_Pca.bin")
    shutil.copyfile(raw.std_exp, folder / "std_exp.txt")
    if raw.vertex_code is not None:
        shutil.copyfile(raw.vertex_code, folder / "pncc_code.mat")


def write_npz(out_dir: Path, target: Path) -> None:
    """Load the face3d ``Out`` folder ``out_dir`` with the project's loader and save its .npz model to ``target``."""
    try:
        model = MorphableModel.from_face3d_out(out_dir)
    except MorphableModelError as error:
        raise UserInputError(f"the converted files do not load as a morphable model: {error}") from None
    model.save_npz(target)


def _check_targets(out_dir: Path, npz: Path | None, force: bool) -> None:
    """Refuse to overwrite existing output unless ``force``; the .npz path must end in .npz."""
    if out_dir.exists() and not force:
        raise UserInputError(f"{out_dir} already exists; pass --force to replace it")
    if npz is not None:
        if npz.suffix != ".npz":
            raise UserInputError(f"--npz {npz}: the file name must end in .npz")
        if npz.exists() and not force:
            raise UserInputError(f"{npz} already exists; pass --force to replace it")


def prepare(
    raw_dir: Path,
    base_dir: Path,
    npz: Path | None = None,
    force: bool = False,
    fixups: Fixups | None = None,
) -> PrepareSummary:
    """Read the downloads in ``raw_dir``, write ``base_dir/Out`` (and ``npz``); nothing partial is left.

    fixups: generate.m's BFM-specific edits; None picks :func:`fixups_for` the trimmed vertex count.
    Raises UserInputError for missing or malformed inputs and for existing outputs without ``force``.
    """
    out_dir = base_dir / OUT_FOLDER
    _check_targets(out_dir, npz, force)
    if not raw_dir.is_dir():
        raise UserInputError(f"--raw {raw_dir}: no such folder (it must hold the downloaded files)")
    raw = read_raw_inputs(raw_dir)
    chosen = fixups_for(raw.info.n_kept) if fixups is None else fixups
    out = build_face3d_out(raw, chosen)

    with staged_folder(out_dir, replace=force) as staged_out:
        write_out_folder(out, raw, staged_out)
        if npz is not None:
            with staged_file(npz, replace=force) as staged_npz:
                write_npz(staged_out, staged_npz)
    return PrepareSummary(
        out_dir=out_dir,
        npz=npz,
        n_bfm=raw.basel.n_vertices,
        n_kept=raw.info.n_kept,
        n_triangles=raw.info.tri.shape[1],
        fixups=chosen,
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.prepare_bfm",
        description="Build face3d's BFM Out/ folder (BFM.mat, BFM_info.mat, BFM_UV.mat, Exp_Pca.bin, "
        "std_exp.txt) from the downloadable files, as face3d's generate.m does, without Matlab.",
    )
    parser.add_argument(
        "--raw",
        type=Path,
        required=True,
        help="folder with 01_MorphableModel.mat, the 3DDFA .mat files, BFM_UV.mat, Exp_Pca.bin, std_exp.txt "
        "(flat, or in generate.m's raw/, 3ddfa/, stn/ sub-folders)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_BASE_DIR,
        help=f"folder that receives Out/ (default: {DEFAULT_BASE_DIR})",
    )
    parser.add_argument("--npz", type=Path, help="also write the project's .npz morphable model here")
    parser.add_argument("--force", action="store_true", help="replace an existing Out/ folder and .npz file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns 0, or 2 after printing one line per user error to stderr."""
    args = _parse_args(argv)
    try:
        summary = prepare(args.raw, args.out, npz=args.npz, force=args.force)
    except DFNRMVSError as error:
        print(f"error: {error}".replace("\n", "\nerror: "), file=sys.stderr)
        return 2
    print(
        f"wrote {summary.out_dir}: {summary.n_bfm} -> {summary.n_kept} vertices (trimIndex), "
        f"{summary.n_triangles} triangles"
    )
    if summary.fixups == NO_FIXUPS:
        print(
            f"note: generate.m's UV and mouth-triangle repairs were not applied: they are defined for the "
            f"{BFM_TRIMMED_VERTEX_COUNT}-vertex BFM, this model has {summary.n_kept} vertices"
        )
    if summary.npz is not None:
        print(f"wrote {summary.npz}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
