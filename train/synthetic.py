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

Command line (one ``sample_NNNNN`` folder per sample, written as soon as it is rendered; sample k uses
``SeedSequence(seed, spawn_key=(k,))``, its view count and yaw range ``spawn_key=(k, 1)``)::

    python -m train.synthetic --out DIR --count K [--views 2-3] [--yaw-deg 15-40] [--seed S] [--workers W]
        [--resume | --overwrite] [--mm-dir DIR | --model FILE.npz]

The defaults give a set like the paper's training data: 2 or 3 views of one identity per sample, each view
with its own expression, yaws stepped across +-15..40 degrees (drawn per sample), textured, lit, on
random backgrounds. ``--resume`` completes an interrupted run; ``--workers`` renders in parallel.
"""

import argparse
import json
import multiprocessing
import re
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from models.errors import DFNRMVSError, SyntheticDataError
from models.face_model.default_model import DEFAULT_MODEL_PATH, load_default_model
from models.face_model.morphable_model import MorphableModel
from models.io.staging import staged_folder
from models.synthesis.multiview_sample import SampleConfig, SyntheticSample, render_sample

SAMPLE_FILE = "sample.npz"
META_FILE = "meta.json"
SAMPLE_FOLDER = "sample_{:05d}"
SAMPLE_FOLDER_PATTERN = re.compile(r"sample_\d{5}")
# The network compares views: a training sample needs at least this many.
MIN_VIEWS = 2
# spawn_key entry of the per-sample generator of the data-set level choices (view count, yaw range).
CHOICES_STREAM = 1
# Defaults of the command line: a set like the paper's (2-3 views, yaws of +-15..40 degrees per sample).
DEFAULT_VIEWS = "2-3"
DEFAULT_YAW_RANGE_DEG = (15.0, 40.0)
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


@dataclass(frozen=True)
class DatasetSpec:
    """What varies between the samples of a generated data set (on top of :func:`render_sample`'s draws).

    views: (fewest, most) views per sample, drawn uniformly per sample (equal: all the same).
    yaw_range_deg: (smallest, largest) ``yaw_max_deg`` of a sample, drawn uniformly per sample (the views'
        yaws are stepped across +-yaw_max_deg); None keeps the configuration's ``yaw_max_deg``.
    """

    views: tuple[int, int] = (2, 2)
    yaw_range_deg: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        low, high = self.views
        if not MIN_VIEWS <= low <= high:
            raise SyntheticDataError(f"views must be a count or range of at least {MIN_VIEWS}, got {low}-{high}")
        if self.yaw_range_deg is not None:
            low_yaw, high_yaw = self.yaw_range_deg
            if not 0 <= low_yaw <= high_yaw < 90:
                raise SyntheticDataError(f"yaw range must lie in [0, 90) degrees, min <= max; got {low_yaw}-{high_yaw}")

    def sample_config(self, base: SampleConfig, seed: int, index: int) -> SampleConfig:
        """The render settings of sample ``index``: drawn from their own generator,
        ``SeedSequence(seed, spawn_key=(index, CHOICES_STREAM))``, so the rendering's draws are those of
        a data set without choices."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, CHOICES_STREAM)))
        views = int(rng.integers(self.views[0], self.views[1] + 1))
        yaw = base.yaw_max_deg if self.yaw_range_deg is None else float(rng.uniform(*self.yaw_range_deg))
        return replace(base, views=views, yaw_max_deg=yaw)


def render_and_write(
    mm: MorphableModel, out_dir: Path, index: int, seed: int, config: SampleConfig, model_name: str
) -> Path:
    """Render sample ``index`` (generator ``SeedSequence(seed, spawn_key=(index,))``) and write its folder."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    sample = render_sample(mm, rng, config)
    sample.meta.update(seed=seed, sample_index=index, model=model_name)
    folder = out_dir / SAMPLE_FOLDER.format(index)
    write_sample(sample, folder)
    return folder


def _existing_sample(folder: Path, seed: int, index: int) -> bool:
    """True when ``folder`` holds sample ``index`` of ``seed`` (written whole: folders are staged)."""
    if not folder.is_dir():
        return False
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SyntheticDataError(f"{folder}: not a sample of this generator ({error}); use --overwrite") from None
    if meta.get("seed") != seed or meta.get("sample_index") != index:
        raise SyntheticDataError(f"{folder}: written with another seed or index; use --overwrite to replace it")
    return True


# Worker-process state of a parallel generate_dataset (set once per worker by _start_worker).
_WORKER: dict = {}


def _start_worker(mm: MorphableModel, out_dir: Path, seed: int, model_name: str) -> None:
    torch.set_num_threads(1)
    _WORKER.update(mm=mm, out_dir=out_dir, seed=seed, model_name=model_name)


def _work(job: tuple[int, SampleConfig]) -> Path:
    index, config = job
    return render_and_write(_WORKER["mm"], _WORKER["out_dir"], index, _WORKER["seed"], config, _WORKER["model_name"])


def generate_dataset(
    mm: MorphableModel,
    out_dir: str | Path,
    count: int,
    views: int | tuple[int, int],
    seed: int,
    config: SampleConfig | None = None,
    overwrite: bool = False,
    model_name: str = "",
    *,
    yaw_range_deg: tuple[float, float] | None = None,
    resume: bool = False,
    workers: int = 0,
    progress: bool = False,
) -> list[Path]:
    """Render ``count`` samples into ``out_dir/sample_NNNNN``, each written (whole) as soon as it is rendered.

    Sample k is drawn from ``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))`` (its view
    count and yaw range, when they vary, from :meth:`DatasetSpec.sample_config`), so it depends neither on
    ``count`` nor on ``workers``.

    Args:
        views: views per sample, or a (fewest, most) range drawn per sample; overrides ``config.views``.
        overwrite: replace the sample folders of an earlier run; otherwise a non-empty ``out_dir`` is refused.
        model_name: recorded in each ``meta.json`` as ``model``.
        yaw_range_deg: (smallest, largest) per-sample ``yaw_max_deg``; None: ``config.yaw_max_deg``.
        resume: keep the samples an interrupted run with the same seed wrote and render the others.
        workers: render in this many processes (0: in this one).
        progress: show a progress bar.
    Returns:
        The sample folders, in order.
    """
    out_dir = Path(out_dir)
    if count < 1:
        raise SyntheticDataError(f"count must be at least 1, got {count}")
    if workers < 0:
        raise SyntheticDataError(f"workers must not be negative, got {workers}")
    spec = DatasetSpec(views=(views, views) if isinstance(views, int) else tuple(views), yaw_range_deg=yaw_range_deg)
    base = config or SampleConfig()
    if out_dir.exists() and not out_dir.is_dir():
        raise SyntheticDataError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not resume:
        if not overwrite:
            raise SyntheticDataError(
                f"{out_dir}: folder is not empty (--resume to complete an interrupted run, --overwrite to replace it)"
            )
        _remove_old_samples(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = [out_dir / SAMPLE_FOLDER.format(index) for index in range(count)]
    jobs = [
        (index, spec.sample_config(base, seed, index))
        for index in range(count)
        if not (resume and _existing_sample(folders[index], seed, index))
    ]
    bar = tqdm(total=count, initial=count - len(jobs), desc="samples", unit="sample", disable=not progress)
    if workers:
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        with context.Pool(workers, initializer=_start_worker, initargs=(mm, out_dir, seed, model_name)) as pool:
            for _ in pool.imap_unordered(_work, jobs):
                bar.update()
    else:
        for index, sample_config in jobs:
            render_and_write(mm, out_dir, index, seed, sample_config, model_name)
            bar.update()
    bar.close()
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
    names = {f.name for f in fields(SampleConfig)} - {"views", "yaw_max_deg"}  # these two vary per sample
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def parse_range(text: str, flag: str, kind: type = float) -> tuple:
    """``"A"`` or ``"A-B"`` -> (A, A) or (A, B) of ``kind``; SyntheticDataError naming ``flag`` otherwise."""
    parts = text.split("-")
    try:
        values = tuple(kind(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2):
        raise SyntheticDataError(f"{flag} takes a number or a range like 2-3, got {text!r}")
    return (values[0], values[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per sample)")
    parser.add_argument("--count", type=int, default=10, help="number of samples (default 10)")
    views_help = f"views per sample, or a range drawn per sample (default {DEFAULT_VIEWS})"
    parser.add_argument("--views", default=DEFAULT_VIEWS, help=views_help)
    low, high = DEFAULT_YAW_RANGE_DEG
    parser.add_argument(
        "--yaw-deg",
        default=f"{low:g}-{high:g}",
        help=f"largest |yaw| of a sample's views, or a range drawn per sample (default {low:g}-{high:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--mm-dir", type=Path, help="morphable model in the face3d layout (DIR/Out/BFM.mat ...)")
    source.add_argument("--model", type=Path, help="morphable model .npz (MorphableModel.save_npz)")
    parser.add_argument("--detail-amplitude", type=float, help="std of added detail along normals, model units")
    parser.add_argument("--identity-sigma", type=float, help="std of the identity coefficients (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="render in this many processes (default 0: this one)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    replacing = parser.add_mutually_exclusive_group()
    replacing.add_argument("--overwrite", action="store_true", help="replace the samples of an earlier run in --out")
    replacing.add_argument("--resume", action="store_true", help="complete an interrupted run (same seed) in --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        views = parse_range(args.views, "--views", int)
        yaw_range = parse_range(args.yaw_deg, "--yaw-deg")
        mm, name = load_model(args.mm_dir, args.model)
        config = SampleConfig(**config_overrides(args))
        folders = generate_dataset(
            mm,
            args.out,
            args.count,
            views,
            args.seed,
            config,
            args.overwrite,
            name,
            yaw_range_deg=yaw_range,
            resume=args.resume,
            workers=args.workers,
            progress=args.progress,
        )
    except DFNRMVSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} samples of {args.views} views to {args.out} (model: {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
