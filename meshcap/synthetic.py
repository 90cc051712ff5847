"""Synthetic people made by the body model itself: poses, motions, cameras and detector-like
2D observations. The fitting benchmark and the regressor's training data both come from here.

No motion-capture data may ship or be downloaded, so poses come from two generators written
here: `sample_body_poses` draws every joint independently within its range of motion in
`meshcap.fitting.priors` (coverage of everything the limits allow), and
`sample_structured_poses` draws whole-body activities (walking and running at a gait phase,
sitting and squatting, bending, reaching, standing) whose joints move together the way people's
do: the legs in antiphase with the arms, knees that bend with the hips, a spine that bends
over all its joints, both within the same limits.
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


# Activities of `sample_structured_poses` and how often each is drawn (sums to 1).
ACTIVITIES = {"walk": 0.25, "run": 0.1, "sit": 0.15, "bend": 0.1, "reach": 0.2, "stand": 0.2}


def _joint_index(model: BodyModel) -> dict[str, int]:
    """anny joint name -> index in `model` (SMPL-family names map through the priors' aliases)."""
    from meshcap.fitting.priors import _SMPL_ALIASES

    out = {}
    for j, name in enumerate(model.joint_names):
        key = name if name in _SMPL_ALIASES.values() else _SMPL_ALIASES.get(name)
        if key is not None:
            out[key] = j
    return out


class _PoseBuilder:
    """Writes left-side rotation-vector components and mirrors them to the right (the ranges
    are mirror images: the same pitch x, negated twist y and roll z)."""

    def __init__(self, model: BodyModel, n: int):
        self.idx = _joint_index(model)
        self.pose = torch.zeros(n, model.num_joints, 3, dtype=model.dtype)

    def set(self, rows: torch.Tensor, joint: str, axis: int, left: torch.Tensor,
            right: torch.Tensor | None = None) -> None:
        """Adds `left` (len(rows),) to the left joint's `axis` and `right` (default: `left`)
        to the right one's, mirrored; a joint without a side takes `left` alone."""
        if joint + ".L" not in self.idx:
            if joint in self.idx:
                self.pose[rows, self.idx[joint], axis] += left
            return
        right = left if right is None else right
        self.pose[rows, self.idx[joint + ".L"], axis] += left
        self.pose[rows, self.idx[joint + ".R"], axis] += right if axis == 0 else -right


def sample_structured_poses(model: BodyModel, n: int, generator: torch.Generator | None = None,
                            activities: dict[str, float] | None = None) -> torch.Tensor:
    """(n, J, 3) local poses of whole-body activities (`ACTIVITIES`), root rotation left at zero.

    Each pose comes from one activity's few parameters (gait phase and stride, sitting depth,
    which arm reaches where, ...) that set many joints together, plus small independent jitter
    on every joint, then clamped to the ranges of motion. Signs follow the table in
    `meshcap.fitting.priors`: a negative hip or shoulder pitch swings the limb forward, a
    positive knee pitch bends it, a positive left-arm roll raises the arm sideways."""
    g = generator
    act = ACTIVITIES if activities is None else activities
    names = list(act)
    probs = torch.tensor([act[k] for k in names], dtype=torch.float64)
    which = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=g)
    b = _PoseBuilder(model, n)
    dt = model.dtype

    def U(rows, lo, hi):
        return lo + (hi - lo) * torch.rand(len(rows), generator=g, dtype=dt)

    def N(rows, sd):
        return sd * torch.randn(len(rows), generator=g, dtype=dt)

    for a, name in enumerate(names):
        r = (which == a).nonzero()[:, 0]
        if len(r) == 0:
            continue
        # arms hang from the A-pose closer to the body, elbows a little bent, in most activities
        hang = U(r, -0.6, -0.15)
        if name in ("walk", "run"):
            run = name == "run"
            ph = U(r, 0, 2 * math.pi)
            amp = U(r, 0.6, 1.2) if run else U(r, 0.3, 1.0)
            sl, sr = torch.sin(ph), torch.sin(ph + math.pi)
            hip = 0.55 if run else 0.4
            b.set(r, "upperleg01", 0, -0.1 - hip * amp * sl, -0.1 - hip * amp * sr)
            # the knee bends most in the swing, after the leg has passed behind the body
            kl = torch.relu(torch.sin(ph + 1.0)); kr = torch.relu(torch.sin(ph + 1.0 + math.pi))
            kmax = 1.6 if run else 0.9
            b.set(r, "lowerleg01", 0, 0.1 + kmax * amp * kl + N(r, 0.05), 0.1 + kmax * amp * kr + N(r, 0.05))
            b.set(r, "foot", 0, 0.2 * amp * torch.sin(ph + 2.0), 0.2 * amp * torch.sin(ph + 2.0 + math.pi))
            # arms swing against the legs on the same side
            arm = 0.5 if run else 0.3
            b.set(r, "upperarm01", 0, arm * amp * sl, arm * amp * sr)
            b.set(r, "upperarm01", 2, hang, hang + N(r, 0.05))
            elbow = U(r, 1.0, 1.8) if run else U(r, 0.1, 0.6)
            b.set(r, "lowerarm01", 1, -(elbow + 0.3 * amp * torch.relu(-sl)), -(elbow + 0.3 * amp * torch.relu(-sr)))
            lean = U(r, 0.05, 0.3) if run else U(r, -0.05, 0.1)
            twist = 0.12 * amp * sl
            for sp in ("spine05", "spine03", "spine01"):
                b.set(r, sp, 0, lean / 3)
                b.set(r, sp, 1, twist / 3)
        elif name == "sit":
            depth = U(r, 0.8, 1.6)  # hip flexion, chair to deep squat
            b.set(r, "upperleg01", 0, -depth + N(r, 0.1), -depth + N(r, 0.1))
            spread = U(r, 0.0, 0.45)
            b.set(r, "upperleg01", 2, spread + N(r, 0.05), spread + N(r, 0.05))
            knee = (1.1 * depth + U(r, -0.3, 0.5)).clamp(0.6, 2.2)
            b.set(r, "lowerleg01", 0, knee + N(r, 0.1), knee + N(r, 0.1))
            b.set(r, "foot", 0, U(r, -0.3, 0.3), U(r, -0.3, 0.3))
            lean = U(r, -0.15, 0.45)
            for sp in ("spine05", "spine03", "spine01"):
                b.set(r, sp, 0, lean / 3 + N(r, 0.03))
            b.set(r, "upperarm01", 0, U(r, -0.9, 0.1), U(r, -0.9, 0.1))
            b.set(r, "upperarm01", 2, hang, U(r, -0.6, -0.15))
            b.set(r, "lowerarm01", 1, -U(r, 0.2, 1.6), -U(r, 0.2, 1.6))
        elif name == "bend":
            trunk = U(r, 0.3, 1.4)  # over the three spine joints together
            for sp in ("spine05", "spine03", "spine01"):
                b.set(r, sp, 0, trunk / 3 + N(r, 0.04))
            b.set(r, "spine03", 1, N(r, 0.15))
            hipf = U(r, 0.2, 1.3)
            b.set(r, "upperleg01", 0, -hipf + N(r, 0.08), -hipf + N(r, 0.08))
            knee = U(r, 0.0, 1.2) * (hipf / 1.3)
            b.set(r, "lowerleg01", 0, knee + N(r, 0.08), knee + N(r, 0.08))
            # arms hang toward the ground, i.e. forward relative to the bent trunk
            reach = (0.6 * (trunk + hipf) / 2 + U(r, -0.2, 0.5)).clamp(max=1.5)
            b.set(r, "upperarm01", 0, -reach + N(r, 0.1), -reach + N(r, 0.1))
            b.set(r, "upperarm01", 2, hang, hang + N(r, 0.05))
            b.set(r, "lowerarm01", 1, -U(r, 0.0, 0.8), -U(r, 0.0, 0.8))
            b.set(r, "neck01", 0, -U(r, 0.0, 0.4))  # keeps looking ahead
        elif name == "reach":
            # one arm or both raised (forward pitch, sideways roll, twist), elbow anywhere
            both = torch.rand(len(r), generator=g) < 0.4
            left = torch.rand(len(r), generator=g) < 0.5
            for side_left in (True, False):
                raised = both | (left == side_left)
                pitch = torch.where(raised, U(r, -1.5, 0.2), U(r, -0.3, 0.3))
                roll = torch.where(raised, U(r, -0.3, 1.4), U(r, -0.6, -0.15))
                tw = torch.where(raised, U(r, -0.6, 0.6), N(r, 0.1))
                el = torch.where(raised, U(r, 0.0, 2.2), U(r, 0.05, 0.5))
                zero = torch.zeros(len(r), dtype=dt)
                for axis, val in ((0, pitch), (2, roll), (1, tw)):
                    b.set(r, "upperarm01", axis, val if side_left else zero, zero if side_left else val)
                b.set(r, "lowerarm01", 1, -el if side_left else zero, zero if side_left else -el)
                b.set(r, "clavicle", 2, torch.where(raised, 0.15 * roll.clamp(min=0), zero) if side_left else zero,
                      zero if side_left else torch.where(raised, 0.15 * roll.clamp(min=0), zero))
            # the head turns toward the raised arm, the trunk leans a little with it
            look = torch.where(left, 1.0, -1.0).to(dt)
            b.set(r, "neck01", 1, look * U(r, 0.0, 0.4))
            b.set(r, "spine03", 2, look * U(r, -0.05, 0.15))
            _stance(b, r, U, N)
        else:  # standing: weight on one leg, arms hanging, on the hips or folded
            _stance(b, r, U, N)
            b.set(r, "upperarm01", 2, hang, hang + N(r, 0.1))
            b.set(r, "upperarm01", 0, U(r, -0.5, 0.3), U(r, -0.5, 0.3))
            el = U(r, 0.05, 2.0)
            b.set(r, "lowerarm01", 1, -el, -(el + N(r, 0.3)).clamp(min=0))
        b.set(r, "head", 1, U(r, -0.35, 0.35))
        b.set(r, "head", 0, U(r, -0.25, 0.25))
    jitter = 0.06 * torch.randn(b.pose.shape, generator=g, dtype=dt)
    pose = b.pose + jitter
    ranges = joint_ranges(model).cpu()
    pose = torch.maximum(torch.minimum(pose, ranges[..., 1]), ranges[..., 0])
    pose[:, 0] = 0
    return pose.to(model.device)


def _stance(b: _PoseBuilder, r: torch.Tensor, U, N) -> None:
    """Standing legs: weight shifted onto one leg, the other knee a little bent."""
    shift = U(r, -0.15, 0.15)
    b.set(r, "upperleg01", 2, shift, -shift)
    b.set(r, "upperleg01", 0, U(r, -0.3, 0.15), U(r, -0.3, 0.15))
    b.set(r, "lowerleg01", 0, U(r, 0.0, 0.35), U(r, 0.0, 0.35))
    b.set(r, "foot", 1, N(r, 0.1), N(r, 0.1))


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
