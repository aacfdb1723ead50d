"""The demo's preprocessing: photo reading, padding, the authors' crop arithmetic, resizing and crop geometry."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from models.io.landmark_detectors import FaceBox, detector_box_from_landmarks
from models.io.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_CROP_SIDE,
    PAD_WIDTH,
    CropGeometry,
    InputError,
    crop_box_from_face_box,
    crop_side,
    crop_with_black_border,
    load_photo,
    network_inputs,
    prepare_view,
    read_landmark_file,
    reflect_pad,
    resize_bilinear,
)

BLOB_SIGMA = 4.0


class BlobDetector:
    """Stand-in detector: the face is a bright Gaussian blob; its box is half the unpadded width, centred on it."""

    name = "blob"

    def face_box(self, image: np.ndarray) -> FaceBox:
        centre = blob_centre(image)
        half = (image.shape[1] - 2 * PAD_WIDTH) / 4
        return FaceBox(centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        return blob_centre(image) + 20 * np.stack([np.cos(angles), np.sin(angles)], axis=1)


class NoDetector:
    name = "none"

    def face_box(self, image):
        raise AssertionError("detection must be skipped when landmarks are supplied")

    landmarks = face_box


def blob_centre(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) of the bright pixels of the red channel."""
    weights = np.clip(image[..., 0].astype(np.float64) - 20, 0, None)
    weights[weights < 0.2 * weights.max()] = 0
    ys, xs = np.indices(weights.shape)
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def blob_photo(width: int, height: int, centre: tuple[float, float]) -> np.ndarray:
    ys, xs = np.indices((height, width), dtype=np.float64)
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * BLOB_SIGMA**2))
    photo = np.full((height, width, 3), 20, dtype=np.float64)
    photo[..., 0] += 230 * blob
    return photo.round().astype(np.uint8)


def test_reflect_pad_is_reflect_101():
    row = np.arange(6, dtype=np.uint8).reshape(1, 6, 1).repeat(6, axis=0)
    padded = reflect_pad(row, 2)
    assert padded.shape == (10, 10, 1)
    assert padded[0, :, 0].tolist() == [2, 1, 0, 1, 2, 3, 4, 5, 4, 3]


def test_reflect_pad_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    expected = cv2.copyMakeBorder(image, 50, 50, 50, 50, cv2.BORDER_DEFAULT)
    np.testing.assert_array_equal(reflect_pad(image), expected)


def test_crop_box_follows_the_authors_arithmetic():
    # w = 200, h = 220: centre y = int(270 - 110 + 0.06 * 220) = 173, centre x = 200, l = 1.2 * 220 = 264.
    box = FaceBox(100.0, 50.0, 300.0, 270.0)
    assert crop_side(box) == pytest.approx(264.0)
    assert crop_box_from_face_box(box) == (68, 41, 332, 305)
    # Truncation, not rounding: a 201.7 x 150.2 box gives l = 242.04, half = 121.
    left, top, right, bottom = crop_box_from_face_box(FaceBox(10.3, 20.9, 212.0, 171.1))
    assert (right - left, bottom - top) == (242, 242)
    assert (left + 121, top + 121) == (int(212.0 - 201.7 / 2), int(171.1 - 150.2 / 2 + 0.06 * 150.2))


def test_crop_outside_the_photo_is_black_like_pil():
    image = np.random.default_rng(1).integers(1, 256, (40, 50, 3), dtype=np.uint8)
    for box in [(-10, -5, 30, 35), (20, 10, 70, 60), (5, 5, 25, 25), (-20, -20, 80, 80)]:
        expected = np.asarray(Image.fromarray(image).crop(box))
        np.testing.assert_array_equal(crop_with_black_border(image, box), expected)


def test_resize_is_half_pixel_bilinear():
    row = np.array([[[0], [100]]], dtype=np.uint8)
    assert resize_bilinear(row, 1, 4)[0, :, 0].tolist() == [0, 25, 75, 100]
    constant = np.full((30, 20, 3), 77, dtype=np.uint8)
    assert (resize_bilinear(constant, 256, 256) == 77).all()


@pytest.mark.parametrize("side", [180, 306])
def test_resize_matches_opencv_within_one_level(side):
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    expected = cv2.resize(image, (256, 256)).astype(np.int32)
    assert np.abs(resize_bilinear(image, 256, 256).astype(np.int32) - expected).max() <= 1


def test_load_photo_converts_grey_alpha_and_16_bit(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    loaded = load_photo(tmp_path / "grey.png")
    assert loaded.shape == (30, 40, 3) and loaded.dtype == np.uint8
    assert (loaded == grey[..., None]).all()

    rgba = np.random.default_rng(3).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_photo(tmp_path / "rgba.png"), rgba[..., :3])

    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_photo(tmp_path / "deep.png")[..., 1], grey)


