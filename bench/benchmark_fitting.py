"""Benchmark of the weights-free multi-view fit (models/fitting/): accuracy on generated faces and photos, speed.

    python -m bench.benchmark_fitting                                   # all three tables
    python -m bench.benchmark_fitting --tables generated --cases 12 --first-case 12
    python -m bench.benchmark_fitting --tables timing --repeats 5

Tables (not a test: the numbers depend on the machine, its load and the packages installed):

1. ``generated``: faces of the default model (models/synthesis/multiview_sample.py) with a random identity and
   per-view expressions, plus detail the bases cannot express (a smooth displacement along the normals, std
   1 % of the face width, wavelength 15 %), rendered in 3 views with yaws stepped across +-35 degrees, with
   painted eyes and a dark mouth cavity so that the detectors find them. Every single view, pair and the triple
   of each case is fitted. Errors in mm after per-view similarity (Procrustes) alignment to the ground truth,
   mean over the views of a set and over the sets; *region*: the tight face region's vertices; *468 points*:
   MediaPipe's points (barycentric on the meshes; MediaPipe's own 3D points for its mesh). Methods:
   (a) the mean shape; (b) the 68-point fit (the full schedule with photometric stages) on dlib's landmarks,
   where dlib finds every view of the set; (b*) the same on the true 68 landmarks (a reference no detector
   reaches); (c) the dense fit on MediaPipe's 468 points, where MediaPipe finds every view; (d) MediaPipe's own
   single-view mesh. *surface*: the held-out real-photo check's measure (issue 11) on these faces: every
   SURFACE_SCAN_STRIDE-th true face-region vertex (the "scan") to the method's surface, after a similarity
   alignment on the 468 points and a few rigid point-to-plane ICP steps (eval/alignment.py), median distance over
   the true outer-eye-corner distance, mean over views. ``--debias``: also (c) on MediaPipe's points minus
   MediaPipe's error on a paired render of the mean face (the same expression, pose, light and appearance),
   which removes most of the render-domain gap and keeps MediaPipe's noise and its shrinkage towards its own
   average face. ``--specular``: the faces with a white specular highlight and a colour gain per
   view (models/synthesis/multiview_sample.py), which the photometric term's model does not have: a check that
   its weight was not tuned to our own renderer.
2. ``photos``: every ``caseK`` of ../shared/examples (or --examples), cropped as the demo does; report only (no
   ground truth here). Per case: which landmarks were found, the landmark RMS error of the dense fit and of the
   68-point fit (px of the 256 crop), and a proxy of shape: the median distance between each fit's 468 points and
   MediaPipe's own 3D mesh of the same crop after similarity alignment, divided by that mesh's outer-eye-corner
   distance (circular for the dense fit, which fits MediaPipe's 2D points; the mean shape is the baseline).
3. ``timing``: seconds per 2-view fit, median of --repeats after one warm-up in the same process, with the fit's
   default of one intra-op thread: the default model's dense fit (on a generated face's MediaPipe points) and its
   68-point fit, and a BFM-size grid face (231 x 231 = 53,361 vertices, models/face_model/procedural.py) with the
   68-point fit; plus MediaPipe's import, set-up and per-crop detection times.
"""

import argparse
import functools
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from eval.alignment import rigid_icp, similarity_procrustes
from eval.metrics import point_to_surface_distances
from models.errors import DFNRMVSError
from models.face_model.default_model import load_default_model
from models.face_model.mediapipe_layout import NUM_MEDIAPIPE_POINTS, OUTER_EYE_CORNERS
from models.face_model.morphable_model import MorphableModel
from models.fitting.multiview_fit import FitConfig, FitResult, fit_multiview
from models.geometry.camera import IMAGE_SIZE, SCALE_MEAN, SCALE_STD, from_image, pose_vertices, to_image
from models.geometry.procrustes import procrustes
from models.io.landmark_detectors import MediaPipeLandmarks, create_detector
from models.synthesis.multiview_sample import SampleConfig, face_width, render_sample
from tools.default_face_model.mesh_ops import triangles_from_edges
from tools.default_face_model.photos import mediapipe_edges

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TABLES = ("generated", "photos", "timing")

