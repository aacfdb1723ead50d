"""Training losses of DFNRMVS (Bai et al., CVPR 2020), after the authors' ``train/losses.py``.

``LossFunction`` keeps the authors' class, method names, argument lists and maths, so a training script
written against their ``train/losses.py`` runs unchanged::

    criterion = LossFunction(mean_loss=True)
    criterion.vert_loss(opt_verts, vert_bfm_gt, bfm.face_region_mask, align_mode="depth")
    criterion.multi_land3d_loss(opt_verts_img, kpts_gt, kpts_3d_gt, bfm, opt_full_face_vis_masks, opt_vis_masks)

where ``bfm`` is the face model: a :class:`~models.face_model.morphable_model.MorphableModel`, or the
network's ``model.opt_layer.bfm``; anything with ``triangles``, ``landmark_indices``, ``face_region_mask``,
``adjacent_triangles`` and ``neighbour_vertices``. The *bound* form gives the face model once,
``LossFunction(mean_loss=True, bfm=mm)`` (or :meth:`LossFunction.from_arrays`), and then leaves ``bfm`` /
``face_region_mask`` out of the calls (``None``); both forms give the same numbers.

Network outputs are nested per optimisation stage, as the authors' network returns them::

    opt_verts = [
        regressor output,                  # (N, V, n, 3): only measured, never trained on here
        [level 1 iter 1, ..., iter T],     # each (N, V, n, 3)
        ...
        [level L iter 1, ..., iter T],
    ]

with N samples, V views and n mesh vertices. ``opt_verts`` are in the model's camera space (pixels,
y up), ``opt_verts_img`` in image space (pixels, y down) and visibility masks mirror the nesting
with one (N, V, n) or (N, V, 1, n) mask per entry. The ``multi_*`` losses sum over every
iteration of every level (index >= 1). Their diagnostics are, as in the original: ``reg_err`` of
the regressor output ``opt_verts[0]``, ``land_opt_err`` of the end of the first level
``opt_verts[1][-1]`` (named after the authors' earlier landmark-optimisation stage) and
``feat_opt_err`` of the final output ``opt_verts[-1][-1]``.

Calling the module evaluates the authors' recipe
``vert + aligned vert + 0.1 land + 100 normal + 0.01 edge``; the regressor that produces
``opt_verts[0]`` is pre-trained beforehand with the landmark loss alone (``land3d_loss`` on its
image-space vertices).
"""

import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from models.face_model.landmark_layout import CONTOUR_LANDMARKS, NOSE_EYE_LANDMARKS, NUM_LANDMARKS, OTHER_LANDMARKS
from models.face_model.mesh_topology import adjacent_triangles as build_adjacent_triangles
from models.face_model.mesh_topology import neighbour_vertices as build_neighbour_vertices
from models.geometry.normals import vertex_normal_sums
from models.geometry.procrustes import SimilarityTransform, procrustes
from models.geometry.visibility import visible_distances

# Weights of the authors' training recipe, vert + aligned vert + 0.1 land + 100 normal + 0.01 edge, as
# stated in the project's "Training" issue (their published losses.py does not combine the terms).
VERT_LOSS_WEIGHT = 1.0
ALIGNED_VERT_LOSS_WEIGHT = 1.0
LANDMARK_LOSS_WEIGHT = 0.1
NORMAL_LOSS_WEIGHT = 100.0
EDGE_LOSS_WEIGHT = 0.01

# land3d_loss weights nose and eyes (NOSE_EYE_LANDMARKS) 1 and every other landmark this much.
OTHER_LANDMARK_WEIGHT = 10.0
# Added to ground-truth edge lengths before dividing, in camera-space units (authors' edge_loss).
EDGE_LENGTH_EPS = 1e-5

ALIGN_MODES = ("depth", "dense")


class StageLosses(NamedTuple):
    """A loss summed over all optimisation iterations plus per-(sample, view) diagnostics.

    loss: scalar, differentiable. reg_err, land_opt_err, feat_opt_err: (N, V), detached, of
    ``opt_verts[0]``, ``opt_verts[1][-1]`` and ``opt_verts[-1][-1]``.
    """

    loss: torch.Tensor
    reg_err: torch.Tensor
    land_opt_err: torch.Tensor
    feat_opt_err: torch.Tensor


