"""Training benchmark: seconds per optimiser step of stage "optimizer" (batch 2, 2 views), and peak memory.

    python -m bench.benchmark_training                       # reference size, CPU
    python -m bench.benchmark_training --device cuda --repeats 5

A step is what train/train.py does per batch: the forward pass with second-order graphs through the
learned optimisation, the authors' recipe loss over all ten stages, the backward pass and an Adam step
on the optimisation layer (the regressor frozen). The model is the ``reference`` size of
bench/benchmark_inference.py (a 60 x 60 synthetic grid face, 3,600 vertices) with the deterministic
reference weights; inputs are smooth random images and a ground truth made from the model itself, built
in memory (no data set needed). The time is the median of ``--repeats`` steps after one warm-up.
Not a test: numbers depend on the machine.
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from bench.benchmark_inference import BENCH_SCALE_NORM, GRID_SIDES, VIEW_YAWS_DEG
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.geometry import camera
from models.networks.fnrmvs_net import FNRMVSNet
from tools.reference_weights import fill_with_reference_rule
from train.batch import Batch
from train.config import DEFAULT_LEARNING_RATE
from train.dataset import normalize_images
from train.losses import LossFunction
from train.objectives import OptimizerObjective
from train.trainable import select_trainable, set_train_mode

BATCH_SIZE = 2
VIEWS = 2
# Ground-truth identity / expression coefficients ~ N(0, sigma), small enough for a plausible face.
GT_SIGMA = 0.3
# Side of the random colour grid the images are upsampled from.
IMAGE_CELLS = 16


def make_batch(mm: MorphableModel, device: torch.device) -> Batch:
    """A batch of BATCH_SIZE samples x VIEWS views: random identities and expressions posed at the
    benchmark's yaws; images are smooth random colours, landmarks the ground truth's, projected."""
    generator = torch.Generator().manual_seed(0)
    n_views = BATCH_SIZE * VIEWS
    shape = torch.randn(BATCH_SIZE, mm.shape_std.shape[0], generator=generator) * GT_SIGMA
    expression = torch.randn(n_views, mm.exp_std.shape[0], generator=generator) * GT_SIGMA
    model_vertices = mm.vertices(shape.repeat_interleave(VIEWS, dim=0), expression)
    pose = torch.zeros(n_views, 6)
    pose[:, 1] = torch.deg2rad(torch.tensor(VIEW_YAWS_DEG[VIEWS])).repeat(BATCH_SIZE)
    pose[:, 3] = BENCH_SCALE_NORM
    vertices = camera.pose_vertices(model_vertices, pose)
    size = camera.IMAGE_SIZE
    coarse = torch.rand(n_views, 3, IMAGE_CELLS, IMAGE_CELLS, generator=generator)
    raw = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear").view(BATCH_SIZE, VIEWS, 3, size, size)
    vertices = vertices.view(BATCH_SIZE, VIEWS, -1, 3)
    landmarks3d = camera.to_image(vertices[:, :, mm.landmark_indices], size, size)
    return Batch(
        images=normalize_images(raw).to(device),
        raw_images=raw.to(device),
        landmarks=landmarks3d[..., :2].to(device),
        vertices=vertices.to(device),
        landmarks3d=landmarks3d.to(device),
        pose=pose.view(BATCH_SIZE, VIEWS, 6).to(device),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(size: str, repeats: int, device: torch.device) -> dict:
    """Build the model and time ``repeats`` training steps; returns a result row."""
    torch.manual_seed(0)
    side = GRID_SIDES[size]
    mm = synthetic_morphable_model(side, side)
    model = FNRMVSNet(mm)
    fill_with_reference_rule(model)
    criterion = LossFunction(mean_loss=True, bfm=mm)
    optimizer = torch.optim.Adam(select_trainable(model, "optimizer"), lr=DEFAULT_LEARNING_RATE)
    model.to(device)
    criterion.to(device)
    set_train_mode(model, "optimizer")
    objective = OptimizerObjective(model, criterion)
    batch = make_batch(mm, device)
    timings, losses = [], []
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = objective(batch)
        loss.total.backward()
        optimizer.step()
        _synchronize(device)
        timings.append(time.perf_counter() - start)
        losses.append(float(loss.total.detach()))
    timings = timings[1:]
    row = {
        "size": size,
        "vertices": mm.num_vertices,
        "batch": BATCH_SIZE,
        "views": VIEWS,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "median_s": round(statistics.median(timings), 3),
        "min_s": round(min(timings), 3),
        "max_s": round(max(timings), 3),
        "first_loss": round(losses[0], 1),
        "last_loss": round(losses[-1], 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if device.type == "cuda":
        row["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def table(row: dict) -> str:
    cuda = f"{row['peak_cuda_gib']} GiB" if "peak_cuda_gib" in row else "-"
    return "\n".join(
        [
            "| model | vertices | batch x views | device | step median [min, max] | peak RSS | peak CUDA |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {row['size']} | {row['vertices']:,} | {row['batch']} x {row['views']} | {row['device']} "
            f"({row['threads']} threads) | {row['median_s']} s [{row['min_s']}, {row['max_s']}] | "
            f"{row['peak_rss_gib']} GiB | {cuda} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(GRID_SIDES), default="reference", help="model (default reference)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after a warm-up (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON row instead of a table")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    row = run(args.size, args.repeats, device)
    print(json.dumps(row) if args.json else table(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
