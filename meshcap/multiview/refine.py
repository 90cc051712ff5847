"""Camera orientations and focal lengths refined from the people a calibrated rig sees.

A calibration that is a degree off in one camera's orientation (the camera was knocked after
calibrating, or the calibration's own error) puts that view's projections 15-30 pixels off,
the same way for every point: on Pose2Sim's single-person demo the triangulated keypoints
reproject into camera 3 with a mean offset of about (+11, +10) px across all twelve body
points, and no body fit or triangulation can reach it. A focal length 2% off moves a point
500 px from the image centre by 10 px. The people's keypoints over a take pin each camera's
orientation and focal length far better than that (thousands of points, four unknowns per
camera), so they are refined before fitting: a bundle adjustment in which only the cameras'
rotations (about their own centres) and focal lengths move, which keeps the calibration's
world, scale and floor, alternating with a robust triangulation of the points. On the demo
the focal lengths come out 0.8-2.6% off the calibration's, and the views' held-out error falls
with them (docs/design.md, Multi-view). Kept: positions (a few millimetres move a projection by
under a pixel, and with every position free the rig's scale would be open), the principal
point (free, it trades off against the rotation: on the demo a camera then turned past the
5-degree limit) and the lens distortion.

Written by hand on `scipy.optimize.least_squares` (4 unknowns per camera, Cauchy loss): the
bundle-adjustment libraries on PyPI refine every camera parameter and point at once and want
their own camera models; this keeps meshcap's (`Camera.project`, lens distortion included).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from meshcap.multiview.calibration import Camera
from meshcap.multiview.triangulate import triangulate

MAX_TURN_DEG = 5.0  # a larger correction means a wrong calibration or mismatched views, not a knock
MAX_FOCAL_CHANGE = 0.1  # likewise for a focal length 10% off
MIN_POINTS = 100  # confident points a camera needs (each seen by two other views) to be refined
MAX_POINTS = 20000  # points used at most (evenly spread over the take): the rotations need no more


@dataclass
class Refinement:
    """What `refine_orientations` did: the cameras to use (refined, or the calibration's when
    nothing was refined), how far each was turned (C,) degrees, each view's median
    reprojection error (C,) pixels of the robust triangulation before and after, why the
    calibration was kept where it was (`kept`, None when refined), and each refined focal
    length over the calibration's (C,) (ones when focal lengths were not refined)."""

    cameras: list[Camera]
    turned_deg: np.ndarray
    before_px: np.ndarray
    after_px: np.ndarray
    kept: str | None = None
    focal_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.focal_scale is None:
            self.focal_scale = np.ones(len(self.cameras))


def _turned(camera: Camera, params: np.ndarray) -> Camera:
    """`camera` turned about its own centre by the world-to-camera rotation change params[:3]
    (a rotation vector) and, given params[3], its focal lengths scaled by exp(params[3])."""
    c = camera.center
    R = Rotation.from_rotvec(params[:3]).as_matrix() @ camera.R
    K = camera.K
    if len(params) > 3:
        K = K.copy()
        K[:2, :2] *= np.exp(params[3])  # fx, fy (and skew) alike: the principal point stays
    return dataclasses.replace(camera, R=R, t=-R @ c, K=K)


def _medians(res: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(C,) each view's median reprojection error (`triangulate`'s residual (C, N)) over its
    confident points seen (C, N)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.where(seen, res, np.nan), axis=1)


