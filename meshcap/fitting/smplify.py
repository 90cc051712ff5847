"""SMPLify-style fitting of a body model to one person's track of 2D keypoints (one camera).

All frames of a track are optimised together, one batch per optimiser step, with one body
shape for the whole track. The objective (SMPLify as SPIN uses it, with temporal terms):

- confidence-weighted Geman-McClure reprojection of the named keypoints; residuals are
  measured as a fraction of the person's 2D size, so the weights do not depend on the image
  resolution. Missing keypoints (confidence 0, NaN, or under `min_confidence`) count for
  nothing, never as a zero;
- joint limits (each joint's range of motion, `meshcap.fitting.priors`), an L2 pose prior,
  a shape prior;
- with an initialisation (the regressor's, say) that carries a per-joint sigma: its joints
  pull on the fit's joints weighted by 1/sigma^2;
- temporal: acceleration of the 3D joints and velocity of the local rotations, so frames
  whose keypoints are missing or unsure are filled from their confident neighbours.

Staged as SMPLify does: root orientation and translation against the torso first (from four
starting headings per frame, the best kept), then the whole body.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError
from meshcap.fitting.camera import project
from meshcap.fitting.flips import LIMBS, limb_flips
from meshcap.fitting.gauss_newton import TrackSolver
from meshcap.fitting.metrics import pa_joint_errors
from meshcap.fitting.priors import bone_length_sum, joint_ranges, limit_penalty
from meshcap.fitting.smoothing import smooth_linear, smooth_rotvecs
from meshcap.fitting.uncertainty import joint_sigma, load_sigma_calibration
from meshcap.keypoints.layouts import get_layout

_TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
# The first stage fits the root to these: the torso, plus the face, whose nose and ears tell
# which way a body seen from the side is turned (the torso alone is mirror-ambiguous).
_ROOT_STAGE = _TORSO + ("nose", "left_ear", "right_ear", "left_eye", "right_eye")


def gmof(sq_residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals: sigma^2 r^2 / (sigma^2 + r^2)."""
    s2 = sigma * sigma
    return s2 * sq_residual / (s2 + sq_residual)


@dataclass
class FitOptions:
    """Weights and schedule.

    Reprojection residuals are measured in hundredths of the person's 2D size (about the
    noise of a good detector), so a frame's data term is about 1 at detector noise whatever
    the resolution; `sigma` is the Geman-McClure scale in those units. Priors are per frame:
    `w_pose` per rad^2 of body-joint rotation, `w_limits` per rad^2 beyond a joint's range of
    motion, `w_init` per joint at one sigma from the initialisation, `w_shape` per unit^2 of the
    shape parameters (anny: phenotype logits) away from the average body, or `w_shape_init` away
    from the initialisation's shape (the regressor's) when it has one. Temporal terms are per
    frame too, in m/s^2 (joint acceleration) and rad/s (rotation velocity), so they hold at
    any frame rate; with `accel_per_size` the acceleration is divided by the body's size over
    the average body's (one camera cannot tell a body's size from its distance, and a term in
    metres would pull the fit toward a smaller, nearer body the more its keypoints jitter).
    `iters_heading` Adam steps fit the body under both of each frame's torso headings
    (`iters_heading` 0 turns the stage off; `iters_gn_heading` > 0: that many Gauss-Newton
    steps instead, with that solver and an initialisation with its own sigma: 1.2x faster
    on real motion, slower on a synthetic track; off by default, see docs/design.md, The
    solver), from an initialisation with its own sigma on every `heading_stride`-th frame
    (the frames between take their nearer heading to the neighbouring sample's choice);
    `w_heading_change` is the cost of a root turn between two frames, per rad^2, in the path
    chosen through them. From such an initialisation, after `heading_decided_at` of Adam's
    steps the frames whose two headings differ in cost by more than `heading_decided_margin`
    are decided and stop stepping (0: every frame takes every step). The body stage's rates
    fall to `lr_final` of themselves over its last half (1.0: constant). With temporal terms,
    the result is smoothed over time by a Gaussian of `smooth_s` seconds
    (`meshcap.fitting.smoothing`; 0 turns it off), then
    settled: `iters_settle` more steps (`refine`) with the temporal terms
    `settle_accel` times stronger, which give back what the smoothing took from fast limbs
    without following the detector's jitter again (0: the smoothed result as it is).
    `solver` runs the root, heading and body stages and the settling: "gauss-newton" (the
    default: Levenberg-Marquardt on the track's banded system, `meshcap.fitting.gauss_newton`:
    at most `iters_gn_root` steps per frame, `iters_gn`, `iters_gn_settle`), which needs a
    linear keypoint basis (anny; SMPL-family models stay on Adam), or "adam" (`iters_camera`,
    `iters_body`, `iters_settle` steps). Gauss-Newton ends far lower on the objective with
    smoother motion, about twice as fast on short tracks but slower on long windows; see
    docs/design.md, The solver."""

    sigma: float = 10.0
    min_confidence: float = 0.1
    w_pose: float = 0.1
    w_limits: float = 100.0
    w_shape: float = 0.01
    w_shape_init: float = 0.3
    w_init: float = 1.0
    temporal: bool = True
    w_accel: float = 1e-5
    w_rot_vel: float = 1e-4
    accel_per_size: bool = True
    iters_camera: int = 30
    iters_body: int = 150
    iters_heading: int = 30
    w_heading_change: float = 10.0
    # the heading stage's frames from an initialisation with its own sigma (the lifter): every
    # second frame alone chose as well as all of them (bench/real_motion.py --seeds 0,1,2,
    # body-only 3 px: PA-MPJPE 61.9 -> 62.0 mm, no frame facing over 90 degrees off) in less
    # time (bench/fitting_speed.py's default path 2.10 -> 1.95 s)
    heading_stride: int = 2
    # from an initialisation with its own sigma, after this many of the heading stage's Adam
    # steps the frames whose two headings differ by more than `heading_decided_margin` in cost
    # are decided and stop stepping (0: never): bench/fitting_speed.py's default path 4.17 ->
    # 3.59 s, held-out body-only 3 px PA-MPJPE 61.8 -> 61.7 mm (docs/design.md)
    heading_decided_at: int = 10
    heading_decided_margin: float = 5.0
    mirror_cost: float = 0.5
    lr_rot: float = 0.03
    lr_transl: float = 0.03
    lr_shape: float = 0.05
    lr_final: float = 0.05
    smooth_s: float = 0.05
    iters_settle: int = 40
    settle_accel: float = 10.0
    solver: str = "gauss-newton"
    iters_gn: int = 12
    iters_gn_settle: int = 6
    iters_gn_root: int = 10
    iters_gn_heading: int = 0


