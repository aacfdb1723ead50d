"""Writes a synthetic morphable model in the authors' face3d file layout (loader tests, the side-by-side benchmark)."""

from pathlib import Path

import numpy as np
import scipy.io

from models.face_model.procedural import make_grid_face


def make_tiny_model(exp_dim: int = 70, seed: int = 0) -> dict:
    """Arrays of a 16 x 18 grid face (288 vertices), see :func:`models.face_model.procedural.make_grid_face`."""
    return make_grid_face(16, 18, exp_dim=exp_dim, seed=seed)


def write_face3d_dir(base_dir: Path, model: dict, skip: tuple[str, ...] = ()) -> Path:
    """Write ``base_dir/Out/*`` in the authors' formats (1-based triangles and landmarks). Returns base_dir."""
    out = base_dir / "Out"
    out.mkdir(parents=True, exist_ok=True)
    n = model["vertices"].shape[0]
    bfm = {
        "shapeMU": model["vertices"].reshape(-1, 1).astype(np.float32),
        "shapePC": model["shape_basis"],
        "shapeEV": model["shape_std"].reshape(-1, 1),
        "expMU": np.zeros((3 * n, 1)),
        "expPC": np.zeros((3 * n, 29), np.float32),
        "expEV": np.ones((29, 1)),
        "tri": (model["triangles"].T + 1).astype(np.float64),
        "kpt_ind": (model["landmarks"] + 1).reshape(1, -1).astype(np.float64),
    }
    for key in skip:
        bfm.pop(key, None)
    if "BFM.mat" not in skip:
        scipy.io.savemat(out / "BFM.mat", {"model": bfm})
    info = {"segbin": model["segbin"], "nose_hole": model["nose_hole"].reshape(1, -1)}
    if "BFM_info.mat" not in skip:
        scipy.io.savemat(out / "BFM_info.mat", {"model_info": info})
    if "BFM_UV.mat" not in skip:
        scipy.io.savemat(out / "BFM_UV.mat", {"UV": model["uv"]})
    exp_basis = model["exp_basis"]
    if "Exp_Pca.bin" not in skip:
        with open(out / "Exp_Pca.bin", "wb") as handle:
            np.array([exp_basis.shape[0]], "<i4").tofile(handle)
            np.zeros(3 * n, "<f4").tofile(handle)
            exp_basis.astype("<f4").tofile(handle)
    if "std_exp.txt" not in skip:
        np.savetxt(out / "std_exp.txt", model["exp_std"])
    return base_dir
