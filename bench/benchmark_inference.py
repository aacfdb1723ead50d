"""Inference benchmark of FNRMVSNet: seconds per forward pass and peak memory, for 2 and 3 views.

    python -m bench.benchmark_inference                     # every configuration, one subprocess each
    python -m bench.benchmark_inference --size bfm --views 3 --device cuda
    python -m bench.benchmark_inference --size bfm --views 2 --precision bfloat16
    python -m bench.benchmark_inference --original ORIG --original-path STUBS --views 2   # side by side

Sizes: ``reference`` = a 60 x 60 synthetic grid face (3,600 vertices, as ../shared/reference), ``bfm`` = a
231 x 231 grid face (53,361 vertices, 105,800 triangles: the BFM's size and triangle density) and ``bfm53215`` =
a 145 x 367 grid (exactly the 53,215 vertices the authors' code hard-codes: the size the side-by-side comparison
with the original in the README runs at), all made on the fly by models/face_model/procedural.py with
deterministic weights (tools/reference_weights.py). Each configuration runs in a fresh process so that its peak
RSS is its own; the time is the median of ``--repeats`` forward passes after one warm-up (CPU time of the
process is reported next to it: on a loaded machine it is the steadier figure). ``--precision`` runs the
convolutional networks under autocast (the opt-in reduced-precision mode) and reports the largest and mean
vertex difference to the float32 result of the same process. Not a test: numbers depend on the machine.

``--original ORIG`` times the authors' code (a scratch copy, nothing of it in this repository; ``--original-path``
folders hold stubs of modules it imports but does not use) against this project on the same ``bfm53215`` model
(written in the face3d layout with tools/face3d_writer.py), the same rule-built weights (loaded strictly into
theirs) and the same inputs, one process each (bench/original_runner.py runs theirs), and prints the speed-up
(wall and CPU time), both peak RSS and the difference of the last step's vertices.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
import torch

from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import make_grid_face, synthetic_morphable_model
from models.geometry import camera
from models.networks.fnrmvs_net import FNRMVSNet
from tools.face3d_writer import write_face3d_dir
from tools.reference_weights import fill_with_reference_rule

GRID_SHAPES = {"reference": (60, 60), "bfm": (231, 231), "bfm53215": (145, 367)}
DEFAULT_SIZES = ("reference", "bfm")
VIEW_YAWS_DEG = {2: (-25.0, 25.0), 3: (-30.0, 0.0, 30.0)}
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
IMAGE_SIZE = camera.IMAGE_SIZE
# the side-by-side size: the 53,215 vertices the authors' code hard-codes (LoadExpBasis)
SIDE_BY_SIDE_SIZE = "bfm53215"
WHO = ("ours", "original")  # file-name prefixes of the saved vertices
ORIGINAL_TEXTURE_COMPONENTS = 10  # the authors' loader reads a texture model; the forward pass does not use it
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
    linear = face.linear.to("cpu")
    vertices = camera.pose_vertices(linear.vertices(torch.zeros(views, linear.shape_basis.shape[1])), pose)
    landmarks = camera.to_image(vertices)[:, face.landmark_indices.cpu(), :2].unsqueeze(0)
    return ((raw - mean) / std).to(device), raw.to(device), landmarks.to(device)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _model_and_inputs(
    size: str, views: int, device: str, work_dir: Path | None
) -> tuple[FNRMVSNet, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The size's synthetic model with rule-built weights and its inputs, or (``work_dir``) the ones
    :func:`side_by_side` wrote for both implementations."""
    if work_dir is None:
        model = FNRMVSNet(synthetic_morphable_model(*GRID_SHAPES[size]))
        fill_with_reference_rule(model)
        return model.eval().to(device), _inputs(model, views, device)
    model = FNRMVSNet(MorphableModel.from_face3d_dir(work_dir))
    model.load_state_dict(torch.load(work_dir / "weights.pt"), strict=True)
    inputs = torch.load(work_dir / f"inputs_v{views}.pt")
    return model.eval().to(device), tuple(tensor.to(device) for tensor in inputs)