def test_load_photo_scales_float_tiffs(tmp_path):
    grey = np.random.default_rng(4).integers(0, 256, (30, 40), dtype=np.uint8)
    Image.fromarray(grey.astype(np.float32) / 255, "F").save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(load_photo(tmp_path / "unit.tif")[..., 2], grey)
    Image.fromarray(grey.astype(np.float32), "F").save(tmp_path / "levels.tif")
    np.testing.assert_array_equal(load_photo(tmp_path / "levels.tif")[..., 0], grey)
    broken = grey.astype(np.float32)
    broken[3, 4] = np.nan
    Image.fromarray(broken, "F").save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match=r"nan.tif: not a usable image \(it holds non-finite pixel values\)"):
        load_photo(tmp_path / "nan.tif")


def test_load_photo_applies_exif_orientation(tmp_path):
    upright = np.zeros((120, 80, 3), dtype=np.uint8)
    upright[:60, :40] = (255, 0, 0)
    upright[:60, 40:] = (0, 255, 0)
    upright[60:] = (0, 0, 255)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # shown rotated back by EXIF 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.png", exif=exif)
    np.testing.assert_array_equal(load_photo(tmp_path / "rotated.png"), upright)


def test_unreadable_photos_give_one_line_errors(tmp_path):
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg")
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    for name in ("fake.jpg", "cut.jpg"):
        with pytest.raises(InputError, match=rf"{name}: not a readable image") as info:
            load_photo(tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="file not found"):
        load_photo(tmp_path / "missing.png")


def test_crop_geometry_round_trip_and_box():
    geometry = CropGeometry((240, 180), (480, 360), PAD_WIDTH, (30, 10, 330, 310))
    points = np.random.default_rng(4).uniform(0, 256, (10, 2))
    np.testing.assert_allclose(geometry.photo_to_crop(geometry.crop_to_photo(points)), points, atol=1e-9)
    assert geometry.crop_box_in_photo() == pytest.approx((-10.0, -20.0, 140.0, 130.0))
    # The crop's outer corners land on the crop box's corners (pixel centres are half a pixel inside).
    corners = geometry.crop_to_photo(np.array([[-0.5, -0.5], [255.5, 255.5]]))
    np.testing.assert_allclose(corners + 0.5, [[-10.0, -20.0], [140.0, 130.0]])
    # Camera space: the origin is crop pixel (128, 127); y up becomes image y down; z scales with the crop.
    mapped = geometry.camera_to_photo(np.array([[0.0, 0.0, 10.0], [10.0, 10.0, 0.0]]))
    np.testing.assert_allclose(mapped[0, :2], geometry.crop_to_photo(np.array([128.0, 127.0])))
    np.testing.assert_allclose(mapped[1, :2], geometry.crop_to_photo(np.array([138.0, 117.0])))
    assert mapped[0, 2] == pytest.approx(10.0 * 300 / 256 / 2)
    # The README's formula from result.json's crop_box_photo (edges L, T, R, B).
    left, top, right, bottom = geometry.crop_box_in_photo()
    x, y = 10.0, 10.0
    readme = [left + (x + 128.5) * (right - left) / 256 - 0.5, top + (127.5 - y) * (bottom - top) / 256 - 0.5]
    np.testing.assert_allclose(mapped[1, :2], readme)


@pytest.mark.parametrize(("size", "upscaled"), [(400, False), (180, True)])
def test_crop_geometry_maps_photo_points_onto_the_crop(tmp_path, caplog, size, upscaled):
    centre = (0.47 * size + 0.3, 0.52 * size - 0.2)
    Image.fromarray(blob_photo(size, size + 20, centre)).save(tmp_path / "blob.png")
    with caplog.at_level(logging.INFO, logger="models.io.preprocess"):
        view = prepare_view(tmp_path / "blob.png", BlobDetector())
    assert view.crop.shape == (256, 256, 3)
    assert (view.geometry.upscale[0] > 1) == upscaled
    assert ("up-sampled" in caplog.text) == upscaled
    assert view.geometry.side >= MIN_CROP_SIDE
    np.testing.assert_allclose(blob_centre(view.crop), view.geometry.photo_to_crop(np.array(centre)), atol=0.15)
    np.testing.assert_allclose(view.landmarks.mean(axis=0), blob_centre(view.crop), atol=1e-9)
    assert view.landmark_source == "blob"


