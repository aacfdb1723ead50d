"""What the weights-free fit needs from a landmark term (the authors' 68 iBUG points, or dense points)."""

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from ..face_model.linear_model import LinearFaceModel


class TermRound(NamedTuple):
    """A landmark term's share of one round (visibility and weights held fixed within it).

    face: the :class:`LinearFaceModel` of the m points the term reads. energy: (V, m, 3) camera-space points of
    ``face`` -> scalar energy in squared pixels.
    """

    face: LinearFaceModel
    energy: Callable[[torch.Tensor], torch.Tensor]


class LandmarkTerm(Protocol):
    """A landmark term over V views; region arguments are the fit's region sub-mesh
    (:class:`~models.fitting.region_mesh.RegionMesh`) in camera space."""

    def initial_pose(self) -> torch.Tensor:
        """(V, 6) closed-form normalised pose of the mean face from the landmarks."""
        ...

    def start_round(self, region_vertices: torch.Tensor, visible: torch.Tensor) -> TermRound:
        """The round's points and energy, from the region's (V, s, 3) vertices and (V, s) back-face visibility."""
        ...

    def errors(self, region_vertices: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(V,) RMS landmark distance in pixels (as the energy weighs the points) at the given state."""
        ...
