"""Cameras that turn: the rotation and zoom of a panning camera, frame by frame, from the
background, so that the people can be fitted in a world that stays put.

A camera that only turns about its centre (a pan, a tilt, a hand-held phone following
someone) and zooms maps each frame onto the others by a homography, x_t ~ K_t R_t K_ref^-1 x_ref:
no depth is needed. `estimate_camera_motion` tracks background corners from frame to frame
(OpenCV's Shi-Tomasi corners and pyramidal Lucas-Kanade flow, checked forward and backward),
with the people masked out by boxes around their keypoints, and fits that rotation-and-zoom
model to them: a 4-parameter similarity under RANSAC picks the background points that agree,
then the exact model is solved on them (robust least squares). The frame-to-frame estimates
are chained. `CameraMotion.to_reference` then maps the keypoints of every frame into one
reference camera (the mean orientation over the clip), where the fitting stage sees a static
camera and the temporal terms, the ground and the foot contacts all hold as for a camera on a
tripod.

A camera that also moves (walks, is carried on a vehicle) shows parallax: near and far points
of the background move differently, which no rotation explains. The frames where the
rotation model leaves the background points more than `MOVING_PX` off (median) are reported
as `moving`: the trajectory there is not to be trusted, and `capture` says so.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import roma
import torch
from scipy.optimize import least_squares

from meshcap.errors import InputError

TRACK_WIDTH = 960  # pixels: frames are tracked at this width (corners need no more)
MIN_POINTS = 20  # background points a frame pair needs for an estimate
MOVING_PX = 1.5  # per 2,000 px of image diagonal: a rotation leaving more (median) is not one
MAX_TURN_DEG = 75.0  # from the reference orientation: beyond, the reference view degenerates
MOVING_SHARE = 0.1  # frames showing travel beyond which `capture` warns
MAX_LOST = 0.2  # share of frame pairs whose background could not be followed, at most


@dataclass
class CameraMotion:
    """A panning, zooming camera over T frames.

    rotations (T, 3, 3): the reference camera's frame -> the camera's frame at t (OpenCV axes);
    the reference has frame 0's intrinsics;
    focals (T,) pixels; principal (2,) pixels (fixed); points (T,) background points the
    estimate at t rests on (0 for the first frame and where the background was lost);
    residual_px (T,) their median distance from the rotation model (NaN where none); moving
    (T,) bool: the camera there moves more than it turns (see the module docstring)."""

    rotations: np.ndarray
    focals: np.ndarray
    principal: np.ndarray
    points: np.ndarray
    residual_px: np.ndarray
    moving: np.ndarray

    def __len__(self) -> int:
        return len(self.rotations)

    def referenced(self) -> "CameraMotion":
        """The same motion with the clip's mean orientation (chordal mean) as the reference,
        so the turn either way is halved; a turn too wide for one view is an InputError."""
        mean = roma.special_procrustes(torch.as_tensor(self.rotations.mean(0))).numpy()
        Rs = self.rotations @ mean.T
        turn = np.degrees(np.arccos(np.clip((np.trace(Rs, axis1=1, axis2=2) - 1) / 2, -1, 1)))
        if turn.max() > MAX_TURN_DEG:
            raise InputError(f"the camera turns about {2 * turn.max():.0f} degrees over the clip; at most "
                             f"{2 * MAX_TURN_DEG:.0f} fit in one reference view: split the video")
        return dataclasses.replace(self, rotations=Rs)

    def intrinsics(self) -> np.ndarray:
        """(T, 3, 3) K per frame."""
        K = np.zeros((len(self), 3, 3))
        K[:, 0, 0] = K[:, 1, 1] = self.focals
        K[:, :2, 2] = self.principal
        K[:, 2, 2] = 1.0
        return K

    def reference_intrinsics(self) -> np.ndarray:
        """(3, 3) K of the reference camera: the first frame's focal."""
        return self.intrinsics()[0]

    def to_reference(self, frames: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Keypoints (n, K, 3) pixels + confidence seen at `frames` (n,) -> the same points as
        the reference camera would see them (a keypoint that turns behind it is unseen)."""
        kp = np.array(keypoints, dtype=np.float64)
        K_t = self.intrinsics()[frames]  # (n, 3, 3)
        ray = np.concatenate([kp[..., :2], np.ones_like(kp[..., :1])], -1) @ np.linalg.inv(K_t).transpose(0, 2, 1)
        ref = ray @ self.rotations[frames]  # R_t^T applied to row vectors
        front = ref[..., 2] > 1e-3
        K0 = self.reference_intrinsics()
        uv = ref[..., :2] / np.where(front, ref[..., 2], 1.0)[..., None] * K0[0, 0] + K0[:2, 2]
        out = kp.copy()
        out[..., :2] = uv
        out[..., 2] = np.where(front, kp[..., 2], 0.0)
        return out.astype(np.float32)

    def yaw_pitch_roll(self) -> np.ndarray:
        """(T, 3) degrees: each frame's turn from the first (see `rotations_to_yaw_pitch_roll`)."""
        return rotations_to_yaw_pitch_roll(self.rotations)


def rotations_to_yaw_pitch_roll(rotations: np.ndarray) -> np.ndarray:
    """Camera rotations (..., T, 3, 3) reference -> frame t (a CameraMotion's, a Motion's
    `frame_R`) -> (..., T, 3) degrees: each frame's turn from the first, as yaw (about the
    camera's y axis, positive to the right), pitch (about x, positive up) and roll (about z)."""
    R = torch.as_tensor(np.asarray(rotations, np.float64))
    rel = R @ R[..., :1, :, :].transpose(-1, -2)  # first frame's camera -> frame t's
    # the camera's own turn is rel's inverse; OpenCV axes: x right, y down, z forward
    return roma.rotmat_to_euler("YXZ", rel.transpose(-1, -2), degrees=True).numpy()


def warn_if_moving(motion: CameraMotion, share: float = MOVING_SHARE) -> None:
    """Warn when more than `share` of the frames show a camera that travels, not only turns."""
    bad = motion.moving
    if bad.mean() > share:
        where = np.flatnonzero(bad)
        warnings.warn(f"the camera moves (not only turns) in {len(where)} of {len(bad)} frames (from frame "
                      f"{where[0]} to {where[-1]}): the background there shows parallax that no turn "
                      "explains, so the people's paths there are not to be trusted", stacklevel=2)


def person_boxes(tracks, pad: float = 0.25) -> list[np.ndarray]:
    """Per frame of `tracks` (a `meshcap.keypoints.Tracks`), (n, 4) boxes x0, y0, x1, y1 around
    every tracked person's keypoints, grown by `pad` of their size on each side (the body's
    outline reaches past its keypoints: hair, clothes, feet)."""
    out: list[list[np.ndarray]] = [[] for _ in range(tracks.num_frames)]
    for frames, kp in tracks.tracks.values():
        for f, k in zip(frames, kp):
            seen = k[:, 2] > 0.2
            if seen.sum() < 2:
                continue
            lo, hi = k[seen, :2].min(0), k[seen, :2].max(0)
            g = pad * (hi - lo).max() + 10.0
            out[int(f)].append(np.concatenate([lo - g, hi + g]))
    return [np.array(b, np.float64).reshape(-1, 4) for b in out]


def _mask(shape: tuple[int, int], boxes: np.ndarray, scale: float) -> np.ndarray:
    m = np.full(shape, 255, np.uint8)
    for x0, y0, x1, y1 in (boxes * scale).round().astype(int):
        m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 0
    return m


def _project(params: np.ndarray, rays: np.ndarray, f: float, c: np.ndarray) -> np.ndarray:
    R = cv2.Rodrigues(params[:3])[0]
    p = rays @ R.T
    return p[:, :2] / p[:, 2:3] * (f * math.exp(params[3])) + c


def rotation_zoom(p: np.ndarray, q: np.ndarray, f: float, c: np.ndarray,
                  threshold: float = 1.5) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The turn and zoom that take points p (N, 2) seen with focal f and principal point c to
    q (N, 2): R (3, 3) (camera before -> after), zoom (the focal's factor), inliers (N,) bool,
    residuals (N,) pixels of every point under that model.

    Hand-written because OpenCV's homography estimators have 8 degrees of freedom and so
    absorb parallax that a 4-degree turn-and-zoom model must expose (no library fits this
    model directly)."""
    # a similarity is the turn-and-zoom to first order: it picks the agreeing points
    A, inl = cv2.estimateAffinePartial2D(p, q, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                         maxIters=500, confidence=0.995)
    inl = np.ones(len(p), bool) if inl is None else inl.ravel().astype(bool)
    if inl.sum() < max(4, MIN_POINTS // 2):
        inl = np.ones(len(p), bool)
    rays = np.concatenate([(p - c) / f, np.ones((len(p), 1))], 1)
    x0 = np.zeros(4)
    if A is not None:  # start: a shift of d pixels is a turn of about d / f
        s = math.hypot(A[0, 0], A[1, 0])
        shift = A[:, :2] @ c + A[:, 2] - c
        x0 = np.array([-shift[1] / f, shift[0] / f, math.atan2(A[1, 0], A[0, 0]), math.log(max(s, 1e-3))])
    res = least_squares(lambda x: (_project(x, rays[inl], f, c) - q[inl]).ravel(), x0, loss="soft_l1",
                        f_scale=0.5, method="trf")
    err = np.linalg.norm(_project(res.x, rays, f, c) - q, axis=1)
    return cv2.Rodrigues(res.x[:3])[0], math.exp(res.x[3]), inl, err


def estimate_camera_motion(frames: Iterable[np.ndarray], boxes: list[np.ndarray], focal: float,
                           principal: tuple[float, float] | np.ndarray, distortion: np.ndarray | None = None,
                           progress: Callable[[int, int], None] | None = None) -> CameraMotion:
    """Follow a turning, zooming camera through `frames` ((H, W, 3) uint8 RGB, consecutive) with
    the people's `boxes` per frame (see `person_boxes`) masked out; `focal` (pixels) and
    `principal` (cx, cy) are the first frame's intrinsics, `distortion` the lens (OpenCV k1,
    k2, p1, p2, k3) if calibrated. The reference camera is the first frame's here; see
    `CameraMotion.referenced` for the clip's mean. See the module docstring."""
    c = np.asarray(principal, np.float64)
    boxes = list(boxes)
    T = len(boxes)
    if T < 2:
        raise InputError("a panning camera needs at least 2 frames to follow")
    K = np.array([[focal, 0.0, c[0]], [0.0, focal, c[1]], [0.0, 0.0, 1.0]])
    dist = None if distortion is None or not np.any(distortion) else np.asarray(distortion, np.float64)
    rel_R, zooms, npts, resid = [np.eye(3)], [1.0], [0], [np.nan]
    prev = prev_mask = None
    n = -1
    for n, image in enumerate(frames):
        if n >= T:
            break
        h, w = image.shape[:2]
        scale = min(1.0, TRACK_WIDTH / w)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        mask = _mask(gray.shape, boxes[n], scale)
        if prev is not None:
            R, z, k, r = _pair(prev, gray, prev_mask, mask, scale, focal * float(np.prod(zooms)), c, K, dist)
            if k == 0:  # lost: carry on at the last known speed
                R, z = rel_R[-1], zooms[-1]
            rel_R.append(R)
            zooms.append(z)
            npts.append(k)
            resid.append(r)
        prev, prev_mask = gray, mask
        if progress is not None:
            progress(n + 1, T)
    if n + 1 < T:
        raise InputError(f"the video ended after {n + 1} frames, but the tracks cover {T}")
    lost = np.array(npts[1:]) == 0
    if lost.mean() > MAX_LOST:
        raise InputError(f"the camera's turn could not be followed: too few background points in "
                         f"{int(lost.sum())} of {T - 1} frame pairs (too dark, blurred, featureless, or "
                         "covered by people); capture without panning if the camera stands still")
    Rs = [np.eye(3)]
    for R in rel_R[1:]:
        Rs.append(R @ Rs[-1])
    diag = math.hypot(*(2 * c))
    resid = np.array(resid, np.float64)
    return CameraMotion(np.stack(Rs), focal * np.cumprod(zooms), c, np.array(npts), resid,
                        resid > MOVING_PX * diag / 2000.0)


def follow_camera(video, tracks, focal: float, principal: tuple[float, float] | np.ndarray,
                  distortion: np.ndarray | None = None,
                  progress: Callable[[int, int], None] | None = None) -> CameraMotion:
    """The camera's turn at each frame of `tracks` (a `meshcap.keypoints.Tracks` detected in
    `video`), referenced to the clip's mean orientation (`CameraMotion.referenced`). Every
    frame of the video between the first and last tracked ones is followed, so a stride only
    thins the result; frames between tracked ones mask the people of the nearest tracked one."""
    from meshcap.video import VideoReader

    index = np.asarray(tracks.frame_index, np.int64)
    if len(index) < 2:
        raise InputError("a panning camera needs at least 2 frames to follow")
    first, last = int(index[0]), int(index[-1])
    tracked = person_boxes(tracks)
    src = np.arange(first, last + 1)
    near = np.clip(np.searchsorted(index, src), 0, len(index) - 1)
    near = np.where((near > 0) & (np.abs(index[near - 1] - src) < np.abs(index[near] - src)), near - 1, near)
    boxes = [tracked[k] for k in near]
    reader = VideoReader(video, start=max(0.0, float(tracks.frame_times[0]) - 0.5 / tracks.fps))
    images = (f.image for f in reader if first <= f.index <= last)
    cm = estimate_camera_motion(images, boxes, focal, principal, distortion, progress)
    k = index - first
    # a kept frame is moving when any frame since the last kept one was
    moving = np.array([cm.moving[a + 1: b + 1].any() for a, b in zip(np.r_[-1, k[:-1]], k)])
    return CameraMotion(cm.rotations[k], cm.focals[k], cm.principal, cm.points[k], cm.residual_px[k],
                        moving).referenced()


def _pair(g0: np.ndarray, g1: np.ndarray, m0: np.ndarray, m1: np.ndarray, scale: float, f: float,
          c: np.ndarray, K: np.ndarray, dist: np.ndarray | None) -> tuple[np.ndarray, float, int, float]:
    """(R, zoom, points used, median residual px) from frame g0 to g1 (tracking size, full-size
    intrinsics f, c); (I, 1, 0, NaN) when the background cannot be followed."""
    none = (np.eye(3), 1.0, 0, float("nan"))
    pts = cv2.goodFeaturesToTrack(g0, maxCorners=600, qualityLevel=0.005, minDistance=8, mask=m0, blockSize=7)
    if pts is None or len(pts) < MIN_POINTS:
        return none
    lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, pts, None, **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, nxt, None, **lk)
    p, q = pts.reshape(-1, 2), nxt.reshape(-1, 2)
    ok = (st.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm(back.reshape(-1, 2) - p, axis=1) < 0.5)
    H, W = g1.shape
    qi = q.round().astype(int)
    inside = (qi[:, 0] >= 0) & (qi[:, 0] < W) & (qi[:, 1] >= 0) & (qi[:, 1] < H)
    ok &= inside
    ok[ok] &= m1[qi[ok, 1], qi[ok, 0]] > 0  # not landing on a person
    if ok.sum() < MIN_POINTS:
        return none
    p, q = p[ok].astype(np.float64) / scale, q[ok].astype(np.float64) / scale
    if dist is not None:  # through the lens to the pinhole the turn is modelled in
        p, q = (cv2.undistortPoints(x.reshape(-1, 1, 2), K, dist, P=K).reshape(-1, 2) for x in (p, q))
    R, z, inl, err = rotation_zoom(p, q, f, c)
    if inl.sum() < MIN_POINTS:
        return none
    return R, z, int(inl.sum()), float(np.median(err))
