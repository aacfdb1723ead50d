"""Meshes in the model's frame (mm) and the neutral identity, on generated faces with known coefficients."""

import numpy as np
import torch

from models.face_model.default_model import load_default_model
from models.face_model.landmark_layout import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from models.face_model.model_frame import (
    EVALUATION_LANDMARKS,
    MODEL_UNITS_PER_MM,
    evaluation_landmarks,
    model_frame_millimetres,
    neutral_vertices,
)
from models.synthesis.multiview_sample import SampleConfig, render_sample


def test_per_view_meshes_and_neutral_identity_in_millimetres():
    mm = load_default_model()
    sample = render_sample(mm, np.random.default_rng(5), SampleConfig(views=3))
    expected = mm.vertices(
        torch.from_numpy(sample.shape_coeffs)[None].expand(3, -1), torch.from_numpy(sample.exp_coeffs)
    ).double()
    millimetres = model_frame_millimetres(sample.vertices, sample.pose)
    assert np.abs(millimetres - expected.numpy() / MODEL_UNITS_PER_MM).max() < 1e-3  # under a micrometre
    neutral = neutral_vertices(mm, sample.shape_coeffs)
    assert np.abs(neutral - sample.model_vertices).max() < 1.0  # model units (micrometres)
    # expression moves the views away from the neutral face, which lies between them
    offsets = np.linalg.norm(millimetres - neutral / MODEL_UNITS_PER_MM, axis=-1).mean(1)
    assert (offsets > 0.1).all() and (offsets < 10).all()
    face_width = np.ptp(neutral[:, 0]) / MODEL_UNITS_PER_MM
    assert 100 < face_width < 220  # a human face, in millimetres


def test_evaluation_landmarks_in_the_benchmarks_order():
    mm = load_default_model()
    mean = mm.mean_shape.view(-1, 3).double().numpy()
    points = evaluation_landmarks(mean, mm.landmark_indices.numpy())
    assert points.shape == (7, 3) and EVALUATION_LANDMARKS[0] == LEFT_EYE_OUTER  # iBUG 36: the subject's right eye
    right_outer, right_inner, left_inner, left_outer, nose, mouth_right, mouth_left = points
    # x right in the model's frame: the subject's right side has the smaller x
    assert right_outer[0] < right_inner[0] < left_inner[0] < left_outer[0] and mouth_right[0] < mouth_left[0]
    assert mouth_right[1] < nose[1] < right_inner[1] and right_inner[0] < nose[0] < left_inner[0]
    assert EVALUATION_LANDMARKS[3] == RIGHT_EYE_OUTER
