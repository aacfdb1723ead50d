"""Tests of the synthetic sample generator (train/synthetic.py) and the example writer (tools/make_examples.py)."""

import json
import shutil

import numpy as np
import pytest
import torch

from models.errors import OutputError, SyntheticDataError
from models.face_model.procedural import synthetic_morphable_model
from models.geometry.camera import IMAGE_SIZE, pose_vertices, to_image
from models.geometry.normals import vertex_normals
from models.geometry.rasterizer import rasterize
from models.io.mesh_io import read_obj
from models.synthesis.multiview_sample import SampleConfig, render_sample
from tools import make_examples
from train import synthetic
from train.synthetic import generate_dataset, read_sample, write_sample

# The grid model's random bases are per-vertex noise; a small identity std keeps its surface smooth.
CONFIG = SampleConfig(views=3, identity_sigma=0.02)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The tensors here are small: one thread avoids thread contention on a busy machine (10x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mm():
    return synthetic_morphable_model(40, 44)


@pytest.fixture(scope="module")
def sample(mm):
    return render_sample(mm, np.random.default_rng(7), CONFIG)


def _arrays(sample):
    return {key: getattr(sample, key) for key in (*synthetic.ARRAY_KEYS, "images")}


def test_shapes_and_dtypes(mm, sample):
    n, views = mm.num_vertices, CONFIG.views
    expected = {
        "images": ((views, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
        "landmarks": ((views, 68, 2), np.float32),
        "vertices": ((views, n, 3), np.float32),
        "landmarks3d": ((views, 68, 3), np.float32),
        "shape_coeffs": ((80,), np.float32),
        "exp_coeffs": ((views, 64), np.float32),
        "pose": ((views, 6), np.float32),
        "model_vertices": ((n, 3), np.float32),
        "sh_coeffs": ((9, 3), np.float32),
    }
    for key, (shape, dtype) in expected.items():
        value = getattr(sample, key)
        assert value.shape == shape and value.dtype == dtype, key
        assert np.isfinite(value).all(), key
    assert sample.meta["config"]["views"] == views and sample.meta["num_vertices"] == n


def test_deterministic_by_seed(mm, sample):
    again = render_sample(mm, np.random.default_rng(7), CONFIG)
    for key, value in _arrays(sample).items():
        assert np.array_equal(value, getattr(again, key)), key
    other = render_sample(mm, np.random.default_rng(8), CONFIG)
    assert not np.array_equal(other.images, sample.images)
    assert not np.array_equal(other.shape_coeffs, sample.shape_coeffs)


def test_arrays_agree_with_the_camera_model(mm, sample):
    shape = torch.from_numpy(sample.shape_coeffs).expand(CONFIG.views, -1)
    model = mm.vertices(shape, torch.from_numpy(sample.exp_coeffs))
    camera = pose_vertices(model, torch.from_numpy(sample.pose))
    assert torch.allclose(torch.from_numpy(sample.vertices), camera, atol=1e-3)
    assert np.allclose(sample.model_vertices, mm.vertices(shape[:1])[0].numpy(), atol=1e-2)
    landmarks = to_image(torch.from_numpy(sample.vertices))[:, mm.landmark_indices, :2]
    assert np.array_equal(sample.landmarks, landmarks.numpy())
    assert np.array_equal(sample.landmarks3d, sample.vertices[:, mm.landmark_indices.numpy()])


def test_poses_follow_the_configuration(sample):
    yaw = np.degrees(sample.pose[:, 1])
    assert np.abs(yaw).max() <= CONFIG.yaw_max_deg + 1e-3
    assert np.ptp(yaw) > 30, "yaws are stepped across the range"
    assert np.abs(np.degrees(sample.pose[:, [0, 2]])).max() < 25


def test_faces_are_visible_and_inside_the_crop(mm, sample):
    region = mm.face_region_mask.numpy()
    region_triangles = np.isin(mm.triangles.numpy(), np.flatnonzero(region)).all(axis=1)
    for view in range(CONFIG.views):
        image_vertices = to_image(torch.from_numpy(sample.vertices[view]))
        face = image_vertices[region, :2]
        assert face.min() >= 0 and face.max() <= IMAGE_SIZE - 1
        assert (sample.landmarks[view] >= 0).all() and (sample.landmarks[view] <= IMAGE_SIZE - 1).all()
        width = (face[:, 0].max() - face[:, 0].min()) / IMAGE_SIZE
        assert 0.4 < width < 0.75, f"face region spans {width:.2f} of the crop"
        visible = rasterize(image_vertices, mm.triangles, IMAGE_SIZE, IMAGE_SIZE).triangle_ids
        shown = np.unique(visible[visible >= 0].numpy())
        assert region_triangles[shown].sum() > 0.5 * region_triangles.sum()


def test_detail_changes_the_surface_only(mm):
    plain = render_sample(mm, np.random.default_rng(3), CONFIG)
    amplitude = 800.0
    detailed = render_sample(
        mm, np.random.default_rng(3), SampleConfig(views=3, identity_sigma=0.02, detail_amplitude=amplitude)
    )
    assert np.array_equal(plain.shape_coeffs, detailed.shape_coeffs)
    assert np.array_equal(plain.exp_coeffs, detailed.exp_coeffs)
    offset = torch.from_numpy(detailed.model_vertices - plain.model_vertices).double()
    assert 0.4 * amplitude < offset.norm(dim=1).pow(2).mean().sqrt() < 2 * amplitude
    normals = vertex_normals(torch.from_numpy(plain.model_vertices)[None], mm.triangles, mm.adjacent_triangles)[0]
    along = (offset * normals.double()).sum(1).abs()
    assert torch.allclose(along, offset.norm(dim=1), rtol=1e-3, atol=1e-2)
    assert detailed.meta["config"]["detail_amplitude"] == amplitude


def test_specular_highlights_and_view_gains_change_only_the_face_colours(mm):
    plain = render_sample(mm, np.random.default_rng(3), CONFIG)
    config = SampleConfig(views=3, identity_sigma=0.02, specular_range=(0.3, 0.3), view_gain_std=0.1)
    shiny = render_sample(mm, np.random.default_rng(3), config)
    assert np.array_equal(plain.vertices, shiny.vertices) and np.array_equal(plain.pose, shiny.pose)
    for view in range(CONFIG.views):
        image_vertices = to_image(torch.from_numpy(plain.vertices[view]))
        face = (rasterize(image_vertices, mm.triangles, IMAGE_SIZE, IMAGE_SIZE).triangle_ids >= 0).numpy()
        changed = np.abs(shiny.images[view].astype(int) - plain.images[view].astype(int)).max(axis=-1)
        assert changed[face].mean() > 2.0  # grey levels of 255
        assert changed[~face].mean() < 0.1 * changed[face].mean()  # the background only through the blur at the edge
    assert shiny.meta["config"]["specular_range"] == (0.3, 0.3)
    with pytest.raises(SyntheticDataError, match="specular_range"):
        SampleConfig(specular_range=(0.3, 0.1))


def test_write_read_round_trip_and_refusal(tmp_path, sample):
    folder = tmp_path / "one"
    write_sample(sample, folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "sample.npz",
        "view0.png",
        "view1.png",
        "view2.png",
    ]
    loaded = read_sample(folder)
    for key, value in _arrays(sample).items():
        assert np.array_equal(value, getattr(loaded, key)), key
    assert loaded.meta == json.loads(json.dumps(sample.meta))
    before = (folder / "sample.npz").read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        write_sample(sample, folder)
    assert (folder / "sample.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["one"], "no staging folder is left behind"
    (folder / "sample.npz").unlink()
    with pytest.raises(SyntheticDataError, match="sample.npz: file not found"):
        read_sample(folder)


def test_generate_dataset_is_reproducible_and_refuses_to_overwrite(tmp_path, mm):
    out = tmp_path / "data"
    folders = generate_dataset(mm, out, 2, 2, seed=5, config=CONFIG, model_name="grid")
    assert [f.name for f in folders] == ["sample_00000", "sample_00001"]
    meta = json.loads((folders[1] / "meta.json").read_text())
    assert meta["seed"] == 5 and meta["sample_index"] == 1 and meta["model"] == "grid" and meta["views"] == 2
    single = generate_dataset(mm, tmp_path / "single", 1, 2, seed=5, config=CONFIG)
    assert np.array_equal(read_sample(single[0]).images, read_sample(folders[0]).images)

    with pytest.raises(SyntheticDataError, match="not empty"):
        generate_dataset(mm, out, 1, 2, seed=6, config=CONFIG)
    (out / "notes.txt").write_text("mine")
    generate_dataset(mm, out, 1, 2, seed=6, config=CONFIG, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sample_00000"]
    assert json.loads((out / "sample_00000" / "meta.json").read_text())["seed"] == 6


def test_command_line(tmp_path, mm, capsys):
    model_file = tmp_path / "grid.npz"
    mm.save_npz(model_file)
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--count", "1", "--views", "2", "--seed", "1", "--model", str(model_file)]
    assert synthetic.main([*argv, "--identity-sigma", "0.02"]) == 0
    loaded = read_sample(out / "sample_00000")
    assert loaded.images.shape[0] == 2 and loaded.meta["model"] == str(model_file)
    assert synthetic.main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert synthetic.main(["--out", str(tmp_path / "x"), "--model", str(tmp_path / "missing.npz")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "missing.npz" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_make_examples_writes_the_layout(tmp_path, mm):
    model_file = tmp_path / "grid.npz"
    mm.save_npz(model_file)
    out = tmp_path / "examples"
    assert make_examples.main(["--out", str(out), "--model", str(model_file), "--identity-sigma", "0.02"]) == 0
    cases = sorted(p.name for p in out.iterdir())
    assert cases == [f"case{k}" for k in range(len(make_examples.CASES))]
    for k, spec in enumerate(make_examples.CASES):
        case = out / f"case{k}"
        files = sorted(p.name for p in case.iterdir() if p.is_file())
        assert files == sorted([f"view{i}.{ext}" for i in range(spec.views) for ext in ("png", "txt")])
        truth = read_sample(case / "ground_truth", case)
        for view in range(spec.views):  # the landmarks beside each image are the ground truth's
            np.testing.assert_allclose(np.loadtxt(case / f"view{view}.txt"), truth.landmarks[view], atol=1e-4)
        assert truth.images.shape[0] == spec.views
        assert np.abs(np.degrees(truth.pose[:, 1])).max() <= 30 + 1e-3
        assert (truth.meta["config"]["detail_amplitude"] > 0) == spec.detail
        for i in range(spec.views):
            landmarks = np.loadtxt(case / "ground_truth" / f"landmarks_view{i}.txt")
            assert landmarks.shape == (68, 2)
            assert np.allclose(landmarks, truth.landmarks[i], atol=1e-3)
            mesh = read_obj(case / "ground_truth" / f"face_full_view{i}.obj")
            assert np.allclose(mesh.vertices, truth.vertices[i], atol=1e-3)
            assert np.array_equal(mesh.faces, mm.triangles.numpy()[:, ::-1])
    first = (out / "case0" / "view0.png").read_bytes()
    assert make_examples.main(["--out", str(out), "--model", str(model_file)]) == 2
    assert (out / "case0" / "view0.png").read_bytes() == first
    repeated = make_examples.render_case(mm, 3, SampleConfig(identity_sigma=0.02))
    written = read_sample(out / "case3" / "ground_truth", out / "case3")
    for key, value in _arrays(written).items():
        assert np.array_equal(value, getattr(repeated, key)), f"{key} is not deterministic"


def test_view_count_and_yaw_ranges_vary_per_sample(tmp_path, mm):
    folders = generate_dataset(mm, tmp_path / "data", 6, (2, 3), seed=3, config=CONFIG, yaw_range_deg=(10.0, 30.0))
    samples = [read_sample(folder) for folder in folders]
    counts = [sample.images.shape[0] for sample in samples]
    assert set(counts) == {2, 3}  # both counts drawn (fixed by the seed)
    largest = [float(np.degrees(np.abs(sample.pose[:, 1])).max()) for sample in samples]
    assert max(largest) <= 30.0 + 1e-3 and min(largest) < 20.0  # a yaw limit drawn per sample (25-30 without)
    assert [json.loads((f / "meta.json").read_text())["views"] for f in folders] == counts


def test_resume_renders_only_the_missing_samples(tmp_path, mm):
    out = tmp_path / "data"
    folders = generate_dataset(mm, out, 3, 2, seed=4, config=CONFIG)
    kept = (folders[0] / "sample.npz").stat().st_mtime_ns
    complete = read_sample(folders[1]).images
    shutil.rmtree(folders[1])  # an interrupted run: sample 1 was never written
    generate_dataset(mm, out, 3, 2, seed=4, config=CONFIG, resume=True)
    assert (folders[0] / "sample.npz").stat().st_mtime_ns == kept  # not rendered again
    assert np.array_equal(read_sample(folders[1]).images, complete)
    with pytest.raises(SyntheticDataError, match="another seed"):
        generate_dataset(mm, out, 3, 2, seed=5, config=CONFIG, resume=True)


def test_worker_processes_write_the_same_samples(tmp_path, mm):
    serial = generate_dataset(mm, tmp_path / "serial", 2, 2, seed=8, config=CONFIG)
    parallel = generate_dataset(mm, tmp_path / "parallel", 2, 2, seed=8, config=CONFIG, workers=2)
    for one, other in zip(serial, parallel, strict=True):
        assert np.array_equal(read_sample(one).images, read_sample(other).images)
    with pytest.raises(SyntheticDataError, match="workers must not be negative"):
        generate_dataset(mm, tmp_path / "bad", 1, 2, seed=8, config=CONFIG, workers=-1)


def test_bad_ranges_are_refused_in_one_line(tmp_path, capsys):
    for flag, value, message in (
        ("--views", "2-x", "--views takes a number or a range like 2-3"),
        ("--views", "1", "views must be a count or range of at least"),
        ("--yaw-deg", "40-20", "yaw range must lie in [0, 90) degrees"),
    ):
        assert synthetic.main(["--out", str(tmp_path / "x"), flag, value]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error:") and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "x").exists()
