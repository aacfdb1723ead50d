"""Adaptive deformation basis from multi-view image features (DFNRMVS' AdaptiveBasisNet).

For the current mesh, every view's feature map is sampled at the projected vertices, features of
face-region vertices that are not visible are dropped, the (scaled) vertex positions are
appended, and the per-vertex vectors are splatted into a UV image with the rasteriser's
barycentric tables. A per-view CNN, a max over views and a second CNN give a UV map of 3 * K
channels, which is read back at every vertex's UV position: the (3n, K) basis of per-vertex
displacements (K = ``n_adap_para``).

Coordinate conventions (as the original):

* camera space: pixels of the H_img x W_img image, x right, y up, origin at the image centre;
* image space: ``u = x + W/2``, ``v = H - (y + H/2) - 1`` (x right, y down, pixel centres 0 .. W-1);
* ``grid_sample`` coordinates: ``u / (W - 1) * 2 - 1`` with ``align_corners=True``, i.e. the
  image-space pixel range maps onto the feature map's corner pixels whatever its resolution.

Without autograd (inference) the same computation runs on channels-last tensors: the samples at the
vertices, the UV splat and the read-back are gathers of table rows at precomputed bilinear / barycentric
taps (:mod:`models.nrmvs.point_sampling`), and the CNNs see channels-last inputs, which oneDNN convolves
faster. Same values up to float32 rounding.
"""

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.camera import image_to_grid, to_image
from ..nrmvs.point_sampling import BilinearTaps, bilinear_taps, gather_taps, pixel_table
from .blocks import BasicBlockGN

# Initial scale of the adaptive coefficients for bases not initialised from the expression PCA
# (original: apEV = ones * 1e3 for levels 3 and 4).
DEFAULT_AP_EV = 1e3
# Dilations of the four per-view residual blocks (original's per_view_net).
PER_VIEW_DILATIONS = (1, 2, 4, 8)


class AdaptiveBasis(NamedTuple):
    """Outputs of ``AdaptiveBasisNet.forward`` for N samples (K = n_adap_para, s = uv_size)."""

    basis: torch.Tensor  # (N, 3n, K) rows x0, y0, z0, x1, ...; + expression basis at level 2
    basis_uv: torch.Tensor  # (N, 3K, s, s) the basis as a UV image, channel = coord * K + k


def _per_view_net(in_planes: int, n_planes: int, n_gn: int) -> nn.Sequential:
    skip = nn.Sequential(
        nn.Conv2d(in_planes, n_planes, kernel_size=1, stride=1, padding=0, bias=False),
        nn.GroupNorm(n_gn, n_planes),
    )
    blocks = [BasicBlockGN(in_planes, n_planes, downsample=skip, n_gn=n_gn)]
    blocks += [BasicBlockGN(n_planes, n_planes, dilation=(d, d), n_gn=n_gn) for d in PER_VIEW_DILATIONS[1:]]
    return nn.Sequential(*blocks)


def _uv_net(n_planes: int, out_planes: int, n_gn: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(n_planes, n_planes, kernel_size=3, stride=1, padding=1, bias=False),
        nn.GroupNorm(n_gn, n_planes),
        nn.ReLU(inplace=True),
        nn.Conv2d(n_planes, n_planes, kernel_size=3, stride=1, padding=1, bias=False),
        nn.GroupNorm(n_gn, n_planes),
        nn.ReLU(inplace=True),
        nn.Conv2d(n_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False),
    )


