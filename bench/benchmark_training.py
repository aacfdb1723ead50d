"""Training benchmark: the two-stage recipe from scratch on generated faces (loss curves), and step times.

    python -m bench.benchmark_training curves --out runs/bench      # both stages, CPU, compact network
    python -m bench.benchmark_training curves --out runs/bench --network full --device cuda
    python -m bench.benchmark_training timing [--device cuda] [--network full|compact] [--repeats 5]

``curves`` renders a training and a validation set with train/synthetic.py from the built-in default face
model (2-3 views per sample, yaws of +-15..40 degrees), then runs train/train.py's two stages from fresh
weights exactly as the README's recipe does: stage "regressor", then stage "optimizer" initialised from
the stage-1 model. It validates the model before and after each stage (face-region vertex error in mm
after similarity alignment, landmark error in px) and writes to ``--out``: ``curves.png`` (training loss
per step and validation error per epoch of both stages), ``summary.json`` and each stage's run folder;
it prints a Markdown table. ``--network compact`` (train/compact_network.py) makes a CPU run of a few
hundred steps possible; ``--network full`` trains the authors' FNRMVSNet.

``timing`` measures seconds per optimiser step of each stage (batch 2, 2 views) as train/train.py takes it:
the forward pass (for stage "optimizer" with second-order graphs through the learned optimisation), the
stage's loss, the backward pass, gradient clipping and an Adam step (learning rate 0, so that every timed step
repeats the same work), on in-memory inputs (smooth random images, a ground truth made from the model itself)
of the ``reference`` (60 x 60 grid, 3,600 vertices) or ``default`` (the built-in model, 7,152 vertices) face
model. The time is the median of ``--repeats`` steps after one warm-up; steps per second are its inverse. Not
tests: numbers depend on the machine.
"""

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.benchmark_inference import BENCH_SCALE_NORM, GRID_SHAPES, VIEW_YAWS_DEG
from models.face_model.default_model import DEFAULT_MODEL_PATH, load_default_model
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.geometry import camera
from models.networks.fnrmvs_net import FNRMVSNet
from train.batch import Batch
from train.compact_network import compact_network
from train.config import DEFAULT_CLIP_GRAD_NORM, TrainConfig
from train.dataset import normalize_images
from train.distributed import init_distributed
from train.initialisation import initialise_for_training
from train.loaders import make_loaders
from train.losses import LossFunction
from train.objectives import OBJECTIVES
from train.synthetic import DEFAULT_YAW_RANGE_DEG, generate_dataset
from train.train import LAST_MODEL, ModelFactory, build_model, default_model, train
from train.trainable import select_trainable, set_train_mode
from train.validation import Validation, validate

BATCH_SIZE = 2
VIEWS = 2
# Ground-truth identity / expression coefficients ~ N(0, sigma), small enough for a plausible face.
GT_SIGMA = 0.3
# Side of the random colour grid the images are upsampled from.
IMAGE_CELLS = 16
NETWORKS = ("compact", "full")
STAGES = ("regressor", "optimizer")
# The recipe of the curves (README "Training"): learning rate and warm-up steps per stage.
RECIPE_LR = {"regressor": 1e-3, "optimizer": 1e-3}
RECIPE_WARMUP = {"regressor": 20, "optimizer": 10}


def network_factory(name: str) -> ModelFactory:
    """train.train's model factory for ``--network``."""
    if name == "compact":
        return lambda mm, config: compact_network(mm, config.n_shape_para, config.n_exp_para)
    return default_model


