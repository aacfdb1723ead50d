"""Equivalence check against outputs of the authors' model: ``python -m tools.check_reference CASE_DIR --mm-dir DIR``.

Builds FNRMVSNet for the morphable model in ``DIR/Out/``, fills every state-dict entry with the reference
weight rule (``tools/reference_weights.py``), runs the forward pass on ``CASE_DIR/inputs.npz`` and compares
with ``CASE_DIR/outputs.npz`` (layout: the reference README, section "outputs.npz keys"). Prints one line
per quantity (max abs error and tolerance), then ``PASS`` or ``FAIL``; exits 0 only on PASS.

Required quantities (a missing one is a FAIL): regressor outputs, vertices and image vertices of every
stage, visibility masks, colours, raw step sizes, corrected and final vertices. Internals (gradient-step
parameters, adaptive displacements, basis rows, energies) are compared when the case has them.
"""

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.errors import DFNRMVSError
from models.face_model.morphable_model import MorphableModel
from models.networks.fnrmvs_net import FNRMVSNet, FNRMVSOutput
from tools.reference_weights import fill_with_reference_rule

# Suggested tolerances of the reference README (section "Determinism, conditioning, suggested tolerances").
VERTEX_ATOL = 5e-4  # pixels, at every stage
PARAMETER_ATOL = 5e-6  # regressor outputs and the parameters after each gradient step
RAW_STEP_ATOL = 1e-6
COLOR_ATOL = 1e-3
DELTA_VERTEX_ATOL = 0.05  # model units
BASIS_ATOL = 5e-4
ENERGY_RTOL = 2e-5


class CheckError(DFNRMVSError):
    """A user-facing problem with the command's inputs (printed as one line, exit status 2)."""


@dataclass
class Comparison:
    """One compared quantity: name, largest error, tolerance, whether the tolerance is relative."""

    name: str
    error: float
    tolerance: float
    relative: bool = False
    missing: bool = False

    @property
    def passed(self) -> bool:
        return not self.missing and bool(np.isfinite(self.error)) and self.error <= self.tolerance

    def line(self) -> str:
        if self.missing:
            return f"{self.name:<32} missing from outputs.npz{'':<8} FAIL"
        kind = "rtol" if self.relative else "atol"
        status = "ok" if self.passed else "FAIL"
        return f"{self.name:<32} max_err={self.error:.3e}  {kind}={self.tolerance:.1e}  {status}"


def _as_numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _stage_keys(n_levels: int, n_steps: int) -> list[tuple[str, int, int]]:
    return [
        (f"l{level}_it{it + 1}", index, it)
        for index, level in enumerate(range(2, 2 + n_levels))
        for it in range(n_steps)
    ]


def collect_quantities(output: FNRMVSOutput) -> dict[str, tuple[Callable[[], np.ndarray], str, bool]]:
    """Our value of every quantity of outputs.npz: name -> (value, tolerance kind, required)."""
    result = output.optimisation
    regression = output.regression
    n_samples, n_views = regression.pose.shape[:2]
    quantities: dict[str, tuple[Callable[[], np.ndarray], str, bool]] = {
        "regressor_sp_norm": (lambda: _as_numpy(regression.shape_coeffs), "parameter", True),
        "regressor_ep_norm": (lambda: _as_numpy(regression.exp_coeffs), "parameter", True),
        "regressor_pose": (lambda: _as_numpy(regression.pose), "parameter", True),
        "sp_norm": (lambda: np.zeros((n_samples, 80, 1), np.float32), "parameter", False),
        "ep_norm": (lambda: np.zeros((n_samples, n_views, 64, 1), np.float32), "parameter", False),
        "pose": (lambda: _as_numpy(regression.pose), "parameter", False),
        "opt_verts_0": (lambda: _as_numpy(result.initial_vertices), "vertex", True),
        "opt_verts_img_0": (lambda: _as_numpy(result.initial_image_vertices), "vertex", True),
        "vis_mask_0": (lambda: _as_numpy(result.initial_visible.unsqueeze(2)), "mask", True),
        "full_face_vis_mask_0": (lambda: _as_numpy(result.initial_full_visible.unsqueeze(2)), "mask", True),
        "colors_0": (lambda: _as_numpy(result.initial_colors), "color", True),
        "ori_colors_0": (lambda: _as_numpy(result.initial_raw_colors), "color", True),
    }
    for index, level in enumerate(result.levels):
        quantities[f"ori_colors_{index + 1}"] = (lambda lv=level: _as_numpy(lv.final_colors), "color", True)
        quantities[f"corrected_verts_l{level.level}"] = (
            lambda i=index: _as_numpy(output.corrected_vertices[i]),
            "vertex",
            True,
        )
        rows = f"adap_B_l{level.level}_rows"
        quantities[rows] = (lambda lv=level: _as_numpy(lv.adaptive_basis), "basis", False)
        for it, step in enumerate(level.steps):
            key = f"l{level.level}_it{it + 1}"
            quantities.update(
                {
                    f"opt_verts_{key}": (lambda s=step: _as_numpy(s.vertices), "vertex", True),
                    f"opt_verts_img_{key}": (lambda s=step: _as_numpy(s.image_vertices), "vertex", True),
                    f"vis_mask_{key}": (lambda s=step: _as_numpy(s.visible.unsqueeze(2)), "mask", True),
                    f"full_face_vis_mask_{key}": (lambda s=step: _as_numpy(s.full_visible.unsqueeze(2)), "mask", True),
                    f"colors_{key}": (lambda s=step: _as_numpy(s.colors), "color", True),
                    f"raw_step_size_{key}": (lambda s=step: _as_numpy(s.raw_step_size), "raw_step", True),
                    f"delta_vert_{key}": (lambda s=step: _as_numpy(s.delta_vertices), "delta", False),
                    f"gd_sp_norm_{key}": (lambda s=step: _as_numpy(s.shape_coeffs), "parameter", False),
                    f"gd_pose_{key}": (lambda s=step: _as_numpy(s.pose), "parameter", False),
                    f"gd_ap_norm_{key}": (lambda s=step: _as_numpy(s.adaptive_coeffs), "parameter", False),
                }
            )
    steps = result.steps
    quantities["feat_loss_per_gd_call"] = (
        lambda: np.array([float(s.feature_energy) for s in steps], np.float32),
        "energy",
        False,
    )
    quantities["land_loss_per_gd_call"] = (
        lambda: np.array([float(s.landmark_energy) for s in steps], np.float32),
        "energy",
        False,
    )
    quantities["final_verts_corrected"] = (lambda: _as_numpy(output.vertices), "vertex", True)
    return quantities


