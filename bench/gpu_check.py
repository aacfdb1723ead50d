"""The prepared CUDA check: equivalence on the GPU, the device tests, the inference benchmark and a profile.

    python -m bench.gpu_check                       # writes gpu_check_summary.md and prints it
    python -m bench.gpu_check --shared ../shared --out /tmp/summary.md --quick

Runs, each in its own process with a time limit (a few minutes in all on a current GPU):

1. ``python -m tools.check_reference <shared>/reference/case_v2 --mm-dir <shared>/reference --device cuda``
   (skipped with a note when the reference data is absent);
2. the core numerical tests on the device (``tests/nrmvs``, ``tests/geometry`` and the forward-pass device test:
   the ``device`` fixture runs them on CUDA too);
3. ``python -m bench.benchmark_inference --device cuda`` at BFM size (53,361 vertices) for 2 and 3 views in
   float32, then 2 views in float16 and bfloat16 (autocast), plus the 3,600-vertex reference size;
4. a torch.profiler table of one 2-view BFM-size forward pass (CUDA time per operator), the starting point of
   GPU-specific work. The goal there: 2 views at BFM size under 100 ms.

The summary (markdown) goes to ``--out``. Without CUDA it prints one line and exits with status 2.
The reference data is looked for in ``--shared`` (which must hold it), else in ``$DFNRMVS_SHARED``,
``./shared`` and ``../shared``.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CASE = "reference/case_v2"
DEVICE_TESTS = ("tests/nrmvs", "tests/geometry", "tests/networks/test_fnrmvs_forward.py::test_forward_on_the_device")
# (size, views, precision) rows of the benchmark
BENCHMARKS = (
    ("bfm", 2, "float32"),
    ("bfm", 3, "float32"),
    ("bfm", 2, "float16"),
    ("bfm", 2, "bfloat16"),
    ("reference", 2, "float32"),
)
TARGET_SECONDS = 0.1  # 2 views at BFM size
STEP_TIMEOUT_S = 600


def _shared_dir(explicit: Path | None) -> Path | None:
    """The reference data's folder: ``explicit`` when given (checked by the caller), else the first of
    ``$DFNRMVS_SHARED``, ./shared and ../shared that holds it, or None."""
    if explicit is not None:
        return explicit
    candidates = []
    if os.environ.get("DFNRMVS_SHARED"):
        candidates.append(Path(os.environ["DFNRMVS_SHARED"]))
    candidates += [REPO_ROOT / "shared", REPO_ROOT.parent / "shared"]
    return next((path for path in candidates if (path / REFERENCE_CASE).is_dir()), None)


def _run(command: list[str], timeout: int = STEP_TIMEOUT_S) -> tuple[int, str, float]:
    """(exit status, stdout + stderr, seconds) of a command run from the repository root."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return 124, output + f"\n(timed out after {timeout} s)", time.perf_counter() - start


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check_equivalence(shared: Path | None) -> list[str]:
    if shared is None:
        return ["Equivalence: **skipped** (no reference data: pass --shared DIR or set DFNRMVS_SHARED)."]
    command = [sys.executable, "-m", "tools.check_reference", str(shared / REFERENCE_CASE)]
    command += ["--mm-dir", str(shared / "reference"), "--device", "cuda"]
    status, output, seconds = _run(command)
    verdict = "PASS" if status == 0 and output.strip().endswith("PASS") else f"FAIL (exit {status})"
    worst = max(
        (line for line in output.splitlines() if "max_err=" in line and ("verts" in line or "final" in line)),
        key=lambda line: float(line.split("max_err=")[1].split()[0]),
        default="",
    )
    lines = [f"Equivalence (`tools.check_reference --device cuda`, {seconds:.0f} s): **{verdict}**"]
    lines.append(f"worst vertex line: `{worst.strip()}`" if worst else "```\n" + _tail(output) + "\n```")
    return lines


def run_device_tests() -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DEVICE_TESTS]
    status, output, seconds = _run(command)
    return [
        f"Device tests (`pytest {' '.join(DEVICE_TESTS)}`, {seconds:.0f} s): exit {status}",
        "```",
        _tail(output, 6),
        "```",
    ]


