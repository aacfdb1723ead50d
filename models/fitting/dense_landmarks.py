"""The dense landmark term of the weights-free fit: hundreds of detected points against their places on the model.

A dense detector (MediaPipe's face mesh) finds K points (468) in each view; the model's
:class:`~models.face_model.dense_landmarks.DenseLandmarks` says where each lies on its surface. The term is

    E = sum_vk a_vk rho(|P(x_vk) - q_vk|^2) / sum_vk a_vk        (squared pixels, like the 68-point term)

with x_vk point k of view v on the posed model (barycentric in its triangle), P the projection to image
pixels, q_vk its detection, rho the pseudo-Huber penalty ``2 c^2 (sqrt(1 + r^2 / c^2) - 1)`` (~r^2 below the
scale c, growing like 2 c r above, so that a few misplaced points do not drag the face), and weights

    a_vk = g_k * clamp((n_vk - low) / (high - low), 0, 1)

where n_vk is the camera-z of the model's outward unit normal at the point (1 facing the camera, 0 on the
silhouette, negative turned away): points on the far side of a turned head get no weight, points near the
silhouette little, as a detector places them least reliably there. g_k is smaller for the face-outline points
(their scatter is about twice the inner points'). The weights are held fixed within a round and recomputed from
the current fit before each. The detector's depth is not used: on rendered faces of known shape MediaPipe's
relative depth followed the true depth with a slope of only 0.2-0.3 and made the fit worse.
"""

import torch

from ..face_model.dense_landmarks import DenseLandmarks
from ..face_model.linear_model import LinearFaceModel
from ..face_model.mediapipe_layout import FACE_OVAL, MEDIAPIPE_LAYOUT
from ..geometry.camera import pose_vertices, to_image
from ..geometry.normals import vertex_normals
from .landmark_pose import affine_pose
from .landmark_term import LandmarkResiduals, TermRound
from .photometric import pseudo_huber
from .region_mesh import RegionMesh

# Re-weighted refinements of the closed-form initial pose (visibility and robust weights from the previous one).
INITIAL_POSE_REFINEMENTS = 3


def contour_points(dense: DenseLandmarks) -> tuple[int, ...]:
    """Indices of the layout's face-outline points (none for a layout other than MediaPipe's)."""
    return FACE_OVAL if dense.layout == MEDIAPIPE_LAYOUT else ()


def point_model(face: LinearFaceModel, corners: torch.Tensor, barycentrics: torch.Tensor) -> LinearFaceModel:
    """The linear model of points that are barycentric combinations of ``face``'s vertices.

    Args:
        face: the model of m vertices. corners: (K, 3) indices of each point's triangle corners among them.
        barycentrics: (K, 3) the corners' weights.
    Returns:
        :class:`LinearFaceModel` of the K points (the points are linear in the coefficients, so their model is
        the weighted sum of the corners' rows).
    """
    weights = barycentrics.to(device=face.mean.device, dtype=face.mean.dtype)

    def combine(flat: torch.Tensor | None) -> torch.Tensor | None:
        if flat is None:
            return None
        rows = flat.view(face.num_vertices, 3, -1)[corners]  # (K, 3 corners, 3 axes, columns)
        return (rows * weights.view(*weights.shape, 1, 1)).sum(dim=1).reshape(-1, *flat.shape[1:])

    return LinearFaceModel(combine(face.mean), combine(face.shape_basis), combine(face.exp_basis))