# Micrometres (model units of the BFM and the default model) per millimetre.
MODEL_UNITS_PER_MM = 1000.0
# The generated faces: detail std and wavelength (fractions of the face width: 1.5 mm, ~23 mm on a 150 mm face),
# views and yaw range. A shorter wavelength makes faces look lumpy and defeats both detectors.
DETAIL_FRACTION = 0.01
DETAIL_WAVELENGTH = 0.15
GENERATED_VIEWS = 3
GENERATED_YAW_DEG = 35.0
# The --specular variant: a white highlight of this strength range and a colour gain per view of this relative std,
# which the photometric term's model (Lambertian, the same light in every view) does not have.
SPECULAR_RANGE = (0.15, 0.35)
VIEW_GAIN_STD = 0.08
# The surface measure: every this-many-th true face-region vertex is a scan point (~900 of the default model's),
# and this many rigid ICP steps follow the similarity alignment (more, or twice the points, change it by under 5 %).
SURFACE_SCAN_STRIDE = 8
SURFACE_ICP_STEPS = 2
# Side of the BFM-size grid face (231 x 231 = 53,361 vertices, 105,800 triangles).
TIMING_GRID_SIDE = 231
# Timing inputs for the grid face: view yaws (degrees), the normalised scale that makes it ~150 px wide,
# landmark noise (px).
TIMING_YAWS_DEG = (-20.0, 20.0)
TIMING_SCALE_NORM = -0.5
TIMING_LANDMARK_NOISE_PX = 1.0


def generated_config(mm: MorphableModel, specular: bool = False) -> SampleConfig:
    """The generated faces' settings (see the module docstring); ``specular``: the ``--specular`` variant."""
    return SampleConfig(
        views=GENERATED_VIEWS,
        yaw_max_deg=GENERATED_YAW_DEG,
        detail_amplitude=DETAIL_FRACTION * face_width(mm),
        detail_wavelength=DETAIL_WAVELENGTH,
        painted_eyes=True,
        mouth_cavity=True,
        specular_range=SPECULAR_RANGE if specular else (0.0, 0.0),
        view_gain_std=VIEW_GAIN_STD if specular else 0.0,
    )


@dataclass
class GeneratedCase:
    """One generated face and its detections.

    images: (V, 3, 256, 256) in [0, 1]. truth: (V, n, 3) camera-space meshes; pose: (V, 6) true poses.
    mediapipe: per view (468, 3) MediaPipe points (image pixels; z relative depth) or None. dlib: per view
    (68, 2) or None. landmarks: (V, 68, 2) the true 68 landmarks. mediapipe_bias: per view (468, 2) MediaPipe's
    2D error on the paired mean-face render, or None (only with ``--debias``).
    """

    images: torch.Tensor
    truth: torch.Tensor
    pose: torch.Tensor
    mediapipe: list[np.ndarray | None]
    dlib: list[np.ndarray | None]
    landmarks: torch.Tensor
    mediapipe_bias: list[np.ndarray | None] | None = None


def generated_case(
    mm: MorphableModel, seed: int, mediapipe: MediaPipeLandmarks, dlib, debias: bool = False, specular: bool = False
) -> GeneratedCase:
    """Render case ``seed`` and run the detectors on its views."""
    config = generated_config(mm, specular)
    sample = render_sample(mm, np.random.default_rng(seed), config)
    images = torch.from_numpy(sample.images).permute(0, 3, 1, 2).float() / 255.0
    case = GeneratedCase(
        images=images,
        truth=torch.from_numpy(sample.vertices),
        pose=torch.from_numpy(sample.pose),
        mediapipe=[mediapipe.mesh(image) for image in sample.images],
        dlib=[dlib.landmarks(image) for image in sample.images],
        landmarks=torch.from_numpy(sample.landmarks),
    )
    if debias:
        mean_face = replace(config, identity_sigma=0.0, detail_amplitude=0.0)
        paired = render_sample(mm, np.random.default_rng(seed), mean_face)
        truth_points = to_image(mm.dense_landmarks.points(torch.from_numpy(paired.vertices).double())).numpy()
        case.mediapipe_bias = []
        for view, image in enumerate(paired.images):
            found = mediapipe.mesh(image)
            case.mediapipe_bias.append(None if found is None else found[:, :2] - truth_points[view, :, :2])
    return case


