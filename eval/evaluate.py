"""``python -m eval.evaluate``: compare reconstructed face meshes with ground truth, report cited errors.

Predictions (--pred): one sub-folder per case, as the demo writes them; every file matching
--pattern (default face_full_view*.obj, e.g. face_valid_view0.obj for one view) is one prediction:
    PRED_DIR/<case>/face_full_view0.obj
    PRED_DIR/<case>/face_full_view0_landmarks7.txt   (scan protocol only, see below)
The demo also writes meshes in the model's frame in millimetres, which the depth-aligned metric needs:
--pattern 'face_model_mm_view*.obj' (per view, with --gt-mesh '..._view{view}.obj'), and the neutral
identity --pattern face_neutral.obj, with face_neutral_landmarks7.txt beside it for the scan protocol.

Ground truth (--gt), either a folder with one sub-folder per case (file names set by --gt-mesh and
--gt-landmarks):
    GT_DIR/<case>/gt.obj                 mesh or scan in millimetres (OBJ; a scan may lack faces);
                                         "{view}" in --gt-mesh pairs per-view ground truth with
                                         predictions by view number (e.g. gt_view{view}.obj)
    GT_DIR/<case>/gt_landmarks7.txt      7 rows "x y z" (also .npy or MeshLab .pp); scan protocol
or a text file with one line "<case> <mesh.obj> [<landmarks>]" per case, paths relative to it.
Sub-folders without the ground-truth mesh (photo-only cases, e.g. examples/astronaut) are not cases.
Every ground-truth case needs at least one prediction.

Protocols (--protocol; auto picks "vertex" when a prediction has exactly the ground truth's
triangles, "scan" otherwise):
  vertex  same topology: per-vertex error over --region (vertex indices, or a boolean .npy mask)
          after similarity alignment (metric vertex_similarity) and after a z-only shift (metric
          vertex_depth, needs predictions in millimetres), as the authors' training losses do.
  scan    any topology, the NoW benchmark protocol: similarity from 7 landmarks, crop of the scan
          to NoW's sphere (centre 0.3 of the way from nose bottom to inner-eye midpoint, radius 1.4
          x mean of outer-eye distance and nose length), rigid ICP, distance of each kept scan
          vertex to the predicted surface (metric scan_to_mesh). Predicted landmarks: --pred-landmark-indices (7 vertex
          indices valid for every prediction) or else <prediction stem>_landmarks7.txt beside it.
Landmark order: right eye outer, right eye inner, left eye inner, left eye outer corner, nose
bottom, right mouth corner, left mouth corner (subject's right/left; the NoW and FG2018 order).

Outputs in --out: per_case.csv (one row per prediction and metric), summary.md (also printed;
median/mean/std of all distances pooled, as NoW reports them), cumulative_error.png.
Bad input ends with exit status 2 and a one-line message.
"""

import argparse
import csv
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from eval import EvaluationError
from eval.alignment import ICP_MAX_ITERATIONS
from eval.input_files import read_landmarks, read_vertex_indices
from eval.metrics import cumulative_curve, same_topology_errors, scan_to_mesh_errors, summarize
from models.errors import DFNRMVSError
from models.io.mesh_io import TriangleMesh, read_obj
from models.io.staging import staged_file

PER_CASE_CSV = "per_case.csv"
SUMMARY_MARKDOWN = "summary.md"
CURVE_PNG = "cumulative_error.png"
DEFAULT_PATTERN = "face_full_view*.obj"
DEFAULT_GT_MESH = "gt.obj"
DEFAULT_GT_LANDMARKS = "gt_landmarks7.txt"
# Suffix of a prediction's landmark file: face_full_view0.obj -> face_full_view0_landmarks7.txt.
PREDICTION_LANDMARKS_SUFFIX = "_landmarks7.txt"
# Error range of the cumulative plot; NoW's published curves span 0-8 mm (now_evaluation, cumulative_errors.py).
DEFAULT_CURVE_MAX_MM = 8.0
LANDMARK_COUNT = 7
# In --gt-mesh, replaced by the view number of each prediction's file name ("..._view3.obj" -> 3), for
# multi-view cases whose ground truth differs per view (e.g. per-view expressions).
VIEW_PLACEHOLDER = "{view}"
VIEW_NUMBER = re.compile(r"view(\d+)")


