"""Priors on the fitted skeleton's pose: ranges of motion per joint.

The ranges are written for the canonical frame (y up, facing +z, left on +x) and local
rotations about world-aligned axes of the rest pose, an A-pose; they are taken as limits on
each rotation-vector component, which is what a fitting penalty and a pose sampler need
(not an exact anatomical model: the components of a large rotation vector are not Euler
angles). SMPL-family joints map onto the same table by name.
"""
from __future__ import annotations

import torch

from meshcap.body_models.base import BodyModel

# Ranges of motion (radians) per local rotation-vector component (x, y, z), by anny joint name.
# x: pitch (+ bends the spine forward, swings a leg or arm backward); y: twist/yaw;
# z: roll (+ raises the left arm / moves the left leg outward).
_RANGES_ANNY = {
    "upperleg01.L": ((-1.6, 0.5), (-0.4, 0.4), (-0.2, 0.6)),
    "upperleg01.R": ((-1.6, 0.5), (-0.4, 0.4), (-0.6, 0.2)),
    "lowerleg01.L": ((0.0, 2.2), (-0.1, 0.1), (-0.1, 0.1)),
    "lowerleg01.R": ((0.0, 2.2), (-0.1, 0.1), (-0.1, 0.1)),
    "foot.L": ((-0.5, 0.6), (-0.3, 0.3), (-0.2, 0.2)),
    "foot.R": ((-0.5, 0.6), (-0.3, 0.3), (-0.2, 0.2)),
    "spine05": ((-0.2, 0.5), (-0.3, 0.3), (-0.2, 0.2)),
    "spine03": ((-0.2, 0.5), (-0.3, 0.3), (-0.2, 0.2)),
    "spine01": ((-0.2, 0.4), (-0.3, 0.3), (-0.2, 0.2)),
    "neck01": ((-0.4, 0.5), (-0.6, 0.6), (-0.3, 0.3)),
    "head": ((-0.3, 0.3), (-0.4, 0.4), (-0.2, 0.2)),
    "clavicle.L": ((-0.15, 0.15), (-0.15, 0.15), (-0.1, 0.25)),
    "clavicle.R": ((-0.15, 0.15), (-0.15, 0.15), (-0.25, 0.1)),
    "upperarm01.L": ((-1.5, 0.6), (-0.6, 0.6), (-0.6, 1.4)),
    "upperarm01.R": ((-1.5, 0.6), (-0.6, 0.6), (-1.4, 0.6)),
    "lowerarm01.L": ((-0.2, 0.2), (-2.2, 0.0), (-0.2, 0.2)),
    "lowerarm01.R": ((-0.2, 0.2), (0.0, 2.2), (-0.2, 0.2)),
    "wrist.L": ((-0.5, 0.5), (-0.3, 0.3), (-0.4, 0.4)),
    "wrist.R": ((-0.5, 0.5), (-0.3, 0.3), (-0.4, 0.4)),
}
# SMPL joint names onto the same ranges (same canonical frame and conventions).
_SMPL_ALIASES = {
    "left_hip": "upperleg01.L", "right_hip": "upperleg01.R", "left_knee": "lowerleg01.L",
    "right_knee": "lowerleg01.R", "left_ankle": "foot.L", "right_ankle": "foot.R",
    "spine1": "spine05", "spine2": "spine03", "spine3": "spine01", "neck": "neck01",
    "head": "head", "left_collar": "clavicle.L", "right_collar": "clavicle.R",
    "left_shoulder": "upperarm01.L", "right_shoulder": "upperarm01.R",
    "left_elbow": "lowerarm01.L", "right_elbow": "lowerarm01.R", "left_wrist": "wrist.L",
    "right_wrist": "wrist.R",
}


def joint_ranges(model: BodyModel) -> torch.Tensor:
    """(J, 3, 2) lower/upper bound per joint and axis, radians. The root's row is 0 (it is
    free; nothing reads it); joints the table does not know (hands, toes, jaw) get +-0.3."""
    r = torch.tensor([-0.3, 0.3], dtype=model.dtype, device=model.device).repeat(model.num_joints, 3, 1)
    r[0] = 0.0
    for j, name in enumerate(model.joint_names):
        key = name if name in _RANGES_ANNY else _SMPL_ALIASES.get(name)
        if j > 0 and key is not None:
            r[j] = torch.tensor(_RANGES_ANNY[key], dtype=model.dtype, device=model.device)
    return r




def limit_excess_bounds(ranges: torch.Tensor, margin: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) (J-1, 3) each: the body joints' ranges (J, 3, 2) widened by `margin`, where
    `limit_excess` starts counting."""
    return ranges[1:, :, 0] - margin, ranges[1:, :, 1] + margin


def limit_excess(body: torch.Tensor, ranges: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """(..., J-1, 3) signed excess (rad) of body-joint rotation vectors (..., J-1, 3) beyond their
    ranges (J, 3, 2) widened by `margin` (0 inside); the root's row of `ranges` is ignored."""
    lo, hi = limit_excess_bounds(ranges, margin)
    return torch.relu(body - hi) - torch.relu(lo - body)


def limit_penalty(body: torch.Tensor, ranges: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """(...,) squared excess (rad^2) of body-joint rotation vectors (..., J-1, 3) beyond their
    ranges (J, 3, 2) widened by `margin`; the root's row of `ranges` is ignored."""
    return limit_excess(body, ranges, margin).square().sum((-1, -2))


def bone_length_sum(model: BodyModel, shape: torch.Tensor) -> torch.Tensor:
    """(B,) summed length of the rest skeleton's bones (metres) of shapes (B, S): one number
    for a body's size that every body model has (differentiable in the shape)."""
    rest = model.rest_joints(shape)
    parents = torch.as_tensor(model.parents[1:], device=rest.device)
    return (rest[:, 1:] - rest[:, parents]).norm(dim=-1).sum(-1)
