"""The photos-to-meshes API (models.reconstruction): files or arrays in, a Reconstruction out, saved like the demo."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from models.errors import InputError, OutputError, ReconstructionError
from models.face_model.procedural import synthetic_morphable_model
from models.fitting.multiview_fit import FitConfig, StageConfig
from models.networks.checkpoint import save_state_dict
from models.networks.fnrmvs_net import FNRMVSNet
from models.reconstruction import FittingReconstructor, LearnedReconstructor, reconstruct
from tools.reference_weights import fill_with_reference_rule

REPO_ROOT = Path(__file__).resolve().parents[1]
CASE = REPO_ROOT / "examples" / "case0"
# A short fit: the API is under test here, not the fit's accuracy.
QUICK = FitConfig(stages=(StageConfig("pose", rounds=1, iterations=5, fit_shape=False, fit_expression=False),))


class NoDetector:
    """A detector that must not be asked: every photo comes with its landmarks."""

    name = "none"

    def face_box(self, image):
        raise AssertionError("detection was not expected")

    def landmarks(self, image):
        raise AssertionError("detection was not expected")


@pytest.fixture(scope="module")
def fitting():
    return FittingReconstructor(config=QUICK)


def test_files_in_meshes_out(fitting, tmp_path):
    photos = sorted(CASE.glob("view*.png"))
    result = reconstruct(photos, fitting, NoDetector())
    n = fitting.model.num_vertices
    assert result.vertices.shape == (2, n, 3) and np.isfinite(result.vertices).all()
    assert result.poses.shape == (2, 6) and result.shape_coeffs.shape == (80,) and result.exp_coeffs.shape == (2, 64)
    assert result.name == "case0" and [view.landmark_source for view in result.views] == ["file", "file"]
    assert set(result.timings) == {"preprocess", "reconstruct"}
    # the mesh lands on the landmarks it was fitted to (crop pixels)
    crop_points = result.vertices[:, fitting.model.landmark_indices.numpy(), :2] * (1, -1) + (128, 127)
    landmarks = np.stack([view.landmarks for view in result.views])
    assert np.median(np.linalg.norm(crop_points - landmarks, axis=-1)) < 6.0

    folder = result.save(tmp_path / "out")
    record = json.loads((folder / "result.json").read_text())
    assert record["method"] == "fitting" and len(record["views"]) == 2
    assert len(record["coefficients"]["shape"]) == 80
    assert (folder / "face_full_view1.obj").is_file() and (folder / "vis_view0.jpg").is_file()
    assert record["exports"]["files"]["neutral_mesh"] == "face_neutral.obj" and (folder / "texture.png").is_file()
    result.save(folder)  # the same photos again: the earlier result is refreshed
    with pytest.raises(OutputError, match="already exists"):
        reconstruct([photos[0]], fitting, NoDetector(), name="other").save(folder)


def test_arrays_with_landmarks(fitting):
    photos = sorted(CASE.glob("view*.png"))
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in photos]
    points = [np.loadtxt(path.with_suffix(".txt")) for path in photos]
    result = reconstruct(arrays, fitting, NoDetector(), landmarks=points, name="person")
    from_files = reconstruct(photos, fitting, NoDetector())
    assert result.views[0].path is None and result.views[0].landmark_source == "given"
    np.testing.assert_allclose(result.vertices, from_files.vertices, atol=1e-4)


def test_bad_inputs(fitting):
    with pytest.raises(InputError, match="no photos"):
        reconstruct([], fitting, NoDetector())
    with pytest.raises(InputError, match="uint8 RGB"):
        reconstruct([np.zeros((300, 300), np.uint8)], fitting, NoDetector(), landmarks=[np.zeros((68, 2))])
    with pytest.raises(InputError, match="2 photos but 1 landmark sets"):
        reconstruct([np.zeros((300, 300, 3), np.uint8)] * 2, fitting, NoDetector(), landmarks=[np.zeros((68, 2))])


def test_learned_reconstructor(tmp_path):
    mm = synthetic_morphable_model(20, 20)
    network = FNRMVSNet(mm)
    fill_with_reference_rule(network)
    save_state_dict(network, tmp_path / "weights.pth")
    learned = LearnedReconstructor(mm, tmp_path / "weights.pth", model_name="grid")
    photos = sorted(CASE.glob("view*.png"))
    result = reconstruct(photos, learned, NoDetector())
    assert result.method == "learned" and result.checkpoint.endswith("weights.pth")
    assert result.vertices.shape == (2, mm.num_vertices, 3) and np.isfinite(result.vertices).all()
    assert len(result.details["energies"]) == 9 and result.exp_coeffs is None
    # its identity: the last step's shape coefficients, whose mesh is the neutral one (no adaptive displacement)
    assert result.shape_coeffs.shape == (mm.shape_std.shape[0],) and np.abs(result.shape_coeffs).max() > 0
    neutral = mm.vertices(torch.from_numpy(result.shape_coeffs)[None])[0].double().numpy()
    np.testing.assert_allclose(result.neutral_vertices, neutral, atol=1e-3)
    folder = result.save(tmp_path / "learned")
    files = json.loads((folder / "result.json").read_text())["exports"]["files"]
    assert {"texture", "albedo", "neutral_mesh", "textured_meshes", "model_frame_meshes"} <= set(files)
    with pytest.raises(InputError, match="at least 2 views"):
        reconstruct(photos[:1], learned, NoDetector())


def test_package_exports_the_api():
    assert models.reconstruct is reconstruct
    default = models.load_default_model()
    assert isinstance(default, models.MorphableModel) and default.num_vertices > 1000


def test_non_finite_results_are_never_written(fitting, tmp_path):
    """A method that ends with NaN (a numerical blow-up) fails the case instead of writing NaN meshes."""

    class BlowingUp:
        method, min_views, checkpoint, model_name = "fitting", 1, None, "default"
        model, device = fitting.model, fitting.device

        def run(self, inputs):
            output = fitting.run(inputs)
            vertices = output.vertices.copy()
            vertices[0, 5, 1] = np.nan
            return output._replace(vertices=vertices)

    with pytest.raises(ReconstructionError, match="non-finite vertices or poses"):
        reconstruct(sorted(CASE.glob("view*.png")), BlowingUp(), NoDetector())
