"""MorphableModel: the face3d-layout loader against the authors' derived tables, the .npz round trip, errors."""

import numpy as np
import pytest
import torch

from models.errors import MorphableModelError
from models.face_model.morphable_model import MorphableModel
from models.face_model.uv_raster import UV_SIZES
from tools.face3d_writer import make_tiny_model, write_face3d_dir


@pytest.fixture(scope="module")
def reference_model(reference_dir):
    return MorphableModel.from_face3d_dir(reference_dir)


@pytest.fixture(scope="module")
def derived(reference_dir):
    with np.load(reference_dir / "derived_bfm.npz") as data:
        return {key: data[key] for key in data.files}


def test_reference_counts(reference_model, derived):
    assert reference_model.num_vertices == int(derived["nver"])
    assert reference_model.shape_basis.shape == (3 * 3600, 80)
    assert reference_model.exp_basis.shape == (3 * 3600, 64)
    assert torch.equal(reference_model.triangles, torch.from_numpy(derived["tri"].astype(np.int64)))
    assert torch.equal(reference_model.landmark_indices, torch.from_numpy(derived["kpt_ind"].astype(np.int64)))


def test_reference_integer_tables_exact(reference_model, derived):
    mm = reference_model
    np.testing.assert_array_equal(mm.face_region_mask.numpy(), derived["face_region_mask"].ravel())
    np.testing.assert_array_equal(
        mm.face_region_mask_no_nose_hole.numpy(), derived["face_region_mask_no_nose_hole"].ravel()
    )
    assert int(mm.face_region_mask.sum()) == 1672
    np.testing.assert_array_equal(mm.adjacent_triangles.numpy(), derived["tri_idx"])
    np.testing.assert_array_equal(mm.neighbour_vertices.numpy(), derived["neib_vert_idx"])
    np.testing.assert_array_equal(mm.neighbour_counts.numpy(), derived["neib_vert_count"])
    for size in UV_SIZES:
        np.testing.assert_array_equal(mm.uv_tables[size].pixel_vert_idx.numpy(), derived[f"pixel_vert_idx_{size}"])


