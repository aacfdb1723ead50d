"""The linear part of a morphable model, evaluated in one place.

``vertices = mean + shape_basis @ (shape * shape_std) + exp_basis @ (expression * exp_std)``, with
*normalised* coefficients (the authors' ``normal_manual`` mode: the BFM's ``shapeEV`` and ``std_exp.txt``
act as per-component standard deviations). :class:`LinearFaceModel` holds the bases already multiplied by
their standard deviations, so that an evaluation is one matrix product per term. Vertices are flattened and
interleaved, ``x0, y0, z0, x1, ...``, as the BFM stores them. The whole model
(:attr:`MorphableModel.linear <models.face_model.morphable_model.MorphableModel.linear>`), the network's
buffers and the fitting's vertex subsets all evaluate through :meth:`LinearFaceModel.vertices`.
"""

from typing import NamedTuple

import torch


class LinearFaceModel(NamedTuple):
    """mean (3m,); shape_basis (3m, ks) and exp_basis (3m, ke), each column multiplied by its component's
    standard deviation (model units per unit of normalised coefficient); exp_basis None for a shape-only
    model. Model units are micrometres for the BFM; m vertices."""

    mean: torch.Tensor
    shape_basis: torch.Tensor
    exp_basis: torch.Tensor | None = None

    @classmethod
    def from_std(
        cls,
        mean: torch.Tensor,
        shape_basis: torch.Tensor,
        shape_std: torch.Tensor,
        exp_basis: torch.Tensor | None = None,
        exp_std: torch.Tensor | None = None,
    ) -> "LinearFaceModel":
        """From unscaled bases (3m, k) and their standard deviations (k,), as the model files store them."""
        scaled_exp = None if exp_basis is None else exp_basis * exp_std
        return cls(mean, shape_basis * shape_std, scaled_exp)

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0] // 3

    def vertices(self, shape: torch.Tensor, expression: torch.Tensor | None = None) -> torch.Tensor:
        """Model-space vertices from normalised coefficients.

        Args:
            shape: (ks,) one identity (shared by every expression), or (B, ks) / (B, ks, 1) one per item.
            expression: (B', ke) or (B', ke, 1) normalised expressions, or None for identity only.
        Returns:
            (B, m, 3) vertices in model units: B from ``shape``'s batch or ``expression``'s (or 1).
        """
        if shape.dim() == 3 and shape.shape[-1] == 1:
            shape = shape.squeeze(-1)
        _check(shape, self.shape_basis, "shape coefficients")
        flat = self.mean + (self.shape_basis @ shape if shape.dim() == 1 else shape @ self.shape_basis.mT)
        if expression is not None:
            if self.exp_basis is None:
                raise ValueError("this model has no expression basis")
            if expression.dim() == 3 and expression.shape[-1] == 1:
                expression = expression.squeeze(-1)
            _check(expression, self.exp_basis, "expression coefficients")
            flat = flat + expression @ self.exp_basis.mT
        return flat.reshape(-1, self.num_vertices, 3)

    def take(self, vertex_indices: torch.Tensor) -> "LinearFaceModel":
        """The model of the vertices ``vertex_indices`` (k,), in that order."""
        index = vertex_indices.to(self.mean.device)
        return LinearFaceModel(
            *(None if flat is None else _vertex_rows(flat, index, self.num_vertices) for flat in self)
        )

    def to(self, device: torch.device | str) -> "LinearFaceModel":
        """A copy with every tensor on ``device``."""
        return LinearFaceModel(*(None if tensor is None else tensor.to(device) for tensor in self))


def _check(coeffs: torch.Tensor, basis: torch.Tensor, name: str) -> None:
    count = basis.shape[1]
    if coeffs.dim() not in (1, 2) or coeffs.shape[-1] != count:
        raise ValueError(
            f"{name} must have shape ({count},), (B, {count}) or (B, {count}, 1), got {tuple(coeffs.shape)}"
        )


def _vertex_rows(flat: torch.Tensor, index: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Rows (3 per vertex, interleaved) of the vertices ``index`` of a flat (3n, ...) array."""
    columns = flat.shape[1:]
    # index_select: the same rows as advanced indexing, faster on CPU
    rows = torch.index_select(flat.reshape(num_vertices, -1), 0, index)
    return rows.reshape(3 * index.shape[0], *columns)
