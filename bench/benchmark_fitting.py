"""Benchmark of the weights-free multi-view fit (models/fitting/): accuracy on photos and generated faces, speed.

    python -m bench.benchmark_fitting                      # all three tables
    python -m bench.benchmark_fitting --tables timing --repeats 5

Tables (not a test: the numbers depend on the machine, its load and the models available):

1. ``photos``: every ``caseK`` of ../shared/examples (or --examples), cropped as the authors' demo does
   (models/io/preprocess.py) with dlib landmarks (models/io/landmark_detectors.py); skipped with a message where dlib or
   its model files are missing. Per case: landmark RMS error (px of the 256 crop, mean of the views) after
   the full fit, and the photometric error after the landmark-only stage and after the full fit.
2. ``generated``: faces rendered by train/synthetic.py with added detail along the normals (ground truth
   outside the model), for the reference model (../shared/reference) and the default model where it
   exists. Vertex error in the face region after per-view similarity (Procrustes) alignment, in mm
   (model units / 1000, the BFM's micrometres), for (a) the mean shape with the fitted pose, (b) the
   landmark-only fit and (c) the full fit.
3. ``timing``: seconds per 2-view fit with a BFM-size grid face (231 x 231 = 53,361 vertices, made by
   models/face_model/procedural.py) and the reference model, on smooth random images with landmarks
   projected from the mean shape; median of --repeats fits after one warm-up, and the seconds per stage,
   with the fit's default of one intra-op thread and with two (``FitConfig.num_threads``).
"""

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.errors import MorphableModelError
from models.face_model.morphable_model import MorphableModel
from models.fitting.multiview_fit import FitConfig, FitResult, fit_multiview
from models.geometry.camera import IMAGE_SIZE, SCALE_MEAN, SCALE_STD, pose_vertices, to_image
from models.geometry.procrustes import procrustes

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TABLES = ("photos", "generated", "timing")

# Micrometres (BFM model units) per millimetre.
MODEL_UNITS_PER_MM = 1000.0
# Detail added to the generated faces: std of the displacement along the normals, fraction of the face width
# (0.01 of a 150 mm face = 1.5 mm).
DETAIL_FRACTION = 0.01
# Side of the BFM-size grid face (231 x 231 = 53,361 vertices, 105,800 triangles).
TIMING_GRID_SIDE = 231
# Timing inputs: view yaws (degrees), the normalised scale that makes the grid face ~150 px wide, landmark noise.
TIMING_YAWS_DEG = (-20.0, 20.0)
TIMING_SCALE_NORM = -0.5
TIMING_LANDMARK_NOISE_PX = 1.0
# Intra-op thread counts the fit is timed with (FitConfig.num_threads; 1 is its default).
TIMING_THREADS = (1, 2)


def landmark_only(config: FitConfig) -> FitConfig:
    """The schedule of ``config`` up to (excluding) its first photometric stage."""
    stages = []
    for stage in config.stages:
        if stage.photometric_weight > 0:
            break
        stages.append(stage)
    return replace(config, stages=tuple(stages))


def _model_for_photos() -> tuple[MorphableModel, str] | None:
    try:
        from models.face_model.default_model import load_default_model

        return load_default_model(), "default model"
    except (ModuleNotFoundError, MorphableModelError):
        reference = SHARED_DIR / "reference"
        if reference.is_dir():
            return MorphableModel.from_face3d_dir(reference), "reference model (../shared/reference)"
    return None


