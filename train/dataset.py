"""On-disk training data of DFNRMVS and a torch ``Dataset`` reading it.

A data set is a folder with one sub-folder per sample (sorted by name; names starting with "." and
plain files at the top level are ignored). A sample holds V >= 2 views of one face::

    DATA/<sample>/view0.png ... view{V-1}.png   256 x 256 RGB crops (any mode PIL reads; converted to RGB)
    DATA/<sample>/sample.npz                     the arrays below
    DATA/<sample>/meta.json                      optional, not read

``sample.npz`` (float arrays are read as float32):

============== ========== ======== ======================================================================
key            shape      required meaning
============== ========== ======== ======================================================================
landmarks      (V, 68, 2) yes      detected iBUG landmarks, pixels of the crop (x right, y down)
vertices       (V, n, 3)  yes      ground-truth mesh of each view in the 3DMM's topology, camera space
                                   of the crop in pixels (x right, y up, origin at the image centre)
landmarks3d    (V, 68, 3) no       ground-truth 3D landmarks in the camera space of ``vertices``; when
                                   absent the trainer takes ``vertices`` at the landmark indices
pose           (V, 6)     no       normalised pose of the ground truth (models.camera); its scale turns
                                   validation errors from pixels into millimetres
shape_coeffs   (80,)      no       synthetic data (train/synthetic.py) only; not read
exp_coeffs     (V, 64)    no       synthetic data only; not read
model_vertices (n, 3)     no       synthetic data only; not read
sh_coeffs      (9, 3)     no       synthetic data only; not read
============== ========== ======== ======================================================================

Samples may differ in their number of views (a generated set mixes 2 and 3); the training loader
batches samples of equal view count together (train/loaders.py). Within one batch the samples must have
the same optional keys. Malformed data raises :class:`DatasetError` with one line naming the file or folder.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from models.errors import DFNRMVSError
from models.face_model.landmark_layout import NUM_LANDMARKS
from models.geometry.camera import IMAGE_SIZE

SAMPLE_ARRAYS = "sample.npz"
VIEW_IMAGE = "view{index}.png"
# Per-channel statistics of ImageNet the backbones were normalised with (torchvision's constants,
# as the authors' demo uses them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The feature-metric energy compares views, so a sample needs at least two.
MIN_VIEWS = 2

REQUIRED_ARRAYS = ("landmarks", "vertices")
# Optional arrays the dataset returns (name -> shape after the view axis, n = vertex count).
RETURNED_OPTIONAL_ARRAYS = {"landmarks3d": (NUM_LANDMARKS, 3), "pose": (6,)}


class DatasetError(DFNRMVSError, ValueError):
    """A data folder or sample is missing or malformed (one-line message naming the file)."""


def normalize_images(raw_images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) images in [0, 1] -> ImageNet-normalised images (the networks' input)."""
    mean = raw_images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = raw_images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (raw_images - mean) / std


def count_views(folder: Path) -> int:
    """Number of consecutive ``view{i}.png`` files in ``folder`` starting at ``view0.png``."""
    views = 0
    while (folder / VIEW_IMAGE.format(index=views)).is_file():
        views += 1
    return views


