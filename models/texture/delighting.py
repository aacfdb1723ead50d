"""De-lighting: a grey spherical-harmonics shading per view, fitted so that the views agree on the albedo of
the skin they share; colour / shading is then the albedo estimate.

Model: the photo's colour c_v(p) at a surface point p in view v is its albedo a(p) times the shading
s_v(p) = l_v . B(n) of its camera-space outward normal n (face3d's 9-term SH basis B, the renderer's own
light model, :mod:`models.geometry.spherical_harmonics`; grey light, one l_v per view). The albedo drops
out of every pair of views that see the same point: c_i(p) s_j(p) - c_j(p) s_i(p) = 0 is linear in the
lights, so they follow from one least-squares solve with the mean shading fixed to 1, and a few
reweighting rounds with Cauchy weights leave out points where the views disagree for other reasons
(specularities, misalignment). Two priors settle what the ratios leave open: the views' lights are pulled
towards each other (views lit alike -- a head turning in front of a fixed camera and light -- unless the
data say otherwise), and, very weakly, towards a constant light (directions no data reaches, e.g. two
identical views, stay at "no shading"). No prior on the albedo is needed where two views overlap; with one
view the light cannot be told from the albedo and the shading stays constant (albedo = texture).

The albedo keeps the light's tint and the photos' overall brightness (the shading averages 1 over the
points the views see): an estimate up to one global colour scale.
"""

import torch

from ..geometry.spherical_harmonics import NUM_SH_COEFFS, sh_basis

# Reweighting rounds of the robust fit (the first is plain least squares).
IRLS_ITERATIONS = 4
# Cauchy weight scale in robust standard deviations (1.4826 x median absolute residual); 2.385 gives
# 95 % efficiency on Gaussian residuals.
CAUCHY_SCALE = 2.385
MAD_TO_STD = 1.4826
# Pull towards a constant light, relative to the normal matrix's mean diagonal: the directions the views
# determine have eigenvalues down to ~1e-5 of it on generated faces (1e-5 already biases the light by ~5 %),
# while directions no data reaches (identical views) have none; this keeps those at a constant light.
CONSTANT_LIGHT_PULL = 1e-7
# Pull of every view's light towards the others', relative to the normal matrix's mean diagonal. Pairwise
# ratios leave one direction almost free: a light that turns with the head, whose shading cancels in every
# ratio to first order. Measured on generated faces (tests/texture): without the pull, the lights take a
# head-frontal component and the albedo its shading; with 1e-3 the 9 coefficients of a light fixed to the
# camera come back within ~0.06 (of the constant term 1), and lights that really differ between views
# (from above in one, from below in the other) keep about half their difference (1e-2: none).
SAME_LIGHT_PULL = 1e-3
# Floor of a shading factor (they average 1), so that dividing by it stays bounded at badly lit points.
MIN_SHADING = 0.1


def _pair_system(colours: torch.Tensor, basis: torch.Tensor, weights: torch.Tensor, robust: list[torch.Tensor]):
    """Normal matrix (V k, V k) of the pairwise rows c_i B_j l_j - c_j B_i l_i, rows weighted by w_i w_j * robust."""
    views, _, k = basis.shape
    gram = basis.new_zeros(views * k, views * k)
    pair = 0
    for i in range(views):
        for j in range(i + 1, views):
            w = weights[i] * weights[j] * robust[pair]
            pair += 1
            row_i = -colours[j, :, None] * basis[i]  # (p, k), the row's block of view i
            row_j = colours[i, :, None] * basis[j]
            block_i, block_j = slice(i * k, (i + 1) * k), slice(j * k, (j + 1) * k)
            gram[block_i, block_i] += row_i.T @ (row_i * w[:, None])
            gram[block_j, block_j] += row_j.T @ (row_j * w[:, None])
            cross = row_i.T @ (row_j * w[:, None])
            gram[block_i, block_j] += cross
            gram[block_j, block_i] += cross.T
    return gram


def _difference_penalty(views: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """(V k, V k) matrix of sum over view pairs of |l_i - l_j|^2: the graph Laplacian of all views, per term."""
    laplacian = views * torch.eye(views, dtype=like.dtype, device=like.device) - 1.0
    return torch.kron(laplacian, torch.eye(k, dtype=like.dtype, device=like.device))


def fit_view_lighting(colours: torch.Tensor, normals: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Grey light of each view, from the colours the views see at the same surface points.

    Args:
        colours: (V, p, C) colours in [0, 1] of p surface points (e.g. the vertices) in each view.
        normals: (V, p, 3) their unit outward normals in each view's camera space.
        weights: (V, p) confidence of each sample (0: the view does not see the point).
    Returns:
        (V, 9) face3d SH coefficients, scaled so that the shading averages 1 over the weighted samples of all
        views; a constant light (1, 0, ...) when fewer than two views see anything.
    """
    if colours.dim() != 3 or normals.shape != (*colours.shape[:2], 3) or weights.shape != colours.shape[:2]:
        raise ValueError(
            f"colours (V, p, C), normals (V, p, 3) and weights (V, p) must match, got {tuple(colours.shape)}, "
            f"{tuple(normals.shape)}, {tuple(weights.shape)}"
        )
    views = colours.shape[0]
    k = NUM_SH_COEFFS
    constant = torch.zeros(views, NUM_SH_COEFFS, dtype=torch.float64, device=colours.device)
    constant[:, 0] = 1.0
    seen = weights > 0
    if views < 2 or int(seen.any(1).sum()) < 2:
        return constant.to(colours.dtype)
    grey = colours.double().mean(dim=2)
    basis = sh_basis(normals.double())  # (V, p, 9)
    w = weights.double()
    target = constant.reshape(-1)
    # Mean shading over every weighted sample = 1: a linear constraint on the stacked lights.
    mean_row = torch.cat([(basis[v] * w[v, :, None]).sum(0) for v in range(views)]) / w.sum()
    size = views * k
    priors = SAME_LIGHT_PULL * _difference_penalty(views, k, basis) + CONSTANT_LIGHT_PULL * torch.eye(
        size, dtype=basis.dtype, device=basis.device
    )
    robust = [torch.ones_like(grey[0]) for _ in range(views * (views - 1) // 2)]
    for _ in range(IRLS_ITERATIONS):
        gram = _pair_system(grey, basis, w, robust)
        scale = gram.diagonal().mean().clamp(min=torch.finfo(gram.dtype).tiny)
        kkt = gram.new_zeros(size + 1, size + 1)
        kkt[:size, :size] = gram + scale * priors
        kkt[:size, size] = mean_row
        kkt[size, :size] = mean_row
        rhs = torch.cat([scale * CONSTANT_LIGHT_PULL * target, target.new_ones(1)])
        lights = torch.linalg.solve(kkt, rhs)[:size].view(views, k)
        shading = (basis * lights[:, None, :]).sum(-1)  # (V, p)
        robust = []
        for i in range(views):
            for j in range(i + 1, views):
                residual = grey[i] * shading[j] - grey[j] * shading[i]
                both = (w[i] * w[j]) > 0
                scale = MAD_TO_STD * residual[both].abs().median().clamp(min=1e-6) if bool(both.any()) else 1.0
                robust.append(1.0 / (1.0 + (residual / (CAUCHY_SCALE * scale)).square()))
    return lights.to(colours.dtype)


def grey_shading(normals: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """(p, 3) unit outward normals and (9,) grey light -> (p,) shading, at least :data:`MIN_SHADING`."""
    return (sh_basis(normals) @ coeffs.to(normals.dtype)).clamp(min=MIN_SHADING)
