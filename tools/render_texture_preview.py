"""``python -m tools.render_texture_preview``: the README's picture of a textured reconstruction.

Reconstructs one case with the demo's default path (built-in face model, weights-free fit, the landmark files
beside the photos or dlib), fuses its texture (models/texture/) and renders the textured neutral identity with
the project's rasteriser from viewpoints the photos do not have (turned further than any view, and from
below), beside the input crops. Writes one JPEG (default docs/textured_example.jpg).

Usage: ``python -m tools.render_texture_preview [--case examples/case1] [--out FILE.jpg] [--overwrite]``
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.errors import DFNRMVSError, InputError
from models.face_model.morphable_model import MorphableModel
from models.geometry.camera import IMAGE_SIZE, Pose, normalize_pose, pose_vertices, to_image
from models.io.landmark_detectors import create_detector
from models.io.preprocess import IMAGE_SUFFIXES
from models.io.staging import staged_file
from models.reconstruction import FittingReconstructor, reconstruct
from models.synthesis.multiview_sample import face_width
from models.texture.fusion import TextureConfig, fuse_texture
from models.texture.textured_render import render_texture

DEFAULT_CASE = Path("examples/case1")
DEFAULT_OUT = Path("docs/textured_example.jpg")
# The novel viewpoints: (pitch, yaw) in degrees; the example photos are within +-30 degrees of yaw.
VIEWPOINTS = ((0.0, -55.0), (-20.0, 0.0), (0.0, 55.0))
# Width of the face region in the renders, as a fraction of the image.
FACE_FILL = 0.7
BACKGROUND = (0.93, 0.93, 0.93)
JPEG_QUALITY = 92


def novel_view(mm: MorphableModel, neutral: torch.Tensor, pitch: float, yaw: float) -> torch.Tensor:
    """(n, 3) image coordinates (256 x 256) of the neutral mesh (n, 3, model units) seen at (pitch, yaw) degrees."""
    one = torch.ones(1, dtype=torch.float64)
    scale = FACE_FILL * IMAGE_SIZE / face_width(mm)
    centred = normalize_pose(Pose(pitch * one, yaw * one, 0 * one, scale * one, 0 * one, 0 * one)).float()
    camera = pose_vertices(neutral[None].float(), centred)[0]
    region = camera[mm.face_region_mask, :2]
    return to_image(camera - torch.cat([(region.amax(0) + region.amin(0)) / 2, torch.zeros(1)]))


def render_preview(case: Path) -> np.ndarray:
    """(256, 256 (V + 3), 3) uint8: the case's crops, then the textured neutral mesh from :data:`VIEWPOINTS`."""
    photos = sorted(p for p in case.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    reconstructor = FittingReconstructor()
    result = reconstruct(photos, reconstructor, create_detector("dlib"))
    mm = reconstructor.model
    crops = np.stack([view.crop for view in result.views])
    fused = fuse_texture(
        torch.from_numpy(result.vertices), torch.from_numpy(crops), mm.triangles, mm.uv_coords, TextureConfig()
    )
    background = torch.tensor(BACKGROUND).expand(IMAGE_SIZE, IMAGE_SIZE, 3)
    neutral = torch.from_numpy(result.neutral_vertices)
    renders = [
        render_texture(
            novel_view(mm, neutral, pitch, yaw), mm.triangles, fused.texture_uv, fused.texture, IMAGE_SIZE, IMAGE_SIZE,
            background,
        ).image
        for pitch, yaw in VIEWPOINTS
    ]  # fmt: skip
    rendered = (torch.cat(renders, dim=1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return np.concatenate([*crops, rendered], axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", type=Path, default=DEFAULT_CASE, help=f"photos of one person (default {DEFAULT_CASE})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JPEG to write (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        if not args.case.is_dir():
            raise InputError(f"--case {args.case}: folder not found")
        picture = render_preview(args.case)
        with staged_file(args.out, replace=args.overwrite) as staging:
            Image.fromarray(picture).save(staging, format="JPEG", quality=JPEG_QUALITY)
    except DFNRMVSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
