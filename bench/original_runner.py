"""Times the authors' FNRMVSNet forward pass; run by ``bench.benchmark_inference --original`` in its own process.

    python bench/original_runner.py WORK_DIR VIEWS REPEATS ORIGINAL_DIR [EXTRA_PATH ...]

A standalone script (it imports nothing of this project, so that the original's top-level packages, among them
``train``, cannot collide with ours): ``ORIGINAL_DIR`` is a scratch copy of the authors' code (face3d's Cython
extension built there), ``EXTRA_PATH`` folders go in front of it on ``sys.path`` (stubs of modules the original
imports but its forward pass does not use, e.g. torchvision); the reference README's run-time patch
``np.float = float; np.int = int`` is applied here. ``WORK_DIR`` holds what the parent wrote: ``Out/`` (the
morphable model in the face3d layout; the original hard-codes 53,215 vertices), ``weights.pt`` (a state dict
in the authors' key layout) and ``inputs_v{VIEWS}.pt`` (images, raw images, landmarks, N = 1). Prints one JSON
row and writes the last step's vertices (N, V, n, 3) to ``original_vertices_v{VIEWS}.npy``.
"""

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str]) -> int:
    work_dir, views, repeats, original_dir = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    sys.path[:0] = [*argv[4:], original_dir]
    # the reference README's run-time patch 1 (aliases removed from numpy >= 1.24)
    setattr(np, "float", float)  # noqa: B010
    setattr(np, "int", int)  # noqa: B010
    start = time.perf_counter()
    from networks.sub_nets import FNRMVSNet

    model = FNRMVSNet(opt_step_size=1e-2, MM_base_dir=str(work_dir))
    model.load_state_dict(torch.load(work_dir / "weights.pt"), strict=True)
    model.eval()
    model.training = False
    build_seconds = time.perf_counter() - start
    images, raw_images, landmarks = torch.load(work_dir / f"inputs_v{views}.pt")
    timings, cpu_timings = [], []
    for _ in range(repeats + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            outputs = model.forward(images, raw_images, landmarks, None, False)
        timings.append(time.perf_counter() - start)
        cpu_timings.append(time.process_time() - cpu_start)
    np.save(work_dir / f"original_vertices_v{views}.npy", outputs[8][-1][-1].detach().numpy())
    timings, cpu_timings = timings[1:], cpu_timings[1:]
    row = {
        "who": "original",
        "views": views,
        "threads": torch.get_num_threads(),
        "build_s": round(build_seconds, 2),
        "median_s": round(statistics.median(timings), 3),
        "min_s": round(min(timings), 3),
        "max_s": round(max(timings), 3),
        "cpu_s": round(statistics.median(cpu_timings), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
