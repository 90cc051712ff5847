"""Fitting one person seen by several calibrated cameras: the single-view objective summed over
the views (lens distortion included), in the calibration's world frame.

Stages: (1) triangulate the keypoints robustly (`meshcap.multiview.triangulate`); (2) place
the root per frame by a rigid fit of the rest body's torso and face to the triangulated ones;
(3) fit pose, shape and translation to the triangulated keypoints in 3D (robust, metres);
(4) refine on the 2D keypoints of every view (Geman-McClure in hundredths of the person's size
in that view), with the pose, joint-limit, shape and temporal terms of single-view fitting;
with anny by Levenberg-Marquardt (`MultiViewSolver`), the person's constants on the border
of the banded system; other body models by Adam.

Limb points at the joints (`limb_points="joints"`, the default): a detector's shoulders,
elbows, wrists, hips, knees and ankles are joint centres (that is how they are annotated), so
the fit compares them with the skeleton's joints, not with the body model's skin keypoints
(which slide against both bones as a joint bends: 2.5-7 mm of bone-length spread on the
model's own motion). Face, hand and foot points stay the body model's.

Keypoint offsets: a detector's "hip" or "shoulder" is not exactly where the body model puts
its keypoint, and the difference is systematic for a person. Several calibrated views see it,
so stages (3) and (4) also fit one small offset per keypoint, constant over the track, in the
frame of the bone that carries the keypoint (what marker registration does in OpenSim; a limb
point at a joint rides that joint's parent, with a tighter prior, `limb_offset_sd`). The
skeleton is unchanged by them; they only move the keypoints the views are compared with.

Bone scales: a body model's shape space ties a person's proportions together (anny's six
phenotypes: a tall body has long legs and long arms in fixed ratios), and several views see the
person's own. So stages (3) and (4) also fit one scale per body part (`BodyModel.forward`'s bone_scale: upper arm, forearm,
thigh, shin, spine, head, ...), constant over the track, the left and right sides sharing one
(OpenSim's symmetric scaling), with a log-normal prior toward 1 (the shape's own proportions).
Unlike the offsets they change the skeleton itself, so the Motion keeps them and every export
and render poses the scaled body.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError
from meshcap.fitting.flips import global_rotations
from meshcap.fitting.gauss_newton import BandedSystem, TrackSolver, _bt, _gmof_weight, _second_difference_adjoint
from meshcap.fitting.jacobians import posed_jacobians
from meshcap.fitting.priors import limit_penalty
from meshcap.fitting.smplify import _ROOT_STAGE, FitOptions, SingleViewFitter, _person_size, _second_difference, gmof
from meshcap.keypoints.layouts import get_layout
from meshcap.multiview.calibration import Camera, distort_project
from meshcap.multiview.triangulate import triangulate


@dataclass
class MultiViewResult:
    """poses (T, J, 3), shape (1, S), transl (T, 3), joints (T, J, 3) world; keypoints3d
    (T, K, 3) of the fitted body; triangulated (T, K, 3) (NaN where unseen); reprojection_px
    (C, T, K) per view (NaN where the view saw nothing); uncertainty (T, J) metres;
    bone_scale (1, J) the fitted proportions (ones when not fitted); person: the track's
    constants as fitted (shape parameters, keypoint offsets, log bone scales), which
    `MultiViewFitter.fit` can hold fixed."""

    poses: torch.Tensor
    shape: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    keypoints3d: torch.Tensor
    triangulated: np.ndarray
    reprojection_px: np.ndarray
    uncertainty: torch.Tensor
    bone_scale: torch.Tensor
    person: "MultiViewPerson"


@dataclass
class MultiViewPerson:
    """What a multi-view fit holds constant over a person's track: shape_param (1, S) the
    unconstrained shape parameters, offsets (K, 3) metres per keypoint in its bone's frame,
    log_scale (G,) the log bone scale of each symmetric group."""

    shape_param: torch.Tensor
    offsets: torch.Tensor
    log_scale: torch.Tensor


def bone_axes(model: BodyModel) -> torch.Tensor:
    """(J, 3) unit direction of each joint's bone at the rest pose of the default shape: toward
    the mean of its children; zeros for a joint without children (a hand, a foot, the head)."""
    rest = model.rest_joints(model.default_shape())[0]
    axes = torch.zeros_like(rest)
    for j in range(model.num_joints):
        kids = [c for c, p in enumerate(model.parents) if p == j]
        if kids:
            d = rest[kids].mean(0) - rest[j]
            axes[j] = d / d.norm().clamp(min=1e-9)
    return axes


def symmetric_groups(model: BodyModel) -> torch.Tensor:
    """(J,) group index of each joint, a left joint and its right twin in one group (numbered
    by the lower of the two joint indices, then made consecutive)."""
    perm = model.mirror_permutation()
    lead = [min(j, perm[j]) for j in range(model.num_joints)]
    _, group = torch.unique(torch.tensor(lead), return_inverse=True)
    return group


LIMB_POINTS = tuple(f"{side}_{part}" for side in ("left", "right")
                    for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))


def limb_joints(model: BodyModel, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layout's limb keypoints (`LIMB_POINTS`: shoulders to ankles) and, for each, the
    skeleton joint nearest to it at the rest pose of the default shape (anny: upperarm01,
    lowerarm01, wrist, upperleg01, lowerleg01, foot). Returns (keypoint indices (L,), joint
    indices (L,)); empty where the layout has none of them."""
    names = get_layout(layout).names
    idx = [names.index(n) for n in LIMB_POINTS if n in names]
    if not idx:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    J, dt = model.num_joints, model.dtype
    rest = model(torch.zeros(1, J, 3, dtype=dt, device=model.device), model.default_shape(1), layout=layout,
                 vertices=False)
    near = torch.cdist(rest.keypoints[0, idx], rest.joints[0]).argmin(-1).cpu()
    return torch.tensor(idx), near


