"""``demo.py`` end to end: the default fitting, the learned path, and every kind of bad input."""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy import ndimage

import demo
from models.face_model.default_model import load_default_model
from models.face_model.morphable_model import MorphableModel
from models.geometry.camera import to_image
from models.geometry.mesh_ops import crop_mesh
from models.geometry.rasterizer import rasterize
from models.io.case_outputs import staged_directory
from models.io.landmark_detectors import MediaPipeLandmarks
from models.io.mesh_exports import ExportOptions, export_file_names
from models.io.staging import SIGTERM_EXIT_STATUS
from models.networks.checkpoint import save_state_dict
from models.networks.fnrmvs_net import FNRMVSNet
from models.reconstruction import Reconstruction
from tools.reference_weights import fill_with_reference_rule

REPO_ROOT = Path(__file__).resolve().parents[1]
VIEW_FILES = (
    "face_full_view{}.obj",
    "face_valid_view{}.obj",
    "vis_view{}.jpg",
    "crop_view{}.png",
    "landmarks_view{}.txt",
)
# Overlay check: JPEG ringing stays within this many pixels of the mesh's silhouette.
SILHOUETTE_MARGIN = 4


class Run(NamedTuple):
    status: int
    stdout: str
    stderr: str


def run_demo(*args: str) -> Run:
    """``demo.main`` with its printed output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = demo.main(list(args))
    return Run(status, out.getvalue(), err.getvalue())


def copy_photos(source: Path, folder: Path, count: int | None = None) -> Path:
    folder.mkdir(parents=True)
    for photo in sorted(source.glob("*.jpg"))[:count]:
        shutil.copy(photo, folder / photo.name)
    return folder


def check_case(
    folder: Path,
    mm: MorphableModel,
    views: int,
    method: str,
    landmarks: str = "dlib",
    exports: ExportOptions | None = None,
    kept: tuple[str, ...] = (),
) -> dict:
    """Check every output of a case folder (landmarks: the backend expected for every view; ``kept``: the user's
    files expected beside them; the export files, all by default, are tests/io/test_mesh_exports.py's); returns
    its result.json."""
    expected = {"result.json", *kept, *(name.format(i) for name in VIEW_FILES for i in range(views))}
    assert {p.name for p in folder.iterdir()} == expected | set(export_file_names(views, exports))
    result = json.loads((folder / "result.json").read_text())
    listed = [name for value in result["exports"]["files"].values() for name in np.atleast_1d(value)]
    assert sorted(listed) == sorted(export_file_names(views, exports))
    assert result["method"] == method and result["landmarks"] == landmarks and len(result["views"]) == views
    triangles = mm.triangles.numpy()
    mask = mm.face_region_mask_no_nose_hole.numpy()
    for i in range(views):
        full = trimesh.load(folder / f"face_full_view{i}.obj", process=False)
        valid = trimesh.load(folder / f"face_valid_view{i}.obj", process=False)
        assert full.vertices.shape == (mm.num_vertices, 3)
        np.testing.assert_array_equal(full.faces, triangles[:, ::-1])
        np.testing.assert_array_equal(valid.vertices, full.vertices[mask])
        np.testing.assert_array_equal(valid.faces, crop_mesh(full.vertices, full.faces, mask).triangles)
        assert len(valid.faces) < len(full.faces)

        crop = np.asarray(Image.open(folder / f"crop_view{i}.png")).astype(np.int32)
        overlay = np.asarray(Image.open(folder / f"vis_view{i}.jpg")).astype(np.int32)
        image_vertices = to_image(torch.from_numpy(np.asarray(valid.vertices, dtype=np.float32)))
        covered = (rasterize(image_vertices, torch.from_numpy(valid.faces), 256, 256).triangle_ids >= 0).numpy()
        assert covered.mean() > 0.1
        near = ndimage.binary_dilation(covered, iterations=SILHOUETTE_MARGIN)
        difference = np.abs(overlay - crop).max(axis=2)
        assert difference[~near].mean() < 3 and np.percentile(difference[~near], 99) < 15
        assert difference[covered].mean() > 20

        points = np.loadtxt(folder / f"landmarks_view{i}.txt")
        assert points.shape == (468 if landmarks == "mediapipe" else 68, 2)
        assert ((points > 0) & (points < 256)).all()
        view = result["views"][i]
        assert len(view["pose"]["normalised"]) == 6 and view["full_mesh_vertices"] == mm.num_vertices
        assert view["crop_box_padded"][2] - view["crop_box_padded"][0] >= 200
    return result


@pytest.fixture(scope="module")
def default_run(examples_dir, tmp_path_factory) -> tuple[Run, Path]:
    """``python demo.py`` without arguments, in a folder holding examples/case0 (plus a stray file)."""
    work = tmp_path_factory.mktemp("default")
    case = copy_photos(examples_dir / "case0", work / "examples" / "case0")
    (case / "notes.md").write_text("not a photo")
    previous = Path.cwd()
    os.chdir(work)
    try:
        run = run_demo()
    finally:
        os.chdir(previous)
    return run, work / "out_dir"


def test_default_path_on_case0(default_run):
    run, out = default_run
    assert run.status == 0, run.stderr
    assert f"results in {Path('out_dir')}/: case0" in run.stdout
    assert "notes.md: not an image" in run.stderr
    result = check_case(out / "case0", load_default_model(), 2, "fitting", landmarks="mediapipe")
    assert result["model"].startswith("default") and "landmark_fallback" not in result
    assert [Path(v["input"]).name for v in result["views"]] == ["case0_in0.jpg", "case0_in1.jpg"]
    assert result["details"]["landmark_term"] == "mediapipe468"
    final = result["details"]["stages"][-1]
    assert max(final["landmark_rms_px"]) < 3.0


def test_dlib_takes_over_where_mediapipe_finds_no_face(examples_dir, tmp_path, monkeypatch):
    copy_photos(examples_dir / "case1", tmp_path / "in" / "case1")
    original = MediaPipeLandmarks.landmarks

    def misses_the_second_view(self, image):
        self.calls = getattr(self, "calls", 0) + 1
        return None if self.calls == 2 else original(self, image)

    monkeypatch.setattr(MediaPipeLandmarks, "landmarks", misses_the_second_view)
    run = run_demo("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert run.status == 0, run.stderr
    result = check_case(tmp_path / "out" / "case1", load_default_model(), 2, "fitting")
    assert result["landmark_fallback"].endswith(
        "case1_in1.jpg: mediapipe found no face in its crop; dlib's 68 landmarks used for every view"
    )
    assert result["details"]["landmark_term"] == "ibug68"
    assert [v["landmark_source"] for v in result["views"]] == ["dlib", "dlib"]


def test_photo_txt_with_468_points_is_fitted_as_dense_landmarks(tmp_path):
    """A generated case whose landmark files hold the true 468 MediaPipe points: no detector runs, the dense term
    fits them (to ~2 px: the case was made with an earlier mean and has detail the bases cannot express)."""
    case = _generated_case(tmp_path / "in" / "case2")
    mm = load_default_model()
    truth = np.load(REPO_ROOT / "examples" / "case2" / "ground_truth" / "sample.npz")["vertices"]
    points = to_image(mm.dense_landmarks.points(torch.from_numpy(truth).double()))[..., :2].numpy()  # (2, 468, 2)
    for view, view_points in enumerate(points):
        np.savetxt(case / f"view{view}.txt", view_points)
    run = run_demo("--input", str(case), "--output", str(tmp_path / "out"))
    assert run.status == 0, run.stderr
    result = json.loads((tmp_path / "out" / "case2" / "result.json").read_text())
    assert result["details"]["landmark_term"] == "mediapipe468" and "landmark_fallback" not in result
    assert [v["landmark_source"] for v in result["views"]] == ["file", "file"]
    assert max(result["details"]["stages"][-1]["landmark_rms_px"]) < 2.5
    assert np.loadtxt(tmp_path / "out" / "case2" / "landmarks_view1.txt").shape == (468, 2)


def test_mediapipe_is_refused_for_models_without_a_correspondence(examples_dir, reference_dir, tmp_path):
    copy_photos(examples_dir / "case0", tmp_path / "in" / "case0")
    common = ("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--mm-dir", str(reference_dir))
    run = run_demo(*common, "--landmarks", "mediapipe")
    _assert_refused(
        run, "--landmarks mediapipe: the fitting method with this model uses 68 landmarks", tmp_path / "out"
    )
    run = run_demo(*common, "--dense-landmarks", str(tmp_path / "none.npz"))
    _assert_refused(run, "none.npz: dense landmark correspondence file not found", tmp_path / "out")


@pytest.fixture(scope="module")
def learned_run(examples_dir, reference_dir, tmp_path_factory) -> tuple[Run, Path]:
    """The learned path on case0 and on a one-view case, over a folder holding a user's file (--overwrite)."""
    work = tmp_path_factory.mktemp("learned")
    model = FNRMVSNet(MorphableModel.load(reference_dir))
    fill_with_reference_rule(model)
    save_state_dict(model, work / "reference.pth")
    copy_photos(examples_dir / "case0", work / "in" / "case0")
    copy_photos(examples_dir / "case1", work / "in" / "single", count=1)
    (work / "out" / "case0").mkdir(parents=True)
    (work / "out" / "case0" / "stale.txt").write_text("from an earlier run")
    run = run_demo(
        "--input", str(work / "in"), "--output", str(work / "out"), "--checkpoint", str(work / "reference.pth"),
        "--mm-dir", str(reference_dir), "--device", "cpu", "--overwrite",
    )  # fmt: skip
    return run, work / "out"


def test_learned_path_on_case0(learned_run, reference_dir):
    run, out = learned_run
    check_case(out / "case0", MorphableModel.load(reference_dir), 2, "learned", kept=("stale.txt",))
    assert (out / "case0" / "stale.txt").read_text() == "from an earlier run"  # --overwrite keeps others' files


def test_learned_path_in_reduced_precision(learned_run, reference_dir, tmp_path):
    """--precision bfloat16: convolutions in bfloat16, recorded in result.json, the meshes near float32's."""
    _, out = learned_run
    photos = copy_photos(out.parent / "in" / "case0", tmp_path / "in" / "case0")
    run = run_demo(
        "--input", str(photos.parent), "--output", str(tmp_path / "out"), "--checkpoint",
        str(out.parent / "reference.pth"), "--mm-dir", str(reference_dir), "--device", "cpu",
        "--precision", "bfloat16", "--no-texture", "--no-model-frame", "--no-neutral",
    )  # fmt: skip
    assert run.status == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "out" / "case0" / "result.json").read_text())
    assert result["details"]["precision"] == "bfloat16"
    assert json.loads((out / "case0" / "result.json").read_text())["details"]["precision"] == "float32"
    for view in range(2):
        reduced = trimesh.load(tmp_path / "out" / "case0" / f"face_full_view{view}.obj", process=False).vertices
        full = trimesh.load(out / "case0" / f"face_full_view{view}.obj", process=False).vertices
        difference = np.abs(reduced - full).max()
        assert 0 < difference < 5.0  # bfloat16 convolutions change the result, by pixels at most


