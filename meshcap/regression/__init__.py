"""The regression stage: 2D keypoints -> body pose, shape, camera and per-joint sigma, used to
initialise fitting (`meshcap.fitting.FitInit`).

    net = load_regressor()                      # the shipped weights, offline
    init = regress_track(net, model, keypoints, "blazepose33", K)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.regression.model import KeypointRegressor, RegressorConfig, prepare_input, translation
from meshcap.regression.temporal import SHIPPED_TEMPORAL, TemporalLifter, lift_track, load_temporal, mirror_keypoints
from meshcap.regression.weights import SHIPPED, load_regressor, save_weights

__all__ = ["KeypointRegressor", "RegressorConfig", "load_regressor", "save_weights", "regress",
           "regress_track", "SHIPPED", "RegressionStage", "load_stage", "TemporalLifter", "load_temporal",
           "lift_track", "mirror_keypoints", "SHIPPED_TEMPORAL"]

UNSEEN_SIGMA = 1.0  # metres: what a frame with too few keypoints says about its joints


@torch.no_grad()
def regress(net: KeypointRegressor, model: BodyModel, keypoints: torch.Tensor, layout: str,
            K: torch.Tensor, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Per-person predictions for keypoints (N, K, 3) pixels + confidence in `layout`, camera
    K (3, 3). Returns poses (N, J, 3) axis-angle, shape (N, S), transl (N, 3) (the body
    model's `transl`, camera frame), sigma (N, J) metres, seen (N,) bool: enough keypoints."""
    if net.config.num_joints != model.num_joints or net.config.body_model != model.name:
        raise ValueError(f"these regressor weights are for {net.config.body_model} "
                         f"({net.config.num_joints} joints), not {model.name}")
    kp = torch.as_tensor(keypoints, dtype=torch.float32)
    tokens, center, half = prepare_input(kp, layout)
    outs = [net(tokens[i:i + batch_size]) for i in range(0, len(tokens), batch_size)]
    pred = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    Kf = torch.as_tensor(K, dtype=torch.float32)
    root_rel = translation(pred["cam"], center, half, Kf)
    rest_root = model.rest_joints(pred["shape"].to(model.dtype))[:, 0].float()
    seen = (tokens[..., 2] > 0).sum(-1) >= 6
    sigma = torch.where(seen[:, None], pred["sigma"], torch.full_like(pred["sigma"], UNSEEN_SIGMA))
    return dict(poses=roma.rotmat_to_rotvec(pred["rotmats"]), shape=pred["shape"],
                transl=root_rel - rest_root, sigma=sigma, seen=seen)


