"""Pinhole cameras (OpenCV frame: x right, y down, z forward), batched and differentiable."""
from __future__ import annotations

import math

import torch


def default_focal(width: int, height: int) -> float:
    """Focal length in pixels when neither the user nor the video says: the image diagonal
    (about a 53 degree diagonal field of view, CLIFF's choice, close to phone main cameras)."""
    return math.hypot(width, height)


def intrinsics(width: int, height: int, focal: float | None = None,
               principal: tuple[float, float] | None = None) -> torch.Tensor:
    """(3, 3) K for an image of `width` x `height` pixels; principal point at the centre unless given."""
    f = default_focal(width, height) if focal is None else float(focal)
    cx, cy = principal if principal is not None else (width / 2.0, height / 2.0)
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Project camera-frame points (..., N, 3) with K (3, 3) or (..., 3, 3) to pixels (..., N, 2).
    Depths are clamped to `eps` so points behind the camera give large, finite residuals."""
    z = points[..., 2:3].clamp(min=eps)
    uv = points[..., :2] / z
    f = torch.stack([K[..., 0, 0], K[..., 1, 1]], -1)[..., None, :]
    c = torch.stack([K[..., 0, 2], K[..., 1, 2]], -1)[..., None, :]
    return uv * f + c


def projection_jacobian(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(..., 3) camera-frame points -> (..., 2, 3) the derivative of their pixels under
    `meshcap.fitting.camera.project` with K (3, 3) (depth clamped as there)."""
    z = points[..., 2].clamp(min=1e-6)
    J = torch.zeros(points.shape[:-1] + (2, 3), dtype=points.dtype, device=points.device)
    J[..., 0, 0] = K[0, 0] / z
    J[..., 1, 1] = K[1, 1] / z
    J[..., 0, 2] = -K[0, 0] * points[..., 0] / z.square()
    J[..., 1, 2] = -K[1, 1] * points[..., 1] / z.square()
    return J
