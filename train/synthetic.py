"""Synthetic multi-view face samples rendered from a morphable model (training data and example cases).

Samples are rendered by :func:`models.synthesis.multiview_sample.render_sample` (see there for what varies).

On-disk format (one folder per sample; :func:`write_sample` / :func:`read_sample`)::

    <folder>/view{i}.png     i = 0..V-1, 256x256 RGB (8 bit)
    <folder>/sample.npz      float32 arrays:
        landmarks      (V, 68, 2)  landmark pixels of the crop (x right, y down, pixel centres at integers;
                                   models.geometry.camera.to_image of the landmark vertices)
        vertices       (V, n, 3)   ground-truth mesh per view in the model's camera space (pixels, x right,
                                   y up, origin at the image centre; models.geometry.camera.pose_vertices)
        landmarks3d    (V, 68, 3)  vertices[:, landmark_indices]
        shape_coeffs   (80,)       normalised identity coefficients
        exp_coeffs     (V, 64)     normalised expression coefficients per view
        pose           (V, 6)      normalised pose (pitch, yaw, roll rad, s_norm, tx_norm, ty_norm)
        model_vertices (n, 3)      the neutral identity mesh (no expression; detail included) in model units
        sh_coeffs      (9, 3)      the SH light (face3d's basis, outward normals, per RGB channel)
    <folder>/meta.json       format_version, config (SampleConfig fields), num_vertices, views, and from
                             generate_dataset: seed, sample_index, model

Without detail, ``vertices[v] == pose_vertices(mm.vertices(shape_coeffs, exp_coeffs[v]), pose[v])``.

Command line (one ``sample_NNNNN`` folder per sample; sample k uses ``SeedSequence(seed, spawn_key=(k,))``)::

    python -m train.synthetic --out DIR --count K --views V --seed S [--mm-dir DIR | --model FILE.npz]
"""

import argparse
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from PIL import Image

from models.errors import DFNRMVSError, SyntheticDataError
from models.face_model.default_model import DEFAULT_MODEL_PATH, load_default_model
from models.face_model.morphable_model import MorphableModel
from models.io.staging import staged_folder
from models.synthesis.multiview_sample import SampleConfig, SyntheticSample, render_sample

SAMPLE_FILE = "sample.npz"
META_FILE = "meta.json"
SAMPLE_FOLDER = "sample_{:05d}"
SAMPLE_FOLDER_PATTERN = re.compile(r"sample_\d{5}")
ARRAY_KEYS = (
    "landmarks",
    "vertices",
    "landmarks3d",
    "shape_coeffs",
    "exp_coeffs",
    "pose",
    "model_vertices",
    "sh_coeffs",
)


# ---------------------------------------------------------------------------------------------- files


def write_images(sample: SyntheticSample, folder: Path) -> None:
    """Write ``view{i}.png`` for every view into an existing folder."""
    for view, image in enumerate(sample.images):
        Image.fromarray(image).save(Path(folder) / f"view{view}.png")


def write_arrays(sample: SyntheticSample, folder: Path) -> None:
    """Write ``sample.npz`` and ``meta.json`` into an existing folder."""
    arrays = {key: np.asarray(getattr(sample, key), dtype=np.float32) for key in ARRAY_KEYS}
    np.savez_compressed(Path(folder) / SAMPLE_FILE, **arrays)
    (Path(folder) / META_FILE).write_text(json.dumps(sample.meta, indent=2) + "\n", encoding="utf-8")


def write_sample(sample: SyntheticSample, folder: str | Path) -> None:
    """Write one sample folder (images, arrays, metadata); refuses a folder that exists and is not empty."""
    with staged_folder(Path(folder)) as staging:
        write_images(sample, staging)
        write_arrays(sample, staging)


