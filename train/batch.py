"""One training or validation batch on the device."""

from dataclasses import dataclass

import torch

from models.geometry import camera


@dataclass
class Batch:
    """One batch on the device (N samples, V views, n vertices).

    images (N, V, 3, 256, 256) ImageNet-normalised; raw_images the same in [0, 1]; landmarks
    (N, V, 68, 2) px (x right, y down); vertices (N, V, n, 3) ground truth, camera space px (y up);
    landmarks3d (N, V, 68, 3) ground-truth 3D landmarks in image space (px, y down, as
    ``land3d_loss`` wants them); pose (N, V, 6) normalised ground-truth pose or None.
    """

    images: torch.Tensor
    raw_images: torch.Tensor
    landmarks: torch.Tensor
    vertices: torch.Tensor
    landmarks3d: torch.Tensor
    pose: torch.Tensor | None

    @classmethod
    def from_collated(cls, batch: dict, landmark_indices: torch.Tensor, device: torch.device) -> "Batch":
        """Move a collated dataset batch to ``device``; the camera-space ``landmarks3d`` (by default
        the ground-truth vertices at the landmark indices) are moved to image space."""
        vertices = batch["vertices"].to(device)
        landmarks3d = batch.get("landmarks3d")
        landmarks3d = vertices[:, :, landmark_indices] if landmarks3d is None else landmarks3d.to(device)
        height, width = batch["images"].shape[-2:]
        pose = batch.get("pose")
        return cls(
            images=batch["images"].to(device),
            raw_images=batch["raw_images"].to(device),
            landmarks=batch["landmarks"].to(device),
            vertices=vertices,
            landmarks3d=camera.to_image(landmarks3d, height, width),
            pose=None if pose is None else pose.to(device),
        )