def test_supplied_landmarks_skip_detection(tmp_path):
    Image.fromarray(blob_photo(300, 260, (150, 130))).save(tmp_path / "face.jpg")
    points = np.random.default_rng(5).uniform(80, 220, (68, 2))
    np.savetxt(tmp_path / "face.txt", points)
    view = prepare_view(tmp_path / "face.jpg", NoDetector())
    assert view.landmark_source == "file"
    assert view.face_box == detector_box_from_landmarks(points + PAD_WIDTH)
    np.testing.assert_allclose(view.geometry.crop_to_photo(view.landmarks), points, atol=1e-9)

    (tmp_path / "face.txt").unlink()
    np.save(tmp_path / "face.jpg.npy", points[:60])
    with pytest.raises(InputError, match=r"face\.jpg\.npy: expected 68 rows of 2 coordinates, got shape \(60, 2\)"):
        prepare_view(tmp_path / "face.jpg", NoDetector())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: np.where(np.arange(68)[:, None] == 3, np.nan, p), "the landmarks must be finite numbers"),
        (lambda p: p * 300, "more than 1.5x the 300x260 photo"),
        (lambda p: p * 0.005, "too small for a face"),
        (lambda p: np.full_like(p, 120.0), "span 0 px, too small for a face"),
        (lambda p: p - 5000, "far outside the 300x260 photo"),
    ],
)
def test_implausible_landmark_files_are_refused_naming_the_file(tmp_path, change, message):
    Image.fromarray(blob_photo(300, 260, (150, 130))).save(tmp_path / "face.jpg")
    np.savetxt(tmp_path / "face.txt", change(np.random.default_rng(5).uniform(80, 220, (68, 2))))
    with pytest.raises(InputError) as info:
        prepare_view(tmp_path / "face.jpg", NoDetector())
    assert str(info.value).startswith(f"{tmp_path / 'face.txt'}: ") and message in str(info.value)


def test_up_sampling_is_bounded(tmp_path):
    class Boxed(BlobDetector):
        """A face box of ``side`` pixels at the photo's centre."""

        def __init__(self, side: float) -> None:
            self.side = side

        def face_box(self, image):
            x, y = image.shape[1] / 2, image.shape[0] / 2
            return FaceBox(x - self.side / 2, y - self.side / 2, x + self.side / 2, y + self.side / 2)

    Image.fromarray(blob_photo(300, 260, (150, 130))).save(tmp_path / "far.png")
    with pytest.raises(InputError, match=r"far.png: the face is too small for its 300x260 photo \(a 12 px crop"):
        prepare_view(tmp_path / "far.png", Boxed(10))
    # a large photo: a modest factor (x3.1) that would still need 70 MP
    Image.fromarray(np.full((2500, 3000, 3), 90, dtype=np.uint8)).save(tmp_path / "huge.png")
    with pytest.raises(InputError, match=r"huge.png: the face is too small for its 3000x2500 photo .* to 70 MP"):
        prepare_view(tmp_path / "huge.png", Boxed(60))


def test_landmark_text_files(tmp_path):
    points = np.arange(136, dtype=np.float64).reshape(68, 2)
    (tmp_path / "a.txt").write_text("\n".join(f"{x}, {y}" for x, y in points))
    np.testing.assert_array_equal(read_landmark_file(tmp_path / "a.txt"), points)
    (tmp_path / "b.txt").write_text("1 2\nthree 4\n")
    with pytest.raises(InputError, match="b.txt: not a readable landmark file"):
        read_landmark_file(tmp_path / "b.txt")


def test_small_photos_and_missing_faces_are_reported(tmp_path):
    Image.fromarray(np.zeros((40, 300, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    with pytest.raises(InputError, match="strip.png: a 300x40 photo is too small"):
        prepare_view(tmp_path / "strip.png", BlobDetector())

    class Blind(BlobDetector):
        def face_box(self, image):
            return None

    Image.fromarray(blob_photo(200, 200, (100, 100))).save(tmp_path / "plain.png")
    with pytest.raises(InputError, match="plain.png: no face found"):
        prepare_view(tmp_path / "plain.png", Blind())


def test_network_inputs_normalise_like_imagenet(tmp_path):
    Image.fromarray(blob_photo(300, 300, (150, 150))).save(tmp_path / "a.png")
    view = prepare_view(tmp_path / "a.png", BlobDetector())
    inputs = network_inputs([view, view])
    assert inputs.images.shape == inputs.raw_images.shape == (2, 3, 256, 256)
    assert inputs.landmarks.shape == (2, 68, 2)
    raw = torch.from_numpy(view.crop).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(inputs.raw_images[1], raw)
    expected = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(inputs.images[0], expected)
