"""Synthetic people made by the body model itself: poses, motions, cameras and detector-like
2D observations. The fitting benchmark and the regressor's training data both come from here.

No motion-capture data may ship or be downloaded, so poses are sampled from the per-joint
ranges of motion in `meshcap.fitting.priors` and shrunk toward the rest pose by a random
amount, so both small and large articulations are common.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.fitting.camera import project
from meshcap.fitting.priors import joint_ranges

def sample_body_poses(model: BodyModel, n: int, generator: torch.Generator | None = None,
                      activity: tuple[float, float] = (0.2, 1.0)) -> torch.Tensor:
    """(n, J, 3) local poses with the root's rotation left at zero.

    Each component is uniform in its range of motion, then the whole pose is shrunk toward the
    rest pose by a factor drawn from `activity`."""
    r = joint_ranges(model).cpu()
    u = torch.rand(n, *r.shape[:2], generator=generator, dtype=r.dtype)
    pose = r[..., 0] + u * (r[..., 1] - r[..., 0])
    a = activity[0] + (activity[1] - activity[0]) * torch.rand(n, 1, 1, generator=generator, dtype=r.dtype)
    return (pose * a).to(model.device)


def sample_shapes(model: BodyModel, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, S) shapes. anny: phenotypes uniform in [0.1, 0.9], except age in [0.4, 1.0]
    (teenager to elderly: anny's age 0.5 is a young adult, 0.1 a toddler, whom meshcap's
    users rarely film and whose proportions no adult prior covers). SMPL: betas ~ N(0, 1)."""
    if model.name == "anny":
        s = 0.1 + 0.8 * torch.rand(n, model.shape_dim, generator=generator, dtype=model.dtype)
        age = list(model.shape_names).index("age")
        s[:, age] = 0.4 + 0.6 * torch.rand(n, generator=generator, dtype=model.dtype)
    else:
        s = torch.randn(n, model.shape_dim, generator=generator, dtype=model.dtype)
    return s.to(model.device)


def smooth_motion(model: BodyModel, frames: int, fps: float, generator: torch.Generator | None = None,
                  key_every_s: float = 0.6) -> torch.Tensor:
    """(frames, J, 3) a smooth motion: random key poses every `key_every_s` seconds, joined by
    cubic splines (continuous acceleration), root rotation left at zero."""
    from scipy.interpolate import CubicSpline

    t = np.arange(frames) / fps
    n_keys = max(2, int(math.ceil(t[-1] / key_every_s)) + 2) if frames > 1 else 2
    keys = sample_body_poses(model, n_keys, generator).cpu().numpy()
    kt = np.arange(n_keys) * key_every_s
    spline = CubicSpline(kt, keys, axis=0, bc_type="clamped")
    return torch.as_tensor(spline(t), dtype=model.dtype, device=model.device)


@dataclass
class SyntheticView:
    """A posed body seen by a camera: everything in the camera frame (OpenCV).

    poses (N, J, 3), shape (1 or N, S), transl (N, 3), joints (N, J, 3), keypoints3d (N, K, 3),
    keypoints2d (N, K, 3) observed pixels + confidence (0 where dropped), clean2d (N, K, 2),
    K (3, 3), image_size (width, height)."""

    poses: torch.Tensor
    shape: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    keypoints3d: torch.Tensor
    keypoints2d: torch.Tensor
    clean2d: torch.Tensor
    K: torch.Tensor
    image_size: tuple[int, int]


def camera_root_rotation(yaw: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """(..., 3) root rotation vectors placing an upright body (canonical frame) in front of an
    OpenCV camera: turned by `yaw` about its vertical axis, the camera pitched by `tilt`."""
    z = torch.zeros_like(yaw)
    flip = roma.rotvec_to_rotmat(torch.stack([torch.full_like(yaw, math.pi), z, z], -1))
    pitch = roma.rotvec_to_rotmat(torch.stack([tilt, z, z], -1))
    turn = roma.rotvec_to_rotmat(torch.stack([z, yaw, z], -1))
    return roma.rotmat_to_rotvec(pitch @ flip @ turn)


def observe(keypoints3d: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int],
            noise_px: torch.Tensor | float, drop: float = 0.1, limb_drop: float = 0.1,
            generator: torch.Generator | None = None,
            limbs: list[list[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like observations of camera-frame keypoints (N, K, 3).

    Gaussian pixel noise (per-sample sigma `noise_px`, scalar or (N,)), confidences in
    [0.5, 1], each keypoint dropped with probability `drop`, one whole limb (index lists in
    `limbs`) dropped with probability `limb_drop`, and keypoints outside the image dropped.
    Returns (observed (N, K, 3), clean (N, K, 2))."""
    N, Kp = keypoints3d.shape[:2]
    dt = keypoints3d.dtype
    clean = project(keypoints3d, K)
    sig = torch.as_tensor(noise_px, dtype=dt).reshape(-1, 1, 1) if torch.is_tensor(noise_px) \
        else torch.tensor(float(noise_px), dtype=dt)
    xy = clean + torch.randn(N, Kp, 2, generator=generator, dtype=dt) * sig
    conf = 0.5 + 0.5 * torch.rand(N, Kp, generator=generator, dtype=dt)
    keep = torch.rand(N, Kp, generator=generator, dtype=dt) >= drop
    if limbs:
        hit = torch.rand(N, generator=generator, dtype=dt) < limb_drop
        which = torch.randint(len(limbs), (N,), generator=generator)
        for i, limb in enumerate(limbs):
            rows = hit & (which == i)
            keep[rows.nonzero()[:, :1], torch.as_tensor(limb)] = False
    w, h = image_size
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
    conf = torch.where(keep & inside & (keypoints3d[..., 2] > 0), conf, torch.zeros_like(conf))
    return torch.cat([xy, conf[..., None]], -1), clean


def limb_indices(layout) -> list[list[int]]:
    """Keypoint indices of the four limbs of a layout, hands and feet included (for
    whole-limb occlusion): per side, the forearm and hand, and the shin and foot."""
    parts = (("elbow", "wrist", "pinky", "thumb", "index"), ("knee", "ankle", "heel", "foot_index"))
    out = []
    for side in ("left_", "right_"):
        for i, part in enumerate(parts):
            idx = [k for k, n in enumerate(layout.names) if n.startswith(side)
                   and n[len(side):] in part and not (i == 0 and n.endswith("foot_index"))]
            if idx:
                out.append(idx)
    return out
