"""The morphable-model tensors the network needs at run time, as non-persistent buffers of a module.

Registering them on an ``nn.Module`` makes ``model.to(device)`` move them with the weights, while
``persistent=False`` keeps them out of the state dict (the authors' checkpoints do not contain them).
"""

from torch import nn

from ..face_model.linear_model import LinearFaceModel
from ..face_model.morphable_model import MorphableModel


class FaceModelBuffers(nn.Module):
    """Shape model, topology and masks of a :class:`~models.face_model.morphable_model.MorphableModel` (n vertices).

    Buffers: mean_shape (3n,), linear_shape_basis (3n, 80) (the identity basis times its standard deviations,
    :class:`~models.face_model.linear_model.LinearFaceModel`), triangles (ntri, 3), adjacent_triangles (n, k),
    landmark_indices (68,), face_region_mask (n,), neighbour_vertices (n, m), neighbour_counts (n,).
    """

    _NAMES = (
        "mean_shape",
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
        self.register_buffer("linear_shape_basis", morphable_model.linear.shape_basis.clone(), persistent=False)

    @property
    def linear(self) -> LinearFaceModel:
        """The identity-only linear model of these buffers (the network never uses the expression basis)."""
        return LinearFaceModel(self.mean_shape, self.linear_shape_basis)