def test_precision_flag_refusals(examples_dir, reference_dir, tmp_path):
    common = ("--input", str(examples_dir / "case0"), "--output", str(tmp_path / "out"))
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()) as err:
        demo.main([*common, "--precision", "bfloat16"])
    assert info.value.code == 2 and "--precision bfloat16 applies to the learned network" in err.getvalue()
    run = run_demo(
        *common, "--checkpoint", str(tmp_path / "any.pth"), "--mm-dir", str(reference_dir), "--device", "cpu",
        "--precision", "float16",
    )  # fmt: skip
    _assert_refused(run, "--precision float16 needs a CUDA device (this run uses cpu)", tmp_path / "out")


def test_learned_path_refuses_one_view_and_leaves_nothing(learned_run):
    run, out = learned_run
    assert run.status == 1
    assert "single: the learned network needs at least 2 views, found 1" in run.stdout
    assert "1 of 2 case(s) reconstructed" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["case0"]


@pytest.fixture(scope="module")
def awkward_run(examples_dir, tmp_path_factory) -> tuple[Run, Path]:
    """Fitting on: grey + EXIF-rotated and RGBA views of different sizes; a corrupt photo; a photo without a face."""
    work = tmp_path_factory.mktemp("awkward")
    photos = sorted((examples_dir / "case2").glob("*.jpg"))
    mixed = work / "in" / "mixed"
    mixed.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 8  # the pixels are stored turned 90 degrees clockwise; orientation 8 turns them back
    grey = Image.open(photos[0]).convert("L").resize((300, 300)).transpose(Image.Transpose.ROTATE_270)
    grey.save(mixed / "view0.jpg", exif=exif, quality=95)
    Image.open(photos[1]).convert("RGBA").resize((200, 200)).save(mixed / "view1.png")
    broken = copy_photos(examples_dir / "case1", work / "in" / "broken")
    (broken / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    noface = work / "in" / "noface"
    noface.mkdir()
    Image.new("RGB", (240, 240), (90, 120, 160)).save(noface / "wall.png")
    shutil.copy(photos[0], noface / "face.jpg")
    run = run_demo("--input", str(work / "in"), "--output", str(work / "out"), "--device", "cpu")
    return run, work / "out"


def test_awkward_photos_are_handled(awkward_run):
    run, out = awkward_run
    result = check_case(out / "mixed", load_default_model(), 2, "fitting", landmarks="mediapipe")
    assert [v["photo_size"] for v in result["views"]] == [[300, 300], [200, 200]]


def test_failing_cases_leave_nothing_and_the_others_continue(awkward_run):
    run, out = awkward_run
    assert run.status == 1
    assert "1 of 3 case(s) reconstructed" in run.stdout
    assert "zz_corrupt.jpg: not a readable image" in run.stdout
    assert "wall.png: no face found" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["mixed"]


def test_one_view_runs_with_a_warning(examples_dir, reference_dir, tmp_path):
    copy_photos(examples_dir / "case4", tmp_path / "in" / "solo", count=1)
    run = run_demo("--input", str(tmp_path / "in" / "solo"), "--output", str(tmp_path / "out"), "--mm-dir",
                   str(reference_dir))  # fmt: skip
    assert run.status == 0, run.stderr
    assert "solo: one view only; multi-view consistency needs at least 2" in run.stderr
    result = check_case(tmp_path / "out" / "solo", MorphableModel.load(reference_dir), 1, "fitting")
    assert result["model"] == str(reference_dir) and result["details"]["single_view"]


def _assert_refused(run: Run, message: str, out: Path) -> None:
    assert run.status == 2
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], run.stderr
    assert not out.exists()


