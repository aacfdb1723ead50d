"""Benchmark of the texture fusion (models/texture/): seconds per case, and how well a texture reproduces the photos.

    python -m bench.benchmark_texture                       # both tables
    python -m bench.benchmark_texture --tables timing --repeats 7

Tables (not a test: the numbers depend on the machine and its load):

1. ``timing``: a generated 2-view case (models/synthesis, 256x256 crops, yaws within +-30 degrees) of the
   default model (7,152 vertices) and of a BFM-size grid face (231 x 231 = 53,361 vertices,
   models/face_model/procedural.py), texture --size texels per side (1024): rasterising the chart (once per
   model and size; cached afterwards), fusing the plain texture, fusing texture and albedo (the demo's
   default), rendering it back into the views (the error result.json reports), and writing all of a case's
   extra files (models/io/mesh_exports.py: PNGs, textured OBJs, PLYs, model-frame and neutral meshes).
   Median wall and CPU (process) seconds over --repeats after a warm-up, with one and with two intra-op
   threads: CPU seconds are what the work costs, wall seconds also grow with the machine's load.
2. ``photos``: the textured mesh rendered back into each crop, mean absolute colour error over the face
   region (colour units of [0, 1]), on the project's generated examples/ (their landmark files) and the
   authors' photos in ../shared/examples (dlib landmarks), reconstructed by the default weights-free fit;
   skipped where missing. Also the share of the chart's texels some view sees, and wall seconds.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.face_model.default_model import load_default_model
from models.face_model.model_frame import neutral_vertices
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.io.mesh_exports import CaseMeshes, ExportOptions, write_exports
from models.synthesis.multiview_sample import SampleConfig, render_sample
from models.texture.fusion import TextureConfig, fuse_texture
from models.texture.textured_render import reprojection_errors
from models.texture.uv_chart import rasterize_chart, texture_coordinates

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TABLES = ("timing", "photos")
# Side of the BFM-size grid face (231 x 231 = 53,361 vertices, 105,800 triangles).
BFM_SIZE_GRID_SIDE = 231
# Intra-op thread counts timed.
THREADS = (1, 2)


def _load() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _timed(work: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``work`` over ``repeats`` runs after one warm-up."""
    work()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _case(mm: MorphableModel) -> CaseMeshes:
    sample = render_sample(mm, np.random.default_rng(0), SampleConfig(views=2))
    return CaseMeshes(
        crops=sample.images,
        vertices=sample.vertices,
        poses=sample.pose,
        triangles=mm.triangles.numpy(),
        valid_mask=mm.face_region_mask_no_nose_hole.numpy(),
        uv_coords=mm.uv_coords.numpy(),
        landmark_indices=mm.landmark_indices.numpy(),
        neutral=neutral_vertices(mm, sample.shape_coeffs),
    )


def timing_table(size: int, repeats: int) -> None:
    print(f"## 1. Seconds per 2-view case, texture {size}x{size} (median of {repeats}; load average {_load()})")
    print("| model | threads | chart (once) | texture | texture + albedo | render-back error | all extra files |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    models = [
        (load_default_model(), "default (7,152 vertices)"),
        (synthetic_morphable_model(BFM_SIZE_GRID_SIDE, BFM_SIZE_GRID_SIDE), "BFM-size grid (53,361)"),
    ]
    for mm, name in models:
        case = _case(mm)
        vertices, crops = torch.from_numpy(case.vertices), torch.from_numpy(case.crops)
        uv = torch.from_numpy(texture_coordinates(case.uv_coords))
        region = torch.from_numpy(case.valid_mask)

        def fuse(albedo: bool, mm=mm, vertices=vertices, crops=crops, region=region):
            return fuse_texture(vertices, crops, mm.triangles, mm.uv_coords, TextureConfig(size, albedo), region)

        for threads in THREADS:
            torch.set_num_threads(threads)
            chart = _timed(lambda mm=mm, uv=uv: rasterize_chart(uv, mm.triangles, size), 1)
            plain = _timed(lambda fuse=fuse: fuse(False), repeats)
            fused = fuse(True)
            both = _timed(lambda fuse=fuse: fuse(True), repeats)
            render = _timed(
                lambda mm=mm, fused=fused, vertices=vertices, crops=crops, region=region: reprojection_errors(
                    vertices, crops, mm.triangles, fused.texture_uv, fused.texture, region
                ),
                repeats,
            )
            with tempfile.TemporaryDirectory() as folder:
                files = _timed(lambda case=case: write_exports(Path(folder), case, ExportOptions(texture_size=size)), 1)
            cells = " | ".join(f"{wall:.3f} (CPU {cpu:.3f})" for wall, cpu in (chart, plain, both, render, files))
            print(f"| {name} | {threads} | {cells} |", flush=True)


def photos_table(size: int) -> None:
    print(f"## 2. Textured mesh rendered back into each crop, face region (texture {size}x{size}, one thread)")
    torch.set_num_threads(1)
    try:
        from models.errors import DFNRMVSError
        from models.io.landmark_detectors import create_detector
        from models.reconstruction import FittingReconstructor, reconstruct

        detector = create_detector("dlib")
    except (ModuleNotFoundError, DFNRMVSError) as error:
        print(f"skipped: {error}")
        return
    reconstructor = FittingReconstructor()
    mm = reconstructor.model
    print("| cases | case | views | texels seen | error per view | fit s | fusion s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, folder in (("examples/", REPO_ROOT / "examples"), ("authors' photos", SHARED_DIR / "examples")):
        cases = sorted(p for p in folder.glob("case*") if p.is_dir()) if folder.is_dir() else []
        if not cases:
            print(f"| {label} | skipped: {folder} not found | | | | | |")
        for case in cases:
            photos = sorted(p for p in case.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            try:
                result = reconstruct(photos, reconstructor, detector)
            except DFNRMVSError as error:
                print(f"| {label} | {case.name} | {len(photos)} | skipped: {error} | | | |")
                continue
            vertices = torch.from_numpy(result.vertices)
            crops = torch.from_numpy(np.stack([view.crop for view in result.views]))
            region = torch.from_numpy(result.valid_mask)
            start = time.perf_counter()
            fused = fuse_texture(vertices, crops, mm.triangles, mm.uv_coords, TextureConfig(size), region)
            seconds = time.perf_counter() - start
            errors = reprojection_errors(vertices, crops, mm.triangles, fused.texture_uv, fused.texture, region)
            seen = float(fused.seen[fused.chart.mask()].float().mean())
            print(
                f"| {label} | {case.name} | {len(photos)} | {seen:.3f} | "
                f"{', '.join(f'{e:.4f}' for e in errors.tolist())} | {result.timings['reconstruct']:.2f} | "
                f"{seconds:.2f} |",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--size", type=int, default=1024, help="texels per side (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (default 5)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    if "timing" in args.tables:
        timing_table(args.size, args.repeats)
    if "photos" in args.tables:
        photos_table(args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