def run_one(
    size: str, views: int, repeats: int, device: str, precision: str = "float32", work_dir: Path | None = None
) -> dict:
    """Build the model, time ``repeats`` forward passes; returns a result row. With ``work_dir`` (the
    side-by-side run) the model, weights and inputs come from there and the last step's vertices are saved
    there as ``ours_vertices_v{views}.npy``."""
    torch.manual_seed(0)
    start = time.perf_counter()
    model, inputs = _model_and_inputs(size, views, device, work_dir)
    build_seconds = time.perf_counter() - start
    dtype = PRECISIONS[precision]
    timings, cpu_timings = [], []
    for _ in range(repeats + 1):
        _synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            output = model(*inputs, reduced_precision=dtype)
        _synchronize(device)
        timings.append(time.perf_counter() - start)
        cpu_timings.append(time.process_time() - cpu_start)
    timings, cpu_timings = timings[1:], cpu_timings[1:]
    if work_dir is not None:
        np.save(work_dir / f"ours_vertices_v{views}.npy", output.optimisation.final_vertices.cpu().numpy())
    row = {
        "size": size,
        "vertices": model.opt_layer.face.num_vertices,
        "views": views,
        "device": device,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "build_s": round(build_seconds, 2),
        "median_s": round(statistics.median(timings), 3),
        "min_s": round(min(timings), 3),
        "max_s": round(max(timings), 3),
        "cpu_s": round(statistics.median(cpu_timings), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if device.startswith("cuda"):
        row["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    if dtype is not None:
        with torch.no_grad():
            reference = model(*inputs).vertices
        difference = (output.vertices - reference).abs()
        row["vertex_diff_max_px"] = float(f"{difference.max().item():.3g}")
        row["vertex_diff_mean_px"] = float(f"{difference.mean().item():.3g}")
    return row


def _table(rows: list[dict]) -> str:
    columns = ["model", "vertices", "views", "device", "precision", "forward median [min, max]", "CPU time"]
    columns += ["peak RSS", "peak CUDA"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        cuda = f"{r['peak_cuda_gib']} GiB" if "peak_cuda_gib" in r else "-"
        precision = r["precision"]
        if "vertex_diff_max_px" in r:
            precision += f" (vertices vs float32: max {r['vertex_diff_max_px']}, mean {r['vertex_diff_mean_px']} px)"
        device = f"{r['device']} ({r['threads']} threads)"
        lines.append(
            f"| {r['size']} | {r['vertices']:,} | {r['views']} | {device} | {precision} | "
            f"{r['median_s']} s [{r['min_s']}, {r['max_s']}] | {r['cpu_s']} s | {r['peak_rss_gib']} GiB | {cuda} |"
        )
    return "\n".join(lines)


def _write_side_by_side_inputs(work_dir: Path) -> None:
    """The shared model, weights and inputs of :func:`side_by_side`, in ``work_dir``."""
    rows, cols = GRID_SHAPES[SIDE_BY_SIDE_SIZE]
    arrays = make_grid_face(rows, cols)
    write_face3d_dir(work_dir, arrays)
    # what the authors' loader also reads: mouth triangles and a (flat grey) texture model
    bfm_path = work_dir / "Out" / "BFM.mat"
    bfm = scipy.io.loadmat(bfm_path)["model"][0, 0]
    fields = {key: bfm[key] for key in bfm.dtype.names}
    n = arrays["vertices"].shape[0]
    fields["tri_mouth"] = (arrays["triangles"][:6].T + 1).astype(np.float64)
    fields["texMU"] = np.full((3 * n, 1), 128.0)
    fields["texPC"] = np.zeros((3 * n, ORIGINAL_TEXTURE_COMPONENTS), np.float32)
    fields["texEV"] = np.ones((ORIGINAL_TEXTURE_COMPONENTS, 1))
    scipy.io.savemat(bfm_path, {"model": fields})
    torch.manual_seed(0)
    model = FNRMVSNet(MorphableModel.from_face3d_dir(work_dir))
    fill_with_reference_rule(model)
    torch.save(model.state_dict(), work_dir / "weights.pt")
    for views in VIEW_YAWS_DEG:
        torch.save(_inputs(model, views, "cpu"), work_dir / f"inputs_v{views}.pt")


def side_by_side(original: Path, extra_paths: list[Path], views_list: list[int], repeats: int) -> list[dict]:
    """This project and the authors' code (``original``: a scratch copy, see bench/original_runner.py) on the
    same model (``SIDE_BY_SIDE_SIZE``), weights and inputs, each run in its own process, back to back.
    Returns one row per view count with both timings, the speed-up, both peak RSS and the largest and mean
    difference of the last step's vertices (pixels)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dfnrmvs_side_by_side_") as folder:
        work_dir = Path(folder)
        _write_side_by_side_inputs(work_dir)
        for views in views_list:
            ours_command = [sys.executable, "-m", "bench.benchmark_inference", "--size", SIDE_BY_SIDE_SIZE]
            ours_command += ["--views", str(views), "--repeats", str(repeats), "--json", "--work-dir", folder]
            theirs_command = [sys.executable, str(Path(__file__).with_name("original_runner.py")), folder]
            theirs_command += [str(views), str(repeats), str(original), *map(str, extra_paths)]
            ours, theirs = (_json_row(command) for command in (ours_command, theirs_command))
            ours_vertices, their_vertices = (np.load(work_dir / f"{who}_vertices_v{views}.npy") for who in WHO)
            difference = np.abs(ours_vertices - their_vertices)
            rows.append(
                {
                    "views": views,
                    "vertices": ours["vertices"],
                    "threads": ours["threads"],
                    "ours": ours,
                    "original": theirs,
                    "speed_up": round(theirs["median_s"] / ours["median_s"], 2),
                    "speed_up_cpu_time": round(theirs["cpu_s"] / ours["cpu_s"], 2),
                    "vertex_diff_max_px": float(f"{difference.max():.3g}"),
                    "vertex_diff_mean_px": float(f"{difference.mean():.3g}"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _json_row(command: list[str]) -> dict:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{completed.stderr.strip()[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _side_by_side_table(rows: list[dict]) -> str:
    lines = [
        "| views | the original | this project | speed-up (wall / CPU time) | peak RSS original / ours | "
        "vertex difference max / mean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        timing = [f"{x['median_s']} s [{x['min_s']}, {x['max_s']}]" for x in (r["original"], r["ours"])]
        lines.append(
            f"| {r['views']} | {timing[0]} | {timing[1]} | {r['speed_up']}x / {r['speed_up_cpu_time']}x | "
            f"{r['original']['peak_rss_gib']} / {r['ours']['peak_rss_gib']} GiB | "
            f"{r['vertex_diff_max_px']} / {r['vertex_diff_mean_px']} px |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(GRID_SHAPES), help=f"one model size (default: {DEFAULT_SIZES})")
    parser.add_argument("--views", type=int, choices=sorted(VIEW_YAWS_DEG), help="one view count (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes after a warm-up (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="float32", help="see the module doc")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print JSON rows (one per line)")
    parser.add_argument("--original", type=Path, help="side by side with the authors' code in this folder")
    parser.add_argument(
        "--original-path",
        type=Path,
        action="append",
        default=[],
        help="a folder put in front of --original on its sys.path (stub modules; repeatable)",
    )
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)  # the side-by-side subprocesses
    args = parser.parse_args(argv)
    if args.original is not None:
        if not (args.original / "networks" / "sub_nets.py").is_file():
            print(f"error: --original {args.original}: no networks/sub_nets.py there", file=sys.stderr)
            return 2
        rows = side_by_side(args.original, args.original_path, [args.views] if args.views else [2, 3], args.repeats)
        print(_side_by_side_table(rows))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size and args.views:
        row = run_one(args.size, args.views, args.repeats, args.device, args.precision, args.work_dir)
        print(json.dumps(row) if args.json else _table([row]))
        return 0
    rows = []
    for size in [args.size] if args.size else DEFAULT_SIZES:
        for views in [args.views] if args.views else sorted(VIEW_YAWS_DEG):
            command = [sys.executable, "-m", "bench.benchmark_inference", "--size", size, "--views", str(views)]
            command += ["--repeats", str(args.repeats), "--device", args.device, "--precision", args.precision]
            command += ["--json"] + (["--threads", str(args.threads)] if args.threads else [])
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]) if args.json else _table(rows[-1:]).splitlines()[-1], flush=True)
    if not args.json:
        print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
