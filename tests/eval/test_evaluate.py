"""Evaluation metrics and the ``python -m eval.evaluate`` command on meshes made here (units: mm)."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from eval.alignment import ICP_MAX_ITERATIONS, similarity_procrustes
from eval.evaluate import main
from eval.input_files import read_landmarks
from eval.metrics import (
    now_face_crop,
    point_to_surface_distances,
    same_topology_errors,
    scan_to_mesh_errors,
)
from models.errors import MeshFileError
from models.geometry.procrustes import SimilarityTransform
from models.io.mesh_io import TriangleMesh, read_obj, write_obj

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where the 7 landmarks sit on the synthetic face, (x, y) in mm, in the NoW order.
LANDMARK_XY = np.array([[-45, 30], [-15, 30], [15, 30], [45, 30], [0, -15], [-25, -45], [25, -45]], dtype=float)


def face_like_mesh() -> tuple[TriangleMesh, np.ndarray]:
    """Ellipsoidal head (150 x 200 x 180 mm) with a nose and eye sockets; returns the mesh and 7 landmarks."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    vertices = sphere.vertices * np.array([75.0, 100.0, 90.0])
    x, y, z = vertices.T
    front = np.clip(z / 90.0, 0.0, 1.0)
    nose = 25.0 * np.exp(-(x**2 + (y + 5.0) ** 2) / (2 * 14.0**2))
    eyes = 6.0 * np.exp(-((np.abs(x) - 30.0) ** 2 + (y - 30.0) ** 2) / (2 * 10.0**2))
    vertices[:, 2] += front * (nose - eyes)
    front_ids = np.flatnonzero(vertices[:, 2] > 0)
    nearest = [front_ids[np.argmin(np.linalg.norm(vertices[front_ids, :2] - xy, axis=1))] for xy in LANDMARK_XY]
    return TriangleMesh(vertices, sphere.faces.astype(np.int64)), vertices[nearest]


def random_similarity(seed: int, scale: float) -> SimilarityTransform:
    rng = np.random.default_rng(seed)
    return SimilarityTransform(scale, Rotation.random(random_state=rng).as_matrix(), rng.uniform(-200, 200, 3))


def subdivided(mesh: TriangleMesh) -> TriangleMesh:
    """Same surface, other topology (midpoint subdivision)."""
    vertices, faces = trimesh.remesh.subdivide(mesh.vertices, mesh.faces)
    return TriangleMesh(vertices, faces.astype(np.int64))


def test_mesh_against_itself_is_zero() -> None:
    mesh, landmarks = face_like_mesh()
    errors = same_topology_errors(mesh.vertices, mesh.vertices)
    assert errors.similarity.max() < 1e-9 and errors.depth.max() < 1e-12
    scan = scan_to_mesh_errors(mesh.vertices, landmarks, mesh, landmarks)
    assert scan.kept.sum() > 500
    assert scan.distances.max() < 1e-6


def test_one_millimetre_along_vertex_normals() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=50.0)
    displaced = sphere.vertices + sphere.vertex_normals
    distances = point_to_surface_distances(displaced, sphere.vertices, sphere.faces)
    np.testing.assert_allclose(distances, 1.0, rtol=0.01)
    errors = same_topology_errors(displaced, sphere.vertices)
    np.testing.assert_allclose(errors.depth, 1.0, rtol=0.01)
    # A uniform offset of a sphere is a scaling, which the similarity alignment removes.
    assert errors.similarity.max() < 0.01


def test_rotated_scaled_translated_copy_is_zero_after_alignment() -> None:
    mesh, landmarks = face_like_mesh()
    transform = random_similarity(seed=3, scale=0.004)
    moved = transform.apply(mesh.vertices)
    errors = same_topology_errors(moved, mesh.vertices)
    assert errors.similarity.max() < 1e-6
    assert errors.depth.mean() > 10.0
    prediction = subdivided(mesh)
    scan = scan_to_mesh_errors(
        mesh.vertices,
        landmarks,
        TriangleMesh(transform.apply(prediction.vertices), prediction.faces),
        transform.apply(landmarks),
    )
    assert scan.distances.max() < 1e-4
    assert scan.landmark_transform.scale == pytest.approx(1.0 / 0.004, rel=1e-9)


def test_procrustes_never_reflects() -> None:
    mesh, _ = face_like_mesh()
    mirrored = mesh.vertices * np.array([-1.0, 1.0, 1.0])
    transform = similarity_procrustes(mirrored, mesh.vertices)
    assert np.linalg.det(transform.rotation) == pytest.approx(1.0)
    assert np.linalg.norm(transform.apply(mirrored) - mesh.vertices, axis=1).mean() > 5.0