@dataclass
class FitInit:
    """A starting point for the fit, e.g. from the regressor.

    poses (T, J, 3) axis-angle; shape (1, S) or None; transl (T, 3) camera frame or None (then
    estimated from the torso); sigma (T, J) per-joint 1-sigma of the initialisation's joints,
    metres, or None (then the initialisation only starts the fit and does not pull on it);
    joints (T, J, 3) the joints the fit is pulled toward, relative to the root, camera-frame
    axes, metres (e.g. the temporal lifter's), or None: those of `poses` with `shape`.
    """

    poses: torch.Tensor
    shape: torch.Tensor | None = None
    transl: torch.Tensor | None = None
    sigma: torch.Tensor | None = None
    joints: torch.Tensor | None = None


@dataclass
class FitResult:
    """poses (T, J, 3) axis-angle, shape (1, S), transl (T, 3), joints (T, J, 3) camera frame,
    keypoints3d (T, K, 3), reprojection_px (T, K) per-keypoint error (NaN where missing),
    uncertainty (T, J) per-joint 1-sigma in metres (see `meshcap.fitting.uncertainty`),
    loss_history: the body stage's objective at each step; uncertainty_parts: what the
    uncertainty was made of, each (T, J) metres: "laplace" (`joint_sigma`) and, for a fit
    pulled toward an initialisation with joints and sigma, "init" (its sigma) and "apart"
    (the fit's distance from its joints); None for a result blended from windows."""

    poses: torch.Tensor
    shape: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    keypoints3d: torch.Tensor
    reprojection_px: torch.Tensor
    uncertainty: torch.Tensor
    loss_history: list[float] | None = None
    uncertainty_parts: dict[str, torch.Tensor] | None = None