def photos_table(examples: Path) -> None:
    print("## 1. Real photo pairs (dlib landmarks on the demo's 256 crop)")
    try:
        from models.io.landmark_detectors import LandmarkError, create_detector
        from models.io.preprocess import InputError, network_inputs, prepare_view
    except ModuleNotFoundError as error:
        print(f"skipped: {error.name} is missing")
        return
    try:
        detector = create_detector("dlib")
    except LandmarkError as error:
        print(f"skipped: {error}")
        return
    model = _model_for_photos()
    cases = sorted(p for p in examples.glob("case*") if p.is_dir()) if examples.is_dir() else []
    if model is None or not cases:
        print(f"skipped: no morphable model or no cases in {examples}")
        return
    mm, name = model
    print(f"model: {name}, {mm.num_vertices:,} vertices")
    print("| case | views | landmark RMS px (full fit) | photometric err landmark-only -> full | fit s |")
    print("| --- | --- | --- | --- | --- |")
    for case in cases:
        photos = sorted(p for p in case.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        try:
            inputs = network_inputs([prepare_view(photo, detector) for photo in photos])
        except InputError as error:
            print(f"| {case.name} | {len(photos)} | skipped: {error} | | |")
            continue
        result = fit_multiview(mm, inputs.raw_images, inputs.landmarks)
        first = result.stage(landmark_only(FitConfig()).stages[-1].name)
        last = result.stages[-1]
        print(
            f"| {case.name} | {len(photos)} | {last.landmark_error.mean():.2f} | "
            f"{first.photometric_error:.4f} -> {last.photometric_error:.4f} | {result.seconds:.2f} |",
            flush=True,
        )


def _aligned_error_mm(fitted: torch.Tensor, truth: torch.Tensor, pose: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean face-region vertex distance after per-view similarity alignment, in mm (views averaged).

    fitted, truth: (V, n, 3) camera space (pixels); pose: (V, 6) ground-truth normalised pose (its scale
    converts pixels to model units).
    """
    aligned = procrustes(truth[:, mask].double(), fitted[:, mask].double()).aligned
    pixels = (aligned - truth[:, mask].double()).norm(dim=-1).mean(dim=1)
    scale = pose[:, 3].double() * SCALE_STD + SCALE_MEAN
    return float((pixels / scale).mean() / MODEL_UNITS_PER_MM)


def _generated_models() -> list[tuple[MorphableModel, str]]:
    models = []
    reference = SHARED_DIR / "reference"
    if reference.is_dir():
        models.append((MorphableModel.from_face3d_dir(reference), "reference"))
    try:
        from models.face_model.default_model import load_default_model

        models.append((load_default_model(), "default"))
    except (ModuleNotFoundError, MorphableModelError):
        pass
    return models


def generated_table(cases: int) -> None:
    print("## 2. Generated faces with detail outside the model (vertex error after Procrustes, mm)")
    try:
        from train.synthetic import SampleConfig, face_width, render_sample
    except ModuleNotFoundError as error:
        print(f"skipped: {error.name} is missing")
        return
    models = _generated_models()
    if not models:
        print("skipped: neither ../shared/reference nor the default model is available")
        return
    print("| model | case | (a) mean shape | (b) landmark-only | (c) full fit | fit s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mm, name in models:
        config = SampleConfig(detail_amplitude=DETAIL_FRACTION * face_width(mm))
        rows = []
        for seed in range(cases):
            sample = render_sample(mm, np.random.default_rng(seed), config)
            images = torch.from_numpy(sample.images).permute(0, 3, 1, 2).float() / 255.0
            landmarks = torch.from_numpy(sample.landmarks)
            truth, pose = torch.from_numpy(sample.vertices), torch.from_numpy(sample.pose)
            full = fit_multiview(mm, images, landmarks)
            partial = fit_multiview(mm, images, landmarks, landmark_only(FitConfig()))
            zeros = torch.zeros(images.shape[0], mm.shape_std.shape[0])
            mean_shape = pose_vertices(mm.vertices(zeros), full.pose)
            errors = [_aligned_error_mm(v, truth, pose, mm.face_region_mask) for v in (mean_shape, partial.vertices)]
            errors.append(_aligned_error_mm(full.vertices, truth, pose, mm.face_region_mask))
            rows.append(errors)
            print(f"| {name} | {seed} | {errors[0]:.3f} | {errors[1]:.3f} | {errors[2]:.3f} | {full.seconds:.2f} |")
        mean = np.mean(rows, axis=0)
        print(f"| {name} | mean | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | |", flush=True)


def _timing_inputs(mm: MorphableModel) -> tuple[torch.Tensor, torch.Tensor]:
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


def timing_table(repeats: int) -> None:
    print(f"## 3. Seconds per 2-view fit (median of {repeats} after a warm-up; load average {_load()})")
    from models.face_model.procedural import synthetic_morphable_model

    models = [(synthetic_morphable_model(TIMING_GRID_SIDE, TIMING_GRID_SIDE), "BFM-size grid")]
    reference = SHARED_DIR / "reference"
    if reference.is_dir():
        models.append((MorphableModel.from_face3d_dir(reference), "reference"))
    print("| model | vertices | fit threads | fit median [min, max] s | per stage (median) s |")
    print("| --- | --- | --- | --- | --- |")
    for mm, name in models:
        images, landmarks = _timing_inputs(mm)
        for threads in TIMING_THREADS:
            config = FitConfig(num_threads=threads)
            results: list[FitResult] = [fit_multiview(mm, images, landmarks, config) for _ in range(repeats + 1)][1:]
            seconds = [r.seconds for r in results]
            stages = ", ".join(
                f"{report.name} {statistics.median(r.stages[k].seconds for r in results):.2f}"
                for k, report in enumerate(results[0].stages)
            )
            print(
                f"| {name} | {mm.num_vertices:,} | {threads} | {statistics.median(seconds):.2f} "
                f"[{min(seconds):.2f}, {max(seconds):.2f}] | {stages} |",
                flush=True,
            )


def _load() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {', '.join(TABLES)}")
    parser.add_argument("--examples", type=Path, default=SHARED_DIR / "examples", help="folder of caseK photo pairs")
    parser.add_argument("--cases", type=int, default=4, help="generated cases per model (default 4)")
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
    if "photos" in tables:
        photos_table(args.examples)
    if "generated" in tables:
        generated_table(args.cases)
    if "timing" in tables:
        timing_table(args.repeats)
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
