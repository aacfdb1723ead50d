"""What the learned optimisation records at each stage (N samples, V views, n vertices)."""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class StepRecord:
    """One gradient step of one level (N samples, V views, n vertices).

    shape_coeffs (N, 80, 1), pose (N, V, 6), adaptive_coeffs (N, V, 64, 1): parameters after the step.
    vertices / image_vertices (N, V, n, 3): the mesh after the step (camera / image space, pixels).
    visible (N, V, n) bool: visible face-region vertices after the step; full_visible: whole mesh.
    colors (N, V, 3, n): normalised-image colours sampled at the vertices *before* the step.
    raw_step_size (N, 4): tanh output of the step net (shape, expression, pose, adaptive).
    delta_vertices (N, V, n, 3): this level's adaptive displacement after the step (model space).
    feature_energy, landmark_energy: scalars, the energy terms evaluated before the step.
    """

    shape_coeffs: torch.Tensor
    pose: torch.Tensor
    adaptive_coeffs: torch.Tensor
    vertices: torch.Tensor
    image_vertices: torch.Tensor
    visible: torch.Tensor
    full_visible: torch.Tensor
    colors: torch.Tensor
    raw_step_size: torch.Tensor
    delta_vertices: torch.Tensor
    feature_energy: torch.Tensor
    landmark_energy: torch.Tensor


class LevelRecord:
    """One pyramid level: its adaptive basis (N, 3n, 64), its steps, and colours (N, V, 3, n) of the
    [0, 1] images at the level's final vertices.

    ``adaptive_basis`` may be given as a function that computes it: inference records the basis in its
    compact UV form and expands it on first access, so that finished levels do not each hold an (N, 3n, 64)
    tensor while the next ones run (41 MB per level at the BFM's size).
    """

    def __init__(
        self,
        level: int,
        adaptive_basis: torch.Tensor | Callable[[], torch.Tensor],
        steps: list[StepRecord] | None = None,
        final_colors: torch.Tensor | None = None,
    ) -> None:
        self.level = level
        self._adaptive_basis = adaptive_basis
        self.steps = [] if steps is None else steps
        self.final_colors = final_colors

    @property
    def adaptive_basis(self) -> torch.Tensor:
        """(N, 3n, 64) the level's adaptive basis, rows x0, y0, z0, x1, ... (expression basis added at level 2)."""
        if not isinstance(self._adaptive_basis, torch.Tensor):
            self._adaptive_basis = self._adaptive_basis()
        return self._adaptive_basis


@dataclass
class NRMVSResult:
    """Everything the optimisation computes.

    initial_vertices / initial_image_vertices (N, V, n, 3): the regressor-posed mean face.
    initial_visible / initial_full_visible (N, V, n) bool; initial_colors (N, V, 3, n) from the
    normalised images; initial_raw_colors (N, V, 3, n) from the [0, 1] images.
    levels: one :class:`LevelRecord` per level (2, 3, 4).
    """

    initial_vertices: torch.Tensor
    initial_image_vertices: torch.Tensor
    initial_visible: torch.Tensor
    initial_full_visible: torch.Tensor
    initial_colors: torch.Tensor
    initial_raw_colors: torch.Tensor
    levels: list[LevelRecord] = field(default_factory=list)

    @property
    def steps(self) -> list[StepRecord]:
        """The 9 steps in order."""
        return [step for level in self.levels for step in level.steps]

    @property
    def stage_vertices(self) -> list[torch.Tensor]:
        """Vertices (N, V, n, 3) after each stage: the initial mesh, then every step (10 in all)."""
        return [self.initial_vertices, *(step.vertices for step in self.steps)]

    @property
    def final_vertices(self) -> torch.Tensor:
        """(N, V, n, 3) camera-space vertices after the last step (before the demo's landmark correction)."""
        return self.levels[-1].steps[-1].vertices if self.levels else self.initial_vertices