def test_missing_and_empty_input_folders(tmp_path):
    out = tmp_path / "out"
    _assert_refused(
        run_demo("--input", str(tmp_path / "nowhere"), "--output", str(out)), "nowhere: no such photo or folder", out
    )
    (tmp_path / "empty").mkdir()
    _assert_refused(run_demo("--input", str(tmp_path / "empty"), "--output", str(out)), "holds no images", out)


def test_existing_output_is_refused_without_overwrite(examples_dir, tmp_path):
    copy_photos(examples_dir / "case0", tmp_path / "in" / "case0")
    (tmp_path / "out" / "case0").mkdir(parents=True)
    (tmp_path / "out" / "case0" / "mine.obj").write_text("keep me")
    run = run_demo("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert run.status == 2 and "case0 already exists and is not this demo's result of these photos" in run.stderr
    assert [p.name for p in (tmp_path / "out" / "case0").iterdir()] == ["mine.obj"]


def test_rerun_refreshes_the_earlier_result_of_the_same_photos(tmp_path):
    """As `python demo.py` on a fresh clone refreshes the shipped out_dir/: same photos, same folder."""
    case = tmp_path / "in" / "case2"
    shutil.copytree(REPO_ROOT / "examples" / "case2", case, ignore=shutil.ignore_patterns("ground_truth"))
    out = tmp_path / "out"
    assert run_demo("--input", str(case), "--output", str(out)).status == 0
    first = (out / "case2" / "result.json").read_text()
    assert run_demo("--input", str(case), "--output", str(out)).status == 0
    assert (out / "case2" / "result.json").read_text() != first  # rewritten (timings differ)
    # other photos under the same case name are someone else's result: refused
    (case / "view1.png").unlink()
    (case / "view1.txt").unlink()
    run = run_demo("--input", str(case), "--output", str(out))
    assert run.status == 2 and "is not this demo's result of these photos" in run.stderr
    assert (out / "case2" / "face_full_view1.obj").exists()


def test_checkpoint_and_model_problems(examples_dir, reference_dir, tmp_path):
    copy_photos(examples_dir / "case0", tmp_path / "in" / "case0")
    out = tmp_path / "out"
    common = ("--input", str(tmp_path / "in"), "--output", str(out))
    missing = tmp_path / "none.pth"
    run = run_demo(*common, "--checkpoint", str(missing), "--mm-dir", str(reference_dir))
    _assert_refused(run, f"{missing}: checkpoint not found", out)
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "other.pth")
    run = run_demo(*common, "--checkpoint", str(tmp_path / "other.pth"), "--mm-dir", str(reference_dir))
    _assert_refused(run, "other.pth: does not match FNRMVSNet: missing keys", out)
    (tmp_path / "no_model").mkdir()
    run = run_demo(*common, "--mm-dir", str(tmp_path / "no_model"))
    _assert_refused(run, "BFM.mat: file not found", out)
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()) as err:
        demo.main([*common, "--checkpoint", str(missing)])
    assert info.value.code == 2 and "--checkpoint needs --mm-dir" in err.getvalue()