class AdaptiveBasisNet(nn.Module):
    """Predicts a per-sample adaptive basis of K vertex displacements from V views.

    Args:
        uv_size: side s of the UV image (DFNRMVS: 32, 64, 128 for levels 2, 3, 4).
        vertex_uv: (n, 3) float32, vertex positions in that UV image's pixel coordinates
            (x right, y down; z unused).
        pixel_vert_idx: (s, s, 3) int64, the three vertices of the triangle covering each UV pixel.
        pixel_vert_weights: (s, s, 3) float32, their barycentric weights (zero outside the mesh;
            extrapolated, possibly negative, near the UV border).
        face_region_mask: (n,) bool, the tight face region (vertices whose features are dropped
            when not visible).
        exp_basis: optional (3n, K) float32 expression PCA basis; when given, the predicted basis
            is added to it (``adapBias``), the last layers start at zero and ``apEV`` = exp_std.
        exp_std: (K,) float32 standard deviations of ``exp_basis``; required with it.
        n_adap_para: K, the number of basis vectors.
        feat_channels: channels C of the feature maps passed to ``forward``.
        n_planes: width of the CNNs.
        n_gn: GroupNorm groups.

    State (checkpoint keys): ``apEV`` (1, K, 1), ``adapBias`` (1, 3n, K) only with ``exp_basis``,
    ``per_view_net``, ``net`` and ``adap_bias_net`` (a Conv1d the original defines but never uses;
    kept for checkpoint compatibility).
    """

    def __init__(
        self,
        uv_size: int,
        vertex_uv: torch.Tensor,
        pixel_vert_idx: torch.Tensor,
        pixel_vert_weights: torch.Tensor,
        face_region_mask: torch.Tensor,
        exp_basis: torch.Tensor | None = None,
        exp_std: torch.Tensor | None = None,
        n_adap_para: int = 64,
        feat_channels: int = 128,
        n_planes: int = 128,
        n_gn: int = 8,
    ) -> None:
        super().__init__()
        n = vertex_uv.shape[0]
        s = uv_size
        if vertex_uv.shape != (n, 3):
            raise ValueError(f"vertex_uv must have shape (n, 3); got {tuple(vertex_uv.shape)}.")
        if pixel_vert_idx.shape != (s, s, 3) or pixel_vert_weights.shape != (s, s, 3):
            raise ValueError(
                f"pixel_vert_idx and pixel_vert_weights must have shape ({s}, {s}, 3); got "
                f"{tuple(pixel_vert_idx.shape)} and {tuple(pixel_vert_weights.shape)}."
            )
        if face_region_mask.shape != (n,):
            raise ValueError(f"face_region_mask must have shape ({n},); got {tuple(face_region_mask.shape)}.")
        if (exp_basis is None) != (exp_std is None):
            raise ValueError("exp_basis and exp_std must be given together.")
        if exp_basis is not None and (exp_basis.shape != (3 * n, n_adap_para) or exp_std.shape != (n_adap_para,)):
            raise ValueError(
                f"exp_basis must have shape ({3 * n}, {n_adap_para}) and exp_std ({n_adap_para},); got "
                f"{tuple(exp_basis.shape)} and {tuple(exp_std.shape)}."
            )
        self.size = s
        self.num_vertices = n
        self.n_adap_para = n_adap_para
        self.n_planes = n_planes

        if exp_basis is None:
            self.apEV = nn.Parameter(torch.full((1, n_adap_para, 1), DEFAULT_AP_EV))
            self.register_parameter("adapBias", None)
        else:
            self.apEV = nn.Parameter(exp_std.detach().to(torch.float32).reshape(1, n_adap_para, 1).clone())
            self.adapBias = nn.Parameter(exp_basis.detach().to(torch.float32).reshape(1, 3 * n, n_adap_para).clone())
        self.per_view_net = _per_view_net(feat_channels + 3, n_planes, n_gn)
        self.net = _uv_net(n_planes, 3 * n_adap_para, n_gn)
        self.adap_bias_net = nn.Conv1d(n_adap_para, 1, 1, bias=False)
        if exp_basis is not None:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.adap_bias_net.weight)

        uv_grid = image_to_grid(vertex_uv[:, :2].to(torch.float32), s, s)
        self.register_buffer("uv_grid", uv_grid.view(1, n, 1, 2), persistent=False)
        self.register_buffer("pixel_vert_idx", pixel_vert_idx.to(torch.int64), persistent=False)
        self.register_buffer(
            "pixel_vert_weights", pixel_vert_weights.to(torch.float32).view(1, 1, s, s, 3), persistent=False
        )
        self.register_buffer(
            "outside_face", (~face_region_mask.to(torch.bool)).to(torch.float32).view(1, 1, 1, n), persistent=False
        )
        # Per-level constants of the inference path: the bilinear taps of every vertex's UV position in the
        # s x s basis image, and each UV pixel's three vertices and weights as splat taps.
        uv_taps = bilinear_taps(uv_grid.view(1, n, 2), s, s)
        self.register_buffer("uv_tap_index", uv_taps.index, persistent=False)
        self.register_buffer("uv_tap_weight", uv_taps.weight, persistent=False)
        self.register_buffer("splat_tap_index", pixel_vert_idx.to(torch.int64).reshape(s * s, 3), persistent=False)
        self.register_buffer(
            "splat_tap_weight", pixel_vert_weights.to(torch.float32).reshape(s * s, 3), persistent=False
        )

    def denormalize(self, ap_norm: torch.Tensor) -> torch.Tensor:
        """Normalised adaptive coefficients (B, K, 1) -> coefficients ``ap_norm * apEV`` (B, K, 1)."""
        return ap_norm * self.apEV

    def splat_to_uv(self, vert_feat: torch.Tensor) -> torch.Tensor:
        """Per-vertex vectors (B, C, n) -> UV image (B, C, s, s), barycentric mix of each pixel's 3 vertices."""
        return torch.sum(vert_feat[:, :, self.pixel_vert_idx] * self.pixel_vert_weights, dim=-1)

    def forward(
        self, feat: torch.Tensor, vert: torch.Tensor, vis_mask: torch.Tensor, img_h: int, img_w: int
    ) -> AdaptiveBasis:
        """Adaptive basis for the current reconstruction.

        Args:
            feat: (N, V, C, H, W) feature maps of the views (any resolution; sampled with the
                image-space convention of an img_h x img_w image).
            vert: (N, V, n, 3) posed vertices in camera space, pixels of the img_h x img_w image.
            vis_mask: (N, V, 1, n) uint8 / bool, visible face-region vertices.
            img_h, img_w: size of the image the vertices project to (DFNRMVS: 256, 256).
        """
        n = self.num_vertices
        n_smp, n_views = vert.shape[:2]
        if (
            feat.shape[:2] != (n_smp, n_views)
            or feat.dim() != 5
            or vert.shape[2:] != (n, 3)
            or (vis_mask.shape != (n_smp, n_views, 1, n))
        ):
            raise ValueError(
                f"AdaptiveBasisNet expects feat (N, V, C, H, W), vert (N, V, {n}, 3) and vis_mask "
                f"(N, V, 1, {n}); got {tuple(feat.shape)}, {tuple(vert.shape)} and {tuple(vis_mask.shape)}."
            )
        if not torch.is_grad_enabled():
            return self._forward_inference(feat, vert, vis_mask, img_h, img_w)
        c = feat.shape[2]
        b = n_smp * n_views

        grid = image_to_grid(to_image(vert, img_h, img_w)[..., :2], img_h, img_w).reshape(b, n, 1, 2)
        sampled = F.grid_sample(
            feat.reshape(b, c, *feat.shape[3:]), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        ).view(n_smp, n_views, c, n)
        # Features survive on visible vertices and everywhere outside the face region. The original adds the
        # two masked copies; visible vertices lie inside the face region, so the masks are disjoint and one
        # product with their sum gives the same values.
        kept = sampled * (vis_mask.to(sampled.dtype) + self.outside_face)
        vert_pos = vert.transpose(2, 3) / (img_h + img_w) * 2.0  # (N, V, 3, n)
        vert_feat = torch.cat([kept, vert_pos], dim=2).view(b, c + 3, n)

        per_view = self.per_view_net(self.splat_to_uv(vert_feat))
        fused = per_view.view(n_smp, n_views, self.n_planes, self.size, self.size).max(dim=1).values
        basis_uv = self.net(fused)  # (N, 3K, s, s)

        at_vertices = F.grid_sample(
            basis_uv, self.uv_grid.expand(n_smp, n, 1, 2), mode="bilinear", padding_mode="zeros", align_corners=True
        )  # (N, 3K, n, 1)
        basis = at_vertices.permute(0, 2, 1, 3).reshape(n_smp, 3 * n, self.n_adap_para)
        if self.adapBias is not None:
            basis = basis + self.adapBias
        return AdaptiveBasis(basis, basis_uv)

    def _forward_inference(
        self, feat: torch.Tensor, vert: torch.Tensor, vis_mask: torch.Tensor, img_h: int, img_w: int
    ) -> AdaptiveBasis:
        """:meth:`forward` without autograd, on channels-last tensors and table gathers (arguments as there)."""
        n_smp, n_views = vert.shape[:2]
        per_view = self.per_view_net(self._uv_input(feat, vert, vis_mask, img_h, img_w))
        fused = functools.reduce(torch.maximum, per_view.view(n_smp, n_views, *per_view.shape[1:]).unbind(dim=1))
        del per_view  # each helper's temporaries go as soon as they are used: this runs at BFM size
        basis_uv = self.net(fused)  # (N, 3K, s, s), the max over views taken elementwise
        return AdaptiveBasis(self.read_basis(basis_uv), basis_uv)

    @torch.no_grad()
    def read_basis(self, basis_uv: torch.Tensor) -> torch.Tensor:
        """The basis (N, 3n, K) from its UV image (N, 3K, s, s): read at every vertex's UV position (bilinear,
        as :meth:`forward`), plus ``adapBias`` where the basis is initialised from the expression PCA. No autograd."""
        n_smp, s, n = basis_uv.shape[0], self.size, self.num_vertices
        offsets = (s * s) * torch.arange(n_smp, device=basis_uv.device).view(n_smp, 1, 1)
        at_vertices = BilinearTaps((self.uv_tap_index + offsets).view(-1, 4), self.uv_tap_weight.repeat(n_smp, 1))
        table = pixel_table(basis_uv).to(self.uv_tap_weight.dtype)  # float32 even from a reduced-precision CNN
        basis = gather_taps(table, at_vertices).view(n_smp, 3 * n, self.n_adap_para)
        if self.adapBias is not None:
            basis.add_(self.adapBias)
        return basis

    def _uv_input(
        self, feat: torch.Tensor, vert: torch.Tensor, vis_mask: torch.Tensor, img_h: int, img_w: int
    ) -> torch.Tensor:
        """The per-view UV images (N * V, C + 3, s, s), channels-last: kept features and scaled positions."""
        n, s = self.num_vertices, self.size
        n_smp, n_views, c, h, w = feat.shape
        b = n_smp * n_views
        grid = image_to_grid(to_image(vert, img_h, img_w)[..., :2], img_h, img_w).reshape(b, n, 2)
        sampled = gather_taps(pixel_table(feat.reshape(b, c, h, w)), bilinear_taps(grid, h, w))  # (b * n, C)
        positions = (vert / (img_h + img_w) * 2.0).reshape(b * n, 3)
        # Features survive on visible vertices and outside the face region (a 0/1 factor per vertex and view,
        # folded into the splat weights: exact); the positions are splatted unmasked.
        keep = (vis_mask.to(sampled.dtype) + self.outside_face).view(b * n)
        index = (self.splat_tap_index + n * torch.arange(b, device=vert.device).view(b, 1, 1)).view(-1, 3)
        weight = self.splat_tap_weight.repeat(b, 1)
        uv = torch.cat(
            [
                gather_taps(sampled, BilinearTaps(index, weight * keep[index])),
                gather_taps(positions, BilinearTaps(index, weight)),
            ],
            dim=1,
        )
        return uv.view(b, s, s, c + 3).permute(0, 3, 1, 2)
