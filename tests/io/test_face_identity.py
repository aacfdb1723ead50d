"""Photos of several people: the same person is reconstructed in every view (dlib's face descriptors)."""

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from models.io.face_identity import SAME_PERSON_DISTANCE, FaceDescriber, choose_faces
from models.io.landmark_detectors import create_detector
from models.io.preprocess import reflect_pad


def photo(path, side: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BILINEAR))


def two_people(examples_dir) -> np.ndarray:
    """case0's person (240 px) on the left of case1's larger one (280 px), on grey."""
    canvas = np.full((300, 560, 3), 128, dtype=np.uint8)
    canvas[30:270, 10:250] = photo(examples_dir / "case0" / "case0_in0.jpg", 240)
    canvas[10:290, 270:550] = photo(examples_dir / "case1" / "case1_in0.jpg", 280)
    return canvas


@pytest.fixture(scope="module")
def detector():
    return create_detector("dlib")


def test_the_person_of_the_single_face_view_is_chosen_over_a_larger_face(examples_dir, detector):
    images = [reflect_pad(two_people(examples_dir)), reflect_pad(photo(examples_dir / "case0" / "case0_in1.jpg", 240))]
    faces = [detector.faces(image) for image in images]
    assert [len(found) for found in faces] == [2, 1]
    assert faces[0][0].rect.left > 280  # the larger face is case1's person, on the right
    choice = choose_faces(images, faces, ["pair.png", "single.jpg"])
    assert choice.boxes[0] == faces[0][1].box and choice.boxes[1] == faces[1][0].box
    assert choice.notes[1] is None
    note = choice.notes[0]
    assert "2 faces found; face 2 by size taken as the person" in note and "single.jpg" in note
    distance = float(note.split("descriptor distance ")[1].rstrip(")"))
    assert distance < SAME_PERSON_DISTANCE


def test_descriptors_tell_the_two_people_apart(examples_dir, detector):
    describer = FaceDescriber()
    image = reflect_pad(two_people(examples_dir))
    right, left = (describer.describe(image, face.rect) for face in detector.faces(image))
    alone = reflect_pad(photo(examples_dir / "case0" / "case0_in1.jpg", 240))
    person = describer.describe(alone, detector.faces(alone)[0].rect)
    assert np.linalg.norm(left - person) < SAME_PERSON_DISTANCE < np.linalg.norm(right - person)


def test_strict_refuses_several_faces_and_single_faces_pass_untouched(examples_dir, detector):
    images = [reflect_pad(two_people(examples_dir))]
    faces = [detector.faces(images[0])]
    with pytest.raises(InputError, match=r"^pair.png: 2 faces found \(--strict refuses photos of several people"):
        choose_faces(images, faces, ["pair.png"], strict=True)
    alone = choose_faces(images[:1], [faces[0][:1]], ["a.png"], strict=True)
    assert alone.boxes == [faces[0][0].box] and alone.notes == [None]
