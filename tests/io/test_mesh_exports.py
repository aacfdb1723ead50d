"""Textured OBJ + MTL + PNG, vertex-coloured PLY, and a case's extra outputs as result.json lists them."""

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from eval.evaluate import main as evaluate
from models.face_model.model_frame import MODEL_UNITS_PER_MM, model_frame_millimetres
from models.face_model.procedural import synthetic_morphable_model
from models.io.mesh_exports import CaseMeshes, ExportOptions, export_file_names, write_exports
from models.io.mesh_io import MaterialRef, TriangleMesh, read_obj, write_mtl, write_obj, write_ply
from tests.texture.known_texture import render_known_views


def test_textured_obj_and_coloured_ply_read_back(tmp_path):
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(5, 3))
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    uv = rng.uniform(size=(5, 2))
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "skin.png")
    write_mtl(tmp_path / "skin.mtl", {"skin": "skin.png", "other": "other.png"})
    write_obj(tmp_path / "mesh.obj", TriangleMesh(vertices, faces), uv, MaterialRef("skin.mtl", "skin"))
    loaded = trimesh.load(tmp_path / "mesh.obj", process=False)
    np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-8)
    np.testing.assert_array_equal(loaded.faces, faces)
    np.testing.assert_allclose(loaded.visual.uv, uv, atol=1e-6)
    assert loaded.visual.material.image.size == (8, 8)
    ours = read_obj(tmp_path / "mesh.obj")  # the evaluation's reader takes textured files too
    np.testing.assert_allclose(ours.vertices, vertices, atol=1e-8)
    np.testing.assert_array_equal(ours.faces, faces)

    colours = rng.uniform(size=(5, 3))
    write_ply(tmp_path / "mesh.ply", TriangleMesh(vertices, faces), colours)
    ply = trimesh.load(tmp_path / "mesh.ply", process=False)
    np.testing.assert_allclose(ply.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(ply.faces, faces)
    np.testing.assert_array_equal(ply.visual.vertex_colors[:, :3], np.round(colours * 255).astype(np.uint8))


def _case(neutral: bool = True, uv: bool = True) -> tuple[CaseMeshes, object]:
    mm = synthetic_morphable_model(24, 24)
    views = render_known_views(mm, (-25.0, 25.0))
    case = CaseMeshes(
        crops=views.crops.numpy(),
        vertices=views.vertices.numpy(),
        poses=views.poses.numpy(),
        triangles=mm.triangles.numpy(),
        valid_mask=mm.face_region_mask_no_nose_hole.numpy(),
        uv_coords=mm.uv_coords.numpy() if uv else None,
        landmark_indices=mm.landmark_indices.numpy(),
        neutral=views.neutral.double().numpy() if neutral else None,
    )
    return case, views


def test_every_export_is_written_and_listed(tmp_path):
    case, views = _case()
    options = ExportOptions(texture_size=128)
    record = write_exports(tmp_path, case, options)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(export_file_names(2, options))
    files = record["files"]
    assert files["textured_meshes"] == ["face_textured_view0.obj", "face_textured_view1.obj"]
    assert Image.open(tmp_path / files["texture"]).size == (128, 128)
    assert Image.open(tmp_path / files["albedo"]).size == (128, 128)
    texture = record["texture"]
    assert texture["size"] == 128 and len(texture["reprojection_mae"]) == 2 and max(texture["reprojection_mae"]) < 0.02
    assert 0.5 < texture["seen_fraction"] <= 1 and len(texture["lighting_sh"]) == 2
    # per view: the camera-space mesh with texture coordinates, the same with vertex colours, the mm mesh
    textured = trimesh.load(tmp_path / "face_textured_view1.obj", process=False)
    np.testing.assert_allclose(textured.vertices, case.vertices[1], atol=1e-4)
    np.testing.assert_array_equal(textured.faces, case.triangles[:, ::-1])
    assert textured.visual.uv.shape == (case.vertices.shape[1], 2)
    coloured = trimesh.load(tmp_path / "face_colored_view0.ply", process=False)
    assert np.ptp(coloured.visual.vertex_colors[:, :3].astype(float), axis=0).max() > 50
    model_mm = read_obj(tmp_path / "face_model_mm_view0.obj")
    np.testing.assert_allclose(model_mm.vertices, model_frame_millimetres(case.vertices, case.poses)[0], atol=1e-6)
    # the neutral identity, its face-region crop and 7 landmarks, in millimetres
    neutral = read_obj(tmp_path / "face_neutral.obj")
    np.testing.assert_allclose(neutral.vertices, case.neutral / MODEL_UNITS_PER_MM, atol=1e-6)
    valid = read_obj(tmp_path / "face_neutral_valid.obj")
    assert len(valid.vertices) == case.valid_mask.sum() and len(valid.faces) < len(neutral.faces)
    landmarks = np.loadtxt(tmp_path / "face_neutral_landmarks7.txt")
    assert landmarks.shape == (7, 3)
    assert "\nusemtl face_texture\n" in (tmp_path / "face_neutral_valid.obj").read_text()


def test_switched_off_or_unavailable_exports(tmp_path):
    case, _ = _case(neutral=False, uv=False)
    record = write_exports(_mkdir(tmp_path / "a"), case, ExportOptions())
    assert set(record["skipped"]) == {"texture", "neutral"}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["face_model_mm_view0.obj", "face_model_mm_view1.obj"]
    assert "vt " not in (tmp_path / "a" / "face_model_mm_view0.obj").read_text()
    case, _ = _case()
    options = ExportOptions(texture=True, albedo=False, model_frame=False, neutral=False, texture_size=64)
    record = write_exports(_mkdir(tmp_path / "b"), case, options)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(export_file_names(2, options))
    assert "albedo" not in record["files"] and record["texture"]["lighting_sh"] is None
    assert write_exports(_mkdir(tmp_path / "c"), case, ExportOptions(False, 64, True, False, False))["files"] == {}
    assert not any((tmp_path / "c").iterdir())


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_the_evaluation_reads_the_millimetre_and_neutral_meshes(tmp_path, capsys):
    """eval.evaluate on the exports: per-view model-frame meshes against per-view ground truth in mm (vertex
    protocol, depth-aligned metric included), the neutral mesh against a neutral scan (scan protocol, with the
    landmarks written beside it)."""
    case, views = _case()
    rng = np.random.default_rng(3)
    case.neutral = case.neutral + rng.normal(0, 300.0, case.neutral.shape)  # 0.3 mm of noise per axis
    write_exports(_mkdir(tmp_path / "pred" / "person"), case, ExportOptions(texture=False))
    truth = _mkdir(tmp_path / "gt" / "person")
    millimetres = model_frame_millimetres(case.vertices, case.poses)
    for view in range(2):
        write_obj(truth / f"mesh_mm_view{view}.obj", TriangleMesh(millimetres[view], case.triangles))
    neutral = views.neutral.double().numpy() / MODEL_UNITS_PER_MM
    write_obj(truth / "scan.obj", TriangleMesh(neutral, case.triangles))
    np.savetxt(truth / "scan_landmarks7.txt", np.loadtxt(tmp_path / "pred" / "person" / "face_neutral_landmarks7.txt"))
    common = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    args = [*common, "--out", str(tmp_path / "views"), "--pattern", "face_model_mm_view*.obj"]
    assert evaluate([*args, "--gt-mesh", "mesh_mm_view{view}.obj", "--protocol", "vertex"]) == 0
    assert "| vertex_depth | 2 |" in capsys.readouterr().out
    rows = (tmp_path / "views" / "per_case.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(float(row.split(",")[5]) < 1e-3 for row in rows)  # mean_mm: identical meshes
    args = [*common, "--out", str(tmp_path / "neutral"), "--pattern", "face_neutral.obj", "--gt-mesh", "scan.obj"]
    assert evaluate([*args, "--gt-landmarks", "scan_landmarks7.txt", "--protocol", "scan"]) == 0
    row = (tmp_path / "neutral" / "per_case.csv").read_text().splitlines()[1].split(",")
    assert row[2] == "scan_to_mesh" and 0.05 < float(row[5]) < 0.6  # the noise, in mm