def _person_size(xy: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """(T,) the larger side of each frame's keypoint box, pixels: it normalises the residuals.
    Frames with no usable box (nothing seen, or under a pixel) take the median of the others."""
    seen = conf[..., None] > 0
    lo = torch.where(seen, xy, torch.full_like(xy, float("inf"))).amin(1)
    hi = torch.where(seen, xy, torch.full_like(xy, float("-inf"))).amax(1)
    size = (hi - lo).max(-1).values
    ok = torch.isfinite(size) & (size > 1)
    fallback = size[ok].median() if ok.any() else torch.ones_like(size)
    return torch.where(ok, size, fallback)


def _anneal(final: float, step: int, steps: int) -> float:
    """The factor on a learning rate `step` steps into `steps`: cosine from 1 down to `final`."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))


def _two_state_viterbi(cost, turn):
    """The cheapest path through states per frame: cost (T, S) per frame and state, turn
    (T-1, S, S) the cost of going from state b at frame t to state a at t + 1 (turn[t, a, b]).
    Returns (path (T,) int, margin (T,): the cost of the best path through each frame's
    other state minus the chosen path's; for S = 2). In numpy: the passes are sequential over
    frames, and numpy's small-array steps cost a tenth of torch's."""
    T, S = cost.shape
    fwd = np.empty((T, S))
    back = np.zeros((T, S), dtype=np.int64)
    fwd[0] = cost[0]
    for t in range(1, T):
        total = fwd[t - 1][None, :] + turn[t - 1]
        back[t] = total.argmin(1)
        fwd[t] = total.min(1) + cost[t]
    bwd = np.zeros((T, S))
    for t in range(T - 2, -1, -1):
        bwd[t] = (bwd[t + 1][:, None] + cost[t + 1][:, None] + turn[t]).min(0)
    path = np.empty(T, dtype=np.int64)
    path[-1] = fwd[-1].argmin()
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    through = fwd + bwd  # the best path's cost through each state at each frame
    idx = np.arange(T)
    return path, through[idx, 1 - path] - through[idx, path]


def _second_difference(x: torch.Tensor) -> torch.Tensor:
    return x[2:] - 2 * x[1:-1] + x[:-2]


class SingleViewFitter:
    """Fits one person's track of 2D keypoints (T, K, 3) seen by one camera K (3, 3).

    `fit` returns a `FitResult`; the camera frame is OpenCV's (x right, y down, z forward).
    """

    def __init__(self, body_model: BodyModel, layout: str = "blazepose33",
                 options: FitOptions | None = None) -> None:
        self.model = body_model
        self.layout = get_layout(layout)
        self.options = options or FitOptions()
        self._ranges = joint_ranges(body_model)
        self._size_ref: torch.Tensor | None = None
        names = body_model.joint_names
        self._limbs = [tuple(names.index(n) for n in limb) for limb in LIMBS.get(body_model.name, ())
                       if all(n in names for n in limb)]
        self._torso = [self.layout.index(n) for n in _TORSO]

    # -- parameters ----------------------------------------------------------------------------

    def _shape_from_param(self, p: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(p) if self.model.name == "anny" else p

    def _relative_size(self, shape: torch.Tensor) -> torch.Tensor:
        """(B,) or () for shape (B, S): the body's size (its rest bones' summed length) over
        the average body's, by which the acceleration term divides the joints' accelerations
        (`accel_per_size`; else 1). One camera sees a body's size and its distance only as
        their ratio: a term in metres would pull every monocular fit toward a smaller, nearer
        body, the more so the more its keypoints jitter (a held-out get-up clip came out 11%
        smaller at 3 px noise than at 0 px), and two views of one person at different sizes
        and depths (docs/design.md)."""
        if not self.options.accel_per_size:
            return torch.ones(shape.shape[:-1] if shape.shape[0] > 1 else (), dtype=shape.dtype, device=shape.device)
        size = bone_length_sum(self.model, shape)
        if self._size_ref is None:
            avg = self._shape_from_param(torch.zeros_like(shape[:1]))
            self._size_ref = bone_length_sum(self.model, avg).detach()[0]
        return (size / self._size_ref)[0] if size.shape[0] == 1 else size / self._size_ref

    def _param_from_shape(self, s: torch.Tensor) -> torch.Tensor:
        return torch.logit(s.clamp(1e-4, 1 - 1e-4)) if self.model.name == "anny" else s

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
        conf = torch.where(ok, conf.clamp(max=1.0), torch.zeros_like(conf))
        if not (conf > 0).any():
            raise InputError("no usable keypoints in the track (all missing, NaN or below the confidence threshold)")
        xy = torch.where(ok[..., None], kp[..., :2], torch.zeros_like(kp[..., :2]))
        return xy, conf

    def _check_init(self, init: FitInit, T: int) -> FitInit:
        J, S = self.model.num_joints, self.model.shape_dim
        dt, dev = self.model.dtype, self.model.device

        def arr(x, shape, name):
            if x is None:
                return None
            x = torch.as_tensor(x, dtype=dt, device=dev)
            if tuple(x.shape) != shape:
                raise InputError(f"init.{name} must have shape {shape}, got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise InputError(f"init.{name} contains NaN or infinite values")
            return x

        sigma = arr(init.sigma, (T, J), "sigma")
        if sigma is not None and not (sigma > 0).all():
            raise InputError("init.sigma must be positive (metres)")
        return FitInit(arr(init.poses, (T, J, 3), "poses"), arr(init.shape, (1, S), "shape"),
                       arr(init.transl, (T, 3), "transl"), sigma, arr(init.joints, (T, J, 3), "joints"))

    def _torso_depth(self, xy, conf, K, shape):
        """Root translation per frame from the 2D torso: depth from its length, x/y from its centre."""
        T = xy.shape[0]
        dt, dev = xy.dtype, xy.device
        rest = self.model(torch.zeros(1, self.model.num_joints, 3, dtype=dt, device=dev), shape,
                          layout=self.layout.name, vertices=False)
        kp3 = rest.keypoints[0]
        ls, rs, lh, rh = self._torso
        torso3 = ((kp3[ls] + kp3[rs]) / 2 - (kp3[lh] + kp3[rh]) / 2).norm()
        f = (K[0, 0] + K[1, 1]) / 2
        c = K[:2, 2]
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
        transl = torch.zeros(T, 3, dtype=dt, device=dev)
        transl[:, :2] = (per_frame - c) * depth / f
        transl[:, 2] = depth
        # the torso's centre, not the root joint, sits on that ray
        torso_mid3 = (kp3[ls] + kp3[rs] + kp3[lh] + kp3[rh]) / 4
        root_pos = self.model.rest_joints(shape)[0, 0]
        return transl, torso_mid3 - root_pos, root_pos

    # -- objective -----------------------------------------------------------------------------

    def _shape_prior(self, shape_p: torch.Tensor, shape_center: torch.Tensor | None = None):
        """(weight, offset (1, S)): the shape prior costs weight * |offset|^2, the shape
        parameters' offset from `shape_center` (an initialisation's shape, at `w_shape_init`)
        or from the average body (None, at `w_shape`). The one definition for `_loss`, the
        Gauss-Newton system and the multi-view fit."""
        o = self.options
        if shape_center is None:
            return o.w_shape, shape_p
        return o.w_shape_init, shape_p - shape_center

    def _loss(self, root, body, shape_p, transl, obs, init_joints=None, init_w=None, mask=None,
              temporal_scale: float = 1.0, shape_center=None):
        """Returns (per-frame loss (N,), whole-track loss (), body-model output) for N frames;
        `temporal_scale` multiplies the temporal terms' weights; `shape_center` (1, S) is where
        the shape prior pulls (an initialisation's shape; None: the average body)."""
        o = self.options
        xy, conf, scale, K, fps = obs
        N = body.shape[0]
        pose = torch.cat([root[:, None], body], 1)
        rotmats = roma.rotvec_to_rotmat(pose)
        shape = self._shape_from_param(shape_p)
        out = self.model(rotmats=rotmats, shape=shape, transl=transl,
                         layout=self.layout.name, vertices=False)
        uv = project(out.keypoints, K)
        r2 = ((uv - xy) / (0.01 * scale[:, None, None])).square().sum(-1)
        w = conf if mask is None else conf * mask
        # normalised so that a frame's data term is its keypoints' mean cost
        frame = (w * gmof(r2, o.sigma)).sum(-1) / (w.sum() / N).clamp(min=1e-6)
        frame = frame + o.w_pose * body.square().sum((-1, -2))
        frame = frame + o.w_limits * limit_penalty(body, self._ranges)
        w_shape, off = self._shape_prior(shape_p, shape_center)
        track = w_shape * off.square().sum()
        if mask is not None:
            return frame, track, out
        if init_joints is not None:
            rel = out.joints - out.joints[:, :1]
            frame = frame + o.w_init * (init_w * (rel - init_joints).square().sum(-1)).mean(-1)
        if o.temporal and N >= 3:
            acc = _second_difference(out.joints) * (fps * fps / self._relative_size(shape))
            track = track + temporal_scale * o.w_accel * acc.square().sum((-1, -2)).sum()
            vel = (rotmats[1:] - rotmats[:-1]) * fps
            track = track + temporal_scale * o.w_rot_vel * vel.square().sum((-1, -2, -3)).sum()
        return frame, track, out

    def _fit_camera(self, root, transl, body, shape_p, obs, torso_mask):
        o = self.options
        if self._gauss_newton():
            return TrackSolver(self).solve_root(root.detach(), transl.detach(), body.detach(), shape_p.detach(),
                                                obs, torso_mask, o.iters_gn_root)
        root.requires_grad_(True)
        transl.requires_grad_(True)
        opt = torch.optim.Adam([{"params": [root], "lr": o.lr_rot}, {"params": [transl], "lr": o.lr_transl}])
        for _ in range(o.iters_camera):
            opt.zero_grad()
            frame, track, _ = self._loss(root, body, shape_p, transl, obs, mask=torso_mask)
            (frame.sum() + track).backward()
            opt.step()
        return root.detach(), transl.detach()

    @torch.no_grad()
    def _flip_limbs(self, root, body, shape_p, transl, obs) -> int:
        """Replace, frame by frame and limb by limb, the current solution with the best of its
        kinematic flips (`meshcap.fitting.flips`) where that scores better. Returns how many
        limbs were flipped."""
        if not self._limbs:
            return 0
        N = body.shape[0]
        everything = torch.ones(len(self.layout), dtype=body.dtype, device=body.device)
        pose = torch.cat([root[:, None], body], 1)
        rotmats = roma.rotvec_to_rotmat(pose)
        base, _, out = self._loss(root, body, shape_p, transl, obs, mask=everything)
        new = pose.clone()
        flipped = 0
        for limb in self._limbs:
            variants = limb_flips(rotmats, out.joints, self.model.parents, limb)  # (3, N, J, 3, 3)
            vp = roma.rotmat_to_rotvec(variants)
            V = vp.shape[0]
            obs_v = (obs[0].repeat(V, 1, 1), obs[1].repeat(V, 1), obs[2].repeat(V), obs[3], obs[4])
            score, _, _ = self._loss(vp[:, :, 0].reshape(V * N, 3), vp[:, :, 1:].reshape(V * N, -1, 3),
                                     shape_p, transl.repeat(V, 1), obs_v, mask=everything)
            score = score.reshape(V, N)
            best = score.argmin(0)
            better = score[best, torch.arange(N)] < base - 1e-6
            idx = torch.arange(N)[better]
            for j in limb[:2]:
                new[idx, j] = vp[best[better], idx, j]
            flipped += int(better.sum())
        root.copy_(new[:, 0])
        body.copy_(new[:, 1:])
        return flipped

    @torch.no_grad()
    def _mirror_heading(self, root: torch.Tensor, transl: torch.Tensor, shape_p: torch.Tensor) -> torch.Tensor:
        """(N, 3) the root turned about the body's own up axis to the torso's depth mirror: a
        torso turned by an angle away from facing the camera projects (nearly) as one turned by
        the same angle the other way, and a side view's two mirrors face opposite ways."""
        R = roma.rotvec_to_rotmat(root)
        up = R[:, :, 1]
        fwd = R[:, :, 2]
        root_pos = self.model.rest_joints(self._shape_from_param(shape_p))[0, 0]
        to_cam = -(R @ root_pos + root_pos + transl)  # from the root joint toward the camera
        # both directions within the plane the body turns in (perpendicular to its up axis)
        c = to_cam - (to_cam * up).sum(-1, keepdim=True) * up
        c = c / c.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        mirrored = 2 * (fwd * c).sum(-1, keepdim=True) * c - fwd
        angle = torch.atan2((torch.linalg.cross(fwd, mirrored, dim=-1) * up).sum(-1), (fwd * mirrored).sum(-1))
        return roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(up * angle[:, None]) @ R)

    def _choose_headings(self, root, body, transl, shape_p, obs, init_joints=None, init_w=None):
        """Carry each frame's two torso headings (the current one and its depth mirror) through
        a short body stage, frame by frame, then choose one path through them over the whole
        track (Viterbi): each frame's cost after the body stage plus `w_heading_change` per
        rad^2 of root turn between frames, so a wrong heading cannot persist where the limbs
        (knees bend one way, joint limits) say otherwise. Returns (root, body, transl, margin,
        mirrored): margin (T,) the cost of the other heading's best path through each frame
        minus the chosen one's (small where the heading is in doubt); mirrored (T,) where the
        mirror was chosen. An initialisation with its own sigma votes through its pull on the
        joints (`init_joints`, `init_w`)."""
        o = self.options
        T_all = root.shape[0]
        root_all, body_all, transl_all = root, body, transl
        mirror_all = self._mirror_heading(root, transl, shape_p)
        # from an initialisation with its own sigma, every `heading_stride`-th frame (and the
        # last) carries the short stage, and the frames between take the heading nearest their
        # sampled neighbour's choice; from the rest pose every frame does (there the body stage
        # then spent longer: 1.7-1.9 -> 2.1-2.2 s on bench/fitting_speed.py's track)
        k = max(1, int(o.heading_stride)) if o.temporal and init_w is not None else 1
        S = torch.arange(0, T_all, k)
        if int(S[-1]) != T_all - 1:
            S = torch.cat([S, torch.tensor([T_all - 1])])
        root, body, transl = root[S], body[S], transl[S]
        obs = (obs[0][S], obs[1][S], obs[2][S], obs[3], obs[4])
        init_joints = None if init_joints is None else init_joints[S]
        init_w = None if init_w is None else init_w[S]
        T = len(S)
        everything = torch.ones(len(self.layout), dtype=body.dtype, device=body.device)
        start = torch.cat([root, mirror_all[S]])
        obs2 = (obs[0].repeat(2, 1, 1), obs[1].repeat(2, 1), obs[2].repeat(2), obs[3], obs[4])
        joints2 = None if init_joints is None else init_joints.repeat(2, 1, 1)
        w2 = None if init_w is None else init_w.repeat(2, 1)

        def cost_per_frame(r2, b2, t2, rows=None):
            """(n,) the short stage's cost of each of the 2T frame-hypotheses, or of `rows` of them"""
            ob, jt, wt = obs2, joints2, w2
            if rows is not None:
                ob = (ob[0][rows], ob[1][rows], ob[2][rows], ob[3], ob[4])
                jt = None if jt is None else jt[rows]
                wt = None if wt is None else wt[rows]
            frame, _, out = self._loss(r2, b2, shape_p.detach(), t2, ob, mask=everything)
            if jt is not None:
                rel = out.joints - out.joints[:, :1]
                frame = frame + o.w_init * (wt * (rel - jt).square().sum(-1)).mean(-1)
            return frame

        if self._gauss_newton() and init_w is not None and o.iters_gn_heading > 0:
            # a few Gauss-Newton steps, each frame on its own; from the rest pose (no
            # initialisation pulling) Adam's short stage ranks the headings better: converged
            # steps rank them by which fell into a worse local minimum (docs/design.md, The solver)
            pose2, _, cost = TrackSolver(self).solve_frames(
                torch.cat([start[:, None], body.repeat(2, 1, 1)], 1).detach(), transl.repeat(2, 1).detach(),
                shape_p.detach(), obs2, joints2, w2, o.iters_gn_heading)
            r2 = pose2[:, 0]
        else:
            r2 = start.clone().requires_grad_(True)
            b2 = body.repeat(2, 1, 1).clone().requires_grad_(True)
            t2 = transl.repeat(2, 1).clone().requires_grad_(True)
            opt = torch.optim.Adam([{"params": [r2, b2], "lr": o.lr_rot}, {"params": [t2], "lr": o.lr_transl}])
            rows = None  # the frame-hypotheses still stepping (None: all)
            # From an initialisation with its own sigma most frames' headings are plain after a
            # third of the steps: on the held-out mocap (body-only, 3 px) 73% differ by over 5 at
            # step 10 and 99.1% of those keep their order at 30. From the rest pose they do not
            # (held-out PA-MPJPE 119.2 -> 120.5 mm, facing > 90 degrees 12.1 -> 13.2%, no faster).
            decide = init_w is not None and o.heading_decided_margin > 0
            for it in range(o.iters_heading):
                if decide and it == o.heading_decided_at and it > 0:
                    r_all, cost, rows, (r2, b2, t2), opt = self._drop_decided_headings(
                        r2, b2, t2, opt, cost_per_frame, o.heading_decided_margin)
                    if not len(rows):
                        break
                opt.zero_grad()
                cost_per_frame(r2, b2, t2, rows).sum().backward()
                opt.step()
            with torch.no_grad():
                if rows is None:
                    cost = cost_per_frame(r2, b2, t2)
                elif len(rows):
                    cost[rows] = cost_per_frame(r2, b2, t2, rows)
                    r_all[rows] = r2.detach()
                r2 = r2 if rows is None else r_all
        # frames that are not a sequence (temporal terms off) choose each for itself; a turn
        # spread evenly over the frames between two samples costs 1 / (their gap) of its square
        w_turn = o.w_heading_change if o.temporal else 0.0
        gaps = (S[1:] - S[:-1]).to(torch.float64)
        with torch.no_grad():
            cost = cost.reshape(2, T)
            # the root stage's own choice stands unless the mirror is clearly better: after a
            # short stage, exact input leaves both near zero and the difference is noise
            cost[1] += o.mirror_cost
            R = roma.rotvec_to_rotmat(r2.reshape(2, T, 3))
            # turn[t, a, b]: from state b at frame t to state a at frame t + 1, all at once
            turn = (w_turn * roma.rotmat_geodesic_distance(R[:, None, 1:], R[None, :, :-1]).square()).permute(2, 0, 1)
            turn = turn.double() / gaps[:, None, None]
            path, margin = _two_state_viterbi(cost.T.double().numpy(), turn.numpy())
            path = torch.as_tensor(path)
            margin = torch.as_tensor(margin, dtype=cost.dtype)
            chosen = start[path * T + torch.arange(T)]
            if k > 1:
                # each frame: its own heading or its mirror, whichever is nearer the nearest
                # sample's choice
                frames = torch.arange(T_all)
                near = torch.round(frames.double() / k).long().clamp(max=T - 1)
                near = torch.where((S[near] - frames).abs() <= (S[-1] - frames).abs(), near, torch.full_like(near, T - 1))
                ref = roma.rotvec_to_rotmat(chosen[near])
                d_own = roma.rotmat_geodesic_distance(roma.rotvec_to_rotmat(root_all), ref)
                d_mir = roma.rotmat_geodesic_distance(roma.rotvec_to_rotmat(mirror_all), ref)
                mir = d_mir < d_own
                margin = margin[near]
            else:
                mir = path == 1
        # the body stage starts from the chosen headings, not from the short stage's limbs:
        # started from the rest pose, descent favours the natural one of a limb's mirror images
        out_root = torch.where(mir[:, None], mirror_all, root_all)
        return out_root.clone(), body_all.clone(), transl_all.clone(), margin, mir

    def _drop_decided_headings(self, r2, b2, t2, opt, cost_per_frame, margin: float):
        """Part-way through the heading stage's Adam steps: the frames whose two headings'
        costs (the mirror's with `mirror_cost` added) already differ by more than `margin` are
        decided, and only the others go on stepping (the stage's frames are independent, and
        each goes on exactly as it would have: Adam's moments are carried over). Returns
        (the roots so far (2T, 3), the costs so far (2T,), `rows`: the frame-hypotheses still
        stepping, both headings of each undecided frame, their parameters (root, body,
        translation), their optimiser)."""
        o = self.options
        with torch.no_grad():
            cost = cost_per_frame(r2, b2, t2)
            T = cost.shape[0] // 2
            gap = cost[T:] + o.mirror_cost - cost[:T]
            open_ = torch.nonzero(gap.abs() <= margin).reshape(-1)
            rows = torch.cat([open_, open_ + T])
        params = []
        for x in (r2, b2, t2):
            params.append(x.detach()[rows].clone().requires_grad_(True))
        new = torch.optim.Adam([{"params": params[:2], "lr": o.lr_rot}, {"params": params[2:], "lr": o.lr_transl}])
        for old_p, new_p in zip((r2, b2, t2), params):
            state = opt.state.get(old_p)
            if state:  # Adam's moments and step count, for the rows that go on
                new.state[new_p] = {k: (v[rows].clone() if v.ndim > 0 else v.clone()) if torch.is_tensor(v) else v
                                    for k, v in state.items()}
        return r2.detach().clone(), cost.clone(), rows, tuple(params), new

    def _smooth_and_sigma(self, pose, shape, transl, xy, conf, K, init, fps):
        """The finished body stage smoothed over time (when temporal), and its sigma. Returns
        (pose, transl, sigma reported, fit_sigma the Laplace part alone, smoothed, the sigma's
        parts: a dict of (T, J) tensors, see `FitResult.uncertainty_parts`)."""
        o = self.options
        smoothed = o.temporal and o.smooth_s > 0
        if smoothed:
            pose = smooth_rotvecs(pose, o.smooth_s * fps)
            transl = smooth_linear(transl, o.smooth_s * fps)
        sigma = fit_sigma = joint_sigma(self.model, self.layout.name, pose, shape, transl, xy, conf, K,
                                        init_sigma=None if init is None else init.sigma)
        parts = {"laplace": fit_sigma}
        if init is not None and init.joints is not None and init.sigma is not None:
            # Pulled toward lifted joints, the fit keeps their errors where the image does not
            # pin it (depth, hidden limbs), which the Laplace sigma, treating them as data,
            # misses. Where the fit and the lifted joints still disagree (per frame, after a
            # similarity alignment), one of them is wrong: that distance, the lifter's own
            # sigma and both over the whole frame make the reported sigma
            # (`SigmaCalibration`, fitted on real motion; see docs/design.md, Uncertainty).
            with torch.no_grad():
                j = self.model(pose, shape, vertices=False).joints
            parts["init"] = init.sigma.to(fit_sigma)
            parts["apart"] = pa_joint_errors(j - j[:, :1], init.joints.to(j))
            sigma = load_sigma_calibration()(parts["laplace"], parts["init"], parts["apart"])
        return pose, transl, sigma, fit_sigma, smoothed, parts

    def _gauss_newton(self) -> bool:
        o = self.options
        if o.solver not in ("gauss-newton", "adam"):
            raise InputError(f"FitOptions.solver must be 'gauss-newton' or 'adam', got {o.solver!r}")
        return o.solver == "gauss-newton" and hasattr(self.model, "keypoint_basis")

    def _fit_gauss_newton(self, keypoints, K, init, fps, obs, root, body, transl, shape_p, fixed_shape,
                          init_joints, init_w, shape_center=None) -> FitResult:
        """The body stage and the settling by Levenberg-Marquardt (`meshcap.fitting.gauss_newton`),
        from the root and heading stages' result; the same objective and the same sequence of
        steps as the Adam path (flips, smoothing, sigma, settling)."""
        o = self.options
        xy, conf = obs[0], obs[1]
        solver = TrackSolver(self)
        # the flips come after the first steps have placed the limbs (not when the
        # initialisation's own sigma already says which way they point)
        flip_at = set() if init_w is not None else {2, 4}

        def flips(it, pose, transl, shape_p):
            if it not in flip_at:
                return None
            root, body = pose[:, 0].clone(), pose[:, 1:].clone()
            self._flip_limbs(root, body, shape_p, transl, obs)
            return torch.cat([root[:, None], body], 1), transl

        pose, transl, shape_p, history = solver.solve(
            torch.cat([root[:, None], body], 1).detach(), transl.detach(), shape_p.detach(), obs,
            init_joints, init_w, iters=o.iters_gn, fit_shape=not fixed_shape, callback=flips,
            shape_center=shape_center)
        shape = self._shape_from_param(shape_p)
        pose, transl, sigma, fit_sigma, smoothed, parts = self._smooth_and_sigma(pose, shape, transl, xy, conf, K,
                                                                                 init, fps)
        if smoothed and o.iters_gn_settle > 0:
            # the settling as the Adam path does it (`refine`: pulled toward the smoothed fit by
            # its own sigma, temporal terms `settle_accel` times stronger, the shape kept)
            res = self.refine(keypoints, K, FitInit(pose, shape, transl, fit_sigma), None, fps,
                              temporal_scale=o.settle_accel)
            return FitResult(res.poses, shape, res.transl, res.joints, res.keypoints3d, res.reprojection_px,
                             sigma, history + res.loss_history, parts)
        out, err = self.evaluate(pose, shape, transl, xy, conf, K)
        return FitResult(pose, shape, transl, out.joints, out.keypoints, err, sigma, history, parts)

    def evaluate(self, pose: torch.Tensor, shape: torch.Tensor, transl: torch.Tensor, xy: torch.Tensor,
                 conf: torch.Tensor, K: torch.Tensor):
        """(the body model's output in this fitter's layout, reprojection error (T, K) pixels,
        NaN where conf is 0) of a result: pose (T, J, 3), shape (1, S), transl (T, 3), against
        xy (T, K, 2) and conf (T, K) as `_check` gives them."""
        with torch.no_grad():
            out = self.model(pose, shape, transl, layout=self.layout.name, vertices=False)
            err = (project(out.keypoints, K) - xy).norm(dim=-1)
        return out, torch.where(conf > 0, err, torch.full_like(err, float("nan")))

    def refine(self, keypoints: torch.Tensor, K: torch.Tensor, start: FitInit, term: Callable | None,
               fps: float = 30.0, iters: int = 40, lr: float = 0.01,
               temporal_scale: float = 1.0) -> FitResult:
        """Continue the body stage from a finished fit with `term` added to the objective.

        Args:
            keypoints, K, fps: as for `fit`.
            start: the finished fit: poses (T, J, 3), shape (1, S) (kept), transl (T, 3) and
                sigma (T, J), its joints' uncertainty, which weighs their pull on the result as
                an initialisation's does (an unsure joint may move further).
            term: term(out, pose (T, J, 3), transl (T, 3)) -> () an added cost, with `out` the
                body model's output in this fitter's layout (joints, keypoints); or None.
                With the Gauss-Newton solver, a term that is also a
                `meshcap.fitting.gauss_newton.PointTerm` (the foot contacts) or None is
                minimised by it (at most `iters_gn_settle` steps), any other by Adam.
            iters, lr: Adam steps, at a rate that falls (cosine) to `lr_final` of `lr`.
            temporal_scale: multiplies the options' temporal weights (`w_accel`, `w_rot_vel`).
        Returns a FitResult whose uncertainty is `start.sigma`.
        """
        o = self.options
        xy, conf = self._check(keypoints)
        K = torch.as_tensor(K, dtype=xy.dtype, device=xy.device)
        T = xy.shape[0]
        start = self._check_init(start, T)
        if start.shape is None or start.transl is None or start.sigma is None:
            raise InputError("refine starts from a finished fit: poses, shape, transl and sigma")
        obs = (xy, conf, _person_size(xy, conf), K, float(fps))
        shape_p = self._param_from_shape(start.shape)
        shape = self._shape_from_param(shape_p)
        with torch.no_grad():
            j0 = self.model(start.poses, shape, vertices=False).joints
        init_joints, init_w = j0 - j0[:, :1], start.sigma.square().reciprocal()
        if self._gauss_newton() and (term is None or hasattr(term, "linearise")):
            # the fit's own solver: the term enters the banded system through its points
            pose, transl, _, history = TrackSolver(self).solve(
                start.poses, start.transl, shape_p, obs, init_joints, init_w, temporal_scale,
                iters=o.iters_gn_settle, fit_shape=False, extra=term)
            out, err = self.evaluate(pose, shape, transl, xy, conf, K)
            return FitResult(pose, shape, transl, out.joints, out.keypoints, err, start.sigma, history)
        if term is None:
            term = lambda *a: 0.0  # noqa: E731
        root = start.poses[:, 0].clone().requires_grad_(True)
        body = start.poses[:, 1:].clone().requires_grad_(True)
        transl = start.transl.clone().requires_grad_(True)
        opt = torch.optim.Adam([{"params": [root, body], "lr": lr}, {"params": [transl], "lr": lr}])
        history = []
        for it in range(iters):
            scale = _anneal(o.lr_final, it, iters)
            for group in opt.param_groups:
                group["lr"] = lr * scale
            opt.zero_grad()
            frame, track, out = self._loss(root, body, shape_p, transl, obs, init_joints, init_w,
                                           temporal_scale=temporal_scale)
            loss = frame.sum() + track + term(out, torch.cat([root[:, None], body], 1), transl)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        pose = torch.cat([root[:, None], body], 1).detach()
        transl = transl.detach()
        out, err = self.evaluate(pose, shape, transl, xy, conf, K)
        return FitResult(pose, shape, transl, out.joints, out.keypoints, err, start.sigma, history)

    def fit(self, keypoints: torch.Tensor, K: torch.Tensor, init: FitInit | None = None,
            fps: float = 30.0, shape: torch.Tensor | None = None) -> FitResult:
        """Fit the track.

        Args:
            keypoints: (T, K, 3) pixels + confidence, in this fitter's layout; frames are
                consecutive (a frame where the person was not seen has confidence 0).
            K: (3, 3) intrinsics.
            init: optional starting point (poses, shape, transl, sigma); see `FitInit`.
            fps: frame rate of the track, for the temporal terms.
            shape: (1, S) a body shape known already (e.g. fitted over a longer track): used
                and kept fixed instead of the one fitted here.
        """
        o = self.options
        xy, conf = self._check(keypoints)
        T, dt, dev = xy.shape[0], xy.dtype, xy.device
        K = torch.as_tensor(K, dtype=dt, device=dev)
        if K.shape != (3, 3) or not torch.isfinite(K).all():
            raise InputError(f"camera intrinsics must be a finite (3, 3) matrix, got {tuple(K.shape)}")
        if not (fps > 0 and math.isfinite(fps)):
            raise InputError(f"fps must be positive, got {fps}")
        init = self._check_init(init, T) if init is not None else None
        obs = (xy, conf, _person_size(xy, conf), K, float(fps))
        J = self.model.num_joints

        fixed_shape = shape is not None
        if fixed_shape:
            shape = torch.as_tensor(shape, dtype=dt, device=dev)
            if shape.shape != (1, self.model.shape_dim) or not torch.isfinite(shape).all():
                raise InputError(f"shape must be a finite (1, {self.model.shape_dim}) tensor, got {tuple(shape.shape)}")
        shape_p = (self._param_from_shape(shape) if fixed_shape
                   else self._param_from_shape(init.shape) if init is not None and init.shape is not None
                   else torch.zeros(1, self.model.shape_dim, dtype=dt, device=dev))
        shape0 = self._shape_from_param(shape_p)
        # an initialisation's shape (the regressor's, read from the whole track) is where the
        # shape prior pulls: a converged fit otherwise moves the size a few percent with the
        # 2D noise, which a monocular fit turns into depth (see docs/design.md, The solver)
        shape_center = (shape_p.detach().clone() if init is not None and init.shape is not None and not fixed_shape
                        else None)
        transl0, torso_off, root_pos = self._torso_depth(xy, conf, K, shape0)
        torso_mask = torch.zeros(len(self.layout), dtype=dt, device=dev)
        torso_mask[[self.layout.index(n) for n in _ROOT_STAGE if n in self.layout.names]] = 1.0

        if init is not None:
            root = init.poses[:, 0].clone()
            body = init.poses[:, 1:].clone()
            if init.transl is not None:
                transl = init.transl.clone()
            else:
                transl = transl0 - roma.rotvec_to_rotmat(root) @ torso_off - root_pos
            root, transl = self._fit_camera(root, transl, body, shape_p, obs, torso_mask)
        else:
            # Four headings per frame (facing the camera, its left, away, its right); the
            # torso stage runs them all in one batch and each frame keeps its best.
            H = 4
            flip = roma.rotvec_to_rotmat(torch.tensor([math.pi, 0.0, 0.0], dtype=dt, device=dev))
            yaws = torch.arange(H, dtype=dt, device=dev) * (math.pi / 2)
            yaw = roma.rotvec_to_rotmat(torch.stack([torch.zeros_like(yaws), yaws, torch.zeros_like(yaws)], -1))
            R0 = flip @ yaw  # (H, 3, 3)
            root = roma.rotmat_to_rotvec(R0)[:, None].expand(H, T, 3).clone()
            transl = (transl0[None] - (R0 @ torso_off)[:, None] - root_pos).clone()
            body = torch.zeros(H, T, J - 1, 3, dtype=dt, device=dev)
            obs_h = (xy.repeat(H, 1, 1), conf.repeat(H, 1), obs[2].repeat(H), K, obs[4])
            body = body.reshape(H * T, J - 1, 3)
            rootf, translf = self._fit_camera(root.reshape(H * T, 3), transl.reshape(H * T, 3),
                                              body, shape_p, obs_h, torso_mask)
            with torch.no_grad():
                frame, _, _ = self._loss(rootf, body, shape_p, translf, obs_h, mask=torso_mask)
            best = frame.reshape(H, T).argmin(0)
            idx = torch.arange(T, device=dev)
            root = rootf.reshape(H, T, 3)[best, idx].clone()
            transl = translf.reshape(H, T, 3)[best, idx].clone()
            body = torch.zeros(T, J - 1, 3, dtype=dt, device=dev)

        init_joints = init_w = None
        if init is not None and init.sigma is not None:
            if init.joints is not None:
                init_joints = init.joints
            else:
                with torch.no_grad():
                    ij = self.model(init.poses, self._shape_from_param(shape_p), vertices=False).joints
                init_joints = ij - ij[:, :1]
            init_w = init.sigma.square().reciprocal()

        heading_margin = mirrored = None
        if o.iters_heading > 0:
            root, body, transl, heading_margin, mirrored = self._choose_headings(
                root, body, transl, shape_p, obs, init_joints, init_w)
            if init_w is not None:  # the initialisation's joints face the other way there
                init_w = torch.where(mirrored[:, None], torch.zeros_like(init_w), init_w)

        if self._gauss_newton():
            return self._fit_gauss_newton(keypoints, K, init, fps, obs, root, body, transl, shape_p,
                                          fixed_shape, init_joints, init_w, shape_center)
        root.requires_grad_(True)
        transl.requires_grad_(True)
        body.requires_grad_(True)
        shape_p.requires_grad_(not fixed_shape)
        lr_shape = 0.0 if fixed_shape else o.lr_shape
        # Kinematic flips are tried twice on the way (not when an initialisation with its own
        # sigma already says which way the limbs point).
        flip_at = set() if init_w is not None else {o.iters_body // 3, 2 * o.iters_body // 3}
        history: list[float] = []
        # Adam at a constant rate ends wandering about the minimum by about its rate (0.03 rad
        # per step: jitter from frame to frame, and a result that depends on round-off); the
        # last half after the last flip anneals the rate (cosine) to `lr_final` of it.
        settle = (max(flip_at, default=0) + o.iters_body) // 2
        for it in range(o.iters_body):
            if it == 0 or it in flip_at:
                if it in flip_at:
                    self._flip_limbs(root, body, shape_p, transl, obs)
                opt = torch.optim.Adam([{"params": [root, body], "lr": o.lr_rot},
                                        {"params": [transl], "lr": o.lr_transl},
                                        {"params": [shape_p], "lr": lr_shape}])
            if it >= settle:
                scale = _anneal(o.lr_final, it - settle, o.iters_body - settle)
                for group, lr in zip(opt.param_groups, (o.lr_rot, o.lr_transl, lr_shape)):
                    group["lr"] = lr * scale
            opt.zero_grad()
            frame, track, _ = self._loss(root, body, shape_p, transl, obs, init_joints, init_w,
                                         shape_center=shape_center)
            loss = frame.sum() + track
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))

        pose = torch.cat([root[:, None], body], 1).detach()
        shape = self._shape_from_param(shape_p).detach()
        transl = transl.detach()
        pose, transl, sigma, fit_sigma, smoothed, parts = self._smooth_and_sigma(pose, shape, transl, xy, conf, K,
                                                                                 init, fps)
        if smoothed and o.iters_settle > 0:
            # Smoothing alone halves the acceleration error on real motion but shrinks fast
            # swings (Sports2D reprojection 2.6 -> 5.1 px); a free refit brings the jitter back
            # (the detector's), stronger temporal terms keep it out (see docs/design.md). The
            # sigma stays the smoothed fit's; its Laplace part weighs the pull toward it.
            res = self.refine(keypoints, K, FitInit(pose, shape, transl, fit_sigma), None, fps,
                              o.iters_settle, temporal_scale=o.settle_accel)
            return FitResult(res.poses, shape, res.transl, res.joints, res.keypoints3d, res.reprojection_px,
                             sigma, history + res.loss_history, parts)
        out, err = self.evaluate(pose, shape, transl, xy, conf, K)
        return FitResult(pose, shape, transl, out.joints, out.keypoints, err, sigma, history, parts)