_TOLERANCES = {
    "vertex": VERTEX_ATOL,
    "parameter": PARAMETER_ATOL,
    "raw_step": RAW_STEP_ATOL,
    "color": COLOR_ATOL,
    "delta": DELTA_VERTEX_ATOL,
    "basis": BASIS_ATOL,
    "energy": ENERGY_RTOL,
    "mask": 0.0,
}


def compare(output: FNRMVSOutput, reference: dict[str, np.ndarray]) -> list[Comparison]:
    """Compare every quantity, in the case's key order; adaptive-basis rows are taken at ``adap_B_row_index``."""
    comparisons = []
    for name, (value, kind, required) in collect_quantities(output).items():
        tolerance = _TOLERANCES[kind]
        if name not in reference:
            if required:
                comparisons.append(Comparison(name, float("nan"), tolerance, missing=True))
            continue
        ours = value()
        expected = reference[name]
        if kind == "basis":
            if "adap_B_row_index" not in reference:
                continue
            ours = ours[:, reference["adap_B_row_index"]]
        if ours.shape != expected.shape:
            raise CheckError(f"{name}: outputs.npz has shape {expected.shape}, the model gives {ours.shape}")
        if kind == "mask":
            error = float(np.count_nonzero(ours.astype(bool) != expected.astype(bool)))
        elif kind == "energy":
            error = float(np.max(np.abs(ours - expected) / np.maximum(np.abs(expected), 1e-12)))
        else:
            error = float(np.max(np.abs(ours.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
        comparisons.append(Comparison(name, error, tolerance, relative=kind == "energy"))
    order = {name: index for index, name in enumerate(reference)}
    return sorted(comparisons, key=lambda c: order.get(c.name, len(order)))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckError(f"{path}: file not found")
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise CheckError(f"{path}: not a readable .npz file ({error})") from error


def run_check(case_dir: Path, mm_dir: Path, device: str) -> list[Comparison]:
    """Build the rule-weighted model, run it on the case and compare."""
    inputs = _load_npz(case_dir / "inputs.npz")
    reference = _load_npz(case_dir / "outputs.npz")
    for key in ("img", "ori_img", "kpts"):
        if key not in inputs:
            raise CheckError(f"{case_dir / 'inputs.npz'}: missing key '{key}'")
    model = FNRMVSNet(MorphableModel.from_face3d_dir(mm_dir))
    fill_with_reference_rule(model)
    model.eval().to(device)
    tensors = [torch.from_numpy(inputs[key]).to(device) for key in ("img", "ori_img", "kpts")]
    with torch.no_grad():
        output = model(*tensors)
    return compare(output, reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case_dir", type=Path, help="folder with inputs.npz and outputs.npz of the original model")
    parser.add_argument("--mm-dir", type=Path, required=True, help="3DMM base directory (the original's MM_base_dir)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    try:
        comparisons = run_check(args.case_dir, args.mm_dir, args.device)
    except DFNRMVSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for comparison in comparisons:
        print(comparison.line())
    passed = all(c.passed for c in comparisons)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