def refine_orientations(points: np.ndarray, cameras: list[Camera], rounds: int = 6, scale_px: float = 8.0,
                        min_confidence: float = 0.5, max_turn_deg: float = MAX_TURN_DEG, focal: bool = True,
                        max_focal_change: float = MAX_FOCAL_CHANGE) -> Refinement:
    """Refine each camera's orientation (and focal length) from keypoints seen by the rig.

    Args:
        points: (C, N, 3) pixels and confidence of N points (any people, frames and
            keypoints), one row per camera in the calibration's order; 0 confidence where a
            view did not see the point. Lens distortion is the cameras' own.
        cameras: the calibration (C >= 3: with two views a turn of one camera is partly a
            turn of the other, and the pair cannot tell which).
        rounds: alternations of triangulating the points and turning the cameras.
        scale_px: the robust (Cauchy) scale of a reprojection error, in pixels.
        min_confidence: points under this confidence are not used.
        max_turn_deg: a camera turned further than this means the calibration does not
            belong to these videos (or the views were mismatched): the calibration is kept,
            with a warning.
        focal: refine each camera's focal length too (fx and fy by one factor).
        max_focal_change: like max_turn_deg, for a focal length's relative change.
    Returns a `Refinement`; its cameras keep the calibration's positions, principal points and
    distortion.
    """
    points = np.asarray(points, dtype=np.float64)
    C = len(cameras)
    if points.ndim != 3 or points.shape[0] != C or points.shape[2] != 3:
        raise ValueError(f"points must be (C={C}, N, 3), got {points.shape}")
    zero = np.zeros(C)
    if C < 3:
        return Refinement(list(cameras), zero, np.full(C, np.nan), np.full(C, np.nan),
                          kept=f"{C} cameras: refining orientations needs three or more")
    seen = (np.nan_to_num(points[..., 2]) >= min_confidence) & np.isfinite(points[..., :2]).all(-1)
    # points two views or more see; at most MAX_POINTS of them, spread evenly
    keep = np.flatnonzero(seen.sum(0) >= 2)
    keep = keep[np.linspace(0, len(keep) - 1, min(len(keep), MAX_POINTS)).round().astype(int)] if len(keep) else keep
    points, seen = points[:, keep], seen[:, keep]
    by_three = seen.sum(0) >= 3  # points a camera sees that two other views place
    X, _, res = triangulate(points, cameras, scale_px=scale_px)
    before = _medians(res, seen)
    params = np.zeros((C, 4 if focal else 3))  # rotation vector [, log focal scale] per camera
    cams = list(cameras)
    refined = np.zeros(C, bool)
    for _ in range(rounds):
        moved = 0.0
        for c in range(C):
            m = seen[c] & by_three & np.isfinite(X).all(-1)
            if m.sum() < MIN_POINTS:
                continue
            Xc, uv = torch.as_tensor(X[m]), points[c, m, :2]

            def residual(v, c=c, Xc=Xc, uv=uv):
                return (_turned(cameras[c], v).project(Xc).numpy() - uv).ravel()

            sol = least_squares(residual, params[c], loss="cauchy", f_scale=scale_px, x_scale=1e-3)
            moved = max(moved, float(np.abs(sol.x - params[c]).max()))
            params[c] = sol.x
            cams[c] = _turned(cameras[c], params[c])
            refined[c] = True
        X, _, res = triangulate(points, cams, scale_px=scale_px)
        if moved < 1e-5:  # radians (and log focal scale)
            break
    turned = np.degrees(np.linalg.norm(params[:, :3], axis=-1))
    zoom = np.exp(params[:, 3]) if focal else np.ones(C)
    after = _medians(res, seen)
    if not refined.any():
        return Refinement(list(cameras), zero, before, before,
                          kept=f"too few points seen by three views (a camera needs {MIN_POINTS})")
    if turned.max() > max_turn_deg:
        c = int(turned.argmax())
        why = (f"camera {cameras[c].name} would turn {turned[c]:.1f} degrees (more than {max_turn_deg:g}): "
               "does the calibration belong to these videos, in this order?")
        warnings.warn(f"calibration kept: {why}", stacklevel=2)
        return Refinement(list(cameras), turned, before, before, kept=why)
    if np.abs(zoom - 1).max() > max_focal_change:
        c = int(np.abs(zoom - 1).argmax())
        why = (f"camera {cameras[c].name}'s focal length would change by {100 * (zoom[c] - 1):+.1f}% (more than "
               f"{100 * max_focal_change:g}%): does the calibration belong to these videos, in this order?")
        warnings.warn(f"calibration kept: {why}", stacklevel=2)
        return Refinement(list(cameras), turned, before, before, kept=why)
    return Refinement(cams, turned, before, after, focal_scale=zoom)