def aligned_error_mm(fitted: torch.Tensor, truth: torch.Tensor, pose: torch.Tensor) -> float:
    """Mean point distance after per-view similarity alignment, in mm, views averaged.

    fitted, truth: (V, m, 3) camera space (pixels); pose: (V, 6) true normalised poses (their scale turns pixels
    into model units).
    """
    aligned = procrustes(truth.double(), fitted.double()).aligned
    pixels = (aligned - truth.double()).norm(dim=-1).mean(dim=1)
    scale = pose[:, 3].double() * SCALE_STD + SCALE_MEAN
    return float((pixels / scale).mean() / MODEL_UNITS_PER_MM)


@functools.cache
def mediapipe_triangles() -> np.ndarray:
    """(f, 3) triangles of MediaPipe's own face mesh, from its tessellation's edges (needs MediaPipe)."""
    return triangles_from_edges(mediapipe_edges(), NUM_MEDIAPIPE_POINTS)


def surface_distance(
    scan: np.ndarray, scan_points: np.ndarray, vertices: np.ndarray, points: np.ndarray, faces: np.ndarray
) -> float:
    """The held-out check's measure for one view: median distance from the ``scan`` points (s, 3) to the surface
    ``vertices`` (m, 3) / ``faces`` (f, 3), after the similarity taking the surface's 468 ``points`` onto the scan's
    ``scan_points`` and :data:`SURFACE_ICP_STEPS` rigid ICP steps, over the scan's outer-eye-corner distance."""
    moved = similarity_procrustes(points, scan_points).apply(vertices)
    aligned = rigid_icp(scan, moved, faces, max_iterations=SURFACE_ICP_STEPS).points
    eye = np.linalg.norm(scan_points[OUTER_EYE_CORNERS[0]] - scan_points[OUTER_EYE_CORNERS[1]])
    return float(np.median(point_to_surface_distances(aligned, moved, faces)) / eye)


def mediapipe_camera(points: np.ndarray) -> torch.Tensor:
    """MediaPipe points (..., 468, 3) (pixels, z smaller nearer the camera) -> camera space (pixels, z out)."""
    tensor = torch.from_numpy(np.asarray(points, dtype=np.float64))
    camera = from_image(tensor[..., :2], IMAGE_SIZE, IMAGE_SIZE)
    return torch.cat([camera, -tensor[..., 2:]], dim=-1)


def evaluate_set(mm: MorphableModel, case: GeneratedCase, views: list[int], debias: bool) -> dict[str, dict]:
    """Every method's errors on one set of views of a case (methods whose detector missed a view are left out)."""
    truth, pose = case.truth[views], case.pose[views]
    region = mm.face_region_mask
    dense = mm.dense_landmarks
    truth_points = dense.points(truth.double())
    scans = truth[:, region][:, ::SURFACE_SCAN_STRIDE].double().numpy()

    def surface(vertices: np.ndarray, points: np.ndarray, faces: np.ndarray) -> float:
        """Mean over the views of :func:`surface_distance`; vertices (V, m, 3), points (V, 468, 3)."""
        targets = truth_points.numpy()
        return statistics.mean(
            surface_distance(scans[v], targets[v], vertices[v], points[v], faces) for v in range(len(views))
        )

    def errors(vertices: torch.Tensor) -> dict[str, float]:
        points = dense.points(vertices.double())
        return {
            "region": aligned_error_mm(vertices[:, region], truth[:, region], pose),
            "points": aligned_error_mm(points, truth_points, pose),
            "surface": surface(vertices.double().numpy(), points.numpy(), mm.triangles.numpy()),
        }

    def mediapipe_errors(points: np.ndarray) -> dict[str, float]:
        camera = mediapipe_camera(points)
        mesh = camera.numpy()
        surface_error = surface(mesh, mesh, mediapipe_triangles())
        return {"points": aligned_error_mm(camera, truth_points, pose), "surface": surface_error}

    images = case.images[views]
    zeros = torch.zeros(len(views), mm.shape_std.shape[0])
    results = {"a": errors(pose_vertices(mm.vertices(zeros), pose))}
    if all(case.dlib[v] is not None for v in views):
        landmarks = torch.from_numpy(np.stack([case.dlib[v] for v in views])).float()
        results["b"] = errors(fit_multiview(mm, images, landmarks).vertices)
    results["b*"] = errors(fit_multiview(mm, images, case.landmarks[views]).vertices)
    if all(case.mediapipe[v] is not None for v in views):
        points = np.stack([case.mediapipe[v] for v in views])
        fit = fit_multiview(mm, images, torch.from_numpy(points[..., :2]).float())
        results["c"] = {**errors(fit.vertices), "seconds": fit.seconds}
        if len(views) == 1:
            results["d"] = mediapipe_errors(points)
        if debias and all(case.mediapipe_bias[v] is not None for v in views):
            bias = np.stack([case.mediapipe_bias[v] for v in views])
            corrected = torch.from_numpy(points[..., :2] - bias).float()
            results["c debiased"] = errors(fit_multiview(mm, images, corrected).vertices)
            if len(views) == 1:
                shifted = points.copy()
                shifted[..., :2] -= bias
                results["d debiased"] = mediapipe_errors(shifted)
    return results