def test_procrustes_is_the_least_squares_optimum_on_noisy_points() -> None:
    mesh, _ = face_like_mesh()
    rng = np.random.default_rng(2)
    noisy = random_similarity(seed=4, scale=2.5).apply(mesh.vertices) + rng.normal(size=mesh.vertices.shape)
    best = similarity_procrustes(noisy, mesh.vertices)

    def cost(transform: SimilarityTransform) -> float:
        return float(((transform.apply(noisy) - mesh.vertices) ** 2).sum())

    tilt = Rotation.from_rotvec([1e-3, -1e-3, 5e-4]).as_matrix()
    for worse in (
        best._replace(scale=best.scale * 1.001),
        best._replace(scale=best.scale * 0.999),
        best._replace(rotation=tilt @ best.rotation),
        best._replace(translation=best.translation + 0.05),
    ):
        assert cost(worse) > cost(best)


def test_depth_alignment_only_moves_along_z() -> None:
    mesh, _ = face_like_mesh()
    assert same_topology_errors(mesh.vertices + [0.0, 0.0, 25.0], mesh.vertices).depth.max() < 1e-9
    np.testing.assert_allclose(same_topology_errors(mesh.vertices + [3.0, 4.0, 25.0], mesh.vertices).depth, 5.0)


def test_landmark_file_formats(tmp_path: Path) -> None:
    _, landmarks = face_like_mesh()
    points = "".join(f'<point x="{x}" y="{y}" z="{z}" name="{i}"/>' for i, (x, y, z) in enumerate(landmarks))
    (tmp_path / "scan.pp").write_text(f"<!DOCTYPE PickedPoints><PickedPoints>{points}</PickedPoints>")
    (tmp_path / "scan.txt").write_text("\n".join(",".join(f"{v:.17g}" for v in row) for row in landmarks))
    np.save(tmp_path / "scan.npy", landmarks)
    for name in ("scan.pp", "scan.txt", "scan.npy"):
        np.testing.assert_array_equal(read_landmarks(tmp_path / name), landmarks)


def test_crop_rule_of_the_now_benchmark() -> None:
    landmarks = np.array([[-45, 0, 0], [-15, 0, 0], [15, 0, 0], [45, 0, 0], [0, -40, 0], [-20, -70, 0], [20, -70, 0]])
    crop = now_face_crop(landmarks)
    np.testing.assert_allclose(crop.centre, [0.0, -28.0, 0.0])
    assert crop.radius == pytest.approx(91.0)  # NoW: 1.4 x mean(outer-eye distance 90, nose length 40)


def test_scan_with_holes_and_background_aligns_within_the_crop() -> None:
    mesh, landmarks = face_like_mesh()
    rng = np.random.default_rng(7)
    x, y, z = mesh.vertices.T
    hole = (np.hypot(x - 40.0, y + 20.0) < 12.0) & (z > 0)
    background = np.concatenate(
        [
            np.column_stack([rng.uniform(-300, 300, (400, 2)), np.full(400, -400.0)]),
            rng.normal(size=(300, 3)) * 10.0 + np.array([0.0, 0.0, 400.0]),
        ]
    )
    scan_points = np.concatenate([mesh.vertices[~hole], background])
    # The predicted landmarks are off by a rigid 3 degrees / 3 mm, so ICP has to finish the alignment.
    nudge = SimilarityTransform(
        1.0, Rotation.from_euler("xyz", [3.0, -2.0, 1.5], degrees=True).as_matrix(), np.array([3.0, -2.0, 1.0])
    )
    transform = random_similarity(seed=11, scale=1.3)
    prediction = subdivided(mesh)
    predicted = TriangleMesh(transform.apply(prediction.vertices), prediction.faces)
    predicted_landmarks = transform.apply(nudge.apply(landmarks))
    result = scan_to_mesh_errors(scan_points, landmarks, predicted, predicted_landmarks)
    face_count = int((~hole).sum())
    assert not result.kept[face_count:].any()
    inside = np.linalg.norm(mesh.vertices[~hole] - result.crop.centre, axis=1) <= result.crop.radius
    np.testing.assert_array_equal(result.kept[:face_count], inside)
    assert result.distances.max() < 1e-4 and result.icp.iterations < ICP_MAX_ITERATIONS
    unrefined = scan_to_mesh_errors(scan_points, landmarks, predicted, predicted_landmarks, icp_iterations=0)
    assert np.median(unrefined.distances) > 0.5