def run_benchmarks(repeats: int, rows: tuple[tuple[str, int, str], ...]) -> tuple[list[str], list[dict]]:
    results, failures = [], []
    for size, views, precision in rows:
        command = [sys.executable, "-m", "bench.benchmark_inference", "--device", "cuda", "--size", size]
        command += ["--views", str(views), "--precision", precision, "--repeats", str(repeats), "--json"]
        status, output, _ = _run(command)
        if status == 0:
            results.append(json.loads(output.strip().splitlines()[-1]))
        else:
            failures.append(f"{size} V={views} {precision}: exit {status}\n{_tail(output, 6)}")
    lines = ["| model | vertices | views | precision | forward median [min, max] | peak CUDA | vertices vs float32 |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        difference = "-"
        if "vertex_diff_max_px" in r:
            difference = f"max {r['vertex_diff_max_px']}, mean {r['vertex_diff_mean_px']} px"
        timing = f"{r['median_s'] * 1e3:.1f} ms [{r['min_s'] * 1e3:.1f}, {r['max_s'] * 1e3:.1f}]"
        lines.append(
            f"| {r['size']} | {r['vertices']:,} | {r['views']} | {r['precision']} | {timing} | "
            f"{r.get('peak_cuda_gib', '-')} GiB | {difference} |"
        )
    target = next((r for r in results if (r["size"], r["views"], r["precision"]) == ("bfm", 2, "float32")), None)
    if target is not None:
        met = "met" if target["median_s"] < TARGET_SECONDS else "NOT met"
        milliseconds = target["median_s"] * 1e3
        lines.append(
            f"\nTarget 2 views at BFM size under {TARGET_SECONDS * 1e3:.0f} ms: **{met}** ({milliseconds:.1f} ms)."
        )
    lines += [f"\nFailed: {failure}" for failure in failures]
    return lines, results


def profile_forward() -> list[str]:
    """CUDA time per operator of one 2-view BFM-size forward pass (after a warm-up), in this process."""
    from torch.profiler import ProfilerActivity, profile

    from bench.benchmark_inference import GRID_SHAPES, _inputs
    from models.face_model.procedural import synthetic_morphable_model
    from models.networks.fnrmvs_net import FNRMVSNet
    from tools.reference_weights import fill_with_reference_rule

    model = FNRMVSNet(synthetic_morphable_model(*GRID_SHAPES["bfm"]))
    fill_with_reference_rule(model)
    model.eval().to("cuda")
    inputs = _inputs(model, 2, "cuda")
    with torch.no_grad():
        model(*inputs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(*inputs)
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=50)
    return ["Profile of one 2-view BFM-size forward pass (sorted by CUDA time):", "```", table, "```"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, help="folder holding reference/ (default: see the module doc)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check_summary.md"), help="summary file (markdown)")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per benchmark row")
    parser.add_argument("--quick", action="store_true", help="only the 2-view BFM-size float32 benchmark")
    args = parser.parse_args(argv)
    if args.shared is not None and not (args.shared / REFERENCE_CASE).is_dir():
        print(f"gpu_check: --shared {args.shared} holds no {REFERENCE_CASE}: give the folder that holds reference/")
        return 2
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
        print(f"gpu_check: CUDA is not available here ({build}): nothing checked")
        return 2
    started = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    lines = [
        "# GPU check",
        "",
        f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}; "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; "
        f"Python {platform.python_version()}; commit {_run(['git', 'rev-parse', '--short', 'HEAD'], 30)[1].strip()}",
        "",
    ]
    lines += check_equivalence(_shared_dir(args.shared)) + [""]
    if not args.quick:
        lines += run_device_tests() + [""]
    table, _ = run_benchmarks(args.repeats, BENCHMARKS[:1] if args.quick else BENCHMARKS)
    lines += ["Inference benchmark (`python -m bench.benchmark_inference --device cuda`):", "", *table, ""]
    lines += profile_forward()
    lines += ["", f"Total time of the check: {time.perf_counter() - started:.0f} s."]
    summary = "\n".join(lines) + "\n"
    args.out.write_text(summary, encoding="utf-8")
    print(summary)
    print(f"summary written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
