"""Inference benchmark of FNRMVSNet: seconds per forward pass and peak memory, for 2 and 3 views.

    python -m bench.benchmark_inference                     # every configuration, one subprocess each
    python -m bench.benchmark_inference --size bfm --views 3 --device cuda

Sizes: ``reference`` = a 60 x 60 synthetic grid face (3,600 vertices, as ../shared/reference) and ``bfm`` =
a 231 x 231 grid face (53,361 vertices, 105,800 triangles: the BFM's size and triangle density), both
made on the fly by models/face_model/procedural.py with deterministic weights (tools/reference_weights.py).
Each configuration runs in a fresh process so that its peak RSS is its own; the time is the median of
``--repeats`` forward passes after one warm-up. Not a test: numbers depend on the machine.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from models.face_model.procedural import synthetic_morphable_model
from models.geometry import camera
from models.networks.fnrmvs_net import FNRMVSNet
from tools.reference_weights import fill_with_reference_rule

GRID_SIDES = {"reference": 60, "bfm": 231}
VIEW_YAWS_DEG = {2: (-25.0, 25.0), 3: (-30.0, 0.0, 30.0)}
IMAGE_SIZE = camera.IMAGE_SIZE
# Weak-perspective scale (normalised) that makes the synthetic face ~150 px wide in the 256 crop.
BENCH_SCALE_NORM = -0.5


def _inputs(model: FNRMVSNet, views: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth random images in [0, 1], their normalised copy, and landmarks projected from the model."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, views, 3, 16, 16, generator=generator)
    raw = torch.nn.functional.interpolate(coarse.view(views, 3, 16, 16), size=IMAGE_SIZE, mode="bilinear")
    raw = raw.view(1, views, 3, IMAGE_SIZE, IMAGE_SIZE)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    face = model.opt_layer.face
    pose = torch.zeros(views, 6)
    pose[:, 1] = torch.deg2rad(torch.tensor(VIEW_YAWS_DEG[views]))
    pose[:, 3] = BENCH_SCALE_NORM
    vertices = camera.pose_vertices(face.linear.vertices(torch.zeros(views, face.linear.shape_basis.shape[1])), pose)
    landmarks = camera.to_image(vertices)[:, face.landmark_indices, :2].unsqueeze(0)
    return ((raw - mean) / std).to(device), raw.to(device), landmarks.to(device)


def run_one(size: str, views: int, repeats: int, device: str) -> dict:
    """Build the model, time ``repeats`` forward passes; returns a result row."""
    torch.manual_seed(0)
    start = time.perf_counter()
    side = GRID_SIDES[size]
    model = FNRMVSNet(synthetic_morphable_model(side, side))
    fill_with_reference_rule(model)
    model.eval().to(device)
    build_seconds = time.perf_counter() - start
    inputs = _inputs(model, views, device)
    timings = []
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model(*inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    timings = timings[1:]
    row = {
        "size": size,
        "vertices": model.opt_layer.face.num_vertices,
        "views": views,
        "device": device,
        "threads": torch.get_num_threads(),
        "build_s": round(build_seconds, 2),
        "median_s": round(statistics.median(timings), 3),
        "min_s": round(min(timings), 3),
        "max_s": round(max(timings), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if device.startswith("cuda"):
        row["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def _table(rows: list[dict]) -> str:
    header = "| model | vertices | views | device | forward median [min, max] | peak RSS | peak CUDA |"
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cuda = f"{r['peak_cuda_gib']} GiB" if "peak_cuda_gib" in r else "-"
        lines.append(
            f"| {r['size']} | {r['vertices']:,} | {r['views']} | {r['device']} ({r['threads']} threads) | "
            f"{r['median_s']} s [{r['min_s']}, {r['max_s']}] | {r['peak_rss_gib']} GiB | {cuda} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(GRID_SIDES), help="one model size (default: all)")
    parser.add_argument("--views", type=int, choices=sorted(VIEW_YAWS_DEG), help="one view count (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes after a warm-up (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON row (used for the subprocesses)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.size and args.views:
        row = run_one(args.size, args.views, args.repeats, args.device)
        print(json.dumps(row) if args.json else _table([row]))
        return 0
    rows = []
    for size in [args.size] if args.size else list(GRID_SIDES):
        for views in [args.views] if args.views else sorted(VIEW_YAWS_DEG):
            command = [sys.executable, "-m", "bench.benchmark_inference", "--size", size, "--views", str(views)]
            command += ["--repeats", str(args.repeats), "--device", args.device, "--json"]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(_table(rows[-1:]).splitlines()[-1], flush=True)
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