def write_case(root: Path, case: str, name: str, mesh: TriangleMesh, landmarks: np.ndarray | None) -> Path:
    folder = root / case
    folder.mkdir(parents=True, exist_ok=True)
    write_obj(folder / name, mesh)
    if landmarks is not None:
        np.savetxt(folder / (Path(name).stem + "_landmarks7.txt"), landmarks)
    return folder / name


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """case_a: same topology as its GT (two views); case_b: a subdivided prediction needing the scan protocol."""
    root = tmp_path_factory.mktemp("evaluation")
    mesh, landmarks = face_like_mesh()
    pred, gt = root / "pred", root / "gt"
    for case in ("case_a", "case_b"):
        write_case(gt, case, "gt.obj", mesh, None)
        np.savetxt(gt / case / "gt_landmarks7.txt", landmarks)
    transform = random_similarity(seed=5, scale=0.01)
    for view in (0, 1):
        write_case(
            pred, "case_a", f"face_full_view{view}.obj", TriangleMesh(transform.apply(mesh.vertices), mesh.faces), None
        )
    prediction = subdivided(mesh)
    moved = TriangleMesh(transform.apply(prediction.vertices), prediction.faces)
    write_case(pred, "case_b", "face_full_view0.obj", moved, transform.apply(landmarks))
    return pred, gt


