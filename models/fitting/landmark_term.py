"""What the weights-free fit needs from a landmark term (the authors' 68 iBUG points, or dense points)."""

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from ..face_model.linear_model import LinearFaceModel


class LandmarkResiduals(NamedTuple):
    """A landmark term as weighted (robust) least squares, at the current points, for Gauss-Newton steps:

        E = sum_vr weight_vr * phi(|residual_vr|^2),   phi(x) = x, or 2 c^2 (sqrt(1 + x / c^2) - 1) (pseudo-Huber)

    residual: (V, r, 2) image-space point minus target, pixels. point: (V, r) int64, which of the round's points
    (rows of :attr:`TermRound.face`) each residual belongs to. weight: (V, r). robust_scale: c in pixels, or None
    for plain squares.
    """

    residual: torch.Tensor
    point: torch.Tensor
    weight: torch.Tensor
    robust_scale: float | None = None

    def slope(self) -> torch.Tensor:
        """(V, r) phi'(|residual|^2) (1 for plain squares): the re-weighting of iteratively re-weighted least
        squares, whose quadratic ``phi(x0) + phi'(x0) (x - x0)`` lies above phi (concave in x) and touches it."""
        if self.robust_scale is None:
            return torch.ones_like(self.weight)
        return 1.0 / torch.sqrt(1.0 + self.residual.square().sum(dim=-1) / self.robust_scale**2)


class TermRound(NamedTuple):
    """A landmark term's share of one round (visibility and weights held fixed within it).

    face: the :class:`LinearFaceModel` of the m points the term reads. energy: (V, m, 3) camera-space points of
    ``face`` -> scalar energy in squared pixels. residuals: (V, m, 2) image-space points -> the same energy as
    :class:`LandmarkResiduals` (any discrete choice, such as a dynamic landmark's vertex, made at these points).
    """

    face: LinearFaceModel
    energy: Callable[[torch.Tensor], torch.Tensor]
    residuals: Callable[[torch.Tensor], LandmarkResiduals]


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