# ---------------------------------------------------------------------------------------------- timing
def make_batch(mm: MorphableModel, device: torch.device, batch_size: int = BATCH_SIZE) -> Batch:
    """A batch of ``batch_size`` samples x VIEWS views: random identities and expressions posed at the
    benchmark's yaws; images are smooth random colours, landmarks the ground truth's, projected."""
    generator = torch.Generator().manual_seed(0)
    n_views = batch_size * VIEWS
    shape = torch.randn(batch_size, mm.shape_std.shape[0], generator=generator) * GT_SIGMA
    expression = torch.randn(n_views, mm.exp_std.shape[0], generator=generator) * GT_SIGMA
    model_vertices = mm.vertices(shape.repeat_interleave(VIEWS, dim=0), expression)
    pose = torch.zeros(n_views, 6)
    pose[:, 1] = torch.deg2rad(torch.tensor(VIEW_YAWS_DEG[VIEWS])).repeat(batch_size)
    pose[:, 3] = BENCH_SCALE_NORM
    vertices = camera.pose_vertices(model_vertices, pose)
    size = camera.IMAGE_SIZE
    coarse = torch.rand(n_views, 3, IMAGE_CELLS, IMAGE_CELLS, generator=generator)
    raw = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear").view(batch_size, VIEWS, 3, size, size)
    vertices = vertices.view(batch_size, VIEWS, -1, 3)
    landmarks3d = camera.to_image(vertices[:, :, mm.landmark_indices], size, size)
    return Batch(
        images=normalize_images(raw).to(device),
        raw_images=raw.to(device),
        landmarks=landmarks3d[..., :2].to(device),
        vertices=vertices.to(device),
        landmarks3d=landmarks3d.to(device),
        pose=pose.view(batch_size, VIEWS, 6).to(device),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timing_model(face: str) -> MorphableModel:
    return load_default_model() if face == "default" else synthetic_morphable_model(*GRID_SHAPES[face])


def time_stage(mm: MorphableModel, network: str, stage: str, repeats: int, device: torch.device) -> dict:
    """Build a fresh model (start-up initialisation applied) and time ``repeats`` steps of ``stage``.

    The Adam step runs with a learning rate of 0: the same work as a training step, but every timed step repeats
    the same computation on the same weights (a fresh network trained on the random images diverges within a
    few updates, and its optimisation then stops the step as not finite)."""
    torch.manual_seed(0)
    model = compact_network(mm) if network == "compact" else FNRMVSNet(mm)
    initialise_for_training(model)
    criterion = LossFunction(mean_loss=True, bfm=mm)
    trainable = select_trainable(model, stage)
    optimizer = torch.optim.Adam(trainable, lr=0.0, fused=True)
    model.to(device)
    criterion.to(device)
    set_train_mode(model, stage)
    objective = OBJECTIVES[stage](model, criterion)
    batch = make_batch(mm, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = []
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        objective(batch).total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, DEFAULT_CLIP_GRAD_NORM)
        optimizer.step()
        _synchronize(device)
        timings.append(time.perf_counter() - start)
    timings = timings[1:]
    median = statistics.median(timings)
    row = {
        "stage": stage,
        "network": network,
        "vertices": mm.num_vertices,
        "batch": BATCH_SIZE,
        "views": VIEWS,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "median_s": round(median, 3),
        "min_s": round(min(timings), 3),
        "max_s": round(max(timings), 3),
        "steps_per_s": round(1.0 / median, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if device.type == "cuda":
        row["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def timing_table(rows: list[dict]) -> str:
    lines = [
        "| stage | network | vertices | batch x views | device | step median [min, max] | steps/s | peak RSS "
        "| peak CUDA |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cuda = f"{row['peak_cuda_gib']} GiB" if "peak_cuda_gib" in row else "-"
        lines.append(
            f"| {row['stage']} | {row['network']} | {row['vertices']:,} | {row['batch']} x {row['views']} | "
            f"{row['device']} ({row['threads']} threads) | {row['median_s']} s [{row['min_s']}, {row['max_s']}] | "
            f"{row['steps_per_s']} | {row['peak_rss_gib']} GiB | {cuda} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- curves
def stage_config(args: argparse.Namespace, stage: str, data: dict[str, Path], init: Path | None) -> TrainConfig:
    """The recipe's configuration of one stage (README "Training"), one validation per epoch."""
    return TrainConfig(
        stage=stage,
        data=str(data["train"]),
        val_data=str(data["val"]),
        mm=str(DEFAULT_MODEL_PATH),
        out=str(args.out / stage),
        init=None if init is None else str(init),
        epochs=getattr(args, f"{stage}_epochs"),
        batch_size=BATCH_SIZE,
        lr=RECIPE_LR[stage],
        warmup_steps=RECIPE_WARMUP[stage],
        seed=args.seed,
        device=args.device,
        progress=False,
        overwrite=True,
        keep="last,best",
        save_state=False,
    )


def validate_start(config: TrainConfig, network: str) -> Validation:
    """Validation of the model a stage starts from (fresh, start-up initialised, or ``config.init``)."""
    context = init_distributed(config.device)
    mm = MorphableModel.load(config.mm)
    _, val_loader, _ = make_loaders(config, context, mm.num_vertices)
    model, _ = build_model(config, mm, network_factory(network))
    criterion = LossFunction(mean_loss=True, bfm=mm)
    model.to(context.device)
    criterion.to(context.device)
    return validate(model, criterion, val_loader, config, context)


def read_log(path: Path) -> list[dict[str, float]]:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")), strict=True)) for line in lines[1:]]


def plot_curves(summary: dict, path: Path) -> None:
    """Training loss per step (log scale) and validation error per epoch of both stages, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
    metric = {"regressor": ("landmark_px", "landmark error (px)"), "optimizer": ("vertex_mm", "vertex error (mm)")}
    for axis, stage in zip(axes, STAGES, strict=True):
        run = summary["stages"][stage]
        steps = [row["step"] for row in run["train_log"]]
        axis.semilogy(steps, [row["loss"] for row in run["train_log"]], color="tab:blue", lw=0.8, label="training loss")
        axis.set_xlabel("step")
        axis.set_ylabel("loss (batch)", color="tab:blue")
        name, label = metric[stage]
        twin = axis.twinx()
        points = [(0, run["before"][name])] + [(row["step"], row[name]) for row in run["val_log"]]
        twin.plot(*zip(*points, strict=True), "o-", color="tab:red", label=f"validation {label}")
        twin.set_ylabel(f"validation {label}", color="tab:red")
        axis.set_title(f"stage {stage} ({summary['network']} network, {summary['device']})")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run_curves(args: argparse.Namespace) -> dict:
    """Generate the data, run both stages, validate around them; returns the summary (also written)."""
    args.out.mkdir(parents=True, exist_ok=True)
    mm = load_default_model()
    data = {"train": args.out / "data" / "train", "val": args.out / "data" / "val"}
    for split, count, seed in (("train", args.train_samples, args.seed), ("val", args.val_samples, args.seed + 1)):
        generate_dataset(
            mm, data[split], count, (2, 3), seed, yaw_range_deg=DEFAULT_YAW_RANGE_DEG, overwrite=True, progress=True
        )
    factory = network_factory(args.network)
    summary: dict = {"network": args.network, "device": args.device, "threads": torch.get_num_threads(), "stages": {}}
    init = None
    for stage in STAGES:
        config = stage_config(args, stage, data, init)
        before = validate_start(config, args.network)
        started = time.perf_counter()
        result = train(config, factory)
        seconds = time.perf_counter() - started
        out = Path(config.out)
        summary["stages"][stage] = {
            "steps": result.progress.step,
            "skipped": result.progress.skipped,
            "seconds": round(seconds, 1),
            "before": before.__dict__,
            "after": result.validations[-1].__dict__,
            "train_log": read_log(out / "train_log.csv"),
            "val_log": read_log(out / "val_log.csv"),
        }
        init = out / LAST_MODEL
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_curves(summary, args.out / "curves.png")
    return summary


def curves_table(summary: dict) -> str:
    lines = [
        "| stage | steps | time | first / last 10 losses (mean) | val vertex mm before -> after | "
        "val landmark px before -> after |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for stage, run in summary["stages"].items():
        losses = [row["loss"] for row in run["train_log"]]
        first, last = statistics.fmean(losses[:10]), statistics.fmean(losses[-10:])
        b, a = run["before"], run["after"]
        lines.append(
            f"| {stage} | {run['steps']} | {run['seconds'] / 60:.0f} min | {first:.4g} / {last:.4g} | "
            f"{b['vertex_mm']:.2f} -> {a['vertex_mm']:.2f} | {b['landmark_px']:.1f} -> {a['landmark_px']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("timing", help="seconds per step of both stages")
    timing.add_argument("--face", choices=(*GRID_SHAPES, "default"), default="reference", help="face model size")
    timing.add_argument("--network", choices=NETWORKS, default="full", help="network (default full)")
    timing.add_argument("--repeats", type=int, default=3, help="timed steps after a warm-up (default 3)")
    timing.add_argument("--device", default="cpu", help="torch device (default cpu)")
    timing.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    curves = commands.add_parser("curves", help="loss curves of the two-stage recipe on generated data")
    curves.add_argument("--out", type=Path, required=True, help="output folder")
    curves.add_argument("--network", choices=NETWORKS, default="compact", help="network (default compact)")
    curves.add_argument("--train-samples", type=int, default=96, help="training samples (default 96)")
    curves.add_argument("--val-samples", type=int, default=8, help="validation samples (default 8)")
    curves.add_argument("--regressor-epochs", type=int, default=4, help="stage-1 epochs (default 4)")
    curves.add_argument("--optimizer-epochs", type=int, default=2, help="stage-2 epochs (default 2)")
    curves.add_argument("--seed", type=int, default=0, help="seed of data and weights (default 0)")
    curves.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.command == "timing":
        mm = timing_model(args.face)
        rows = [time_stage(mm, args.network, stage, args.repeats, device) for stage in STAGES]
        print("\n".join(json.dumps(row) for row in rows) if args.json else timing_table(rows))
    else:
        print(curves_table(run_curves(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