class GroundTruthCase(NamedTuple):
    """name: case id shared with the prediction folder; mesh: GT mesh path; landmarks: path or None."""

    name: str
    mesh: Path
    landmarks: Path | None


class ResultRow(NamedTuple):
    """One prediction under one metric; errors: (k,) distances in mm."""

    case: str
    prediction: str
    metric: str
    errors: np.ndarray


def _holds_ground_truth(folder: Path, mesh_name: str) -> bool:
    """True when ``folder`` holds its ground-truth mesh (any view's, for a ``{view}`` name)."""
    if VIEW_PLACEHOLDER in mesh_name:
        return any(folder.glob(mesh_name.replace(VIEW_PLACEHOLDER, "*")))
    return (folder / mesh_name).exists()


def _cases_from_folder(folder: Path, mesh_name: str, landmarks_name: str) -> list[GroundTruthCase]:
    cases = [
        GroundTruthCase(sub.name, sub / mesh_name, sub / landmarks_name)
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and _holds_ground_truth(sub, mesh_name)
    ]
    if not cases:
        raise EvaluationError(f"{folder}: no case sub-folder holds a ground-truth mesh {mesh_name}")
    return cases


def _cases_from_list(list_file: Path) -> list[GroundTruthCase]:
    try:
        text = list_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise EvaluationError(f"{list_file}: cannot read the ground-truth list ({exc.strerror or exc})") from None
    cases = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3):
            raise EvaluationError(f"{list_file}:{number}: expected '<case> <mesh> [<landmarks>]'")
        landmarks = list_file.parent / fields[2] if len(fields) == 3 else None
        cases.append(GroundTruthCase(fields[0], list_file.parent / fields[1], landmarks))
    if not cases:
        raise EvaluationError(f"{list_file}: the ground-truth list has no cases")
    return cases


def read_ground_truth_cases(gt: Path, mesh_name: str, landmarks_name: str) -> list[GroundTruthCase]:
    """Ground-truth cases from a folder of case sub-folders or from a list file (see module docstring)."""
    if gt.is_dir():
        return _cases_from_folder(gt, mesh_name, landmarks_name)
    if gt.is_file():
        return _cases_from_list(gt)
    raise EvaluationError(f"{gt}: ground-truth folder or list does not exist")


def find_predictions(pred_dir: Path, case: str, pattern: str) -> list[Path]:
    """Files in ``pred_dir/case`` matching ``pattern``, sorted; an error when there are none."""
    folder = pred_dir / case
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no prediction folder for ground-truth case '{case}'")
    files = sorted(path for path in folder.glob(pattern) if path.is_file())
    if not files:
        raise EvaluationError(f"{folder}: no prediction file matches '{pattern}'")
    return files


def _prediction_landmarks(path: Path, prediction: TriangleMesh, index_file: Path | None) -> np.ndarray:
    if index_file is not None:
        indices = read_vertex_indices(index_file, len(prediction.vertices))
        if len(indices) != LANDMARK_COUNT:
            raise EvaluationError(f"{index_file}: expected {LANDMARK_COUNT} landmark indices, got {len(indices)}")
        return prediction.vertices[indices]
    sidecar = path.with_name(path.stem + PREDICTION_LANDMARKS_SUFFIX)
    if not sidecar.is_file():
        raise EvaluationError(f"{path}: missing landmarks ({sidecar.name} not found, no --pred-landmark-indices)")
    return read_landmarks(sidecar, LANDMARK_COUNT)


def _ground_truth_landmarks(case: GroundTruthCase) -> np.ndarray:
    if case.landmarks is None or not case.landmarks.is_file():
        where = case.landmarks if case.landmarks is not None else case.mesh
        raise EvaluationError(f"{where}: missing ground-truth landmarks (the scan protocol needs 7)")
    return read_landmarks(case.landmarks, LANDMARK_COUNT)


