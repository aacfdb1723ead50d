"""Photos of one person in, one face mesh per photo out: the reconstruction API that ``demo.py`` uses.

::

    from models import reconstruct
    result = reconstruct(["view0.jpg", "view1.jpg"])          # weights-free fit, built-in face model
    result.vertices                                         # (V, n, 3) meshes, crop camera space (pixels)
    result.save("out/person")                               # the demo's files (meshes, overlays, result.json)

Data flow: photo -> :func:`~models.io.preprocess.prepare_photo` (face box, the authors' crop, landmarks on
the crop) -> network inputs (256x256 crops in [0, 1] and ImageNet-normalised, landmarks in crop pixels) ->
a :class:`Reconstructor` (the weights-free :class:`FittingReconstructor`, or the authors' network,
:class:`LearnedReconstructor`) -> :class:`Reconstruction` -> :meth:`Reconstruction.save`.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from .errors import InputError, ReconstructionError
from .face_model.default_model import DEFAULT_MODEL_PATH, load_default_model
from .face_model.dense_landmarks import DenseLandmarks
from .face_model.landmark_layout import NUM_LANDMARKS
from .face_model.model_frame import neutral_vertices
from .face_model.morphable_model import MorphableModel
from .fitting.multiview_fit import FitConfig, fit_multiview
from .io.case_outputs import staged_directory, write_case
from .io.face_identity import choose_faces
from .io.landmark_detectors import LandmarkDetector, create_detector
from .io.mesh_exports import CaseMeshes, ExportOptions, write_exports
from .io.preprocess import (
    NetworkInputs,
    PreparedView,
    check_photo,
    landmark_file,
    load_photo,
    network_inputs,
    prepare_photo,
    read_landmark_file,
    reflect_pad,
)
from .networks.checkpoint import load_checkpoint
from .networks.fnrmvs_net import MIN_VIEWS, FNRMVSNet


class MethodOutput(NamedTuple):
    """What a :class:`Reconstructor` returns for V views.

    vertices: (V, n, 3) camera-space meshes (pixels of the 256 crop, x right, y up, origin at its centre).
    poses: (V, 6) normalised weak-perspective poses. details: JSON-ready facts (per-stage errors, energies).
    shape_coeffs: (ks,) normalised identity, or None. exp_coeffs: (V, ke) normalised expressions, or None.
    """

    vertices: np.ndarray
    poses: np.ndarray
    details: dict
    shape_coeffs: np.ndarray | None = None
    exp_coeffs: np.ndarray | None = None


class Reconstructor(Protocol):
    """A reconstruction method for the views of one person.

    method: its name in results. min_views: the fewest views it accepts. model: its morphable model.
    model_name: where the model came from. checkpoint: its weights file, if any. device: where it runs.
    dense_layout: the dense landmark layout it can fit besides the 68 iBUG points (e.g. "mediapipe468"), or None.
    """

    method: str
    min_views: int
    model: MorphableModel
    model_name: str
    checkpoint: str | None
    device: torch.device
    dense_layout: str | None

    def run(self, inputs: NetworkInputs) -> MethodOutput: ...


class FittingReconstructor:
    """The weights-free multi-view fit (:func:`models.fitting.multiview_fit.fit_multiview`).

    Args:
        model: the morphable model (default: the built-in one). model_name: how results name it.
        device: where the fit runs. config: the fit's weights and stages.
    """

    method = "fitting"
    min_views = 1
    checkpoint = None

    def __init__(
        self,
        model: MorphableModel | None = None,
        model_name: str | None = None,
        device: torch.device | str = "cpu",
        config: FitConfig | None = None,
        dense_landmarks: DenseLandmarks | None = None,
    ) -> None:
        self.device = torch.device(device)
        if model is None:
            model, model_name = load_default_model(), model_name or f"default ({DEFAULT_MODEL_PATH.name})"
        if dense_landmarks is not None:
            model = model.with_dense_landmarks(dense_landmarks)
        self.model = model.to(self.device)
        self.model_name = model_name or "custom"
        self.config = config or FitConfig()

    @property
    def dense_layout(self) -> str | None:
        dense = self.model.dense_landmarks
        return None if dense is None else dense.layout

    def run(self, inputs: NetworkInputs) -> MethodOutput:
        fit = fit_multiview(self.model, inputs.raw_images, inputs.landmarks, self.config)
        stages = [
            {
                "name": stage.name,
                "landmark_rms_px": [round(float(e), 4) for e in stage.landmark_error],
                "photometric_error": None if np.isnan(stage.photometric_error) else stage.photometric_error,
                "seconds": round(stage.seconds, 3),
            }
            for stage in fit.stages
        ]
        return MethodOutput(
            vertices=fit.vertices.detach().cpu().numpy(),
            poses=fit.pose.detach().cpu().numpy(),
            details={"stages": stages, "single_view": fit.single_view, "landmark_term": fit.landmarks},
            shape_coeffs=fit.shape_coeffs.detach().cpu().numpy(),
            exp_coeffs=fit.exp_coeffs.detach().cpu().numpy(),
        )


# Precisions of the learned network's convolutions by name: float32 (None: no autocast, the faithful default) or
# the opt-in reduced-precision mode (FNRMVSNet's ``reduced_precision``).
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LearnedReconstructor:
    """The authors' FNRMVSNet with a checkpoint (their ``2views_model.pth``, ...) and the 3DMM it was trained with.

    reduced_precision: None (float32), or the dtype of the opt-in reduced-precision mode (:data:`PRECISIONS`).

    Raises:
        CheckpointError: the file is missing, unreadable or does not match the network.
    """

    method = "learned"
    min_views = MIN_VIEWS
    dense_layout = None

    def __init__(
        self,
        model: MorphableModel,
        checkpoint: str | Path,
        device: torch.device | str = "cpu",
        model_name: str | None = None,
        reduced_precision: torch.dtype | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model
        self.model_name = model_name or "custom"
        self.checkpoint = str(checkpoint)
        self.reduced_precision = reduced_precision
        self.network = FNRMVSNet(model)
        load_checkpoint(self.network, checkpoint)
        self.network.to(self.device).eval()

    def run(self, inputs: NetworkInputs) -> MethodOutput:
        with torch.no_grad():
            output = self.network(
                inputs.images[None],
                inputs.raw_images[None],
                inputs.landmarks[None],
                reduced_precision=self.reduced_precision,
            )
        energies = [
            {"level": level.level, "step": k, "feature": float(s.feature_energy), "landmark": float(s.landmark_energy)}
            for level in output.optimisation.levels
            for k, s in enumerate(level.steps)
        ]
        last = output.optimisation.levels[-1].steps[-1]
        return MethodOutput(
            output.vertices[0].cpu().numpy(),
            last.pose[0].cpu().numpy(),
            {"energies": energies, "precision": str(self.reduced_precision or torch.float32).removeprefix("torch.")},
            shape_coeffs=last.shape_coeffs[0, :, 0].cpu().numpy(),
        )


@dataclass
class Reconstruction:
    """A reconstructed person (V views, n vertices of the morphable model).

    name: the case's name. views: the :class:`~models.io.preprocess.PreparedView` s (crop, landmarks in
    crop pixels, crop geometry, photo path). landmark_note: why the landmarks are not the requested
    backend's (a fallback), or None. vertices: (V, n, 3) camera-space meshes (pixels of the 256
    crop, x right, y up, origin at its centre; ``view.geometry.camera_to_photo`` maps them onto the photo).
    poses: (V, 6) normalised weak-perspective poses. triangles: (t, 3) the model's triangles (clockwise
    seen from the camera). valid_mask: (n,) the face region without the nostrils. shape_coeffs: (ks,) the
    identity coefficients (the learned path's: its last step's). exp_coeffs: (V, ke) the fit's expressions
    (None for the learned path). method, model_name, checkpoint, landmark_backend, device: how it was made.
    details: method-specific facts. timings: seconds per phase. uv_coords: (n, 2) the model's UV map and
    landmark_indices: (68,) its landmark vertices (for the exports). neutral_vertices: (n, 3) the identity
    with expression zero, model units (:mod:`models.face_model.model_frame`), or None.
    """

    name: str
    views: list[PreparedView]
    vertices: np.ndarray
    poses: np.ndarray
    triangles: np.ndarray
    valid_mask: np.ndarray
    method: str
    model_name: str
    checkpoint: str | None
    landmark_backend: str
    device: str
    shape_coeffs: np.ndarray | None = None
    exp_coeffs: np.ndarray | None = None
    details: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    landmark_note: str | None = None
    uv_coords: np.ndarray | None = None
    landmark_indices: np.ndarray | None = None
    neutral_vertices: np.ndarray | None = None

    @property
    def photo_paths(self) -> list[Path]:
        """The photo files of the views (photos given as arrays have none)."""
        return [view.path for view in self.views if view.path is not None]

    def summary(self) -> dict:
        """The JSON-ready facts of ``result.json`` besides the per-view records."""
        coefficients = None
        if self.shape_coeffs is not None:
            coefficients = {
                "shape": [float(v) for v in self.shape_coeffs],
                "expression": None if self.exp_coeffs is None else self.exp_coeffs.astype(float).tolist(),
            }
        return {
            "case": self.name,
            "method": self.method,
            "model": self.model_name,
            "checkpoint": self.checkpoint,
            "landmarks": self.landmark_backend,
            **({"landmark_fallback": self.landmark_note} if self.landmark_note else {}),
            "device": self.device,
            "coefficients": coefficients,
            "timings_s": {name: round(seconds, 3) for name, seconds in self.timings.items()},
            "details": self.details,
            "warnings": [
                f"{view.path or f'photo {i}'}: {view.face_note}" for i, view in enumerate(self.views) if view.face_note
            ],
        }

    def save(self, folder: str | Path, overwrite: bool = False, exports: ExportOptions | None = None) -> Path:
        """Write the demo's files into ``folder`` (created; all or nothing) and return it.

        An existing ``folder`` is replaced only with ``overwrite``, or when it holds an earlier result of the
        same photo files (so re-running refreshes it). ``exports`` selects the extra outputs (texture,
        meshes in the model's frame, neutral identity; :mod:`models.io.mesh_exports`), all by default.

        Raises:
            OutputError: ``folder`` exists and may not be replaced.
        """
        folder = Path(folder)
        summary = self.summary()
        case = CaseMeshes(
            np.stack([view.crop for view in self.views]),
            self.vertices,
            self.poses,
            self.triangles,
            self.valid_mask,
            self.uv_coords,
            self.landmark_indices,
            self.neutral_vertices,
        )
        with staged_directory(folder, overwrite, self.photo_paths) as staging:
            summary["exports"] = write_exports(staging, case, exports)
            write_case(staging, self.views, self.vertices, self.poses, self.triangles, self.valid_mask, summary)
        return folder


class _Photo(NamedTuple):
    """A loaded photo: pixels, file (None for an array), name in messages, given landmarks, their source and
    their name in messages (their file, or None: the photo's name)."""

    pixels: np.ndarray
    path: Path | None
    name: str
    landmarks: np.ndarray | None
    landmark_source: str
    landmark_name: str | None = None


def _load(photo: str | Path | np.ndarray, given: np.ndarray | None, index: int) -> _Photo:
    """Read one photo and its landmarks (given, or from a ``<photo>.txt``/``.npy`` file beside it)."""
    if isinstance(photo, np.ndarray):
        return _Photo(check_photo(photo, f"photo {index}"), None, f"photo {index}", given, "given")
    path = Path(photo)
    pixels = check_photo(load_photo(path), str(path))
    if given is not None:
        return _Photo(pixels, path, str(path), given, "given")
    points_file = landmark_file(path)
    if points_file is None:
        return _Photo(pixels, path, str(path), None, "given")
    return _Photo(pixels, path, str(path), read_landmark_file(points_file), "file", str(points_file))


def prepare_views(
    photos: Sequence[str | Path | np.ndarray],
    detector: LandmarkDetector,
    landmarks: Sequence[np.ndarray | None] | None = None,
    strict: bool = False,
) -> list[PreparedView]:
    """Preprocess each photo (a file, or an (H, W, 3) uint8 RGB array); ``landmarks``: per photo, (68, 2) or
    (468, 2) points in photo pixels that replace detection, or None.

    Where a photo shows several faces, the same person is taken in every view
    (:func:`models.io.face_identity.choose_faces`; the choice is noted in the view's ``face_note``), or, with
    ``strict``, the photo is refused. Every view of a case gets landmarks of one layout: where some views have
    68 points (a fallback or a file) and others dense points, the dense views get the 68-point detector's
    landmarks too (see :func:`consistent_landmarks`).
    """
    if landmarks is not None and len(landmarks) != len(photos):
        raise InputError(f"{len(photos)} photos but {len(landmarks)} landmark sets")
    loaded = [_load(photo, None if landmarks is None else landmarks[i], i) for i, photo in enumerate(photos)]
    detected = [index for index, photo in enumerate(loaded) if photo.landmarks is None]
    boxes: list = [None] * len(loaded)
    notes: list[str | None] = [None] * len(loaded)
    if detected and hasattr(detector, "faces"):
        padded = [reflect_pad(loaded[index].pixels) for index in detected]
        choice = choose_faces(
            padded, [detector.faces(image) for image in padded], [loaded[i].name for i in detected], strict
        )
        for index, box, note in zip(detected, choice.boxes, choice.notes, strict=True):
            boxes[index], notes[index] = box, note
    views = []
    for photo, box, note in zip(loaded, boxes, notes, strict=True):
        view = prepare_photo(
            photo.pixels,
            detector,
            photo.landmarks,
            photo.name,
            photo.path,
            photo.landmark_source,
            face=box,
            landmark_name=photo.landmark_name,
        )
        views.append(view._replace(face_note=note))
    return consistent_landmarks(views, detector)


def consistent_landmarks(views: list[PreparedView], detector: LandmarkDetector) -> list[PreparedView]:
    """The views with landmarks of one layout: 68 points for every view when any view has 68.

    The dense views' crops go to the 68-point detector (``detector.fallback``, or ``detector`` itself when it is
    a 68-point one), each with a note naming the view that had 68 points.

    Raises:
        InputError: no 68-point detector is at hand, or it finds no face in a crop.
    """
    sparse = [k for k, view in enumerate(views) if len(view.landmarks) == NUM_LANDMARKS]
    if not sparse or len(sparse) == len(views):
        return views
    ibug = detector.fallback if detector.fallback is not None else detector
    first = views[sparse[0]]
    if first.landmark_note is not None:
        reason = f"{detector.name} found no face in its crop"
    else:
        reason = f"its landmarks ({first.landmark_source}) have 68 points"
    if ibug.layout != "ibug68":
        raise InputError(
            f"{_view_name(first, sparse[0])}: {reason} but other views have dense landmarks; "
            "give every view the same kind (or use --landmarks dlib)"
        )
    note = f"{_view_name(first, sparse[0])}: {reason}; {ibug.name}'s 68 landmarks used for every view"
    consistent = []
    for index, view in enumerate(views):
        if index not in sparse:
            points = ibug.landmarks(view.crop)
            if points is None:
                raise InputError(f"{_view_name(view, index)}: no face found by {ibug.name} in its crop ({note})")
            view = view._replace(landmarks=points, landmark_source=ibug.name)
        consistent.append(view._replace(landmark_note=note))
    return consistent


def _view_name(view: PreparedView, index: int) -> str:
    return str(view.path) if view.path is not None else f"photo {index}"


def reconstruct(
    photos: Sequence[str | Path | np.ndarray],
    reconstructor: Reconstructor | None = None,
    detector: LandmarkDetector | str = "auto",
    landmarks: Sequence[np.ndarray | None] | None = None,
    name: str | None = None,
    strict: bool = False,
) -> Reconstruction:
    """Reconstruct one mesh per photo of one person.

    Args:
        photos: V photo files or (H, W, 3) uint8 RGB arrays, each one view of the same person.
        reconstructor: the method (default: :class:`FittingReconstructor` with the built-in face model).
        detector: a landmark detector, or a backend name (``models.io.landmark_detectors.BACKENDS``; "auto":
            MediaPipe's dense points with dlib's 68 as the fallback where the method can fit them, else dlib).
        landmarks: optional per-photo (68, 2) or (468, 2) landmarks in photo pixels (None entries are detected).
        name: the case's name (default: the first photo's folder name, or "case").
        strict: refuse photos that show several faces (by default the same person is chosen in every view and
            the choice noted in result.json).
    Returns:
        :class:`Reconstruction`.
    Raises:
        InputError: unreadable photo, implausible landmarks, no face found, too few views for the method, dense
            landmarks for a method that cannot fit them, with ``strict`` a photo of several faces.
        LandmarkError: the detector backend cannot be used.
        ReconstructionError: the method gave non-finite vertices or poses.
    """
    if len(photos) == 0:
        raise InputError("no photos given")
    reconstructor = reconstructor or FittingReconstructor()
    if len(photos) < reconstructor.min_views:
        raise InputError(
            f"the {reconstructor.method} method needs at least {reconstructor.min_views} views, got {len(photos)}"
        )
    if isinstance(detector, str):
        detector = create_detector(detector, str(reconstructor.device), reconstructor.dense_layout)
    start = time.perf_counter()
    views = prepare_views(photos, detector, landmarks, strict)
    count = len(views[0].landmarks)
    if count != NUM_LANDMARKS and reconstructor.dense_layout is None:
        raise InputError(
            f"{_view_name(views[0], 0)}: {count} landmarks, but the {reconstructor.method} method with this model "
            f"uses {NUM_LANDMARKS} (a dense landmark correspondence for the model is needed)"
        )
    prepared = time.perf_counter()
    output = reconstructor.run(network_inputs(views, reconstructor.device))
    reconstructed = time.perf_counter()
    if name is None:
        first = views[0].path
        name = first.resolve().parent.name if first is not None else "case"
    finite = [np.isfinite(value).all() for value in (output.vertices, output.poses) if value is not None]
    if not all(finite):
        raise ReconstructionError(
            f"{name}: the {reconstructor.method} gave non-finite vertices or poses (is the model "
            f"{reconstructor.model_name} sound?); nothing was written"
        )
    model = reconstructor.model
    return Reconstruction(
        name=name,
        views=views,
        vertices=output.vertices,
        poses=output.poses,
        triangles=model.triangles.cpu().numpy(),
        valid_mask=model.face_region_mask_no_nose_hole.cpu().numpy(),
        method=reconstructor.method,
        model_name=reconstructor.model_name,
        checkpoint=reconstructor.checkpoint,
        landmark_backend=", ".join(dict.fromkeys(view.landmark_source for view in views)),
        device=str(reconstructor.device),
        shape_coeffs=output.shape_coeffs,
        exp_coeffs=output.exp_coeffs,
        details=output.details,
        timings={"preprocess": prepared - start, "reconstruct": reconstructed - prepared},
        landmark_note=views[0].landmark_note,
        uv_coords=model.uv_coords.cpu().numpy(),
        landmark_indices=model.landmark_indices.cpu().numpy(),
        neutral_vertices=None if output.shape_coeffs is None else neutral_vertices(model, output.shape_coeffs),
    )