def test_reference_float_tables(reference_model, derived):
    mm = reference_model
    np.testing.assert_allclose(mm.uv_coords.numpy(), derived["uv_coords"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(mm.exp_std.numpy(), derived["expEV64"].ravel())
    np.testing.assert_array_equal(mm.shape_std.numpy(), derived["shapeEV80"].ravel())
    for size in UV_SIZES:
        table = mm.uv_tables[size]
        # The extrapolated weights of border pixels included: bit-identical to face3d's rasteriser.
        np.testing.assert_array_equal(table.pixel_vert_weights.numpy(), derived[f"pixel_vert_weights_{size}"])
        np.testing.assert_allclose(table.vertex_uv.numpy(), derived[f"uv_coords_{size}"], rtol=0, atol=1e-5)
    assert (mm.uv_tables[32].pixel_vert_weights < 0).any()


def test_vertices_follow_the_linear_model(reference_model):
    mm = reference_model
    generator = torch.Generator().manual_seed(0)
    shape = torch.randn(2, 80, generator=generator)
    expression = torch.randn(2, 64, generator=generator)
    vertices = mm.vertices(shape, expression)
    assert vertices.shape == (2, 3600, 3)
    expected = (
        mm.mean_shape.double()
        + mm.shape_basis.double() @ (shape[1].double() * mm.shape_std.double())
        + mm.exp_basis.double() @ (expression[1].double() * mm.exp_std.double())
    )
    np.testing.assert_allclose(vertices[1].double().reshape(-1).numpy(), expected.numpy(), rtol=1e-5, atol=1.0)
    np.testing.assert_array_equal(mm.vertices(torch.zeros(1, 80))[0].reshape(-1).numpy(), mm.mean_shape.numpy())
    with pytest.raises(ValueError, match="shape coefficients must have shape"):
        mm.vertices(torch.zeros(1, 79))


def test_npz_round_trip(reference_model, tmp_path):
    path = tmp_path / "model.npz"
    reference_model.save_npz(path)
    loaded = MorphableModel.from_npz(path)
    for name in MorphableModel._ARRAY_FIELDS:
        assert torch.equal(getattr(loaded, name), getattr(reference_model, name)), name
    for size in UV_SIZES:
        for mine, theirs in zip(loaded.uv_tables[size], reference_model.uv_tables[size], strict=True):
            assert torch.equal(mine, theirs)
    assert MorphableModel.load(path).num_vertices == 3600


@pytest.fixture
def tiny_dir(tmp_path):
    return write_face3d_dir(tmp_path / "tiny", make_tiny_model())


def test_tiny_model_loads(tiny_dir):
    mm = MorphableModel.load(tiny_dir)
    raw = make_tiny_model()
    n = raw["vertices"].shape[0]
    assert mm.num_vertices == n
    np.testing.assert_array_equal(mm.triangles.numpy(), raw["triangles"])
    np.testing.assert_array_equal(mm.landmark_indices.numpy(), raw["landmarks"])
    # Exp_Pca.bin's basis is stored component-major; the model keeps its first 64 components as columns.
    np.testing.assert_array_equal(mm.exp_basis.numpy(), raw["exp_basis"][:64].T)
    assert 0 < int(mm.face_region_mask.sum()) < n
    assert not mm.face_region_mask_no_nose_hole[raw["nose_hole"][0]]
    # every vertex of the grid interior has 6 neighbours
    assert int(mm.neighbour_counts.max()) == 6
    # adjacency is consistent: each listed triangle contains the vertex
    tri = mm.triangles.numpy()
    table = mm.adjacent_triangles.numpy()
    for vertex in (0, 37, n - 1):
        listed = table[vertex][table[vertex] < len(tri)]
        assert all(vertex in tri[t] for t in listed)
        assert len(listed) == int((tri == vertex).any(axis=1).sum())


@pytest.mark.parametrize(
    ("skip", "message"),
    [
        (("BFM.mat",), r"Out/BFM\.mat: file not found"),
        (("Exp_Pca.bin",), r"Out/Exp_Pca\.bin: file not found"),
        (("std_exp.txt",), r"Out/std_exp\.txt: file not found"),
        (("BFM_UV.mat",), r"Out/BFM_UV\.mat: file not found"),
        (("kpt_ind",), r"BFM\.mat: missing key 'kpt_ind'"),
        (("shapeEV",), r"BFM\.mat: missing key 'shapeEV'"),
    ],
)
def test_missing_inputs_are_named(tmp_path, skip, message):
    base = write_face3d_dir(tmp_path / "broken", make_tiny_model(), skip=skip)
    with pytest.raises(MorphableModelError, match=message):
        MorphableModel.from_face3d_dir(base)


def test_wrong_shapes_are_named(tmp_path):
    raw = make_tiny_model()
    raw["uv"] = raw["uv"][:-1]
    base = write_face3d_dir(tmp_path / "uv", raw)
    with pytest.raises(MorphableModelError, match=r"BFM_UV\.mat: key 'UV' has shape"):
        MorphableModel.from_face3d_dir(base)

    raw = make_tiny_model(exp_dim=70)
    base = write_face3d_dir(tmp_path / "std", raw)
    np.savetxt(base / "Out" / "std_exp.txt", np.ones(69))
    with pytest.raises(MorphableModelError, match=r"std_exp\.txt: holds 69 values, expected 70"):
        MorphableModel.from_face3d_dir(base)

    base = write_face3d_dir(tmp_path / "bin", make_tiny_model())
    (base / "Out" / "Exp_Pca.bin").write_bytes(np.array([70], "<i4").tobytes() + b"\0" * 100)
    with pytest.raises(MorphableModelError, match=r"Exp_Pca\.bin: holds 104 bytes"):
        MorphableModel.from_face3d_dir(base)


def test_npz_errors(tmp_path, tiny_dir):
    with pytest.raises(MorphableModelError, match="file not found"):
        MorphableModel.from_npz(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MorphableModelError, match="not a readable .npz"):
        MorphableModel.from_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", mean_shape=np.zeros(9, np.float32))
    with pytest.raises(MorphableModelError, match="missing key"):
        MorphableModel.from_npz(tmp_path / "partial.npz")
    hint = r"file not found \(build the face3d files .*`python -m tools\.prepare_bfm"
    with pytest.raises(MorphableModelError, match=r"nowhere/Out/BFM\.mat: " + hint):
        MorphableModel.from_face3d_dir(tmp_path / "nowhere")
    # --mm-dir of a folder that does not exist yet (the README's external/face3d/examples/Data/BFM) says the same
    with pytest.raises(MorphableModelError, match=r"Data/BFM/Out/BFM\.mat: " + hint):
        MorphableModel.load(tmp_path / "Data" / "BFM")


def test_to_device_keeps_values(tiny_dir):
    mm = MorphableModel.load(tiny_dir)
    moved = mm.to("cpu")
    assert moved is not mm
    assert torch.equal(moved.mean_shape, mm.mean_shape)
    assert moved.uv_tables[64].pixel_vert_idx.device.type == "cpu"


def test_non_finite_model_data_is_refused(tmp_path):
    raw = make_tiny_model(exp_dim=70)
    base = write_face3d_dir(tmp_path / "std", raw)
    std = raw["exp_std"].copy()
    std[3] = np.nan
    np.savetxt(base / "Out" / "std_exp.txt", std)
    with pytest.raises(MorphableModelError, match=r"std_exp\.txt: standard deviations must be finite and positive"):
        MorphableModel.from_face3d_dir(base)

    raw = make_tiny_model()
    raw["vertices"] = raw["vertices"].copy()
    raw["vertices"][5, 1] = np.inf
    base = write_face3d_dir(tmp_path / "mean", raw)
    with pytest.raises(MorphableModelError, match=r"BFM\.mat: key 'shapeMU' holds NaN or infinite values"):
        MorphableModel.from_face3d_dir(base)

    model = MorphableModel.from_face3d_dir(write_face3d_dir(tmp_path / "good", make_tiny_model()))
    model.save_npz(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        arrays = dict(data)
    arrays["shape_basis"][0, 0] = np.nan
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MorphableModelError, match=r"bad\.npz: shape_basis holds NaN or infinite values"):
        MorphableModel.from_npz(tmp_path / "bad.npz")
