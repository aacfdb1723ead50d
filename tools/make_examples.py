"""``python -m tools.make_examples``: write the project's synthetic example cases with their ground truth.

Layout (one folder per case, so the demo can take the folder as its input)::

    OUT/caseK/view{i}.png                          256x256 crops, i = 0..V-1 (yaws within +-30 degrees)
    OUT/caseK/view{i}.txt                          the view's 68 landmarks, "x y" pixels: the demo reads a
                                                   ``<image>.txt`` beside a photo as user-supplied landmarks
                                                   (dlib does not reliably find these rendered faces)
    OUT/caseK/ground_truth/sample.npz, meta.json   train.synthetic's arrays and settings
    OUT/caseK/ground_truth/face_full_view{i}.obj   ground-truth mesh of view i, camera space (pixels, y up),
                                                   triangles in the order the demo writes (normals out)
    OUT/caseK/ground_truth/landmarks_view{i}.txt   68 rows "x y", pixels of the crop (y down)
    OUT/caseK/ground_truth/mesh_mm_view{i}.obj     the same mesh in the model's frame, in millimetres, for
                                                   ``eval.evaluate --gt-mesh ground_truth/mesh_mm_view{view}.obj``

The cases (:data:`CASES`) are deterministic; some carry detail the model's bases cannot express.

Usage: ``python -m tools.make_examples [--out examples] [--model FILE.npz | --mm-dir DIR] [--overwrite]``
(default model: models/face_model/default_model.py where it exists, else the synthetic grid stand-in).
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from models.errors import DFNRMVSError, OutputError
from models.face_model.morphable_model import MorphableModel
from models.geometry import camera
from models.geometry.mesh_ops import outward_triangles
from models.io.mesh_io import TriangleMesh, write_obj
from models.io.staging import staged_folder
from models.synthesis.multiview_sample import SampleConfig, SyntheticSample, face_width, render_sample
from train.synthetic import META_FILE, load_model, write_arrays, write_images

GROUND_TRUTH_FOLDER = "ground_truth"
# The default model and the BFM are in micrometres.
MODEL_UNITS_PER_MM = 1000.0
DEFAULT_OUT = Path("examples")
# Seed of the example cases; case k draws from SeedSequence(EXAMPLES_SEED, spawn_key=(k,)).
EXAMPLES_SEED = 2020
# Std of the added detail as a fraction of the face width (about 1 mm on a 150 mm wide face).
DETAIL_FRACTION = 0.0065


@dataclass(frozen=True)
class ExampleCase:
    """views: number of images; detail: whether detail beyond the model's bases is added."""

    views: int
    detail: bool


CASES = (ExampleCase(2, False), ExampleCase(3, False), ExampleCase(2, True), ExampleCase(3, True))


def write_case(sample: SyntheticSample, triangles: np.ndarray, folder: Path, replace: bool = False) -> None:
    """Write one case folder (see the module docstring), all or nothing.

    Args:
        triangles: (t, 3) the model's triangles (clockwise from the camera); written reversed, as the demo does.
        replace: replace an existing folder; otherwise one that exists and is not empty is refused.
    """
    outward = outward_triangles(triangles)
    model_space = camera.unpose_vertices(
        torch.from_numpy(sample.vertices).double(), torch.from_numpy(sample.pose).double()
    )
    model_space_mm = model_space.numpy() / MODEL_UNITS_PER_MM
    with staged_folder(folder, replace=replace) as staging:
        write_images(sample, staging)
        truth = staging / GROUND_TRUTH_FOLDER
        truth.mkdir()
        write_arrays(sample, truth)
        for view in range(sample.views):
            write_obj(truth / f"face_full_view{view}.obj", TriangleMesh(sample.vertices[view], outward))
            np.savetxt(truth / f"landmarks_view{view}.txt", sample.landmarks[view], fmt="%.4f")
            write_obj(truth / f"mesh_mm_view{view}.obj", TriangleMesh(model_space_mm[view], outward))
            np.savetxt(staging / f"view{view}.txt", sample.landmarks[view], fmt="%.4f")


def render_case(mm: MorphableModel, index: int, config: SampleConfig | None = None) -> SyntheticSample:
    """Render case ``index`` of :data:`CASES` (deterministic); ``config`` sets all but views and detail."""
    case = CASES[index]
    detail = DETAIL_FRACTION * face_width(mm) if case.detail else 0.0
    case_config = replace(config or SampleConfig(), views=case.views, detail_amplitude=detail)
    rng = np.random.default_rng(np.random.SeedSequence(EXAMPLES_SEED, spawn_key=(index,)))
    sample = render_sample(mm, rng, case_config)
    sample.meta.update(seed=EXAMPLES_SEED, case_index=index)
    return sample


def _is_example_case(folder: Path) -> bool:
    return (folder / GROUND_TRUTH_FOLDER / META_FILE).is_file()


def make_examples(
    mm: MorphableModel,
    out_dir: str | Path,
    model_name: str = "",
    config: SampleConfig | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Render and write every case of :data:`CASES` into ``out_dir/caseK``.

    Args:
        config: base settings (views and detail are set per case).
        overwrite: replace case folders an earlier run wrote; otherwise an existing non-empty one is refused
            (before anything is written).
    Returns:
        The case folders.
    """
    out_dir = Path(out_dir)
    folders = [out_dir / f"case{k}" for k in range(len(CASES))]
    for folder in folders:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            if not (overwrite and _is_example_case(folder)):
                hint = "" if overwrite else " (use --overwrite to replace example cases)"
                raise OutputError(f"{folder}: exists and is not empty{hint}")
    for index, folder in enumerate(folders):
        sample = render_case(mm, index, config)
        sample.meta["model"] = model_name
        write_case(sample, mm.triangles.cpu().numpy(), folder, replace=_is_example_case(folder))
    return folders


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.make_examples", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: examples)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="morphable model .npz (default: the project's default model)")
    source.add_argument("--mm-dir", type=Path, help="morphable model in the face3d layout (DIR/Out/BFM.mat ...)")
    parser.add_argument("--identity-sigma", type=float, help="std of the identity coefficients (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace example cases an earlier run wrote")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        mm, name = load_model(args.mm_dir, args.model)
        config = SampleConfig() if args.identity_sigma is None else SampleConfig(identity_sigma=args.identity_sigma)
        folders = make_examples(mm, args.out, name, config, args.overwrite)
    except DFNRMVSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} example cases to {args.out} (model: {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