def test_cli_end_to_end(two_cases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, gt = two_cases
    out = tmp_path / "report"
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 0
    with (out / "per_case.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["prediction"], r["metric"]) for r in rows] == [
        ("case_a", "case_a/face_full_view0.obj", "vertex_similarity"),
        ("case_a", "case_a/face_full_view0.obj", "vertex_depth"),
        ("case_a", "case_a/face_full_view1.obj", "vertex_similarity"),
        ("case_a", "case_a/face_full_view1.obj", "vertex_depth"),
        ("case_b", "case_b/face_full_view0.obj", "scan_to_mesh"),
    ]
    for row in rows:
        if row["metric"] != "vertex_depth":
            assert float(row["median_mm"]) < 1e-3 and float(row["mean_mm"]) < 1e-3
    assert int(rows[0]["points"]) == len(face_like_mesh()[0].vertices)
    summary = (out / "summary.md").read_text()
    assert "| scan_to_mesh | 1 |" in summary and "| vertex_similarity | 2 |" in summary
    assert summary in capsys.readouterr().out
    assert (out / "cumulative_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_ground_truth_list_region_and_pattern(two_cases: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = two_cases
    listing = tmp_path / "gt_list.txt"
    listing.write_text(f"# case mesh landmarks\ncase_a {gt / 'case_a' / 'gt.obj'}\n")
    region = np.arange(0, 2562, 3)
    np.savetxt(tmp_path / "region.txt", region, fmt="%d")
    out = tmp_path / "report"
    args = ["--pred", str(pred), "--gt", str(listing), "--out", str(out), "--pattern", "face_full_view1.obj"]
    assert main([*args, "--region", str(tmp_path / "region.txt")]) == 0
    with (out / "per_case.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["metric"] for r in rows] == ["vertex_similarity", "vertex_depth"]
    assert all(int(r["points"]) == len(region) for r in rows)


def test_cli_scan_protocol_with_landmark_vertex_indices(two_cases: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = two_cases
    mesh, landmarks = face_like_mesh()
    indices = [int(np.flatnonzero((mesh.vertices == point).all(axis=1))[0]) for point in landmarks]
    (tmp_path / "landmark_ids.txt").write_text("\n".join(map(str, indices)))
    out = tmp_path / "report"
    args = ["--pred", str(pred), "--gt", str(gt), "--out", str(out), "--pattern", "face_full_view0.obj"]
    assert main([*args, "--protocol", "scan", "--pred-landmark-indices", str(tmp_path / "landmark_ids.txt")]) == 0
    with (out / "per_case.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["metric"]) for r in rows] == [("case_a", "scan_to_mesh"), ("case_b", "scan_to_mesh")]
    assert all(float(r["mean_mm"]) < 1e-3 for r in rows)


def bad_input(pred: Path, gt: Path, tmp_path: Path, problem: str) -> tuple[list[str], str]:
    """Arguments that trigger ``problem`` and a fragment the one-line message must contain."""
    base = ["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "out")]
    mesh, _ = face_like_mesh()
    if problem == "missing folder":
        return ["--pred", str(tmp_path / "nowhere"), *base[2:]], "nowhere: prediction folder does not exist"
    if problem == "unreadable mesh":
        broken = tmp_path / "broken"
        (broken / "case_a").mkdir(parents=True)
        (broken / "case_a" / "gt.obj").write_text("v 1 2 three\n")
        return [*base[:2], "--gt", str(broken), *base[4:]], "gt.obj:1: vertex record is not numeric"
    if problem == "mismatched vertex counts":
        small = tmp_path / "small"
        write_case(small, "case_a", "face_full_view0.obj", subdivided(mesh), None)
        write_case(small, "case_b", "face_full_view0.obj", subdivided(mesh), None)
        return ["--pred", str(small), *base[2:], "--protocol", "vertex"], "10242 vertices but ground truth"
    if problem == "missing landmarks":
        bare = tmp_path / "bare"
        write_case(bare, "case_a", "face_full_view0.obj", subdivided(mesh), None)
        write_case(bare, "case_b", "face_full_view0.obj", subdivided(mesh), None)
        return ["--pred", str(bare), *base[2:]], "missing landmarks (face_full_view0_landmarks7.txt not found"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem", ["missing folder", "unreadable mesh", "mismatched vertex counts", "missing landmarks"]
)
def test_bad_input_gives_one_line_error(
    problem: str, two_cases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, fragment = bad_input(*two_cases, tmp_path, problem)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "out").exists()


def test_bad_input_exit_status_of_the_module(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval.evaluate",
            "--pred",
            str(tmp_path),
            "--gt",
            str(tmp_path / "gt"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert completed.stderr == f"error: {tmp_path / 'gt'}: ground-truth folder or list does not exist\n"


def test_obj_reader_rejects_bad_faces(tmp_path: Path) -> None:
    path = tmp_path / "bad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(MeshFileError, match=r"bad\.obj: a face refers to a vertex outside 1\.\.3"):
        read_obj(path)
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1/1/1 2/2/2 4/4/4 3/3/3\n")
    np.testing.assert_array_equal(read_obj(path).faces, [[0, 1, 3], [0, 3, 2]])


def test_per_view_ground_truth_and_similarity_only(tmp_path, capsys):
    """``{view}`` in --gt-mesh pairs each view's prediction with that view's ground truth."""
    import trimesh

    from eval.evaluate import main as evaluate_main
    from models.io.mesh_io import TriangleMesh as Mesh
    from models.io.mesh_io import write_obj as write

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=40.0)
    vertices, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    stretched = vertices * np.array([1.0, 1.3, 0.8])
    (tmp_path / "gt" / "case0").mkdir(parents=True)
    (tmp_path / "pred" / "case0").mkdir(parents=True)
    write(tmp_path / "gt" / "case0" / "mesh_view0.obj", Mesh(vertices, faces))
    write(tmp_path / "gt" / "case0" / "mesh_view1.obj", Mesh(stretched, faces))
    # predictions: each view equals its own ground truth up to a similarity (exact: 0 mm), in other units
    write(tmp_path / "pred" / "case0" / "face_full_view0.obj", Mesh(vertices * 3.0 + 5.0, faces))
    write(tmp_path / "pred" / "case0" / "face_full_view1.obj", Mesh(stretched * 3.0 - 2.0, faces))
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "out")]
    status = evaluate_main([*args, "--gt-mesh", "mesh_view{view}.obj", "--similarity-only"])
    table = capsys.readouterr().out
    assert status == 0
    assert "vertex_similarity | 2 |" in table and "vertex_depth" not in table
    rows = (tmp_path / "out" / "per_case.csv").read_text().splitlines()[1:]
    assert all(float(row.split(",")[5]) < 1e-6 for row in rows)
    # paired with the wrong view, the error is large
    assert evaluate_main([*args, "--gt-mesh", "mesh_view0.obj", "--similarity-only"]) == 0
    rows = (tmp_path / "out" / "per_case.csv").read_text().splitlines()[1:]
    assert float(rows[1].split(",")[5]) > 1.0


def test_a_full_disk_leaves_no_partial_report(
    two_cases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    pred, gt = two_cases
    out = tmp_path / "report"

    def disk_full(rows, path, curve_max_mm):
        path.write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("eval.evaluate.plot_cumulative_errors", disk_full)
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write it (No space left on device)" in err, err
    assert not out.exists()  # neither the csv, the markdown nor the folder it created is left


def test_photo_only_sub_folders_are_not_ground_truth_cases(
    two_cases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ground-truth folder that also holds photo-only cases (as examples/ does) evaluates the others."""
    pred, gt = two_cases
    mixed = tmp_path / "gt"
    shutil.copytree(gt / "case_a", mixed / "case_a")
    (mixed / "photo_only").mkdir()
    (mixed / "photo_only" / "portrait.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "report"
    assert main(["--pred", str(pred), "--gt", str(mixed), "--out", str(out), "--pattern", "face_full_view0.obj"]) == 0
    with (out / "per_case.csv").open() as handle:
        assert {row["case"] for row in csv.DictReader(handle)} == {"case_a"}
    shutil.rmtree(mixed / "case_a")
    capsys.readouterr()
    assert main(["--pred", str(pred), "--gt", str(mixed), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {mixed}: no case sub-folder holds a ground-truth mesh gt.obj\n"
