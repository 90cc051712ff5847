"""Gravity's direction from how people hold themselves: a small network that reads, from a
body's 3D pose alone, which way is up.

The ground under a monocular capture is fitted to the planted feet (`meshcap.world`), but a
walk leaves the plane's tilt about the walking line open, and a boxer or dancer who stays on
one spot leaves nearly all of it open: a prior on the up direction decides. The torso's mean
direction leans with the motion (a get-up, a crouch: 13 degrees median off gravity on the real
takes' fits, up to 57) and the stance (planted sole to hip) with the footwork (9 degrees median,
up to 47). How a body is posed tells more: knees bent under a leaning trunk, arms hanging. This
network learnt that from real motion capture: the 12 COCO body joints of the training takes
(`meshcap.regression.mocap`, never the held-out ones), mirrored, seen from any azimuth with
pitch and roll up to 35 degrees, with 3 cm of joint noise (a fit's joints are not a mocap
skeleton's), and reads gravity's up in the camera's frame per frame; a track's prior is the
mean over its frames, weighted by how sure the fit is of each. Trained by `python -m
meshcap.regression.train_posture` (weights and figures in POSTURE_WEIGHTS).

A plain multilayer perceptron in NumPy: 36 inputs (the joints about the mid-hip, over their
mean distance from it), two hidden layers of 128 (GELU), 3 outputs, 21,635 weights.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.special import erf

from meshcap.errors import MeshcapError

POSTURE_WEIGHTS = Path(__file__).parent / "data" / "posture_up.npz"
# the joints read, in this order (COCO-17's body points)
POSTURE_JOINTS = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")


def posture_features(points: np.ndarray) -> np.ndarray:
    """(..., 36) the network's input from joints (..., 12, 3) named POSTURE_JOINTS: each joint
    about the mid-hip, over the joints' mean distance from it (the body's size does not count)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (len(POSTURE_JOINTS), 3):
        raise ValueError(f"posture joints must be (..., {len(POSTURE_JOINTS)}, 3), got {points.shape}")
    rel = points - points[..., 6:8, :].mean(-2, keepdims=True)
    size = np.linalg.norm(rel, axis=-1).mean(-1)[..., None, None]
    return (rel / np.maximum(size, 1e-9)).reshape(points.shape[:-2] + (-1,))


class PostureUp:
    """The network: joints (..., 12, 3) in a camera's frame (x right, y down, z forward) ->
    (..., 3) unit up direction, per frame. `layers`: [(W (n_out, n_in), b (n_out,)), ...]."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.layers = [(np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)) for W, b in layers]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        h = posture_features(points)
        for i, (W, b) in enumerate(self.layers):
            h = h @ W.T + b
            if i < len(self.layers) - 1:
                h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # GELU, as torch's nn.GELU()
        return h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)


@lru_cache(maxsize=4)
def load_posture(path: str | Path | None = None) -> PostureUp:
    """The network from a weights file (default: the shipped POSTURE_WEIGHTS)."""
    path = Path(path) if path is not None else POSTURE_WEIGHTS
    try:
        with np.load(path) as z:
            n = int(z["num_layers"])
            return PostureUp([(z[f"W{i}"], z[f"b{i}"]) for i in range(n)])
    except (OSError, KeyError, ValueError) as e:
        raise MeshcapError(f"cannot read the posture weights {path}: {e}") from e


def posture_up(motion, body_model=None, valid: np.ndarray | None = None,
               keypoints: np.ndarray | None = None, layout: str = "coco17") -> np.ndarray:
    """(3,) unit: gravity's up in `motion`'s frame as the people's posture says it, the mean of
    the network's per-frame reading over the frames `valid` (P, T) (default: every fitted
    frame), each frame weighted by 1 / sigma^2 with sigma the geometric mean of its joints'
    uncertainty (frames the fit is unsure of, a heading or limb in doubt, read the posture
    worse; uniform where the Motion has no uncertainty). The network reads each body in camera
    0's frame, as it was trained. `keypoints`: the Motion's keypoints (P, T, K, 3) in `layout`
    if already evaluated (any layout with the POSTURE_JOINTS: a body model places a keypoint
    by its name, whatever the layout)."""
    from meshcap.keypoints.layouts import get_layout

    kp = motion.keypoints3d(layout, body_model) if keypoints is None else keypoints
    names = get_layout(layout).names
    sel = motion.valid if valid is None else valid
    pts = kp[:, :, [names.index(n) for n in POSTURE_JOINTS]][sel]
    sigma = np.exp(np.log(np.maximum(np.asarray(motion.uncertainty, dtype=np.float64), 1e-4)).mean(-1))[sel]
    ok = np.isfinite(pts).all((-1, -2)) & np.isfinite(sigma)
    pts, sigma = pts[ok], sigma[ok]
    if not len(pts):
        raise ValueError("posture_up: no fitted frames")
    R = np.asarray(motion.cam_R[0], dtype=np.float64)
    up_cam = (load_posture()(pts @ R.T) / sigma[:, None] ** 2).sum(0)
    up = R.T @ up_cam
    return up / np.linalg.norm(up)