METHOD_NAMES = {
    "a": "(a) mean shape",
    "b": "(b) 68-point fit, dlib",
    "b*": "(b*) 68-point fit, true 68 landmarks",
    "c": "(c) dense fit, MediaPipe",
    "d": "(d) MediaPipe's own mesh",
    "c debiased": "(c) dense fit, debiased MediaPipe",
    "d debiased": "(d) MediaPipe's own mesh, debiased",
}


def generated_table(first: int, count: int, debias: bool, specular: bool = False) -> None:
    variant = ", with specular highlights and per-view colour gains" if specular else ""
    cases = f"cases {first}-{first + count - 1}{variant}"
    print(f"## 1. Generated faces ({cases}; errors in mm after similarity alignment)")
    mm = load_default_model()
    try:
        mediapipe, dlib = MediaPipeLandmarks(), create_detector("dlib")
    except DFNRMVSError as error:
        print(f"skipped: {error}")
        return
    rows: list[tuple[int, int, dict]] = []
    found = {"mediapipe": 0, "dlib": 0, "views": 0}
    for seed in range(first, first + count):
        case = generated_case(mm, seed, mediapipe, dlib, debias, specular)
        found["views"] += len(case.mediapipe)
        found["mediapipe"] += sum(p is not None for p in case.mediapipe)
        found["dlib"] += sum(p is not None for p in case.dlib)
        for size in range(1, GENERATED_VIEWS + 1):
            for views in itertools.combinations(range(GENERATED_VIEWS), size):
                rows.append((seed, size, evaluate_set(mm, case, list(views), debias)))
        print(f"case {seed} done", file=sys.stderr, flush=True)
    print(f"views found: MediaPipe {found['mediapipe']}/{found['views']}, dlib {found['dlib']}/{found['views']}")
    print()
    print("| method | views | sets | region mm | 468 points mm | surface (held-out measure) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, name in METHOD_NAMES.items():
        for size in range(1, GENERATED_VIEWS + 1):
            values = [r[method] for _, s, r in rows if s == size and method in r]
            if values:
                region = _mean(v.get("region") for v in values)
                points = _mean(v.get("points") for v in values)
                surface = _mean((v.get("surface") for v in values), digits=4)
                print(f"| {name} | {size} | {len(values)} | {region} | {points} | {surface} |")
    print()
    print("Same sets only (where dlib and MediaPipe found every view):")
    print("| views | sets | (a) | (b) dlib | (c) dense | (c) vs (b) | (c) debiased | debiased vs (b) | (b*) true 68 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in range(1, GENERATED_VIEWS + 1):
        both = [r for _, s, r in rows if s == size and "b" in r and "c" in r and (not debias or "c debiased" in r)]
        if both:
            a, b, c, exact = (statistics.mean(r[m]["region"] for r in both) for m in ("a", "b", "c", "b*"))
            debiased = "- | -"
            if debias:
                d = statistics.mean(r["c debiased"]["region"] for r in both)
                debiased = f"{d:.2f} | {100 * (d / b - 1):+.0f} %"
            print(
                f"| {size} | {len(both)} | {a:.2f} | {b:.2f} | {c:.2f} | {100 * (c / b - 1):+.0f} % | {debiased} "
                f"| {exact:.2f} |"
            )
    dense_seconds = [r["c"]["seconds"] for _, s, r in rows if s == 2 and "c" in r]
    if dense_seconds:
        print(f"\ndense 2-view fit: median {statistics.median(dense_seconds):.2f} s (load average {_load()})")


def _mean(values, digits: int = 2) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.mean(present):.{digits}f}" if present else "-"


# ---------------------------------------------------------------------------------------------- photos
def photos_table(examples: Path) -> None:
    print("## 2. Real photo pairs (the demo's crops; report only)")
    from models.io.preprocess import InputError, network_inputs, prepare_view

    cases = sorted(p for p in examples.glob("case*") if p.is_dir()) if examples.is_dir() else []
    if not cases:
        print(f"skipped: no cases in {examples}")
        return
    mm = load_default_model()
    try:
        dense_detector = create_detector("auto", dense_layout=mm.dense_landmarks.layout)
        dlib = create_detector("dlib")
        mediapipe = MediaPipeLandmarks()
    except DFNRMVSError as error:
        print(f"skipped: {error}")
        return
    print(
        "| case | landmarks | dense fit RMS px | 68-point fit RMS px | shape proxy: mean / 68-point / dense "
        "| fit s dense / 68 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for case in cases:
        photos = sorted(p for p in case.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        try:
            views = [prepare_view(photo, dense_detector) for photo in photos]
        except InputError as error:
            print(f"| {case.name} | skipped: {error} | | | | |")
            continue
        inputs = network_inputs(views)
        sources = ", ".join(view.landmark_source for view in views)
        dense = fit_multiview(mm, inputs.raw_images, inputs.landmarks)
        ibug = [dlib.landmarks(view.crop) for view in views]
        sparse = None
        if all(points is not None for points in ibug):
            sparse = fit_multiview(mm, inputs.raw_images, torch.from_numpy(np.stack(ibug)).float())
        meshes = [mediapipe.mesh(view.crop) for view in views]
        proxy = "-"
        if all(mesh is not None for mesh in meshes):
            zeros = torch.zeros(len(views), mm.shape_std.shape[0])
            fits = [pose_vertices(mm.vertices(zeros), dense.pose), None if sparse is None else sparse.vertices]
            fits.append(dense.vertices)
            values = [None if v is None else _photo_proxy(mm, v, np.stack(meshes)) for v in fits]
            proxy = " / ".join("-" if v is None else f"{v:.4f}" for v in values)
        sparse_rms = f"{float(sparse.stages[-1].landmark_error.mean()):.2f}" if sparse is not None else "-"
        sparse_seconds = f"{sparse.seconds:.2f}" if sparse is not None else "-"
        print(
            f"| {case.name} | {sources} | {float(dense.stages[-1].landmark_error.mean()):.2f} | {sparse_rms} | "
            f"{proxy} | {dense.seconds:.2f} / {sparse_seconds} |",
            flush=True,
        )


def _photo_proxy(mm: MorphableModel, vertices: torch.Tensor, meshes: np.ndarray) -> float:
    """Mean over views of the median distance between a fit's 468 points and MediaPipe's 3D mesh (similarity
    aligned), divided by the mesh's outer-eye-corner distance."""
    target = mediapipe_camera(meshes)
    points = mm.dense_landmarks.points(vertices.double())
    aligned = procrustes(target, points).aligned
    eye = (target[:, OUTER_EYE_CORNERS[0]] - target[:, OUTER_EYE_CORNERS[1]]).norm(dim=-1)
    return float(((aligned - target).norm(dim=-1).median(dim=1).values / eye).mean())


# ---------------------------------------------------------------------------------------------- timing
def _grid_inputs(mm: MorphableModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (2, 3, 256, 256) and noisy landmarks of the mean shape under two yaws."""
    generator = torch.Generator().manual_seed(0)
    views = len(TIMING_YAWS_DEG)
    coarse = torch.rand(views, 3, 16, 16, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    pose = torch.zeros(views, 6)
    pose[:, 1] = torch.deg2rad(torch.tensor(TIMING_YAWS_DEG))
    pose[:, 3] = TIMING_SCALE_NORM
    vertices = pose_vertices(mm.vertices(torch.zeros(views, mm.shape_std.shape[0])), pose)
    landmarks = to_image(vertices)[:, mm.landmark_indices, :2]
    noise = torch.randn(landmarks.shape, generator=generator) * TIMING_LANDMARK_NOISE_PX
    return images, landmarks + noise


def _time_fits(mm: MorphableModel, images: torch.Tensor, landmarks: torch.Tensor, repeats: int) -> str:
    results: list[FitResult] = [fit_multiview(mm, images, landmarks, FitConfig()) for _ in range(repeats + 1)]
    first, timed = results[0], results[1:]
    seconds = [r.seconds for r in timed]
    stages = ", ".join(
        f"{report.name} {statistics.median(r.stages[k].seconds for r in timed):.2f}"
        for k, report in enumerate(timed[0].stages)
    )
    return f"{statistics.median(seconds):.2f} [{min(seconds):.2f}, {max(seconds):.2f}] | {first.seconds:.2f} | {stages}"


def timing_table(repeats: int) -> None:
    print(f"## 3. Seconds per 2-view fit (median [min, max] of {repeats} after a warm-up; load average {_load()})")
    started = time.perf_counter()
    try:
        mediapipe = MediaPipeLandmarks()
    except DFNRMVSError as error:
        print(f"skipped: {error}")
        return
    set_up = time.perf_counter() - started
    from models.face_model.procedural import synthetic_morphable_model

    mm = load_default_model()
    sample = render_sample(mm, np.random.default_rng(0), replace(generated_config(mm), views=2))
    detect_seconds, points = [], []
    for image in sample.images:
        detect_start = time.perf_counter()
        points.append(mediapipe.landmarks(image))
        detect_seconds.append(time.perf_counter() - detect_start)
    images = torch.from_numpy(sample.images).permute(0, 3, 1, 2).float() / 255.0
    print(
        f"MediaPipe: import and set-up {set_up:.2f} s (once per process), detection on a 256 crop "
        f"{1000 * statistics.median(detect_seconds):.0f} ms (first call included)"
    )
    print("| model | vertices | landmarks | fit median [min, max] s | first fit in the process s | per stage s |")
    print("| --- | --- | --- | --- | --- | --- |")
    if all(p is not None for p in points):
        dense_points = torch.from_numpy(np.stack(points)).float()
        print(f"| default | {mm.num_vertices:,} | 468 dense | {_time_fits(mm, images, dense_points, repeats)} |")
    sparse_points = torch.from_numpy(sample.landmarks)
    print(f"| default | {mm.num_vertices:,} | 68 | {_time_fits(mm, images, sparse_points, repeats)} |")
    grid = synthetic_morphable_model(TIMING_GRID_SIDE, TIMING_GRID_SIDE)
    grid_inputs = _grid_inputs(grid)
    print(f"| BFM-size grid | {grid.num_vertices:,} | 68 | {_time_fits(grid, *grid_inputs, repeats)} |", flush=True)


def _load() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {', '.join(TABLES)}")
    parser.add_argument("--examples", type=Path, default=SHARED_DIR / "examples", help="folder of caseK photo pairs")
    parser.add_argument("--cases", type=int, default=12, help="generated cases (default 12)")
    parser.add_argument(
        "--first-case", type=int, default=12, help="seed of the first generated case (default 12; 0-11 tuned the fit)"
    )
    parser.add_argument("--debias", action="store_true", help="also fit MediaPipe's points less its render bias")
    parser.add_argument(
        "--specular",
        action="store_true",
        help="generated faces with specular highlights and per-view colour gains (outside the photometric model)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed fits after a warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads outside the fit (default 2)")
    args = parser.parse_args(argv)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        print(f"error: unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if "generated" in tables:
        generated_table(args.first_case, args.cases, args.debias, args.specular)
    if "photos" in tables:
        photos_table(args.examples)
    if "timing" in tables:
        timing_table(args.repeats)
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
