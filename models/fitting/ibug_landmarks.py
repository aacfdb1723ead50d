"""The authors' 68-point landmark term in the weights-free fit.

:func:`models.nrmvs.energy.landmark_energy`: fixed landmarks plus dynamic jaw-contour landmarks that slide to the
closest visible face-region vertex where their own vertex faces away; back-face visibility. To keep the
optimisation small, each round keeps only the landmark vertices and, per contour landmark, its nearest visible
face-region vertices as candidates.
"""

import torch

from ..face_model.landmark_layout import CONTOUR_LANDMARKS
from ..face_model.morphable_model import MorphableModel
from ..geometry.camera import to_image
from ..geometry.visibility import visible_distances
from ..nrmvs.energy import landmark_energy, landmark_errors
from .landmark_pose import landmark_pose
from .landmark_term import LandmarkResiduals, TermRound
from .region_mesh import RegionMesh


class IbugLandmarkTerm:
    """The 68-point term (:class:`~models.fitting.landmark_term.LandmarkTerm`).

    Args:
        mm: the model. region: the fit's region sub-mesh. landmarks: (V, 68, 2) image pixels.
        image_size: (H, W). contour_candidates: nearest visible face-region vertices kept per contour landmark
            as dynamic-landmark candidates within a round.
    """

    def __init__(
        self,
        mm: MorphableModel,
        region: RegionMesh,
        landmarks: torch.Tensor,
        image_size: tuple[int, int],
        contour_candidates: int,
    ) -> None:
        self.mm = mm
        self.region = region
        self.landmarks = landmarks
        self.image_size = image_size
        self.contour_candidates = contour_candidates

    def initial_pose(self) -> torch.Tensor:
        return landmark_pose(self.mm, self.landmarks, self.image_size)

    def start_round(self, region_vertices: torch.Tensor, visible: torch.Tensor) -> TermRound:
        region = self.region
        with torch.no_grad():
            region_visible = visible & region.face_region
            projected = to_image(region_vertices, *self.image_size)[..., :2]
            contour_targets = self.landmarks[:, list(CONTOUR_LANDMARKS)]  # (V, 12, 2)
            distance = visible_distances(contour_targets, projected, region_visible, exact=False)
            count = min(self.contour_candidates, distance.shape[-1])
            nearest = distance.topk(count, dim=-1, largest=False).indices.reshape(-1)
        working = torch.unique(torch.cat([region.landmarks, nearest]))
        is_candidate = torch.zeros_like(region.face_region)
        is_candidate[nearest] = True
        positions = torch.searchsorted(working, region.landmarks)
        landmark_visible = visible[:, region.landmarks].unsqueeze(0)
        candidate_visible = (region_visible & is_candidate)[:, working].unsqueeze(0)
        targets = self.landmarks.unsqueeze(0)

        def energy(points: torch.Tensor) -> torch.Tensor:
            term = landmark_energy(
                points.unsqueeze(0), targets, positions, landmark_visible, candidate_visible, self.image_size
            )
            return term.value

        def residuals(projected: torch.Tensor) -> LandmarkResiduals:
            errors = landmark_errors(
                projected.unsqueeze(0), targets, positions, landmark_visible, candidate_visible, self.image_size
            )
            views = projected.shape[0]
            contour = errors.contour
            mean = 1.0 / (views * errors.fixed.shape[-1])  # the energy is a mean over views and landmarks
            return LandmarkResiduals(
                residual=torch.cat([errors.fixed_error[0], errors.dynamic_error[0, :, contour]], dim=1),
                point=torch.cat([positions.expand(views, -1), errors.closest[0]], dim=1),
                weight=torch.cat([errors.fixed[0], errors.dynamic[0, :, contour]], dim=1) * mean,
            )

        return TermRound(region.face.take(working), energy, residuals)

    @torch.no_grad()
    def errors(self, region_vertices: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        region = self.region
        region_visible = visible & region.face_region
        errors = []
        for view in range(region_vertices.shape[0]):
            term = landmark_energy(
                region_vertices[None, view : view + 1],
                self.landmarks[None, view : view + 1],
                region.landmarks,
                visible[None, view : view + 1, region.landmarks],
                region_visible[None, view : view + 1],
                self.image_size,
            )
            errors.append(term.value.sqrt())
        return torch.stack(errors)
