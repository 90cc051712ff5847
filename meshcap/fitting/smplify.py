"""SMPLify-style fitting of a body model to 2D keypoints (single view, one track).

The frames of one person's track are optimised together as one batch with one shape.
Objective: confidence-weighted Geman-McClure reprojection of named keypoints (residuals
measured as a fraction of the person's 2D size, so the weights do not depend on image
resolution), hinge-joint limits, an L2 pose prior and a shape prior; staged as SMPLify does
(root orientation and translation against the torso first, then the whole body).
Missing keypoints (confidence 0 or NaN) count for nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError
from meshcap.fitting.camera import project
from meshcap.keypoints.layouts import get_layout

_TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


def gmof(sq_residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals: sigma^2 r^2 / (sigma^2 + r^2)."""
    s2 = sigma * sigma
    return s2 * sq_residual / (s2 + sq_residual)


@dataclass
class FitOptions:
    """Weights and schedule. Residuals are in units of the person's 2D size."""

    sigma: float = 0.1
    min_confidence: float = 0.1
    w_pose: float = 1e-5
    w_limits: float = 1e-2
    w_shape: float = 1e-3
    iters_camera: int = 60
    iters_body: int = 400
    lr_rot: float = 0.03
    lr_transl: float = 0.03
    lr_shape: float = 0.05


@dataclass
class FitResult:
    """poses (T, J, 3) axis-angle, shape (1, S), transl (T, 3), joints (T, J, 3) camera frame,
    keypoints3d (T, K, 3), reprojection_px (T, K) per-keypoint error (NaN where missing)."""

    poses: torch.Tensor
    shape: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    keypoints3d: torch.Tensor
    reprojection_px: torch.Tensor


# Hinge joints bend one way: (joint name, axis index in the canonical frame, allowed sign).
# Canonical frame: y up, facing +z, left on +x. Knees flex about +x; elbows about -y (left)
# and +y (right), bringing the hand forward.
_HINGES = {
    "anny": (("lowerleg01.L", 0, 1.0), ("lowerleg01.R", 0, 1.0),
             ("lowerarm01.L", 1, -1.0), ("lowerarm01.R", 1, 1.0)),
    "smpl": (("left_knee", 0, 1.0), ("right_knee", 0, 1.0),
             ("left_elbow", 1, -1.0), ("right_elbow", 1, 1.0)),
}
_HINGES["smplh"] = _HINGES["smplx"] = _HINGES["smpl"]