def read_view(path: Path) -> torch.Tensor:
    """One crop as a (3, 256, 256) float32 tensor in [0, 1]."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from error
    if rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _check_shape(path: Path, name: str, array: np.ndarray, expected: Sequence[int]) -> None:
    if array.shape != tuple(expected):
        raise DatasetError(f"{path}: '{name}' has shape {array.shape}, expected {tuple(expected)}")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DatasetError(f"{path}: '{name}' must hold finite numbers")


def read_arrays(path: Path, views: int, num_vertices: int | None) -> dict[str, torch.Tensor]:
    """The required and returned optional arrays of one ``sample.npz``, checked, as float32 tensors."""
    try:
        with np.load(path, allow_pickle=False) as content:
            arrays = {key: content[key] for key in content.files}
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: {SAMPLE_ARRAYS} not found") from error
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable .npz file ({error})") from error
    missing = [key for key in REQUIRED_ARRAYS if key not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing array(s) {', '.join(missing)}")
    vertices = arrays["vertices"]
    if vertices.ndim != 3 or vertices.shape[0] != views or vertices.shape[2] != 3:
        raise DatasetError(f"{path}: 'vertices' has shape {vertices.shape}, expected ({views}, n, 3)")
    if num_vertices is not None and vertices.shape[1] != num_vertices:
        raise DatasetError(f"{path}: 'vertices' has {vertices.shape[1]} vertices, the morphable model {num_vertices}")
    expected = {"landmarks": (views, NUM_LANDMARKS, 2), "vertices": vertices.shape}
    expected.update({key: (views, *shape) for key, shape in RETURNED_OPTIONAL_ARRAYS.items() if key in arrays})
    for key, shape in expected.items():
        _check_shape(path, key, arrays[key], shape)
    return {key: torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32)) for key in expected}


class MultiViewFaceDataset(Dataset):
    """The samples of one data folder (module docstring), each as a dict of tensors.

    Args:
        root: the data folder.
        views: the number of views every sample must have; None accepts any number (at least 2).
        num_vertices: the morphable model's vertex count n, checked against ``vertices`` when given.

    ``view_counts[i]`` is the number of views of sample i; ``views`` the common number, or None when
    the samples differ.

    An item holds ``images`` (V, 3, 256, 256) ImageNet-normalised, ``raw_images`` (V, 3, 256, 256)
    in [0, 1], ``landmarks`` (V, 68, 2) and ``vertices`` (V, n, 3) in pixels, ``landmarks3d``
    (V, 68, 3) and ``pose`` (V, 6) when the sample has them, and ``name`` (the folder's name).
    """

    def __init__(self, root: str | Path, views: int | None = None, num_vertices: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: data folder not found")
        self.folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.folders:
            raise DatasetError(f"{self.root}: no sample folders (expected one sub-folder per sample)")
        self.view_counts: list[int] = []
        for folder in self.folders:
            if not (folder / SAMPLE_ARRAYS).is_file():
                raise DatasetError(f"{folder}: {SAMPLE_ARRAYS} not found")
            found = count_views(folder)
            if found < MIN_VIEWS:
                raise DatasetError(f"{folder}: {found} view image(s) ({VIEW_IMAGE}), at least {MIN_VIEWS} needed")
            if views is not None and found != views:
                raise DatasetError(f"{folder}: {found} views, expected {views}")
            self.view_counts.append(found)
        self.views = self.view_counts[0] if len(set(self.view_counts)) == 1 else None
        self.num_vertices = num_vertices

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict:
        folder = self.folders[index]
        views = self.view_counts[index]
        raw = torch.stack([read_view(folder / VIEW_IMAGE.format(index=i)) for i in range(views)])
        item: dict = read_arrays(folder / SAMPLE_ARRAYS, views, self.num_vertices)
        item.update(images=normalize_images(raw), raw_images=raw, name=folder.name)
        return item


def collate_samples(items: list[dict]) -> dict:
    """Stack items into a batch (tensors gain a leading N axis; ``name`` becomes a list).

    Raises :class:`DatasetError` naming the samples when their view counts or optional arrays differ.
    """
    keys = set(items[0])
    for item in items[1:]:
        if item["images"].shape[0] != items[0]["images"].shape[0]:
            raise DatasetError(
                f"samples {items[0]['name']} and {item['name']} differ in their number of views; "
                "batch samples of equal view count (train/loaders.py does)"
            )
        if set(item) != keys:
            difference = ", ".join(sorted(keys.symmetric_difference(item)))
            raise DatasetError(
                f"samples {items[0]['name']} and {item['name']} differ in optional arrays ({difference}); "
                "a data set must provide them for all samples or none"
            )
    return default_collate(items)
