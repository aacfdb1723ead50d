"""The morphable-model tensors the network needs at run time, as non-persistent buffers of a module.

Registering them on an ``nn.Module`` makes ``model.to(device)`` move them with the weights, while
``persistent=False`` keeps them out of the state dict (the authors' checkpoints do not contain them).
"""

import torch
from torch import nn

from models.morphable_model import MorphableModel


class FaceModelBuffers(nn.Module):
    """Shape model, topology and masks of a :class:`~models.morphable_model.MorphableModel` (n vertices).

    Buffers: mean_shape (3n,), shape_basis (3n, 80), shape_std (80,), triangles (ntri, 3),
    adjacent_triangles (n, k), landmark_indices (68,), face_region_mask (n,), neighbour_vertices (n, m),
    neighbour_counts (n,).
    """

    _NAMES = (
        "mean_shape",
        "shape_basis",
        "shape_std",
        "triangles",
        "adjacent_triangles",
        "landmark_indices",
        "face_region_mask",
        "neighbour_vertices",
        "neighbour_counts",
    )

    def __init__(self, morphable_model: MorphableModel) -> None:
        super().__init__()
        self.num_vertices = morphable_model.num_vertices
        for name in self._NAMES:
            self.register_buffer(name, getattr(morphable_model, name).clone(), persistent=False)

    def shape_vertices(self, shape_coeffs: torch.Tensor) -> torch.Tensor:
        """Identity-only model vertices ``mean + basis @ (coeffs * std)``; (N, 80, 1) -> (N, n, 3)."""
        flat = self.mean_shape.view(1, -1, 1) + self.shape_basis @ (shape_coeffs * self.shape_std.view(1, -1, 1))
        return flat.view(shape_coeffs.shape[0], self.num_vertices, 3)