class RecipeLoss(NamedTuple):
    """The authors' weighted training objective and its terms (unweighted)."""

    total: torch.Tensor
    vert: StageLosses
    aligned_vert: StageLosses
    land: torch.Tensor
    normal: StageLosses
    edge: torch.Tensor


def _index_tensor(values: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values).cpu()
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer indices, got dtype {tensor.dtype}")
    return tensor.to(torch.int64)


def _check_table(table: torch.Tensor, name: str, num_vertices: int, pad: int) -> None:
    if table.ndim != 2 or table.shape[0] != num_vertices:
        raise ValueError(f"{name} must have shape (n={num_vertices}, k), got {tuple(table.shape)}")
    if table.numel() and (table.min() < 0 or table.max() > pad):
        raise ValueError(f"{name} entries must lie in [0, {pad}] ({pad} = padding)")


def _stage_iterations(opt_outputs: Sequence, name: str) -> list[list]:
    """``[regressor, [iterations], ...]`` -> the per-level iteration lists, checked."""
    if len(opt_outputs) < 2:
        raise ValueError(
            f"{name} must be [regressor output, [level-1 iterations], ...], got {len(opt_outputs)} entries"
        )
    levels = []
    for index, level in enumerate(opt_outputs[1:], start=1):
        if isinstance(level, torch.Tensor) or len(level) == 0:
            raise ValueError(f"{name}[{index}] must be a non-empty list of per-iteration tensors")
        levels.append(list(level))
    return levels


def _visibility(mask: torch.Tensor, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """(N, V, n) or (N, V, 1, n) 0/1 or bool mask -> (N, V, n) bool."""
    if mask.ndim == 4 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} or (N, V, 1, n), got {tuple(mask.shape)}")
    return mask != 0


class MeshTables(NamedTuple):
    """What the losses read from the face model, as int64 / bool tensors on one device.

    triangles (t, 3); landmark_indices (68,); face_indices (f,) the face-region vertices;
    adjacent_triangles (n, k) padded with t; face_adjacent_triangles (f, k); face_neighbours (f, k')
    one-ring neighbours padded with n; face_neighbour_mask (f, k') True where the neighbour is in the face
    region (edges to other vertices and padding are excluded from the edge loss).
    """

    triangles: torch.Tensor
    landmark_indices: torch.Tensor
    face_indices: torch.Tensor
    adjacent_triangles: torch.Tensor
    face_adjacent_triangles: torch.Tensor
    face_neighbours: torch.Tensor
    face_neighbour_mask: torch.Tensor

    @property
    def num_vertices(self) -> int:
        return self.adjacent_triangles.shape[0]

    @classmethod
    def build(
        cls,
        triangles: torch.Tensor | np.ndarray,
        landmark_indices: torch.Tensor | np.ndarray,
        face_region_mask: torch.Tensor | np.ndarray,
        adjacent_triangles: torch.Tensor | np.ndarray | None = None,
        neighbour_vertices: torch.Tensor | np.ndarray | None = None,
    ) -> "MeshTables":
        """Check the arrays (see :class:`LossFunction`) and derive the tables, on the CPU."""
        face_region_mask = _face_mask(face_region_mask)
        num_vertices = face_region_mask.shape[0]
        triangles = _index_tensor(triangles, "triangles")
        if triangles.ndim != 2 or triangles.shape[1] != 3:
            raise ValueError(f"triangles must have shape (ntri, 3), got {tuple(triangles.shape)}")
        if triangles.numel() and (triangles.min() < 0 or triangles.max() >= num_vertices):
            raise ValueError(f"triangle indices must lie in [0, {num_vertices})")
        landmark_indices = _index_tensor(landmark_indices, "landmark_indices").reshape(-1)
        if landmark_indices.shape != (NUM_LANDMARKS,):
            raise ValueError(
                f"landmark_indices must have shape ({NUM_LANDMARKS},), got {tuple(landmark_indices.shape)}"
            )
        if landmark_indices.min() < 0 or landmark_indices.max() >= num_vertices:
            raise ValueError(f"landmark indices must lie in [0, {num_vertices})")
        if adjacent_triangles is None:
            adjacent_triangles = build_adjacent_triangles(triangles.numpy(), num_vertices)
        adjacent_triangles = _index_tensor(adjacent_triangles, "adjacent_triangles")
        _check_table(adjacent_triangles, "adjacent_triangles", num_vertices, triangles.shape[0])
        if neighbour_vertices is None:
            neighbour_vertices = build_neighbour_vertices(
                triangles.numpy(), adjacent_triangles.numpy(), num_vertices
            ).indices
        neighbour_vertices = _index_tensor(neighbour_vertices, "neighbour_vertices")
        _check_table(neighbour_vertices, "neighbour_vertices", num_vertices, num_vertices)
        face_indices = torch.nonzero(face_region_mask).reshape(-1)
        face_neighbours = neighbour_vertices[face_indices]
        padded_mask = torch.cat([face_region_mask, torch.zeros(1, dtype=torch.bool)])
        return cls(
            triangles=triangles,
            landmark_indices=landmark_indices,
            face_indices=face_indices,
            adjacent_triangles=adjacent_triangles,
            face_adjacent_triangles=adjacent_triangles[face_indices],
            face_neighbours=face_neighbours,
            face_neighbour_mask=padded_mask[face_neighbours],
        )

    @classmethod
    def from_model(cls, bfm: object) -> "MeshTables":
        """Tables of a face model object (a MorphableModel, ``model.opt_layer.bfm``, ...)."""
        names = ("triangles", "landmark_indices", "face_region_mask", "adjacent_triangles", "neighbour_vertices")
        missing = [name for name in names if not hasattr(bfm, name)]
        if missing:
            raise TypeError(
                f"bfm must be a face model (MorphableModel or model.opt_layer.bfm); {type(bfm).__name__} has no "
                f"{', '.join(missing)}"
            )
        return cls.build(
            bfm.triangles, bfm.landmark_indices, bfm.face_region_mask, bfm.adjacent_triangles, bfm.neighbour_vertices
        )

    def to(self, device: torch.device) -> "MeshTables":
        return MeshTables(*(tensor.to(device) for tensor in self))


