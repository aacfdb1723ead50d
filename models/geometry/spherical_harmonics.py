"""Spherical-harmonics shading (face3d's 9-coefficient basis, as ``add_light_sh`` uses it)."""

import torch

NUM_SH_COEFFS = 9


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """face3d's 9 unnormalised spherical-harmonics basis values (1, nx, ny, nz, nx ny, nx nz, ny nz, nx^2 - ny^2,
    3 nz^2 - 1) of unit normals (n, 3) -> (n, 9)."""
    nx, ny, nz = normals.unbind(-1)
    return torch.stack(
        [torch.ones_like(nx), nx, ny, nz, nx * ny, nx * nz, ny * nz, nx * nx - ny * ny, 3.0 * nz * nz - 1.0], dim=-1
    )


def sh_shading(normals: torch.Tensor, sh_coeffs: torch.Tensor) -> torch.Tensor:
    """Spherical-harmonics irradiance per vertex, as face3d's ``add_light_sh`` before the albedo product.

    Args:
        normals: (n, 3) unit normals.
        sh_coeffs: (9,) or (9, 1) for grey light, (9, C) for C colour channels.
    Returns:
        (n, 1) or (n, C) shading (not clamped).
    """
    if normals.dim() != 2 or normals.shape[1] != 3:
        raise ValueError(f"normals must have shape (n, 3), got {tuple(normals.shape)}")
    if sh_coeffs.shape[0] != NUM_SH_COEFFS or sh_coeffs.dim() > 2:
        raise ValueError(f"sh_coeffs must have shape (9,) or (9, C), got {tuple(sh_coeffs.shape)}")
    coeffs = sh_coeffs.reshape(NUM_SH_COEFFS, -1).to(device=normals.device, dtype=normals.dtype)
    return sh_basis(normals) @ coeffs