@contextmanager
def _about(path: Path) -> Iterator[None]:
    """Prefix errors of the computations (not of file reading, which names its file) with ``path``."""
    try:
        yield
    except EvaluationError as exc:
        raise EvaluationError(f"{path}: {exc}") from None


def ground_truth_mesh_path(case: GroundTruthCase, prediction: Path) -> Path:
    """The case's GT mesh; a ``{view}`` in its name takes the view number of the prediction's file name."""
    template = str(case.mesh)
    if VIEW_PLACEHOLDER not in template:
        return case.mesh
    match = VIEW_NUMBER.search(prediction.stem)
    if match is None:
        raise EvaluationError(f"{prediction}: --gt-mesh has {VIEW_PLACEHOLDER} but the file name has no view number")
    return Path(template.replace(VIEW_PLACEHOLDER, match.group(1)))


def evaluate_prediction(
    case: GroundTruthCase, ground_truth: TriangleMesh, path: Path, label: str, args: argparse.Namespace
) -> list[ResultRow]:
    """Rows of every metric of the chosen protocol for the prediction at ``path``."""
    prediction = read_obj(path)
    same_size = len(prediction.vertices) == len(ground_truth.vertices)
    protocol = args.protocol
    if protocol == "auto":
        protocol = "vertex" if same_size and np.array_equal(prediction.faces, ground_truth.faces) else "scan"
    if protocol == "vertex":
        if not same_size:
            raise EvaluationError(
                f"{path}: {len(prediction.vertices)} vertices but ground truth {case.mesh} has "
                f"{len(ground_truth.vertices)} (the vertex protocol needs the same topology)"
            )
        region = None if args.region is None else read_vertex_indices(args.region, len(ground_truth.vertices))
        with _about(path):
            errors = same_topology_errors(prediction.vertices, ground_truth.vertices, region)
        rows = [ResultRow(case.name, label, "vertex_similarity", errors.similarity)]
        if not args.similarity_only:
            rows.append(ResultRow(case.name, label, "vertex_depth", errors.depth))
        return rows
    scan_landmarks = _ground_truth_landmarks(case)
    landmarks = _prediction_landmarks(path, prediction, args.pred_landmark_indices)
    with _about(path):
        result = scan_to_mesh_errors(ground_truth.vertices, scan_landmarks, prediction, landmarks, args.icp_iterations)
    return [ResultRow(case.name, label, "scan_to_mesh", result.distances)]