class DenseLandmarkTerm:
    """The dense term (:class:`~models.fitting.landmark_term.LandmarkTerm`; see the module docstring).

    Args:
        dense: the model's correspondence. region: the fit's region sub-mesh, cut with ``dense``.
        landmarks: (V, K, 2) detected points, image pixels (x right, y down).
        image_size: (H, W). robust_scale: c, pixels. visibility_ramp: (low, high) normal z of zero and full
        weight. contour_weight: g of the face-outline points (the others have 1).
    """

    def __init__(
        self,
        dense: DenseLandmarks,
        region: RegionMesh,
        landmarks: torch.Tensor,
        image_size: tuple[int, int],
        robust_scale: float,
        visibility_ramp: tuple[float, float],
        contour_weight: float,
    ) -> None:
        if region.dense_corners is None:
            raise ValueError("the region mesh was cut without the dense landmarks")
        self.corners = region.dense_corners
        self.barycentrics = dense.barycentrics.to(device=landmarks.device, dtype=landmarks.dtype)
        self.points = point_model(region.face, self.corners, self.barycentrics)
        self.region = region
        self.landmarks = landmarks
        self.image_size = image_size
        self.robust_scale = robust_scale
        self.visibility_ramp = visibility_ramp
        contour = torch.zeros(dense.count, dtype=torch.bool, device=landmarks.device)
        contour[list(contour_points(dense))] = True
        self.contour = contour
        self.group_weight = torch.where(contour, contour_weight, 1.0).to(landmarks.dtype)

    def initial_pose(self) -> torch.Tensor:
        """:func:`~models.fitting.landmark_pose.affine_pose` of the mean face's points off the face outline, then
        refined with the points weighted as the energy weighs them at that pose, times the robust penalty's
        weight of their residual (iteratively re-weighted least squares), so that points on the far side of a
        turned head and gross outliers do not skew it."""
        inner = ~self.contour
        mean_points = self.points.mean.view(-1, 3)
        pose = affine_pose(mean_points[inner], self.landmarks[:, inner], self.image_size)
        views = self.landmarks.shape[0]
        mean_region = self.region.face.vertices(
            self.region.face.shape_basis.new_zeros(self.region.face.shape_basis.shape[1])
        )
        for _ in range(INITIAL_POSE_REFINEMENTS):
            region_vertices = pose_vertices(mean_region.expand(views, -1, -1), pose)
            points = pose_vertices(mean_points.expand(views, -1, -1), pose)
            residual = (to_image(points, *self.image_size)[..., :2] - self.landmarks).square().sum(dim=-1)
            robust = 1.0 / torch.sqrt(1.0 + residual / self.robust_scale**2)
            weights = (self.weights(region_vertices) * robust)[:, inner]
            pose = affine_pose(mean_points[inner], self.landmarks[:, inner], self.image_size, weights)
        return pose

    @torch.no_grad()
    def weights(self, region_vertices: torch.Tensor) -> torch.Tensor:
        """(V, K) the points' weights a_vk at the region's (V, s, 3) camera-space vertices."""
        region = self.region
        outward = -vertex_normals(region_vertices, region.triangles, region.adjacent)  # (V, s, 3)
        normals = (outward[:, self.corners] * self.barycentrics.unsqueeze(-1)).sum(dim=-2)  # (V, K, 3)
        facing = normals[..., 2] / normals.norm(dim=-1).clamp(min=torch.finfo(normals.dtype).tiny)
        low, high = self.visibility_ramp
        return ((facing - low) / (high - low)).clamp(0.0, 1.0) * self.group_weight

    def start_round(self, region_vertices: torch.Tensor, visible: torch.Tensor) -> TermRound:
        weights = self.weights(region_vertices)
        total = weights.sum().clamp(min=1.0)
        scale = self.robust_scale

        def energy(points: torch.Tensor) -> torch.Tensor:
            residual = to_image(points, *self.image_size)[..., :2] - self.landmarks
            penalty = 2.0 * pseudo_huber(residual.square().sum(dim=-1), scale)
            return (weights * penalty).sum() / total

        def residuals(projected: torch.Tensor) -> LandmarkResiduals:
            return LandmarkResiduals(projected - self.landmarks, point_index, weights / total, scale)

        point_index = torch.arange(self.landmarks.shape[1], device=weights.device).expand(weights.shape[0], -1)
        return TermRound(self.points, energy, residuals)

    @torch.no_grad()
    def errors(self, region_vertices: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        weights = self.weights(region_vertices)
        points = (region_vertices[:, self.corners] * self.barycentrics.unsqueeze(-1)).sum(dim=-2)
        squared = (to_image(points, *self.image_size)[..., :2] - self.landmarks).square().sum(dim=-1)
        return ((weights * squared).sum(dim=1) / weights.sum(dim=1).clamp(min=torch.finfo(weights.dtype).tiny)).sqrt()
