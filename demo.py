"""``python demo.py``: photos of one person in, one face mesh per photo and overlays out.

Like the authors' ``demo.py``, edit the paths below and run ``python demo.py``, or pass flags
(``python demo.py --help``). Every image in a case folder is one view of the same person; a folder whose
subfolders hold the images is processed case by case. Results go to ``OUTPUT/<case folder name>/``
(see ``models/io/case_outputs.py`` for the files). The work itself is :mod:`models.reconstruction`'s;
this script parses the arguments, finds the cases and loops over them.

Methods: without a checkpoint, the weights-free multi-view fitting (``models/fitting/multiview_fit.py``) with
the project's default face model, or with ``--mm-dir``'s 3DMM; with ``--checkpoint`` (and ``--mm-dir``, the
3DMM it was trained with) the authors' learned network (FNRMVSNet), which needs at least two views.

Exit status: 0 when every case succeeded, 1 when a case failed (the others are still processed), 2 when
nothing could run (bad arguments, missing model, checkpoint or input, existing outputs).
"""

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from models.errors import DFNRMVSError, InputError, OutputError
from models.face_model.dense_landmarks import DenseLandmarks
from models.face_model.morphable_model import MorphableModel
from models.io.case_outputs import check_target
from models.io.landmark_detectors import BACKENDS, LandmarkDetector, create_detector
from models.io.mesh_exports import ExportOptions
from models.io.preprocess import IMAGE_SUFFIXES, LANDMARK_SUFFIXES, first_line
from models.io.staging import terminate_on_sigterm
from models.reconstruction import PRECISIONS, FittingReconstructor, LearnedReconstructor, Reconstructor, reconstruct
from models.texture.fusion import DEFAULT_TEXTURE_SIZE, MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE

# ---- Edit these, as in the original demo.py (flags override them). ---------------------------------
INPUT_DIR = "examples"  # one case (images of one person) or one subfolder per case
OUTPUT_DIR = "out_dir"  # results go to OUTPUT_DIR/<case folder name>/
CHECKPOINT: str | None = None  # e.g. "net_weights/2views_model.pth" (the learned path; needs MM_DIR)
MM_DIR: str | None = None  # e.g. "external/face3d/examples/Data/BFM" (face3d layout with Out/) or a .npz
LANDMARK_BACKEND = "auto"  # "auto" (MediaPipe, dlib where it finds no face), "mediapipe", "dlib" or "fan"
DEVICE = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
# -------------------------------------------------------------------------------------------------------

# Exit status after Ctrl-C (128 + SIGINT's number), as shells report it.
INTERRUPTED_EXIT_STATUS = 130
LEARNED_MIN_VIEWS = 2

log = logging.getLogger("demo")


class DemoError(DFNRMVSError):
    """Nothing can run (input, output or model problem); one-line message."""


@dataclass
class Case:
    """name: output folder name; folder: where its photos are; images: the photos, in view order."""

    name: str
    folder: Path
    images: list[Path]