def write_per_case_csv(rows: Sequence[ResultRow], path: Path) -> None:
    """One CSV line per prediction and metric: counts and median/mean/std in mm."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "prediction", "metric", "points", "median_mm", "mean_mm", "std_mm"])
        for row in rows:
            stats = summarize(row.errors)
            writer.writerow(
                [row.case, row.prediction, row.metric, stats.points]
                + [f"{value:.6f}" for value in (stats.median, stats.mean, stats.std)]
            )


def pooled_errors(rows: Sequence[ResultRow]) -> dict[str, np.ndarray]:
    """metric -> all its distances concatenated over predictions, metrics in first-seen order."""
    metrics = list(dict.fromkeys(row.metric for row in rows))
    return {metric: np.concatenate([row.errors for row in rows if row.metric == metric]) for metric in metrics}


def summary_markdown(rows: Sequence[ResultRow]) -> str:
    """Markdown table: per metric, predictions, points and pooled median/mean/std (mm)."""
    lines = [
        "| metric | predictions | points | median (mm) | mean (mm) | std (mm) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric, errors in pooled_errors(rows).items():
        stats = summarize(errors)
        predictions = sum(row.metric == metric for row in rows)
        lines.append(
            f"| {metric} | {predictions} | {stats.points} | {stats.median:.4f} | {stats.mean:.4f} | {stats.std:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_cumulative_errors(rows: Sequence[ResultRow], path: Path, max_mm: float) -> None:
    """PNG of the share of distances (%) at most each error in [0, max_mm] mm, one line per metric."""
    figure = Figure(figsize=(6.0, 4.5), dpi=100)
    axes = figure.add_subplot()
    for metric, errors in pooled_errors(rows).items():
        curve = cumulative_curve(errors, max_mm)
        axes.plot(curve.thresholds_mm, curve.percent, label=metric)
    axes.set_xlim(0.0, max_mm)
    axes.set_ylim(0.0, 100.0)
    axes.set_xlabel("Error [mm]")
    axes.set_ylabel("Share of points [%]")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    figure.savefig(path)


def run(args: argparse.Namespace) -> str:
    """Evaluate every ground-truth case, write the three outputs and return the summary table."""
    if args.curve_max_mm <= 0 or args.icp_iterations < 0:
        raise EvaluationError("--curve-max-mm must be positive and --icp-iterations not negative")
    if not args.pred.is_dir():
        raise EvaluationError(f"{args.pred}: prediction folder does not exist")
    rows: list[ResultRow] = []
    for case in read_ground_truth_cases(args.gt, args.gt_mesh, args.gt_landmarks):
        paths = find_predictions(args.pred, case.name, args.pattern)
        for path in paths:
            view_case = case._replace(mesh=ground_truth_mesh_path(case, path))
            ground_truth = read_obj(view_case.mesh, require_faces=False)
            label = path.relative_to(args.pred).as_posix()
            rows.extend(evaluate_prediction(view_case, ground_truth, path, label, args))
    if args.out.exists() and not args.out.is_dir():
        raise EvaluationError(f"{args.out}: --out exists and is not a folder")
    table = summary_markdown(rows)
    # The three outputs appear together or not at all (e.g. on a full disk).
    with (
        staged_file(args.out / PER_CASE_CSV, replace=True) as csv_path,
        staged_file(args.out / SUMMARY_MARKDOWN, replace=True) as markdown_path,
        staged_file(args.out / CURVE_PNG, replace=True) as curve_path,
    ):
        write_per_case_csv(rows, csv_path)
        markdown_path.write_text(table, encoding="utf-8")
        plot_cumulative_errors(rows, curve_path, args.curve_max_mm)
    return table


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; its description is this module's docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m eval.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pred", type=Path, required=True, help="folder of per-case prediction sub-folders")
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth folder, or list file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN, help=f"prediction file glob (default {DEFAULT_PATTERN})")
    parser.add_argument("--protocol", choices=("auto", "vertex", "scan"), default="auto", help="default auto")
    parser.add_argument(
        "--gt-mesh",
        default=DEFAULT_GT_MESH,
        help=f"GT mesh file name (default {DEFAULT_GT_MESH}); {{view}} in it takes each prediction's view number",
    )
    parser.add_argument(
        "--gt-landmarks", default=DEFAULT_GT_LANDMARKS, help=f"GT landmark file name (default {DEFAULT_GT_LANDMARKS})"
    )
    parser.add_argument(
        "--similarity-only",
        action="store_true",
        help="vertex protocol: skip vertex_depth (for predictions not in millimetres, e.g. the demo's meshes)",
    )
    parser.add_argument("--region", type=Path, help="vertex protocol: face-region vertex indices or bool .npy mask")
    parser.add_argument("--pred-landmark-indices", type=Path, help="scan protocol: 7 vertex indices of the landmarks")
    parser.add_argument(
        "--icp-iterations",
        type=int,
        default=ICP_MAX_ITERATIONS,
        help=f"ICP cap, 0 skips ICP (default {ICP_MAX_ITERATIONS})",
    )
    parser.add_argument(
        "--curve-max-mm", type=float, default=DEFAULT_CURVE_MAX_MM, help=f"plot range (default {DEFAULT_CURVE_MAX_MM})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with a one-line message on stderr for bad input."""
    args = build_parser().parse_args(argv)
    try:
        table = run(args)
    except DFNRMVSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table, end="")
    print(f"wrote {args.out / PER_CASE_CSV}, {args.out / SUMMARY_MARKDOWN}, {args.out / CURVE_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
