"""Robust, confidence-weighted triangulation of keypoints seen by calibrated cameras.

Each point is solved by the direct linear transform on undistorted, normalised image
coordinates, each view's two rows weighted by its confidence; then the views are re-weighted
by how well the point reprojects into them (a Cauchy weight on the pixel error), a few times:
a view that saw something else (a wrong person, a mirrored limb) ends up with almost no say.
"""
from __future__ import annotations

import numpy as np
import torch

from meshcap.multiview.calibration import Camera, undistort_points


def undistort(points: np.ndarray, camera: Camera) -> np.ndarray:
    """(N, 2) normalised image coordinates (x/z, y/z) of pixels (N, 2) seen by `camera`."""
    return undistort_points(np.asarray(points, dtype=np.float64).reshape(-1, 2), camera.K, camera.dist, pixels=False)


def dlt(xn: np.ndarray, P: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, 3) points from normalised coordinates xn (C, N, 2), normalised projection matrices
    P (C, 3, 4) = [R | t] and weights w (C, N); NaN where fewer than two views weigh in."""
    C, N = w.shape
    rows = np.concatenate([xn[..., :1] * P[:, None, 2] - P[:, None, 0],
                           xn[..., 1:] * P[:, None, 2] - P[:, None, 1]], axis=0)  # (2C, N, 4)
    A = (rows * np.concatenate([w, w])[..., None]).transpose(1, 0, 2)  # (N, 2C, 4)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = X[:, :3] / X[:, 3:]
    out[(w > 0).sum(0) < 2] = np.nan
    return out


def triangulate(points: np.ndarray, cameras: list[Camera], iterations: int = 4, scale_px: float = 8.0,
                min_confidence: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate points (C, N, 3) (pixels + confidence, one row per camera) into (N, 3).

    Returns (X (N, 3) world, NaN where unseen by two views; weights (C, N), each view's final
    say; residual (C, N) reprojection error in pixels, NaN where the view did not see it).
    `scale_px`: the Cauchy scale of the re-weighting (errors of a few scales count little).
    """
    points = np.asarray(points, dtype=np.float64)
    C, N = points.shape[:2]
    if C != len(cameras):
        raise ValueError(f"points for {C} views, but {len(cameras)} cameras")
    conf = np.nan_to_num(points[..., 2])
    seen = (conf >= min_confidence) & np.isfinite(points[..., :2]).all(-1)
    conf = np.where(seen, conf, 0.0)
    xn = np.zeros((C, N, 2))
    for c, cam in enumerate(cameras):
        if seen[c].any():
            xn[c, seen[c]] = undistort(points[c, seen[c], :2], cam)
    P = np.stack([np.hstack([cam.R, cam.t[:, None]]) for cam in cameras])
    w = conf.copy()
    X = dlt(xn, P, w)
    for _ in range(iterations):
        res = reprojection_errors(X, points, cameras)
        w = conf / (1.0 + np.square(np.nan_to_num(res, nan=0.0) / scale_px))
        X = dlt(xn, P, w)
    res = reprojection_errors(X, points, cameras)
    res[~seen] = np.nan
    return X, w, res


def reprojection_errors(X: np.ndarray, points: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """(C, N) pixel distance between each view's point (C, N, 2+) and the projection of X (N, 3)."""
    out = np.full(points.shape[:2], np.nan)
    ok = np.isfinite(X).all(-1)
    for c, cam in enumerate(cameras):
        uv = cam.project(torch.as_tensor(X[ok])).numpy()
        out[c, ok] = np.linalg.norm(uv - points[c, ok, :2], axis=-1)
    return out