def keypoint_bones(model: BodyModel, layout: str, limb_points: str = "skin") -> torch.Tensor:
    """(K,) for each keypoint of `layout`, the joint whose rotation carries it rigidly: the
    deepest joint in the tree that moves it at least half as much as a point fixed to that
    joint's bone would move (found by turning each joint a little at the rest pose; a keypoint
    skinned to two bones, like a knee, goes with the deeper one when it follows it that much).
    With `limb_points` "joints" (`MultiViewFitter`'s), a limb keypoint placed at its joint
    (`limb_joints`) is carried by that joint's parent, on whose bone the joint sits."""
    if limb_points == "joints":
        bones = keypoint_bones(model, layout)
        limb, joint = limb_joints(model, layout)
        bones[limb] = torch.as_tensor(model.parents)[joint]
        return bones
    J, dt, eps = model.num_joints, model.dtype, 1e-3
    shape = model.default_shape(1)
    rest = model(torch.zeros(1, J, 3, dtype=dt, device=model.device), shape, layout=layout, vertices=False)
    p0, x0 = rest.keypoints[0], rest.joints[0]
    depth = [0] * J
    for j in range(1, J):
        depth[j] = depth[model.parents[j]] + 1
    best = torch.zeros(p0.shape[0], dtype=torch.long)
    best_depth = torch.zeros(p0.shape[0], dtype=torch.long)
    for j in range(1, J):
        ratios = []
        for axis in range(3):
            pose = torch.zeros(1, J, 3, dtype=dt, device=model.device)
            pose[0, j, axis] = eps
            moved = model(pose, shape, layout=layout, vertices=False).keypoints[0] - p0
            w = torch.zeros(3, dtype=dt, device=model.device)
            w[axis] = eps
            rigid = torch.linalg.cross(w.expand_as(p0), p0 - x0[j]).norm(dim=-1)
            ratios.append(moved.norm(dim=-1) / rigid.clamp(min=1e-9))
        carried = (torch.stack(ratios).amin(0) > 0.5).cpu()
        take = carried & (depth[j] > best_depth)
        best[take], best_depth[take] = j, depth[j]
    return best