class CaseOutcome(NamedTuple):
    """name, target folder, error message (None on success), wall time in seconds."""

    name: str
    target: Path
    error: str | None
    seconds: float


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """The images directly in ``folder`` (natural name order); other files are skipped with a warning.

    Only regular files count: a named pipe or device called ``x.jpg`` would block the read.
    """
    images = []
    for path in sorted(folder.iterdir(), key=_natural_key):
        if path.is_dir() or path.name.startswith("."):
            continue
        if not path.is_file():
            log.warning("skipping %s: not a regular file", path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        elif not (path.suffix.lower() in LANDMARK_SUFFIXES and _is_landmark_companion(path)):
            log.warning("skipping %s: not an image (%s)", path, ", ".join(IMAGE_SUFFIXES))
    return images


def _is_landmark_companion(path: Path) -> bool:
    """True for ``photo.txt`` / ``photo.jpg.npy`` beside an image ``photo.jpg`` (user-supplied landmarks)."""
    owner = path.with_suffix("")
    if owner.is_file() and owner.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return any(p.stem == owner.name and p.suffix.lower() in IMAGE_SUFFIXES for p in path.parent.iterdir())


def _case_folders(input_dir: Path) -> list[Path]:
    return [f for f in sorted(input_dir.iterdir(), key=_natural_key) if f.is_dir() and not f.name.startswith(".")]


def find_cases(input_path: Path) -> list[Case]:
    """The cases of ``--input``: one photo (one view), a folder of photos (one case), or a folder of case
    folders (one case each; folders without photos are skipped with a warning).

    Raises:
        DemoError: the input does not exist, holds nothing to reconstruct, or mixes photos and case folders.
    """
    if input_path.is_file():
        if input_path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DemoError(f"--input {input_path}: not a photo ({', '.join(IMAGE_SUFFIXES)}) nor a folder of photos")
        return [Case(input_path.stem, input_path.parent, [input_path])]
    if not input_path.is_dir():
        raise DemoError(f"--input {input_path}: no such photo or folder")
    images = list_images(input_path)
    with_photos = [folder for folder in _case_folders(input_path) if list_images(folder)]
    if images and with_photos:
        raise DemoError(
            f"--input {input_path} mixes photos ({images[0].name}, ...) and case folders ({with_photos[0].name}, ...): "
            "put each case's photos in its own folder"
        )
    if images:
        return [Case(input_path.resolve().name, input_path, images)]
    cases = []
    for folder in _case_folders(input_path):
        if folder in with_photos:
            cases.append(Case(folder.name, folder, list_images(folder)))
        else:
            log.warning("skipping %s: no images in it", folder)
    if not cases:
        raise DemoError(f"--input {input_path} holds no images (nor subfolders of images, one per case)")
    return cases


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output(output: Path, input_path: Path, targets: Sequence[tuple["Case", Path]]) -> None:
    """Refuse, before any work, an ``--output`` that cannot hold folders or that would hold an input.

    Raises:
        DemoError: ``--output`` (or a folder above it) is a file or not writable; it equals or contains
            ``--input``; or a case's output folder is, or contains, one of its photos or its input folder.
    """
    existing = next(p for p in (output, *output.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise DemoError(f"--output {output}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise DemoError(f"--output {output}: {existing} is not writable")
    if _inside(input_path, output):
        raise DemoError(
            f"--output {output} would hold its input photos ({input_path}); choose an --output outside the input"
        )
    for case, target in targets:
        if _inside(case.folder, target) or any(_inside(image, target) for image in case.images):
            raise DemoError(
                f"--output {output}: the output folder of case {case.name}, {target}, would hold its input "
                f"photos ({case.folder}); choose an --output outside the input"
            )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise DemoError(f"--device {name}: {first_line(error)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemoError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return device


def build_reconstructor(
    checkpoint: str | None,
    mm_dir: str | None,
    device: torch.device,
    dense_landmarks: str | None = None,
    precision: str = "float32",
) -> Reconstructor:
    """The method the arguments select: the learned network with a checkpoint (its convolutions in ``precision``),
    else the fitting (with the dense landmark correspondence file ``dense_landmarks`` for its model, when given)."""
    model = None if mm_dir is None else MorphableModel.load(mm_dir)
    if checkpoint is not None:
        return LearnedReconstructor(
            model, checkpoint, device, model_name=str(mm_dir), reduced_precision=PRECISIONS[precision]
        )
    dense = None
    if dense_landmarks is not None:
        vertices = model.num_vertices if model is not None else None
        dense = DenseLandmarks.from_npz(dense_landmarks, vertices)
    return FittingReconstructor(model, None if mm_dir is None else str(mm_dir), device, dense_landmarks=dense)


def process_case(
    case: Case,
    target: Path,
    reconstructor: Reconstructor,
    detector: LandmarkDetector,
    overwrite: bool,
    exports: ExportOptions | None = None,
    strict: bool = False,
) -> CaseOutcome:
    """Reconstruct one case and write its outputs (all or nothing); ``exports``: the extra outputs (all);
    ``strict``: refuse photos of several faces."""
    start = time.perf_counter()
    if len(case.images) < reconstructor.min_views:
        raise InputError(
            f"{case.folder}: the learned network needs at least {reconstructor.min_views} views, found "
            f"{len(case.images)} (run without --checkpoint to use the fitting)"
        )
    if len(case.images) == 1:
        log.warning("%s: one view only; multi-view consistency needs at least 2 (landmarks and priors only)", case.name)
    result = reconstruct(case.images, reconstructor, detector, name=case.name, strict=strict)
    result.save(target, overwrite, exports)
    return CaseOutcome(case.name, target, None, time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Reconstruct a 3D face mesh per photo from photos of one person (DFNRMVS demo).",
        epilog="Defaults come from the constants at the top of demo.py. Exit status: 0 every case done, "
        "1 some case failed (the others still ran), 2 nothing could run.",
    )
    add = parser.add_argument
    add(
        "--input",
        metavar="DIR",
        default=INPUT_DIR,
        help="photos of one person (one case), or one subfolder of photos per case; a <photo>.txt or .npy "
        "beside a photo with 68 (iBUG) or 468 (MediaPipe) 'x y' landmarks in photo pixels skips detection "
        f"(default: {INPUT_DIR})",
    )
    add(
        "--output",
        metavar="DIR",
        default=OUTPUT_DIR,
        help=f"results go to DIR/<case folder name>/ (default: {OUTPUT_DIR})",
    )
    add(
        "--checkpoint",
        metavar="FILE",
        default=CHECKPOINT,
        help="the authors' FNRMVSNet weights, e.g. net_weights/2views_model.pth: use the learned network "
        "(needs --mm-dir and at least 2 views per case); without it the weights-free fitting runs",
    )
    add(
        "--precision",
        default="float32",
        choices=tuple(PRECISIONS),
        help="the learned network's convolutions: float32 (the faithful default), or the opt-in reduced-precision "
        "mode, bfloat16 (CPUs with AVX-512 BF16/AMX, GPUs) or float16 (CUDA only); the optimisation stays float32",
    )
    add(
        "--mm-dir",
        metavar="PATH",
        default=MM_DIR,
        help="the 3DMM: a face3d base folder holding Out/ (e.g. external/face3d/examples/Data/BFM) or a .npz "
        "(default: the project's own face model, fitting only)",
    )
    add("--device", default=DEVICE, help=f"torch device: auto, cpu, cuda, cuda:N (default: {DEVICE})")
    add(
        "--landmarks",
        default=LANDMARK_BACKEND,
        choices=BACKENDS,
        help="landmark detector: auto (MediaPipe's 468 points where the fitting's model has a dense correspondence, "
        "as the default model has, with dlib's 68 where MediaPipe finds no face; dlib otherwise), mediapipe, "
        "dlib (offline, bundled models) or fan (face-alignment, the authors' choice; needs its downloaded "
        f"weights) (default: {LANDMARK_BACKEND})",
    )
    add(
        "--dense-landmarks",
        metavar="FILE",
        default=None,
        help="a .npz saying where MediaPipe's 468 points lie on --mm-dir's model (arrays dense_landmark_layout, "
        "dense_landmark_vertices, dense_landmark_barycentrics, as models/face_model/dense_landmarks.py writes "
        "them), so that the fitting uses dense landmarks with that model",
    )
    add_export_flags(parser)
    add(
        "--overwrite",
        action="store_true",
        help="write into existing case output folders (their earlier demo files are replaced, other files kept)",
    )
    add(
        "--strict",
        action="store_true",
        help="refuse photos that show several faces (by default the same person is taken in every view, by "
        "dlib's face descriptor, and the choice is noted in result.json)",
    )
    add("--verbose", action="store_true", help="debug log lines, and tracebacks of failed cases")
    return parser


def _texture_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not MIN_TEXTURE_SIZE <= size <= MAX_TEXTURE_SIZE:
        raise argparse.ArgumentTypeError(f"{size} is outside {MIN_TEXTURE_SIZE}..{MAX_TEXTURE_SIZE}")
    return size


def add_export_flags(parser: argparse.ArgumentParser) -> None:
    """The switches of the extra outputs (models/io/mesh_exports.py), all on by default."""
    on_off = argparse.BooleanOptionalAction
    add = parser.add_argument
    add(
        "--texture",
        action=on_off,
        default=True,
        help="texture.png fused from all views, textured face_textured_view*.obj and vertex-coloured "
        "face_colored_view*.ply (default: on)",
    )
    add(
        "--albedo",
        action=on_off,
        default=True,
        help="albedo.png beside it: the texture de-lit with a fitted SH shading (default: on, with --texture)",
    )
    add(
        "--texture-size",
        type=_texture_size,
        default=DEFAULT_TEXTURE_SIZE,
        metavar="N",
        help=f"texels per side of the texture (default: {DEFAULT_TEXTURE_SIZE})",
    )
    add(
        "--model-frame",
        action=on_off,
        default=True,
        help="face_model_mm_view*.obj: each view's mesh in the model's own frame, millimetres (default: on)",
    )
    add(
        "--neutral",
        action=on_off,
        default=True,
        help="face_neutral.obj: the identity with expression zero in the model's frame (mm), with its "
        "face-region crop and 7 evaluation landmarks (default: on)",
    )


def export_options(args: argparse.Namespace) -> ExportOptions:
    """The :class:`ExportOptions` the flags of :func:`add_export_flags` select."""
    return ExportOptions(args.texture, args.texture_size, args.albedo, args.model_frame, args.neutral)


class _TqdmHandler(logging.Handler):
    """Log lines printed above the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _configure_logging(verbose: bool) -> None:
    """Send log lines through tqdm (once per process); the demo's and models' own at INFO (DEBUG with
    ``--verbose``), other libraries' from WARNING."""
    root = logging.getLogger()
    if not any(isinstance(handler, _TqdmHandler) for handler in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("demo", "models"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


class DemoSetup(NamedTuple):
    """What every case uses: (case, output folder) pairs, the method, the landmark detector, the extra outputs."""

    targets: list[tuple[Case, Path]]
    reconstructor: Reconstructor
    detector: LandmarkDetector
    exports: ExportOptions = ExportOptions()
    strict: bool = False


def set_up(args: argparse.Namespace) -> DemoSetup:
    """Everything that must work before any case runs; raises the one-line errors of a failed set-up."""
    device = resolve_device(args.device)
    try:
        cases = find_cases(Path(args.input))
    except DemoError as error:
        if args.input != INPUT_DIR:
            raise
        raise DemoError(f"{error}; `python -m tools.make_examples` writes the example cases there") from None
    targets = [(case, Path(args.output) / case.name) for case in cases]
    check_output(Path(args.output), Path(args.input), targets)
    problems = []
    for case, target in targets:
        try:
            check_target(target, args.overwrite, case.images)
        except OutputError as error:
            problems.append(str(error))
    if problems:
        raise DemoError(problems[0] if len(problems) == 1 else f"{len(problems)} outputs exist: {'; '.join(problems)}")
    if args.precision == "float16" and device.type != "cuda":
        raise DemoError(f"--precision float16 needs a CUDA device (this run uses {device}); bfloat16 runs on CPUs")
    reconstructor = build_reconstructor(args.checkpoint, args.mm_dir, device, args.dense_landmarks, args.precision)
    if args.landmarks == "mediapipe" and reconstructor.dense_layout is None:
        raise DemoError(
            f"--landmarks mediapipe: the {reconstructor.method} method with this model uses 68 landmarks "
            "(the fitting with the default model, or with --dense-landmarks, uses MediaPipe's)"
        )
    detector = create_detector(args.landmarks, str(device), reconstructor.dense_layout)
    return DemoSetup(targets, reconstructor, detector, export_options(args), args.strict)


def run_case(setup: DemoSetup, case: Case, target: Path, overwrite: bool) -> CaseOutcome:
    """:func:`process_case` with its failure turned into a one-line outcome."""
    start = time.perf_counter()
    try:
        return process_case(case, target, setup.reconstructor, setup.detector, overwrite, setup.exports, setup.strict)
    except DFNRMVSError as error:
        message = str(error)
    except Exception as error:  # an unexpected failure of one case must not stop the others
        log.debug("%s failed", case.name, exc_info=True)
        message = f"{case.name}: {type(error).__name__}: {first_line(error)}"
    return CaseOutcome(case.name, target, message, time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.mm_dir is None:
        parser.error("--checkpoint needs --mm-dir: the 3DMM the checkpoint was trained with")
    if args.precision != "float32" and args.checkpoint is None:
        parser.error(f"--precision {args.precision} applies to the learned network: it needs --checkpoint")
    _configure_logging(args.verbose)
    try:
        with terminate_on_sigterm():
            return _run(args)
    except KeyboardInterrupt:
        print("interrupted: the case being written was discarded; finished cases are kept", file=sys.stderr)
        return INTERRUPTED_EXIT_STATUS


def _run(args: argparse.Namespace) -> int:
    """Set up, then every case; the exit status of :func:`main`."""
    start = time.perf_counter()
    try:
        setup = set_up(args)
    except DFNRMVSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info(
        "%d case(s); method %s on %s; landmarks %s; set-up %.1f s",
        len(setup.targets),
        setup.reconstructor.method,
        setup.reconstructor.device,
        setup.detector.name,
        time.perf_counter() - start,
    )
    outcomes = []
    for case, target in tqdm(setup.targets, desc="cases", unit="case", file=sys.stderr, disable=None):
        outcome = run_case(setup, case, target, args.overwrite)
        if outcome.error is None:
            log.info("%s: done in %.1f s -> %s", case.name, outcome.seconds, target)
        else:
            log.error("%s failed: %s", case.name, outcome.error)
        outcomes.append(outcome)
    return _summarise(outcomes, time.perf_counter() - start, Path(args.output))


def _summarise(outcomes: list[CaseOutcome], seconds: float, output: Path) -> int:
    done = [o for o in outcomes if o.error is None]
    failed = [o for o in outcomes if o.error is not None]
    print(f"{len(done)} of {len(outcomes)} case(s) reconstructed in {seconds:.1f} s")
    if done:
        print(f"results in {output}/: " + ", ".join(o.target.name for o in done) + " (vis_view*.jpg: overlays)")
    for outcome in failed:
        print(f"failed: {outcome.name}: {outcome.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