def regress_track(net: KeypointRegressor, model: BodyModel, keypoints: torch.Tensor, layout: str,
                  K: torch.Tensor, temporal: TemporalLifter | None = None, fps: float = 30.0):
    """A `FitInit` for one track (T, K, 3) at `fps`: per-frame pose and sigma; one shape
    (the confidence-weighted mean over the frames seen); frames with too few keypoints take
    the nearest seen frame's pose with a sigma of `UNSEEN_SIGMA`.

    With the `temporal` lifter, the fit is pulled toward its joints with its sigma instead (it
    sees the motion around each frame), and each frame's pose is turned as a whole to face the
    way the lifted joints do (a rotation of the root: the per-frame net's own heading is the
    usual error of a single frame, a body seen from behind or its depth mirror)."""
    from meshcap.fitting.inverse_kinematics import joints_to_poses
    from meshcap.fitting.smplify import FitInit

    r = regress(net, model, keypoints, layout, K)
    seen = r["seen"]
    if not seen.any():
        return None
    idx = torch.arange(len(seen))
    seen_idx = idx[seen]
    nearest = seen_idx[(idx[:, None] - seen_idx[None]).abs().argmin(1)]
    w = (1.0 / r["sigma"][seen].mean(-1))[:, None]
    shape = (r["shape"][seen] * w).sum(0, keepdim=True) / w.sum()
    dt = model.dtype
    # No translation: the fit places the body from its torso's 2D size and its own shape,
    # which keeps real footage on its keypoints (the Sports2D demo's second person reprojects
    # 3.2 px from there, 8.4 px from the regressor's weak-perspective depth; see MODEL_CARD.md).
    poses, sigma, joints = r["poses"][nearest], r["sigma"], None
    if temporal is not None:
        # read as seen and as its mirror image, averaged (`lift_track`'s `mirror`)
        lifted = lift_track(temporal, keypoints, layout, K, fps, mirror=model.mirror_permutation())
        # frames with too few keypoints: the lifter fills them from their neighbours, but the
        # fit should not be held to that (its temporal terms fill gaps too)
        joints = lifted["joints"]
        sigma = torch.where(seen[:, None], lifted["sigma"], torch.full_like(lifted["sigma"], UNSEEN_SIGMA))
        with torch.no_grad():
            own = model(poses.to(dt), shape.to(dt), vertices=False).joints.float()
        own = own - own[:, :1]
        turn, _ = roma.rigid_points_registration(own, joints)
        poses = poses.clone()
        poses[:, 0] = roma.rotmat_to_rotvec(turn @ roma.rotvec_to_rotmat(poses[:, 0]))
        joints = joints.to(dt)
        # Where the lifted torso leans far from the image's up, the per-frame net is outside
        # what it learned (level cameras, mostly upright bodies) and the fit would stay near
        # its misread rotations: there, every joint starts reaching for the lifted ones. Upright
        # people keep the per-frame rotations (reaching the lifter's joints everywhere made
        # the Pose2Sim cameras' monocular fits 11 mm worse; MODEL_CARD.md).
        tilted = _torso_tilt(model, joints) > UPRIGHT_DEG
        if tilted.any():
            reached = joints_to_poses(model, poses[tilted].to(dt), shape.to(dt), joints[tilted], sigma[tilted].to(dt))
            poses = poses.to(dt)  # cloned above: the regressor's own poses stay as they were
            poses[tilted] = reached
    return FitInit(poses=poses.to(dt), shape=shape.to(dt), transl=None, sigma=sigma.to(dt), joints=joints)


# Torso lean (degrees from the camera's up) beyond which the fit starts from the lifted joints.
UPRIGHT_DEG = 60.0


def _torso_tilt(model: BodyModel, joints: torch.Tensor) -> torch.Tensor:
    """(T,) degrees between the root-to-neck direction of root-relative joints (T, J, 3),
    camera axes (y down), and the camera's up."""
    neck = next((model.joint_names.index(n) for n in ("neck01", "neck") if n in model.joint_names), None)
    if neck is None:
        return torch.zeros(joints.shape[0], dtype=joints.dtype)
    v = joints[:, neck] - joints[:, 0]
    return torch.rad2deg(torch.acos((-v[:, 1] / v.norm(dim=-1).clamp(min=1e-9)).clamp(-1, 1)))


@dataclass
class RegressionStage:
    """The regression stage as fitting uses it: the per-frame regressor `net` (poses, shape,
    sigma) and, if given, the temporal lifter (joints to pull toward, and their sigma);
    `init_track` gives a track's `FitInit` (see `regress_track`)."""

    net: KeypointRegressor
    temporal: TemporalLifter | None = None

    def init_track(self, model: BodyModel, keypoints: torch.Tensor, layout: str, K: torch.Tensor,
                   fps: float = 30.0):
        """A `FitInit` for keypoints (T, K, 3) in `layout`, camera K (3, 3), or None (nothing seen)."""
        return regress_track(self.net, model, keypoints, layout, K, self.temporal, fps)


def load_stage(weights: str | Path | None = None, temporal: str | Path | bool | None = True) -> RegressionStage:
    """The regression stage from weights files: the per-frame regressor (default: shipped) and
    the temporal lifter (True: the shipped one where it exists; a file; False/None: none)."""
    net = load_regressor(weights)
    lifter = None
    if temporal is True:
        lifter = load_temporal() if SHIPPED_TEMPORAL.exists() else None
    elif temporal:
        lifter = load_temporal(temporal)
    return RegressionStage(net, lifter)