def test_fan_backend_without_its_package(examples_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    copy_photos(examples_dir / "case0", tmp_path / "in" / "case0")
    run = run_demo("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--landmarks", "fan")
    _assert_refused(run, "--landmarks fan needs face-alignment: pip install face-alignment", tmp_path / "out")
    assert "Traceback" not in run.stderr


def test_help_explains_every_flag():
    done = subprocess.run([sys.executable, "demo.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    flags = ("--input", "--output", "--checkpoint", "--mm-dir", "--device", "--landmarks", "--dense-landmarks")
    flags += ("--precision",)
    for flag in (*flags, "--overwrite", "--strict"):
        assert flag in done.stdout
    for flag in ("--no-texture", "--no-albedo", "--texture-size", "--no-model-frame", "--no-neutral"):
        assert flag in done.stdout


def test_extra_outputs_can_be_switched_off(examples_dir, tmp_path):
    case = copy_photos(examples_dir / "case1", tmp_path / "in" / "case0")
    out = tmp_path / "out"
    run = run_demo("--input", str(case), "--output", str(out), "--no-model-frame", "--no-neutral", "--no-albedo",
                   "--texture-size", "256")  # fmt: skip
    assert run.status == 0, run.stderr
    options = ExportOptions(texture_size=256, albedo=False, model_frame=False, neutral=False)
    result = check_case(out / "case0", load_default_model(), 2, "fitting", landmarks="mediapipe", exports=options)
    assert result["exports"]["texture"]["size"] == 256
    assert max(result["exports"]["texture"]["reprojection_mae"]) < 0.05
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()) as err:
        demo.main(["--input", str(case), "--output", str(out), "--texture-size", "9"])
    assert info.value.code == 2 and "--texture-size: 9 is outside 16..8192" in err.getvalue()


def test_a_failed_case_leaves_no_output_folder(tmp_path):
    case = tmp_path / "in" / "photos"
    case.mkdir(parents=True)
    (case / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "new" / "out"
    run = run_demo("--input", str(case), "--output", str(out))
    assert run.status == 1 and "a.png: not a readable image" in run.stdout
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------- reliability
def _generated_case(folder: Path, name: str = "case2") -> Path:
    """A generated example case (photos with their landmark files: no detector needed)."""
    shutil.copytree(REPO_ROOT / "examples" / name, folder, ignore=shutil.ignore_patterns("ground_truth"))
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_holding_the_input_is_refused_and_nothing_changes(tmp_path, monkeypatch):
    photos = _generated_case(tmp_path / "D" / "case2")
    before = _snapshot(tmp_path / "D")
    monkeypatch.setattr(demo, "reconstruct", lambda *a, **k: pytest.fail("no case may run"))
    for source, output in ((photos, tmp_path / "D"), (photos, photos), (tmp_path / "D", tmp_path / "D")):
        run = run_demo("--input", str(source), "--output", str(output), "--overwrite")
        assert run.status == 2 and "would hold its input photos" in run.stderr, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: --output {output}") and "Traceback" not in run.stderr
        assert _snapshot(tmp_path / "D") == before


def test_a_refresh_keeps_the_users_own_files(tmp_path):
    case = _generated_case(tmp_path / "in" / "case2")
    out = tmp_path / "out"
    assert run_demo("--input", str(case), "--output", str(out)).status == 0
    (out / "case2" / "my_notes.txt").write_text("mine")
    (out / "case2" / "renders").mkdir()
    (out / "case2" / "renders" / "a.png").write_bytes(b"png")
    assert run_demo("--input", str(case), "--output", str(out)).status == 0
    assert (out / "case2" / "my_notes.txt").read_text() == "mine"
    assert (out / "case2" / "renders" / "a.png").read_bytes() == b"png"
    # the earlier run's per-view exports were the demo's files: a run without them drops them
    assert (out / "case2" / "face_textured_view1.obj").exists()
    assert run_demo("--input", str(case), "--output", str(out), "--no-texture").status == 0
    assert not (out / "case2" / "face_textured_view1.obj").exists()
    assert (out / "case2" / "my_notes.txt").read_text() == "mine"
    # with --overwrite, a folder that was not a demo result keeps its files too
    (tmp_path / "other" / "case2").mkdir(parents=True)
    (tmp_path / "other" / "case2" / "keep.obj").write_text("keep")
    assert run_demo("--input", str(case), "--output", str(tmp_path / "other"), "--overwrite").status == 0
    assert (tmp_path / "other" / "case2" / "keep.obj").read_text() == "keep"
    assert (tmp_path / "other" / "case2" / "face_full_view0.obj").exists()


def test_photos_beside_case_folders_are_refused(tmp_path):
    _generated_case(tmp_path / "in" / "case2")
    shutil.copy(REPO_ROOT / "examples" / "case0" / "view0.png", tmp_path / "in" / "stray.png")
    run = run_demo("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    _assert_refused(run, "mixes photos (stray.png, ...) and case folders (case2, ...)", tmp_path / "out")


def test_a_named_pipe_is_skipped_not_read(tmp_path):
    case = _generated_case(tmp_path / "in" / "case2")
    os.mkfifo(case / "x.jpg")
    run = run_demo("--input", str(case), "--output", str(tmp_path / "out"))
    assert run.status == 0, run.stderr
    assert "x.jpg: not a regular file" in run.stderr
    result = json.loads((tmp_path / "out" / "case2" / "result.json").read_text())
    assert len(result["views"]) == 2


def test_a_single_photo_is_one_case(tmp_path):
    case = _generated_case(tmp_path / "in" / "case2")
    run = run_demo("--input", str(case / "view0.png"), "--output", str(tmp_path / "out"))
    assert run.status == 0, run.stderr
    assert len(json.loads((tmp_path / "out" / "view0" / "result.json").read_text())["views"]) == 1
    (tmp_path / "notes.txt").write_text("x")
    _assert_refused(
        run_demo("--input", str(tmp_path / "notes.txt"), "--output", str(tmp_path / "o2")),
        "not a photo",
        tmp_path / "o2",
    )


def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    case = _generated_case(tmp_path / "in" / "case2")
    (tmp_path / "taken").write_text("a file")
    monkeypatch.setattr(demo, "reconstruct", lambda *a, **k: pytest.fail("no case may run"))
    for output in (tmp_path / "taken", tmp_path / "taken" / "below"):
        run = run_demo("--input", str(case), "--output", str(output))
        assert run.status == 2 and f"--output {output}: {tmp_path / 'taken'} is a file" in run.stderr
    assert (tmp_path / "taken").read_text() == "a file"


def test_ctrl_c_and_sigterm_leave_no_partial_case(tmp_path, monkeypatch):
    case = _generated_case(tmp_path / "in" / "case2")
    out = tmp_path / "out"

    def interrupted(self, folder, overwrite=False, exports=None):
        with staged_directory(Path(folder), overwrite) as staging:
            (staging / "half.obj").write_text("half")
            raise KeyboardInterrupt

    monkeypatch.setattr(Reconstruction, "save", interrupted)
    run = run_demo("--input", str(case), "--output", str(out))
    assert run.status == demo.INTERRUPTED_EXIT_STATUS and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("interrupted")
    assert not out.exists()

    def terminated(self, folder, overwrite=False, exports=None):
        with staged_directory(Path(folder), overwrite) as staging:
            (staging / "half.obj").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Reconstruction, "save", terminated)
    with pytest.raises(SystemExit) as ended:
        run_demo("--input", str(case), "--output", str(out))
    assert ended.value.code == SIGTERM_EXIT_STATUS and not out.exists()


@pytest.mark.parametrize(
    ("scale", "message"),
    [(300.0, "more than 1.5x the"), (0.005, "too small for a face"), (0.0, "span 0 px, too small for a face")],
)
def test_an_implausible_landmark_file_fails_its_case_naming_the_file(tmp_path, scale, message):
    case = _generated_case(tmp_path / "in" / "case2")
    points = np.loadtxt(case / "view1.txt")
    np.savetxt(case / "view1.txt", points.mean(axis=0) + (points - points.mean(axis=0)) * scale)
    run = run_demo("--input", str(case), "--output", str(tmp_path / "out"))
    assert run.status == 1 and f"{case / 'view1.txt'}: the landmarks span" in run.stdout and message in run.stdout
    assert "Traceback" not in run.stdout + run.stderr and not (tmp_path / "out").exists()


def _two_people_case(examples_dir, folder: Path) -> Path:
    """view0: case0's person beside case1's larger one; view1: case0's person alone."""
    folder.mkdir(parents=True)
    canvas = np.full((300, 560, 3), 128, dtype=np.uint8)
    for (top, left, side), name in (((30, 10, 240), "case0/case0_in0.jpg"), ((10, 270, 280), "case1/case1_in0.jpg")):
        face = Image.open(examples_dir / name).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        canvas[top : top + side, left : left + side] = np.asarray(face)
    Image.fromarray(canvas).save(folder / "view0.png")
    shutil.copy(examples_dir / "case0" / "case0_in1.jpg", folder / "view1.jpg")
    return folder


def test_two_people_in_a_photo_the_same_person_is_taken_or_strict_refuses(examples_dir, tmp_path):
    case = _two_people_case(examples_dir, tmp_path / "in" / "pair")
    run = run_demo("--input", str(case), "--output", str(tmp_path / "out"), "--no-texture", "--no-neutral")
    assert run.status == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "out" / "pair" / "result.json").read_text())
    first = result["views"][0]
    assert "face 2 by size taken as the person" in first["face_note"] and result["views"][1]["face_note"] is None
    assert first["crop_box_photo"][2] < 300  # the crop lies on the left person, not the larger right one
    assert result["warnings"] == [f"{case / 'view0.png'}: {first['face_note']}"]

    run = run_demo("--input", str(case), "--output", str(tmp_path / "strict"), "--strict")
    assert run.status == 1 and f"{case / 'view0.png'}: 2 faces found (--strict refuses" in run.stdout
    assert not (tmp_path / "strict").exists()