def _face_mask(face_region_mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(n,) or (n, 1) bool mask (the authors pass BFM's (n, 1) numpy mask) -> (n,) bool tensor on the CPU."""
    mask = torch.as_tensor(face_region_mask).cpu()
    if mask.ndim == 2 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dtype != torch.bool or mask.ndim != 1:
        raise ValueError(f"face_region_mask must be a (n,) or (n, 1) bool mask, got {mask.dtype} {tuple(mask.shape)}")
    return mask


class LossFunction(torch.nn.Module):
    """The authors' ``LossFunction``: their constructor, methods and argument lists.

    Args:
        mean_loss: average (True) or sum (False) the landmark terms, as the original.
        bfm: optional face model to bind (see the module docstring); the calls may then leave their
            ``bfm`` / ``face_region_mask`` arguments out. Its tables become buffers, which ``.to(device)``
            moves with the module.

    A call that passes a ``bfm`` or ``face_region_mask`` uses it (tables are derived once per face model
    and device); one that passes None uses the bound model.
    """

    def __init__(self, mean_loss: bool = True, bfm: object | None = None) -> None:
        super().__init__()
        self.mean_loss = mean_loss
        self._cache: tuple[weakref.ref, torch.device, MeshTables] | None = None
        self.bound = bfm is not None
        if bfm is not None:
            self._register(MeshTables.from_model(bfm))

    @classmethod
    def from_arrays(
        cls,
        triangles: torch.Tensor | np.ndarray,
        landmark_indices: torch.Tensor | np.ndarray,
        face_region_mask: torch.Tensor | np.ndarray,
        adjacent_triangles: torch.Tensor | np.ndarray | None = None,
        neighbour_vertices: torch.Tensor | np.ndarray | None = None,
        mean_loss: bool = True,
    ) -> "LossFunction":
        """A loss bound to explicit mesh data.

        Args:
            triangles: (ntri, 3) int64 vertex indices of the mesh.
            landmark_indices: (68,) int64 vertex index of each landmark.
            face_region_mask: (n,) bool, True for vertices of the tight face region the losses measure.
            adjacent_triangles: (n, k) int64 triangles of each vertex padded with ntri (the
                MorphableModel's ``adjacent_triangles``); built from ``triangles`` when omitted.
            neighbour_vertices: (n, k') int64 one-ring neighbours padded with n, k' the largest vertex
                degree (the edge loss averages over all k' slots, so k' must not be larger); built
                from ``triangles`` when omitted.
            mean_loss: as in the constructor.
        """
        loss = cls(mean_loss)
        loss.bound = True
        loss._register(
            MeshTables.build(triangles, landmark_indices, face_region_mask, adjacent_triangles, neighbour_vertices)
        )
        return loss

    def _register(self, tables: MeshTables) -> None:
        for name, tensor in tables._asdict().items():
            self.register_buffer(name, tensor)

    # ----------------------------------------------------------------------------------------- helpers
    def tables(self, bfm: object | None = None, device: torch.device | None = None) -> MeshTables:
        """The mesh tables of ``bfm`` (cached), or of the bound model when ``bfm`` is None."""
        if bfm is None:
            if not self.bound:
                raise ValueError("this LossFunction has no bound face model: pass bfm (or face_region_mask)")
            return MeshTables(*(getattr(self, name) for name in MeshTables._fields))
        device = torch.device("cpu") if device is None else device
        if self._cache is not None and self._cache[0]() is bfm and self._cache[1] == device:
            return self._cache[2]
        tables = MeshTables.from_model(bfm).to(device)
        try:
            self._cache = (weakref.ref(bfm), device, tables)
        except TypeError:  # objects without weak references are not cached
            self._cache = None
        return tables

    def _face_indices(self, face_region_mask: torch.Tensor | np.ndarray | None, vert: torch.Tensor) -> torch.Tensor:
        """Face-region vertex indices of the given mask (None: the bound model's), checked against ``vert``."""
        if face_region_mask is None:
            tables = self.tables()
            indices, count = tables.face_indices, tables.num_vertices
        else:
            mask = _face_mask(face_region_mask)
            indices, count = torch.nonzero(mask).reshape(-1).to(vert.device), mask.shape[0]
        self._check_vertices(vert, "vert", count)
        return indices

    @staticmethod
    def _check_vertices(vert: torch.Tensor, name: str, num_vertices: int | None = None) -> None:
        if vert.ndim != 4 or vert.shape[3] != 3 or (num_vertices is not None and vert.shape[2] != num_vertices):
            expected = "n" if num_vertices is None else f"n={num_vertices}"
            raise ValueError(f"{name} must have shape (N, V, {expected}, 3), got {tuple(vert.shape)}")

    def _check_pair(self, vert: torch.Tensor, gt: torch.Tensor, gt_name: str, num_vertices: int | None) -> None:
        self._check_vertices(vert, "vert", num_vertices)
        if gt.shape != vert.shape:
            raise ValueError(f"{gt_name} must have the shape of vert {tuple(vert.shape)}, got {tuple(gt.shape)}")

    def face_region(
        self, vert: torch.Tensor, face_region_mask: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """(..., n, C) per-vertex values -> (..., n_face, C) values of the face-region vertices."""
        return vert[..., self._face_indices(face_region_mask, vert), :]

    def vertex_normals(self, vert: torch.Tensor, bfm: object | None = None) -> torch.Tensor:
        """(..., n, 3) vertices -> (..., n, 3) unnormalised normals in the orientation ``normal_loss``
        compares against: sums of ``cross(c - b, c - a)`` over each vertex's triangles (a, b, c), opposite
        to the back-face test's; use it to make ``normal_bfm_gt``."""
        tables = self.tables(bfm, vert.device)
        return vertex_normal_sums(vert, tables.triangles.flip(1), tables.adjacent_triangles)

    def _dense_alignment(
        self, vert: torch.Tensor, vert_bfm_gt: torch.Tensor, face: torch.Tensor
    ) -> SimilarityTransform:
        """Similarity (Umeyama 1991) taking the detached face region (indices ``face``) of ``vert`` onto the
        ground truth's, one per (sample, view), batched as N * V."""
        n_batch = vert.shape[0] * vert.shape[1]
        source = vert.detach()[..., face, :].reshape(n_batch, -1, 3)
        target = vert_bfm_gt[..., face, :].reshape(n_batch, -1, 3)
        return procrustes(target, source, scaling=True).transform

    # ------------------------------------------------------------------------------------ vertex losses
    def dense_aligned_vert_loss(
        self,
        vert: torch.Tensor,
        vert_bfm_gt: torch.Tensor,
        face_region_mask: torch.Tensor | np.ndarray | None = None,
        root: bool = False,
    ) -> torch.Tensor:
        """Vertex error after similarity-aligning the prediction to the ground truth.

        The alignment is fitted on the face region of the detached prediction, so gradients reach
        ``vert`` only through the aligned coordinates.

        Args:
            vert, vert_bfm_gt: (N, V, n, 3) predicted and ground-truth vertices (camera space).
            face_region_mask: (n,) or (n, 1) bool (the authors pass ``bfm.face_region_mask``); None: bound.
            root: average Euclidean distances (an error metric) instead of squared distances.
        Returns:
            (N, V) mean over face-region vertices of the (squared) distance, squared units unless
            ``root``.
        """
        self._check_pair(vert, vert_bfm_gt, "vert_bfm_gt", None)
        face = self._face_indices(face_region_mask, vert)
        n_samples, n_views = vert.shape[:2]
        transform = self._dense_alignment(vert, vert_bfm_gt, face)
        aligned = transform.apply(vert[..., face, :].reshape(n_samples * n_views, -1, 3))
        squared = (aligned.reshape(n_samples, n_views, -1, 3) - vert_bfm_gt[..., face, :]).square().sum(dim=-1)
        return (squared.sqrt() if root else squared).mean(dim=-1)

    def depth_aligned_vert_loss(
        self,
        vert: torch.Tensor,
        vert_bfm_gt: torch.Tensor,
        face_region_mask: torch.Tensor | np.ndarray | None = None,
        root: bool = False,
    ) -> torch.Tensor:
        """Vertex error after shifting the ground truth in depth onto the prediction.

        The shift is the mean z difference over the face region, computed from the detached
        prediction (depth is not observable under the weak-perspective camera).

        Args:
            vert, vert_bfm_gt: (N, V, n, 3) predicted and ground-truth vertices (camera space).
            face_region_mask: as :meth:`dense_aligned_vert_loss`.
            root: average Euclidean distances instead of squared distances. The authors' code
                accepts but ignores this flag here, so its depth-mode diagnostics were squared.
        Returns:
            (N, V) mean over face-region vertices of the (squared) distance.
        """
        self._check_pair(vert, vert_bfm_gt, "vert_bfm_gt", None)
        index = self._face_indices(face_region_mask, vert)
        face = vert[..., index, :]
        face_gt = vert_bfm_gt[..., index, :]
        delta_z = (face.detach()[..., 2] - face_gt[..., 2]).mean(dim=-1)  # (N, V)
        shifted_gt = torch.cat([face_gt[..., :2], face_gt[..., 2:] + delta_z[..., None, None]], dim=-1)
        squared = (face - shifted_gt).square().sum(dim=-1)
        return (squared.sqrt() if root else squared).mean(dim=-1)

    def vert_loss(
        self,
        opt_verts: Sequence,
        vert_bfm_gt: torch.Tensor,
        face_region_mask: torch.Tensor | np.ndarray | None = None,
        align_mode: str = "depth",
    ) -> StageLosses:
        """Aligned squared vertex loss summed over all optimisation iterations.

        Args:
            opt_verts: nested network outputs (module docstring), each (N, V, n, 3).
            vert_bfm_gt: (N, V, n, 3) ground truth.
            face_region_mask: as :meth:`dense_aligned_vert_loss`.
            align_mode: "depth" (:meth:`depth_aligned_vert_loss`) or "dense"
                (:meth:`dense_aligned_vert_loss`).
        Returns:
            :class:`StageLosses` (unpacks as the authors' 4-tuple); diagnostics are mean distances
            (``root=True``).
        """
        losses: dict[str, Callable[..., torch.Tensor]] = {
            "depth": self.depth_aligned_vert_loss,
            "dense": self.dense_aligned_vert_loss,
        }
        if align_mode not in losses:
            raise ValueError(f"align_mode must be one of {ALIGN_MODES}, got {align_mode!r}")
        aligned_vert_loss = losses[align_mode]
        levels = _stage_iterations(opt_verts, "opt_verts")
        mask = face_region_mask
        with torch.no_grad():
            reg_err = aligned_vert_loss(opt_verts[0], vert_bfm_gt, mask, root=True)
            land_opt_err = aligned_vert_loss(levels[0][-1], vert_bfm_gt, mask, root=True)
            feat_opt_err = aligned_vert_loss(levels[-1][-1], vert_bfm_gt, mask, root=True)
        loss = sum(aligned_vert_loss(vert, vert_bfm_gt, mask).mean() for level in levels for vert in level)
        return StageLosses(loss, reg_err, land_opt_err, feat_opt_err)

    # ---------------------------------------------------------------------------------- landmark losses
    def land3d_loss(
        self,
        vert_img: torch.Tensor,
        kpts_gt: torch.Tensor,
        kpts_3d_gt: torch.Tensor,
        bfm: object | None = None,
        full_face_vis_mask: torch.Tensor | None = None,
        vis_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Landmark loss with fixed model landmarks and dynamic silhouette points (image space, px).

        Fixed term: squared 2D distance of each landmark vertex to its ground-truth 3D landmark
        projected (``kpts_3d_gt``), averaged separately over nose/eyes (weight 1) and over
        jaw/brows/mouth (weight 10). Dynamic term: a jaw-line landmark (0-5, 11-16) whose vertex is
        hidden is matched instead to the visible vertex nearest in 2D to the detected landmark
        ``kpts_gt`` (chosen without gradient), squared distance, averaged over all N * V * 68
        landmark slots.

        Args:
            vert_img: (N, V, n, 3) image-space vertices.
            kpts_gt: (N, V, 68, 2) 2D landmarks.
            kpts_3d_gt: (N, V, 68, C >= 2) ground-truth landmark vertices in image space.
            bfm: the face model (None: the bound one). The bound form may also leave it out positionally,
                ``land3d_loss(vert_img, kpts_gt, kpts_3d_gt, full_face_vis_mask, vis_mask)``.
            full_face_vis_mask: (N, V, n) or (N, V, 1, n) visibility of every vertex.
            vis_mask: same shape, visibility restricted to the face region (candidate vertices).
        Returns:
            scalar, squared pixels; sums instead of means when ``mean_loss`` is False.
        """
        bfm, full_face_vis_mask, vis_mask = _model_and_masks(bfm, full_face_vis_mask, vis_mask, "land3d_loss")
        tables = self.tables(bfm, vert_img.device)
        self._check_vertices(vert_img, "vert_img", tables.num_vertices)
        n_samples, n_views, n_vertices = vert_img.shape[:3]
        if kpts_gt.shape != (n_samples, n_views, NUM_LANDMARKS, 2):
            raise ValueError(f"kpts_gt must have shape (N, V, 68, 2), got {tuple(kpts_gt.shape)}")
        if kpts_3d_gt.ndim != 4 or kpts_3d_gt.shape[:3] != kpts_gt.shape[:3] or kpts_3d_gt.shape[3] < 2:
            raise ValueError(f"kpts_3d_gt must have shape (N, V, 68, C >= 2), got {tuple(kpts_3d_gt.shape)}")
        mask_shape = (n_samples, n_views, n_vertices)
        full_visible = _visibility(full_face_vis_mask, mask_shape, "full_face_vis_mask")
        visible = _visibility(vis_mask, mask_shape, "vis_mask")
        reduce = torch.mean if self.mean_loss else torch.sum

        xy = vert_img[..., :2]
        landmark_error = (xy[:, :, tables.landmark_indices] - kpts_3d_gt[..., :2]).square().sum(dim=-1)  # (N, V, 68)
        fixed = reduce(landmark_error[..., list(NOSE_EYE_LANDMARKS)]) + OTHER_LANDMARK_WEIGHT * reduce(
            landmark_error[..., list(OTHER_LANDMARKS)]
        )

        contour = list(CONTOUR_LANDMARKS)
        contour_kpts = kpts_gt[:, :, contour]  # (N, V, c, 2)
        nearest = visible_distances(contour_kpts, xy.detach(), visible).argmin(dim=-1)  # (N, V, c)
        nearest_xy = torch.gather(xy, 2, nearest[..., None].expand(-1, -1, -1, 2))
        hidden = ~full_visible[:, :, tables.landmark_indices[contour]]
        dynamic = ((nearest_xy - contour_kpts).square().sum(dim=-1) * hidden).sum()
        if self.mean_loss:
            dynamic = dynamic / (n_samples * n_views * NUM_LANDMARKS)
        return fixed + dynamic

    def multi_land3d_loss(
        self,
        opt_verts_img: Sequence,
        kpts_gt: torch.Tensor,
        kpts_3d_gt: torch.Tensor,
        bfm: object | None = None,
        opt_full_face_vis_masks: Sequence | None = None,
        opt_vis_masks: Sequence | None = None,
    ) -> torch.Tensor:
        """:meth:`land3d_loss` summed over all optimisation iterations (masks nested like the
        vertices; the bound form may leave ``bfm`` out positionally). Returns a scalar in squared pixels."""
        bfm, opt_full_face_vis_masks, opt_vis_masks = _model_and_masks(
            bfm, opt_full_face_vis_masks, opt_vis_masks, "multi_land3d_loss"
        )
        levels = _stage_iterations(opt_verts_img, "opt_verts_img")
        full_masks = _stage_iterations(opt_full_face_vis_masks, "opt_full_face_vis_masks")
        masks = _stage_iterations(opt_vis_masks, "opt_vis_masks")
        if [len(level) for level in full_masks] != [len(level) for level in levels] or [
            len(level) for level in masks
        ] != [len(level) for level in levels]:
            raise ValueError("the visibility mask lists must be nested exactly like opt_verts_img")
        return sum(
            self.land3d_loss(vert_img, kpts_gt, kpts_3d_gt, bfm, full_mask, mask)
            for level, full_level, mask_level in zip(levels, full_masks, masks, strict=True)
            for vert_img, full_mask, mask in zip(level, full_level, mask_level, strict=True)
        )

    # ------------------------------------------------------------------------------------ normal losses
    def normal_loss(
        self, vert: torch.Tensor, normal_bfm_gt: torch.Tensor, vert_bfm_gt: torch.Tensor, bfm: object | None = None
    ) -> torch.Tensor:
        """Cosine distance between vertex normals of the similarity-aligned prediction and the
        ground-truth normals, over the face region.

        Args:
            vert, vert_bfm_gt: (N, V, n, 3) predicted and ground-truth vertices.
            normal_bfm_gt: (N, V, n, 3) ground-truth normals in :meth:`vertex_normals`'s
                orientation (any length).
            bfm: the face model (None: the bound one).
        Returns:
            (N, V) mean of 1 - cos, unitless in [0, 2].
        """
        tables = self.tables(bfm, vert.device)
        self._check_pair(vert, vert_bfm_gt, "vert_bfm_gt", tables.num_vertices)
        if normal_bfm_gt.shape != vert.shape:
            raise ValueError(
                f"normal_bfm_gt must have the shape of vert {tuple(vert.shape)}, got {tuple(normal_bfm_gt.shape)}"
            )
        n_samples, n_views = vert.shape[:2]
        transform = self._dense_alignment(vert, vert_bfm_gt, tables.face_indices)
        aligned = transform.apply(vert.reshape(n_samples * n_views, -1, 3)).reshape(vert.shape)
        normals = vertex_normal_sums(aligned, tables.triangles.flip(1), tables.face_adjacent_triangles)
        cosine = F.cosine_similarity(normals, normal_bfm_gt[..., tables.face_indices, :], dim=-1)
        return (1.0 - cosine).mean(dim=-1)

    def multi_normal_loss(
        self, opt_verts: Sequence, normal_bfm_gt: torch.Tensor, vert_bfm_gt: torch.Tensor, bfm: object | None = None
    ) -> StageLosses:
        """:meth:`normal_loss` averaged per iteration and summed over all iterations; diagnostics
        are the (N, V) normal losses of the regressor, first level and final output."""
        levels = _stage_iterations(opt_verts, "opt_verts")
        with torch.no_grad():
            reg_err = self.normal_loss(opt_verts[0], normal_bfm_gt, vert_bfm_gt, bfm)
            land_opt_err = self.normal_loss(levels[0][-1], normal_bfm_gt, vert_bfm_gt, bfm)
        per_iteration = [self.normal_loss(vert, normal_bfm_gt, vert_bfm_gt, bfm) for level in levels for vert in level]
        loss = sum(value.mean() for value in per_iteration)
        return StageLosses(loss, reg_err, land_opt_err, per_iteration[-1].detach())

    # -------------------------------------------------------------------------------------- edge losses
    def edge_loss(self, vert: torch.Tensor, vert_bfm_gt: torch.Tensor, bfm: object | None = None) -> torch.Tensor:
        """Relative edge-length error over the face region (no alignment: scale matters).

        For each face vertex and each of its k' neighbour slots: ``|e / (e_gt + eps) - 1|`` with e,
        e_gt the predicted and ground-truth edge lengths. Slots whose neighbour lies outside the
        face region (or is padding) use e = e_gt and so contribute eps / (e_gt + eps) ~ 0, but
        still count in the mean, as in the original; the loss is therefore ~1e-5 / e_gt, not 0, at
        the ground truth.

        Args:
            vert, vert_bfm_gt: (N, V, n, 3).
            bfm: the face model (None: the bound one).
        Returns:
            scalar, unitless.
        """
        tables = self.tables(bfm, vert.device)
        self._check_pair(vert, vert_bfm_gt, "vert_bfm_gt", tables.num_vertices)
        edge = _face_edge_lengths(vert, tables)
        edge_gt = _face_edge_lengths(vert_bfm_gt, tables)
        edge = torch.where(tables.face_neighbour_mask, edge, edge_gt)
        return (edge / (edge_gt + EDGE_LENGTH_EPS) - 1.0).abs().mean()

    def multi_edge_loss(
        self, opt_verts: Sequence, vert_bfm_gt: torch.Tensor, bfm: object | None = None
    ) -> torch.Tensor:
        """:meth:`edge_loss` summed over all optimisation iterations; scalar."""
        levels = _stage_iterations(opt_verts, "opt_verts")
        return sum(self.edge_loss(vert, vert_bfm_gt, bfm) for level in levels for vert in level)

    # ------------------------------------------------------------------------------------------ recipe
    def forward(
        self,
        opt_verts: Sequence,
        opt_verts_img: Sequence,
        vert_bfm_gt: torch.Tensor,
        normal_bfm_gt: torch.Tensor,
        kpts_gt: torch.Tensor,
        kpts_3d_gt: torch.Tensor,
        opt_full_face_vis_masks: Sequence,
        opt_vis_masks: Sequence,
        bfm: object | None = None,
    ) -> RecipeLoss:
        """The authors' objective for training the optimisation stages:
        depth-aligned vert + dense-aligned vert + 0.1 land + 100 normal + 0.01 edge.

        The regressor (``opt_verts[0]``) is not trained by this objective; it is pre-trained with
        the landmark loss alone. Arguments are those of the individual losses.
        """
        mask = None if bfm is None else bfm.face_region_mask
        vert = self.vert_loss(opt_verts, vert_bfm_gt, mask, align_mode="depth")
        aligned_vert = self.vert_loss(opt_verts, vert_bfm_gt, mask, align_mode="dense")
        land = self.multi_land3d_loss(opt_verts_img, kpts_gt, kpts_3d_gt, bfm, opt_full_face_vis_masks, opt_vis_masks)
        normal = self.multi_normal_loss(opt_verts, normal_bfm_gt, vert_bfm_gt, bfm)
        edge = self.multi_edge_loss(opt_verts, vert_bfm_gt, bfm)
        total = (
            VERT_LOSS_WEIGHT * vert.loss
            + ALIGNED_VERT_LOSS_WEIGHT * aligned_vert.loss
            + LANDMARK_LOSS_WEIGHT * land
            + NORMAL_LOSS_WEIGHT * normal.loss
            + EDGE_LOSS_WEIGHT * edge
        )
        return RecipeLoss(total, vert, aligned_vert, land, normal, edge)


def _model_and_masks(bfm: object, full_masks: object, masks: object, name: str) -> tuple:
    """(bfm, full masks, masks) from the authors' ``(..., bfm, full, vis)`` or the bound ``(..., full, vis)``."""
    if isinstance(bfm, (torch.Tensor, list, tuple)):  # bound form: the masks moved up one place
        if masks is not None:
            raise TypeError(f"{name}: too many positional arguments (a face model was expected before the masks)")
        bfm, full_masks, masks = None, bfm, full_masks
    if full_masks is None or masks is None:
        raise ValueError(f"{name} needs both visibility masks (the whole mesh's and the face region's)")
    return bfm, full_masks, masks


def _face_edge_lengths(vert: torch.Tensor, tables: MeshTables) -> torch.Tensor:
    """(N, V, n, 3) -> (N, V, n_face, k') distances from face vertices to their neighbour slots, padding
    slots measured to the origin as in the original."""
    padded = torch.cat([vert, torch.zeros_like(vert[:, :, :1])], dim=2)
    neighbours = padded[:, :, tables.face_neighbours.reshape(-1)]
    neighbours = neighbours.reshape(*vert.shape[:2], *tables.face_neighbours.shape, 3)
    face = vert[..., tables.face_indices, :]
    return torch.linalg.vector_norm(face[:, :, :, None] - neighbours, dim=-1)
