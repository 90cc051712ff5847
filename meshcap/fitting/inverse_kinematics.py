"""Inverse kinematics: body-model poses whose joints reach given 3D joint positions.

The regression stage uses it to start the fit where the temporal lifter puts the joints, in
frames whose body leans far from the image's up (lying, upside down, mid-cartwheel). There the
per-frame regressor's rotations are badly off (300 mm PA-MPJPE on the get-up take's lying
part), and the fit, pulled toward the lifter's joints from there, stays in that basin.
A closed-form swing-twist solve would need a single child per joint, which the spine and the
clavicles do not have; a few Adam steps on all frames at once cost about one body-model pass
each and treat every joint alike.
"""
from __future__ import annotations

import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError

# Steps: reaching the lifted joints in every frame, the fit's PA-MPJPE on the benchmark's
# training takes was the same after 50, 100 or 200 steps (49.5 mm; 50.7 without), so 50.
IK_STEPS = 50
IK_RATE = 0.03


def joints_to_poses(model: BodyModel, poses: torch.Tensor, shape: torch.Tensor, joints: torch.Tensor,
                    sigma: torch.Tensor | None = None, steps: int = IK_STEPS) -> torch.Tensor:
    """Poses (T, J, 3) axis-angle, started from `poses` (T, J, 3), whose joints (with `shape`
    (1, S)) relative to the root match `joints` (T, J, 3) relative to the root, in the same
    axes (metres). sigma (T, J), metres: each joint's uncertainty (weights 1/sigma, at most
    1/2 cm, normalised to a mean of 1; unseen frames with a large sigma barely count); None:
    all alike. A weak pull toward zero rotation keeps joints the targets say little about
    near rest. Adam, `steps` steps, on every frame at once."""
    T, J = poses.shape[0], model.num_joints
    if poses.shape != (T, J, 3) or joints.shape != (T, J, 3):
        raise InputError(f"joints_to_poses: poses and joints must be (T, {J}, 3), got "
                         f"{tuple(poses.shape)} and {tuple(joints.shape)}")
    if sigma is not None and sigma.shape != (T, J):
        raise InputError(f"joints_to_poses: sigma must be (T, {J}), got {tuple(sigma.shape)}")
    if steps <= 0 or T == 0:
        return poses
    target = joints - joints[:, :1]
    w = torch.ones(T, J, dtype=poses.dtype, device=poses.device) if sigma is None else 1.0 / sigma.clamp(min=0.02)
    w = (w / w.mean())[..., None]
    pose = poses.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([pose], lr=IK_RATE)
    with torch.enable_grad():
        for _ in range(steps):
            j = model(pose, shape, vertices=False).joints
            j = j - j[:, :1]
            # squared cm, so the rest-pull weight reads as a fraction of a cm^2 per radian^2
            loss = (w * (j - target).square()).sum(-1).mean() * 1e4 + 1e-2 * pose[:, 1:].square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return pose.detach()