def read_sample(folder: str | Path, image_folder: str | Path | None = None) -> SyntheticSample:
    """Read a folder written by :func:`write_sample`.

    Args:
        image_folder: where the ``view{i}.png`` are when not beside the arrays (an example case's folder).

    Raises:
        SyntheticDataError: a file is missing or unreadable, or an array is absent or mis-shaped.
    """
    folder = Path(folder)
    try:
        with np.load(folder / SAMPLE_FILE) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise SyntheticDataError(f"{error.filename}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise SyntheticDataError(f"{folder}: unreadable sample ({error})") from None
    missing = [key for key in ARRAY_KEYS if key not in arrays]
    if missing:
        raise SyntheticDataError(f"{folder / SAMPLE_FILE}: missing array(s) {', '.join(missing)}")
    views = arrays["landmarks"].shape[0]
    images = []
    for view in range(views):
        path = Path(image_folder or folder) / f"view{view}.png"
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as error:
            raise SyntheticDataError(f"{path}: unreadable image ({error})") from None
    return SyntheticSample(images=np.stack(images), **{key: arrays[key] for key in ARRAY_KEYS}, meta=meta)


def _remove_old_samples(out_dir: Path) -> None:
    """Delete the sample folders a previous run wrote (sample_NNNNN holding meta.json); leave anything else."""
    for child in out_dir.iterdir():
        if child.is_dir() and SAMPLE_FOLDER_PATTERN.fullmatch(child.name) and (child / META_FILE).is_file():
            shutil.rmtree(child)


def generate_dataset(
    mm: MorphableModel,
    out_dir: str | Path,
    count: int,
    views: int,
    seed: int,
    config: SampleConfig | None = None,
    overwrite: bool = False,
    model_name: str = "",
) -> list[Path]:
    """Render ``count`` samples into ``out_dir/sample_NNNNN``.

    Sample k is drawn from ``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))``, so it
    does not depend on ``count``. ``views`` overrides ``config.views``.

    Args:
        overwrite: replace the sample folders of an earlier run; otherwise a non-empty ``out_dir`` is refused.
        model_name: recorded in each ``meta.json`` as ``model``.
    Returns:
        The sample folders, in order.
    """
    out_dir = Path(out_dir)
    if count < 1:
        raise SyntheticDataError(f"count must be at least 1, got {count}")
    config = replace(config or SampleConfig(), views=views)
    if out_dir.exists() and not out_dir.is_dir():
        raise SyntheticDataError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise SyntheticDataError(f"{out_dir}: folder is not empty (use --overwrite to replace its samples)")
        _remove_old_samples(out_dir)
    folders = []
    for index in range(count):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        sample = render_sample(mm, rng, config)
        sample.meta.update(seed=seed, sample_index=index, model=model_name)
        folder = out_dir / SAMPLE_FOLDER.format(index)
        write_sample(sample, folder)
        folders.append(folder)
    return folders


# ---------------------------------------------------------------------------------------------- models


def load_model(mm_dir: str | Path | None = None, model_file: str | Path | None = None) -> tuple[MorphableModel, str]:
    """A face3d directory, an ``.npz`` model, or the built-in default model; returns the model and its name."""
    if mm_dir is not None:
        return MorphableModel.from_face3d_dir(mm_dir), str(mm_dir)
    if model_file is not None:
        return MorphableModel.from_npz(model_file), str(model_file)
    return load_default_model(), f"default face model {DEFAULT_MODEL_PATH.name}"


def config_overrides(args: argparse.Namespace) -> dict:
    """The :class:`SampleConfig` fields set on the command line (options named after the fields)."""
    names = {f.name for f in fields(SampleConfig)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per sample)")
    parser.add_argument("--count", type=int, default=10, help="number of samples (default 10)")
    parser.add_argument("--views", type=int, default=2, help="views per sample (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--mm-dir", type=Path, help="morphable model in the face3d layout (DIR/Out/BFM.mat ...)")
    source.add_argument("--model", type=Path, help="morphable model .npz (MorphableModel.save_npz)")
    parser.add_argument("--detail-amplitude", type=float, help="std of added detail along normals, model units")
    parser.add_argument("--identity-sigma", type=float, help="std of the identity coefficients (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace the samples of an earlier run in --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        mm, name = load_model(args.mm_dir, args.model)
        config = SampleConfig(**config_overrides(args))
        folders = generate_dataset(mm, args.out, args.count, args.views, args.seed, config, args.overwrite, name)
    except DFNRMVSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} samples of {args.views} views to {args.out} (model: {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