class MultiViewFitter:
    """Fits keypoints (C, T, K, 3) of one person seen by C calibrated cameras.

    `iters_3d`: Adam steps of the 3D stage; the 2D stage takes at most `iters_gn`
    Levenberg-Marquardt steps (`MultiViewSolver`) with a body model that has a linear keypoint
    basis (anny), else (or with `iters_gn` 0) `iters_2d` Adam steps. `offset_sd` (metres):
    the prior's scale for the per-keypoint offsets (module docstring); 0 turns them off. `scale_sd`: the log-normal prior's scale for the bone scales (0.1: a
    part 10% longer or shorter than the shape makes it costs one standard deviation); 0, or a
    body model without bone scales, turns them off. `limb_points`: "joints" compares the
    detector's limb points with the skeleton's joints (module docstring), "skin" with the body
    model's keypoints; `limb_offset_sd` (metres): the offsets' prior scale on limb points at
    joints (0 holds them at zero)."""

    def __init__(self, body_model: BodyModel, cameras: list[Camera], layout: str = "blazepose33",
                 options: FitOptions | None = None, iters_3d: int = 100, iters_2d: int = 200,
                 offset_sd: float = 0.03, scale_sd: float = 0.1, iters_gn: int = 15,
                 limb_points: str = "joints", limb_offset_sd: float = 0.015) -> None:
        self.model = body_model
        self.cameras = cameras
        self._single = SingleViewFitter(body_model, layout, options)  # priors and parameterisation
        self.layout = self._single.layout
        self.options = self._single.options
        self.iters_3d, self.iters_2d, self.iters_gn = iters_3d, iters_2d, iters_gn
        self.offset_sd = offset_sd
        if offset_sd < 0 or scale_sd < 0:
            raise ValueError(f"offset_sd and scale_sd must be >= 0, got {offset_sd} and {scale_sd}")
        self.scale_sd = scale_sd if body_model.supports_bone_scale else 0.0
        self._groups = symmetric_groups(body_model)
        if limb_points not in ("joints", "skin"):
            raise ValueError(f"limb_points must be 'joints' or 'skin', got {limb_points!r}")
        if limb_offset_sd < 0:
            raise ValueError(f"limb_offset_sd must be >= 0, got {limb_offset_sd}")
        # limb keypoints at the skeleton's joints (`limb_points` "joints"): their keypoint index
        # (L,) and joint (L,); empty for the body model's own (skin) keypoints
        self._limb, self._limb_joint = (limb_joints(body_model, self.layout.name) if limb_points == "joints"
                                        else (torch.zeros(0, dtype=torch.long),) * 2)
        # a joint's position rides its parent's bone rigidly, so a limb keypoint's offset is
        # carried there (a marker on the parent segment, as OpenSim registers one)
        self._bones = keypoint_bones(body_model, self.layout.name, limb_points) if offset_sd > 0 else None
        self._offset_sd = None
        self._along = None
        if self._bones is not None:
            self._offset_sd = torch.full((len(self.layout),), offset_sd, dtype=body_model.dtype)
            self._offset_sd[self._limb] = limb_offset_sd
            if self.scale_sd > 0:
                self._along = bone_axes(body_model)[self._bones]  # (K, 3)
        dt = body_model.dtype
        self._R = torch.as_tensor(np.stack([c.R for c in cameras]), dtype=dt)
        self._t = torch.as_tensor(np.stack([c.t for c in cameras]), dtype=dt)
        self._K = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=dt)
        self._dist = torch.as_tensor(np.stack([c.dist for c in cameras]), dtype=dt)

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """(C, ..., 2) pixels in every view of world points X (..., 3)."""
        out = []
        for c in range(len(self.cameras)):
            Xc = X @ self._R[c].T + self._t[c]
            out.append(distort_project(Xc, self._K[c], self._dist[c]))
        return torch.stack(out)

    def _root_init(self, tri: torch.Tensor, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame root rotation (T, 3) and translation (T, 3): the rest body's torso and face
        rigidly aligned to the triangulated ones (frames without enough take their neighbours')."""
        J = self.model.num_joints
        dt = tri.dtype
        rest = self.model(torch.zeros(1, J, 3, dtype=dt), shape, layout=self.layout.name, vertices=False)
        idx = [self.layout.index(n) for n in _ROOT_STAGE if n in self.layout.names]
        src = rest.keypoints[0, idx]
        j0 = self.model.rest_joints(shape)[0, 0]
        dst = tri[:, idx]
        ok = torch.isfinite(dst).all(-1)
        good = ok.sum(-1) >= 4
        if not good.any():
            raise InputError("no frame has its torso seen by two cameras: cannot place the body")
        T = tri.shape[0]
        R = torch.eye(3, dtype=dt).repeat(T, 1, 1)
        tr = torch.zeros(T, 3, dtype=dt)
        for t in torch.nonzero(good).flatten().tolist():
            m = ok[t]
            Rt, tt = roma.rigid_points_registration(src[m][None], dst[t, m][None])
            R[t], tr[t] = Rt[0], tt[0]
        frames = torch.arange(T)
        src_f = frames[good]
        nearest = src_f[(frames[:, None] - src_f[None]).abs().argmin(1)]
        R, tr = R[nearest], tr[nearest]
        # X = R (p - j0) + j0 + transl  ==  R p + tr
        transl = tr + (R @ j0) - j0
        return roma.rotmat_to_rotvec(R), transl

    def _check(self, keypoints) -> np.ndarray:
        kp = np.asarray(keypoints, dtype=np.float64)
        C = len(self.cameras)
        if kp.ndim != 4 or kp.shape[0] != C or kp.shape[2:] != (len(self.layout), 3):
            raise InputError(f"keypoints must be ({C}, T, {len(self.layout)}, 3), got {kp.shape}")
        return kp

    def _pose(self, pose: torch.Tensor, transl: torch.Tensor, person: MultiViewPerson):
        """(body model output with the offsets added to its keypoints, rotmats (T, J, 3, 3))."""
        m = self.model
        rotmats = roma.rotvec_to_rotmat(pose)
        out = m(rotmats=rotmats, shape=self._single._shape_from_param(person.shape_param), transl=transl,
                layout=self.layout.name, vertices=False, bone_scale=self._scale_of(person))
        if len(self._limb):
            kp = out.keypoints.clone()
            kp[:, self._limb] = out.joints[:, self._limb_joint]
            out.keypoints = kp
        if self._bones is not None:
            R = global_rotations(rotmats, m.parents)[:, self._bones]  # (T, K, 3, 3)
            out.keypoints = out.keypoints + (R @ person.offsets[..., None])[..., 0]
        return out, rotmats

    def _constant_prior(self, person: MultiViewPerson) -> torch.Tensor:
        """() the priors on a person's constants: the shape's, the offsets' and the scales'."""
        w_shape, off = self._single._shape_prior(person.shape_param)
        cost = w_shape * off.square().sum()
        if self._bones is not None:  # Gaussian prior, sd offset_sd (limb_offset_sd) per axis
            o = person.offsets / self._offset_sd.clamp(min=1e-9)[:, None]
            if self._along is None:
                cost = cost + o.square().sum()
            else:  # along the bone a third of it: a bone's length is its scale's to fit
                along = (o * self._along).sum(-1)
                across = o - along[:, None] * self._along
                cost = cost + across.square().sum() + (3 * along).square().sum()
        if self.scale_sd > 0:  # log-normal toward the shape's own proportions, each group once
            cost = cost + (person.log_scale / self.scale_sd).square().sum()
        return cost

    def _scale_of(self, person: MultiViewPerson) -> torch.Tensor | None:
        """(1, J) the body model's bone_scale from the person's group scales; None when not fitted."""
        return torch.exp(person.log_scale)[self._groups][None] if self.scale_sd > 0 else None

    def _bone_scale(self, person: MultiViewPerson) -> torch.Tensor:
        """(1, J) the result's bone scales: ones when not fitted."""
        s = self._scale_of(person)
        return torch.ones(1, self.model.num_joints, dtype=self.model.dtype) if s is None else s.detach()

    def _observed(self, kp: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(xy (C, T, K, 2) pixels, conf (C, T, K): 0 below the options' min_confidence)."""
        dt = self.model.dtype
        xy = torch.as_tensor(np.nan_to_num(kp[..., :2]), dtype=dt)
        conf = torch.as_tensor(np.nan_to_num(kp[..., 2]), dtype=dt)
        return xy, torch.where(conf >= self.options.min_confidence, conf.clamp(max=1.0), torch.zeros_like(conf))

    def _priors(self, body: torch.Tensor, out, rotmats: torch.Tensor, fps: float,
                person: MultiViewPerson | None = None, temporal_scale: float = 1.0):
        """(per frame (T,), the track's ()) priors of the fit: pose and joint limits on the body
        joints' rotation vectors body (T, J-1, 3), joint acceleration and rotation velocity of
        the posed `out` (rotmats (T, J, 3, 3)), and, given a person, their constants'."""
        o = self.options
        T = body.shape[0]
        frame = o.w_pose * body.square().sum((-1, -2)) + o.w_limits * limit_penalty(body, self._single._ranges)
        track = torch.zeros((), dtype=frame.dtype)
        if o.temporal and T >= 3:
            track = track + temporal_scale * o.w_accel * (_second_difference(out.joints) * fps * fps).square().sum()
            track = track + temporal_scale * o.w_rot_vel * ((rotmats[1:] - rotmats[:-1]) * fps).square().sum()
        if person is not None:
            track = track + self._constant_prior(person)
        return frame, track

    def _reprojection_cost(self, keypoints3d: torch.Tensor, xy: torch.Tensor, conf: torch.Tensor,
                           size: torch.Tensor) -> torch.Tensor:
        """(T,) the 2D stage's data term per frame: every view's Geman-McClure reprojection
        error of keypoints (T, K, 3), in hundredths of the person's size in that view,
        normalised so that a frame's term is its seen keypoints' mean cost."""
        T = keypoints3d.shape[0]
        r2 = ((self.project(keypoints3d) - xy) / (0.01 * size[..., None, None])).square().sum(-1)
        return (conf * gmof(r2, self.options.sigma)).sum((0, 2)) / (conf.sum() / T).clamp(min=1e-6)

    def observations(self, kp: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The 2D stage's data from keypoints (C, T, K, 3): xy (C, T, K, 2) pixels, conf
        (C, T, K) (0 below min_confidence) and the person's size in each view (C, T), pixels."""
        xy, conf = self._observed(kp)
        return xy, conf, torch.stack([_person_size(xy[c], conf[c]) for c in range(len(self.cameras))])

    def _reprojection(self, keypoints3d: torch.Tensor, xy: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """(C, T, K) pixels from fitted keypoints (T, K, 3) to the observed xy; NaN where conf is 0."""
        err = (self.project(keypoints3d) - xy).norm(dim=-1)
        return torch.where(conf > 0, err, torch.full_like(err, float("nan")))

    def fit_windowed(self, keypoints: np.ndarray, fps: float = 30.0, window: int | None = None,
                     overlap: int | None = None) -> MultiViewResult:
        """`fit`, window by window for a long track, so that memory does not grow with it (as
        single-view fitting does, `meshcap.fitting.windows`): the person's constants (shape,
        keypoint offsets, bone scales) from frames spread over the whole track, then windows of
        `window` frames overlapping by `overlap` (default 20 s and 1 s) fitted with them fixed,
        blended where they overlap. A track that fits in one window is fitted whole."""
        from meshcap.fitting.windows import OVERLAP_S, WINDOW_S, _blend_windows, window_spans

        kp = self._check(keypoints)
        T = kp.shape[1]
        window = window or max(2, round(WINDOW_S * fps))
        overlap = overlap or max(1, round(OVERLAP_S * fps))
        spans = window_spans(T, window, overlap)
        if len(spans) == 1:
            return self.fit(kp, fps)
        stride = math.ceil(T / window)
        person = self.fit(kp[:, ::stride], fps / stride).person
        tri = []

        def fit_span(a, b):
            r = self.fit(kp[:, a:b], fps, person=person)
            tri.append((a, r.triangulated))
            return r

        poses, transl, sigma = _blend_windows(spans, self.model.num_joints, self.model.dtype, fit_span)
        triangulated = np.full(kp.shape[1:3] + (3,), np.nan)
        for a, x in tri:
            triangulated[a:a + len(x)] = x
        joints, kp3, err = [], [], []
        with torch.no_grad():
            for a in range(0, T, window):
                out, _ = self._pose(poses[a:a + window], transl[a:a + window], person)
                joints.append(out.joints)
                kp3.append(out.keypoints)
                err.append(self._reprojection(out.keypoints, *self._observed(kp[:, a:a + window])).numpy())
        return MultiViewResult(poses, self._single._shape_from_param(person.shape_param), transl, torch.cat(joints),
                               torch.cat(kp3), triangulated, np.concatenate(err, axis=1), sigma,
                               self._bone_scale(person), person)

    def fit(self, keypoints: np.ndarray, fps: float = 30.0, person: MultiViewPerson | None = None) -> MultiViewResult:
        """Fit keypoints (C, T, K, 3): pixels + confidence per camera, frames synchronised.
        `person`: the track's constants held fixed (a window of a long track, `fit_windowed`)."""
        kp = self._check(keypoints)
        C = len(self.cameras)
        T, K = kp.shape[1], kp.shape[2]
        o, m, dt = self.options, self.model, self.model.dtype
        X, _, _ = triangulate(kp.reshape(C, T * K, 3), self.cameras)
        tri_np = X.reshape(T, K, 3)
        tri = torch.as_tensor(tri_np, dtype=dt)
        seen3 = torch.isfinite(tri).all(-1)
        tri0 = torch.nan_to_num(tri)
        fixed = person is not None
        if person is None:
            person = MultiViewPerson(torch.zeros(1, m.shape_dim, dtype=dt),
                                     torch.zeros(K, 3, dtype=dt),  # metres, in the carrying bone's frame
                                     torch.zeros(int(self._groups.max()) + 1, dtype=dt))  # per symmetric group
            for p in (person.shape_param, person.offsets, person.log_scale):
                p.requires_grad_(True)
        shape_p, offsets, log_scale = person.shape_param, person.offsets, person.log_scale
        root, transl = self._root_init(tri, self._single._shape_from_param(shape_p.detach()))
        body = torch.zeros(T, m.num_joints - 1, 3, dtype=dt)
        for p in (root, transl, body):
            p.requires_grad_(True)

        xy, conf, size = self.observations(kp)
        w3 = seen3.to(dt)

        def priors(out, rotmats):
            # the person's own priors were paid where they were fitted when held fixed
            frame, track = self._priors(body, out, rotmats, fps, None if fixed else person)
            return frame.sum() + track

        def forward():
            return self._pose(torch.cat([root[:, None], body], 1), transl, person)

        def groups(div):  # Adam's parameter groups, the person's constants unless held fixed
            g = [{"params": [root, body], "lr": o.lr_rot / div}, {"params": [transl], "lr": o.lr_transl / div}]
            if not fixed:
                g += [{"params": [shape_p], "lr": o.lr_shape / div}, {"params": [offsets], "lr": 0.002 / div},
                      {"params": [log_scale], "lr": 0.003 / div}]
            return g

        # 3D stage: centimetre residuals, Geman-McClure at 10 cm
        opt = torch.optim.Adam(groups(1))
        for _ in range(self.iters_3d):
            opt.zero_grad()
            out, rotmats = forward()
            r2 = ((out.keypoints - tri0) * 100).square().sum(-1)
            data = (w3 * gmof(r2, 10.0)).sum() / w3.sum().clamp(min=1) * T
            (data + priors(out, rotmats)).backward()
            opt.step()
        # 2D stage: every view's reprojection, by Levenberg-Marquardt where the body model
        # allows (below), else by Adam
        gauss_newton = self.iters_gn > 0 and hasattr(m, "keypoint_basis")
        opt = torch.optim.Adam(groups(3))
        for _ in range(0 if gauss_newton else self.iters_2d):
            opt.zero_grad()
            out, rotmats = forward()
            (self._reprojection_cost(out.keypoints, xy, conf, size).sum() + priors(out, rotmats)).backward()
            opt.step()

        person = MultiViewPerson(shape_p.detach(), offsets.detach(), log_scale.detach())
        pose = torch.cat([root[:, None], body], 1).detach()
        transl = transl.detach()
        if gauss_newton:
            # the poses and translations with the offsets and bone scales (unless held fixed)
            # on the banded system's border: Adam's 200 steps left 5% of this objective. The
            # shape stays as the 3D stage fitted it: with it free, the phenotypes wandered to
            # their extremes, trading off one another (docs/design.md, Multi-view: the solver)
            solver = MultiViewSolver(self, person, shape=False)
            theta = solver.pack(person)
            pose, transl, theta, _ = solver.solve(pose, transl, theta, (xy, conf, size, float(fps)),
                                                  iters=self.iters_gn, fit_shape=not fixed and theta.shape[-1] > 0)
            person = solver.unpack(theta)
        with torch.no_grad():
            out, _ = self._pose(pose, transl, person)
            err = self._reprojection(out.keypoints, xy, conf)
            sigma = self._uncertainty(out.joints, err, conf)
        return MultiViewResult(pose, self._single._shape_from_param(person.shape_param), transl,
                               out.joints, out.keypoints, tri_np, err.numpy(), sigma, self._bone_scale(person), person)

    def _uncertainty(self, joints: torch.Tensor, err: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """(T, J) per-joint sigma, metres: each view that saw the person in a frame pins a joint
        laterally to (its RMS reprojection error in that frame) x depth / focal; independent
        views combine as inverse variances. A first-order estimate that ignores the angles
        between views (near-parallel views overstate the certainty of depth)."""
        C, T = err.shape[:2]
        inv = torch.zeros(T, joints.shape[1], dtype=joints.dtype)
        for c in range(C):
            seen = (conf[c] > 0).sum(-1) >= 4  # (T,)
            rms = torch.sqrt(torch.nanmean(err[c].square(), dim=-1)).clamp(min=1.0)  # (T,)
            depth = (joints @ self._R[c].T + self._t[c])[..., 2].clamp(min=0.1)  # (T, J)
            f = 0.5 * (self._K[c, 0, 0] + self._K[c, 1, 1])
            s = rms[:, None] * depth / f
            inv = inv + torch.where(seen[:, None] & torch.isfinite(s), 1.0 / s.square(), torch.zeros_like(s))
        return torch.where(inv > 0, inv.rsqrt(), torch.full_like(inv, 1.0))


class MultiViewSolver(TrackSolver):
    """Levenberg-Marquardt on a `MultiViewFitter`'s 2D stage for one person's track: every
    view's robust reprojection, the pose and limit priors, joint acceleration and rotation
    velocity, and the priors on the person's constants, on the same banded system as
    single-view fitting (`meshcap.fitting.gauss_newton`), whose step control
    (`TrackSolver.solve`, per-frame damping) it reuses. The constants (shape unless `shape`
    is False, keypoint offsets and bone scales where the fitter fits them) are `solve`'s
    "shape": one vector (`pack`, `unpack`) on the system's border, solved with the frames
    (`fit_shape`) or held. Needs a linear keypoint basis (anny). `obs` is (xy (C, T, K, 2),
    conf (C, T, K), size (C, T), fps).

        solver = MultiViewSolver(fitter, person)
        pose, transl, theta, history = solver.solve(pose, transl, solver.pack(person), obs)
        person = solver.unpack(theta)
    """

    def __init__(self, fitter: "MultiViewFitter", person: "MultiViewPerson", shape: bool = True) -> None:
        super().__init__(fitter._single)
        self.mv, self.person = fitter, person
        K = len(fitter.layout)
        # the constants as one vector (`pack`): shape parameters (unless `shape` is False: held),
        # offsets and group scales (when the fitter fits them)
        self._sizes = (person.shape_param.shape[-1] if shape else 0, 3 * K if fitter._bones is not None else 0,
                       person.log_scale.shape[0] if fitter.scale_sd > 0 else 0)

    def _basis(self, person: "MultiViewPerson"):
        """(C, W, q): the keypoint basis of the person's scaled body, offsets folded in."""
        fitter = self.mv
        shape = fitter._single._shape_from_param(person.shape_param.detach())
        scale = fitter._scale_of(person)
        scale = None if scale is None else scale.detach()
        C, W, q = self.model.keypoint_bases(shape, fitter.layout.name, bone_scale=scale)
        C = C[0].clone()
        if len(fitter._limb):  # limb keypoints at their joints: the joint's position alone
            C[fitter._limb] = 0
            W = W.clone()
            W[fitter._limb] = 0
            W[fitter._limb, fitter._limb_joint] = 1
        if fitter._bones is not None:  # an offset in its bone's frame is a move of that bone's part
            C[torch.arange(C.shape[0]), fitter._bones] += person.offsets.detach().to(C)
        return C, W, q

    def pack(self, person: "MultiViewPerson") -> torch.Tensor:
        """(1, N) the person's constants as `solve`'s "shape" vector."""
        S, O, G = self._sizes
        parts = [person.shape_param.reshape(-1)[:S]]
        if O:
            parts.append(person.offsets.reshape(-1))
        if G:
            parts.append(person.log_scale.reshape(-1))
        return torch.cat(parts)[None].detach()

    def unpack(self, theta: torch.Tensor) -> "MultiViewPerson":
        S, O, G = self._sizes
        t = theta.reshape(-1)
        return MultiViewPerson(t[None, :S] if S else self.person.shape_param,
                               t[S:S + O].reshape(-1, 3) if O else self.person.offsets,
                               t[S + O:] if G else self.person.log_scale)

    def _constants_jacobian(self, R, G, W, person: "MultiViewPerson", step: float = 3e-3):
        """The keypoints' (T, K, 3, S+G) and joints' (T, J, 3, S+G) derivatives along the
        packed shape parameters and group scales, by central differences of the shape-only
        quantities (as `TrackSolver.shape_jacobian`). The offsets' are their bones' rotations,
        one keypoint each: `linearise` takes them as such, never as a dense matrix."""
        fitter = self.mv
        S, _, Gn = self._sizes
        T, J = R.shape[:2]
        if not S + Gn:
            return R.new_zeros(T, W.shape[0], 3, 0), R.new_zeros(T, J, 3, 0)
        sp, ls = person.shape_param, person.log_scale
        # the bodies one step up along each parameter, then one step down
        shapes, scales = [], []
        for sign in (1.0, -1.0):
            for i in range(S):
                e = torch.zeros_like(sp)
                e[0, i] = sign * step
                shapes.append(sp + e)
                scales.append(ls)
            for i in range(Gn):
                e = torch.zeros_like(ls)
                e[i] = sign * step
                shapes.append(sp)
                scales.append(ls + e)
        scale_b = torch.exp(torch.stack(scales))[:, fitter._groups] if fitter.scale_sd > 0 else None
        return self.basis_jacobian(R, G, W, fitter._single._shape_from_param(torch.cat(shapes)), step, scale_b)

    def _prior_system(self, person: "MultiViewPerson"):
        """(H (N, N), g (N,)) float64 of the constants' priors (`MultiViewFitter._constant_prior`)."""
        fitter = self.mv
        S, O, G = self._sizes
        H = torch.zeros(S + O + G, S + O + G, dtype=torch.float64)
        g = torch.zeros(S + O + G, dtype=torch.float64)
        if S:
            w_s, off = fitter._single._shape_prior(person.shape_param)
            H[:S, :S] += w_s * torch.eye(S, dtype=torch.float64)
            g[:S] += w_s * off[0].double()
        if O:
            K = O // 3
            eye = torch.eye(3, dtype=torch.float64)
            inv_var = fitter._offset_sd.double().clamp(min=1e-9)[:, None, None] ** -2
            if fitter._along is None:
                M = eye.expand(K, 3, 3) * inv_var
            else:  # |across|^2 + 9 along^2 = |o|^2 + 8 (a.o)^2
                a = fitter._along.double()
                M = (eye + 8 * a[:, :, None] * a[:, None, :]) * inv_var
            H[S:S + O, S:S + O] += torch.block_diag(*M)
            g[S:S + O] += (M @ person.offsets.double()[..., None]).reshape(-1)
        if G:
            H[S + O:, S + O:] += torch.eye(G, dtype=torch.float64) / fitter.scale_sd ** 2
            g[S + O:] += person.log_scale.double() / fitter.scale_sd ** 2
        return H, g

    def _view(self, c: int, kp: torch.Tensor):
        """(pixels (T, K, 2), their derivatives (T, K, 2, 3) along the world points kp
        (T, K, 3)) through camera c's lens."""
        mv = self.mv
        R, t, K, d = mv._R[c], mv._t[c], mv._K[c], mv._dist[c]
        one = lambda X: distort_project(X @ R.T + t, K, d)  # noqa: E731
        flat = kp.reshape(-1, 3)
        jac = torch.func.vmap(torch.func.jacrev(one))(flat)
        return one(flat).reshape(*kp.shape[:-1], 2), jac.reshape(*kp.shape[:-1], 2, 3)

    def costs(self, pose, transl, shape_p, obs, init_joints=None, init_w=None, temporal_scale: float = 1.0,
              shape_center=None, extra=None) -> tuple[torch.Tensor, float]:
        """(per-frame cost (T,), the whole objective): `MultiViewFitter.fit`'s 2D stage at
        (pose (T, J, 3), transl (T, 3), the constants packed in shape_p (1, N), `pack`)."""
        mv = self.mv
        xy, conf, size, fps = obs
        person = self.unpack(shape_p)
        out, rotmats = mv._pose(pose, transl, person)
        frame, track = mv._priors(pose[:, 1:], out, rotmats, fps, person, temporal_scale)
        frame = frame + mv._reprojection_cost(out.keypoints, xy, conf, size)
        return frame, float(frame.sum() + track)

    def linearise(self, pose, transl, shape_p, obs, init_joints=None, init_w=None, temporal_scale: float = 1.0,
                  with_shape: bool = False, shape_center=None, extra=None) -> BandedSystem:
        """The Gauss-Newton system at (pose (T, J, 3), transl (T, 3), the constants packed in
        shape_p (1, N)); with `with_shape`, the constants' border too."""
        o = self.fitter.options
        xy, conf, size, fps = obs
        T, J = pose.shape[:2]
        P = self.P
        person = self.unpack(shape_p)
        basis = self._basis(person)
        pj = posed_jacobians(self.model, self.mv.layout.name, pose, transl, None, self.desc, basis=basis)
        if with_shape:
            S, O, Gn = self._sizes
            K = pj.kp.shape[1]
            # dense columns (shape, scales) and the offsets' (one keypoint each) apart
            Jkp_c, Jx_c = self._constants_jacobian(pj.R, pj.G, basis[1], person)
            nd = Jkp_c.shape[-1]
            H_dd = torch.zeros(nd, nd, dtype=torch.float64)
            H_oo = torch.zeros(K, 3, 3, dtype=torch.float64)
            H_od = torch.zeros(K, 3, nd, dtype=torch.float64)
            Hps_d = torch.zeros(T, P, nd, dtype=torch.float64)
            Hps_o = torch.zeros(T, P, K, 3, dtype=torch.float64)
            g_d = torch.zeros(nd, dtype=torch.float64)
            g_o = torch.zeros(K, 3, dtype=torch.float64)
            G_off = pj.G[:, self.mv._bones] if O else None  # (T, K, 3, 3)
        norm = (conf.sum() / T).clamp(min=1e-6)
        D = torch.zeros(T, P, P, dtype=pj.kp.dtype)
        g = torch.zeros(T, P, dtype=pj.kp.dtype)
        for c in range(len(self.mv.cameras)):  # view by view: all at once held 4x the memory
            uv, Jproj = self._view(c, pj.kp)  # (T, K, 2), (T, K, 2, 3)
            unit = 0.01 * size[c, :, None, None]  # (T, 1, 1)
            r = (uv - xy[c]) / unit
            w = conf[c] * _gmof_weight(r.square().sum(-1), o.sigma) / norm  # (T, K)
            Jd2 = ((Jproj @ pj.Jkp) / unit[..., None]).reshape(T, -1, P)  # (T, 2K, P)
            JdwT = _bt(Jd2 * w.repeat_interleave(2, 1)[..., None])
            D += JdwT @ Jd2
            g += (JdwT @ r.reshape(T, -1, 1))[..., 0]
            if with_shape:
                Jd_d = (Jproj @ Jkp_c) / unit[..., None]  # (T, K, 2, nd)
                if nd:
                    H_dd += torch.einsum("tkcp,tk,tkcq->pq", Jd_d, w, Jd_d).double()
                    Hps_d += (JdwT @ Jd_d.reshape(T, 2 * K, nd)).double()
                    g_d += torch.einsum("tkcp,tk,tkc->p", Jd_d, w, r).double()
                if O:
                    Jd_o = (Jproj @ G_off) / unit[..., None]  # (T, K, 2, 3): keypoint k's own offset
                    wJd_o = w[..., None, None] * Jd_o
                    H_oo += torch.einsum("tkci,tkcj->kij", wJd_o, Jd_o).double()
                    H_od += torch.einsum("tkci,tkcq->kiq", wJd_o, Jd_d).double()
                    Hps_o += torch.einsum("tkcp,tkci->tpki", Jd2.reshape(T, K, 2, P), wJd_o).double()
                    g_o += torch.einsum("tkci,tkc->ki", wJd_o, r).double()
        excess = self.add_pose_prior(D, g, pose)
        U1 = torch.zeros(max(T - 1, 0), P, P, dtype=D.dtype)
        U2 = torch.zeros(max(T - 2, 0), P, P, dtype=D.dtype)
        if o.temporal and T >= 3:
            wa = temporal_scale * o.w_accel * fps ** 4
            Jx_flat = pj.Jx.reshape(T, 3 * J, P)
            acc = self.add_temporal(D, U1, U2, g, pj.R, pj.Jr, pj.x, Jx_flat, wa, temporal_scale * o.w_rot_vel * fps ** 2)
            if with_shape and nd:  # the offsets move no joint
                As = (Jx_c[2:] - 2 * Jx_c[1:-1] + Jx_c[:-2]).reshape(T - 2, 3 * J, nd).double()
                H_dd += wa * torch.einsum("tcp,tcq->pq", As, As)
                g_d += wa * torch.einsum("tcp,tc->p", As, acc.double())
                Hps_d += wa * (_bt(Jx_flat.double()) @ _second_difference_adjoint(As, T))
        self.add_limit_ramp(D, g, pose, excess)
        system = BandedSystem(D, U1, U2, g)
        if with_shape:  # assembled in the packed order: shape, offsets, scales
            Hss, gs = self._prior_system(person)
            dense = torch.cat([torch.arange(S), torch.arange(S + O, S + O + Gn)])
            offs = torch.arange(S, S + O)
            Hss[dense[:, None], dense[None]] += H_dd
            gs[dense] += g_d
            Hps = torch.zeros(T, P, S + O + Gn, dtype=torch.float64)
            Hps[..., dense] = Hps_d
            if O:
                Hss[offs[:, None], offs[None]] += torch.block_diag(*H_oo)
                Hss[offs[:, None], dense[None]] += H_od.reshape(O, nd)
                Hss[dense[:, None], offs[None]] += H_od.reshape(O, nd).T
                gs[offs] += g_o.reshape(O)
                Hps[..., offs] = Hps_o.reshape(T, P, O)
            system.Hss, system.Hps, system.gs = Hss, Hps, gs
        return system


def bone_length_std(points: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """(len(pairs),) standard deviation over frames of each segment's length, metres, from
    points (T, N, 3) (frames with NaN skipped)."""
    out = []
    for a, b in pairs:
        d = np.linalg.norm(points[:, a] - points[:, b], axis=-1)
        out.append(np.nanstd(d) if np.isfinite(d).sum() > 1 else math.nan)
    return np.array(out)