def _person_size(xy: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """(T,) the larger side of each frame's keypoint box, pixels: it normalises the residuals.
    Frames with no usable box (nothing seen, or under a pixel) take the median of the others."""
    seen = conf[..., None] > 0
    lo = torch.where(seen, xy, torch.full_like(xy, float("inf"))).amin(1)
    hi = torch.where(seen, xy, torch.full_like(xy, float("-inf"))).amax(1)
    size = (hi - lo).max(-1).values
    finite = torch.isfinite(size)
    fallback = size[finite].median() if finite.any() else torch.ones_like(size)
    return torch.where(finite & (size > 1), size, fallback)


class SingleViewFitter:
    """Fits one person's track of 2D keypoints (T, K, 3) seen by one camera K (3, 3)."""

    def __init__(self, body_model: BodyModel, layout: str = "blazepose33",
                 options: FitOptions | None = None) -> None:
        self.model = body_model
        self.layout = get_layout(layout)
        self.options = options or FitOptions()
        self._hinges = [(body_model.joint_names.index(n), a, s)
                        for n, a, s in _HINGES.get(body_model.name, ()) if n in body_model.joint_names]
        self._torso = [self.layout.index(n) for n in _TORSO]

    # -- parameters ----------------------------------------------------------------------------

    def _shape_from_param(self, p: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(p) if self.model.name == "anny" else p

    def _shape_prior(self, p: torch.Tensor) -> torch.Tensor:
        return p.square().sum()  # anny: logit 0 = phenotype 0.5 (average); SMPL: betas 0

    def _check(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kp = torch.as_tensor(keypoints, dtype=self.model.dtype, device=self.model.device)
        if kp.ndim != 3 or kp.shape[1:] != (len(self.layout), 3):
            raise InputError(
                f"keypoints must be (T, {len(self.layout)}, 3) in layout {self.layout.name!r} "
                f"(x, y, confidence), got {tuple(kp.shape)}")
        if kp.shape[0] == 0:
            raise InputError("the track is empty: no frames to fit")
        conf = torch.nan_to_num(kp[..., 2], nan=0.0)
        ok = torch.isfinite(kp[..., :2]).all(-1) & (conf >= self.options.min_confidence)
        conf = torch.where(ok, conf, torch.zeros_like(conf))
        if not (conf > 0).any():
            raise InputError("no usable keypoints in the track (all missing, NaN or below the confidence threshold)")
        xy = torch.where(ok[..., None], kp[..., :2], torch.zeros_like(kp[..., :2]))
        return xy, conf

    def _initial(self, xy, conf, K, shape):
        """Root orientation facing the camera and translation from the torso's 2D size."""
        T = xy.shape[0]
        dt, dev = xy.dtype, xy.device
        # canonical (y up, facing +z) -> camera (y down, z away): a half turn about x
        root = torch.tensor([math.pi, 0.0, 0.0], dtype=dt, device=dev).expand(T, 3)
        rest = self.model(torch.zeros(1, self.model.num_joints, 3, dtype=dt, device=dev), shape,
                          layout=self.layout.name, vertices=False)
        kp3 = rest.keypoints[0]
        ls, rs, lh, rh = self._torso
        torso3 = ((kp3[ls] + kp3[rs]) / 2 - (kp3[lh] + kp3[rh]) / 2).norm()
        f = (K[0, 0] + K[1, 1]) / 2
        c = K[:2, 2]
        transl = torch.zeros(T, 3, dtype=dt, device=dev)
        w = conf[:, self._torso].min(-1).values > 0
        mid2 = (xy[:, ls] + xy[:, rs] + xy[:, lh] + xy[:, rh]) / 4
        torso2 = ((xy[:, ls] + xy[:, rs]) / 2 - (xy[:, lh] + xy[:, rh]) / 2).norm(dim=-1)
        if w.any():
            depth = f * torso3 / torso2[w].median().clamp(min=1.0)
            center = mid2[w].mean(0)
        else:  # no torso seen anywhere: the mean of what is seen, at 3 m
            depth = torch.tensor(3.0, dtype=dt, device=dev)
            center = (xy * conf[..., None]).sum((0, 1)) / conf.sum()
        per_frame = torch.where(w[:, None], mid2, center.expand(T, 2))
        transl[:, :2] = (per_frame - c) * depth / f
        transl[:, 2] = depth
        torso_mid3 = ((kp3[ls] + kp3[rs] + kp3[lh] + kp3[rh]) / 4)
        root_pos = self.model.rest_joints(shape)[0, 0]
        R = roma.rotvec_to_rotmat(root[0])
        transl = transl - (R @ (torso_mid3 - root_pos)) - root_pos
        return root.clone(), transl

    # -- objective -----------------------------------------------------------------------------

    def _loss(self, root, body, shape_p, transl, xy, conf, scale, K, joints_only=None):
        o = self.options
        pose = torch.cat([root[:, None], body], 1)
        shape = self._shape_from_param(shape_p)
        out = self.model(pose, shape, transl, layout=self.layout.name, vertices=False)
        uv = project(out.keypoints, K)
        r2 = ((uv - xy) / scale[:, None, None]).square().sum(-1)
        w = conf if joints_only is None else conf * joints_only
        data = (w * gmof(r2, o.sigma)).sum() / w.sum().clamp(min=1e-6)
        prior = o.w_pose * body.square().sum(-1).mean(0).sum()
        lim = body.new_zeros(())
        for j, a, s in self._hinges:
            lim = lim + torch.relu(-s * body[:, j - 1, a]).square().mean()
        return data + prior + o.w_limits * lim + o.w_shape * self._shape_prior(shape_p), out

    def fit(self, keypoints: torch.Tensor, K: torch.Tensor) -> FitResult:
        """Fit the track. keypoints (T, K, 3) pixels + confidence; K (3, 3) intrinsics."""
        o = self.options
        xy, conf = self._check(keypoints)
        K = torch.as_tensor(K, dtype=xy.dtype, device=xy.device)
        T = xy.shape[0]
        shape_p = torch.zeros(1, self.model.shape_dim, dtype=xy.dtype, device=xy.device)
        root, transl = self._initial(xy, conf, K, self._shape_from_param(shape_p))
        body = torch.zeros(T, self.model.num_joints - 1, 3, dtype=xy.dtype, device=xy.device)
        size = _person_size(xy, conf)
        torso_mask = torch.zeros(len(self.layout), dtype=xy.dtype, device=xy.device)
        torso_mask[self._torso] = 1.0

        root.requires_grad_(True)
        transl.requires_grad_(True)
        opt = torch.optim.Adam([{"params": [root], "lr": o.lr_rot}, {"params": [transl], "lr": o.lr_transl}])
        for _ in range(o.iters_camera):
            opt.zero_grad()
            loss, _ = self._loss(root, body, shape_p, transl, xy, conf, size, K, torso_mask)
            loss.backward()
            opt.step()

        body.requires_grad_(True)
        shape_p.requires_grad_(True)
        opt = torch.optim.Adam([{"params": [root, body], "lr": o.lr_rot},
                                {"params": [transl], "lr": o.lr_transl},
                                {"params": [shape_p], "lr": o.lr_shape}])
        for _ in range(o.iters_body):
            opt.zero_grad()
            loss, _ = self._loss(root, body, shape_p, transl, xy, conf, size, K)
            loss.backward()
            opt.step()

        with torch.no_grad():
            pose = torch.cat([root[:, None], body], 1)
            shape = self._shape_from_param(shape_p)
            out = self.model(pose, shape, transl, layout=self.layout.name, vertices=False)
            err = (project(out.keypoints, K) - xy).norm(dim=-1)
            err = torch.where(conf > 0, err, torch.full_like(err, float("nan")))
        return FitResult(pose.detach(), shape.detach(), transl.detach(), out.joints, out.keypoints, err)
