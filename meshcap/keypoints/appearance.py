"""What a detected person looks like: colour histograms of their torso and thighs.

The tracker links detections by where their keypoints are; when two people cross, pass close
or stop and turn back, where they are can fit either labelling. What they wear rarely does.
Each detection gets a small descriptor: a hue-saturation histogram (HSV, 12 x 4 bins, pixels
too dark or too grey to have a hue counted in a separate "grey" bin per value third) of the
quadrilateral between the shoulders and hips, and one of the band from the hips to the knees,
each L1-normalised. Two descriptors are compared by the Bhattacharyya distance
(`appearance_distance`, 0 alike to 1 disjoint).

Written here rather than taken from a re-identification library: those (torchreid, fast-reid)
need network weights from a hub, and a colour histogram is a few lines of OpenCV.
"""
from __future__ import annotations

import numpy as np

from meshcap.keypoints.layouts import get_layout

HUE_BINS, SAT_BINS = 12, 4
_PART_SIZE = HUE_BINS * SAT_BINS + 3  # + three grey bins (dark, mid, light)
SIZE = 2 * _PART_SIZE
_MIN_CONFIDENCE = 0.3


def _named(layout: str) -> dict[str, int]:
    return {n: i for i, n in enumerate(get_layout(layout).names)}


def _part_histogram(rgb: np.ndarray, polygon: np.ndarray) -> np.ndarray | None:
    import cv2

    h, w = rgb.shape[:2]
    poly = np.round(polygon).astype(np.int32)
    x0, y0 = np.clip(poly.min(0), 0, [w - 1, h - 1])
    x1, y1 = np.clip(poly.max(0) + 1, 1, [w, h])
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    # every other pixel of the part's box, converted alone: a colour histogram needs no more,
    # and converting whole frames cost the detector a tenth of its speed
    crop = np.ascontiguousarray(rgb[y0:y1:2, x0:x1:2])
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, (poly - [x0, y0]) // 2, 1)
    px = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)[mask > 0].astype(np.int32)
    if len(px) < 20:
        return None
    hue, sat, val = px[:, 0], px[:, 1], px[:, 2]
    grey = (sat < 40) | (val < 40)
    coloured = (hue[~grey] * HUE_BINS // 180) * SAT_BINS + np.minimum((sat[~grey] - 40) * SAT_BINS // 216, SAT_BINS - 1)
    hist = np.bincount(coloured, minlength=HUE_BINS * SAT_BINS).astype(np.float64)
    hist = np.concatenate([hist, np.bincount(np.minimum(val[grey] * 3 // 256, 2), minlength=3)])
    return hist / hist.sum()


def appearance_descriptor(rgb: np.ndarray, keypoints: np.ndarray, layout: str) -> np.ndarray | None:
    """(SIZE,) float32 the torso's and thighs' colour histograms of one detection, or None when
    its shoulders and hips are not all seen.

    Args:
        rgb: (H, W, 3) uint8 the frame, RGB.
        keypoints: (K, 3) pixels and confidence, in `layout` (needs shoulders and hips; knees
            for the thighs, else the torso's histogram stands for both).
    """
    idx = _named(layout)
    need = ("left_shoulder", "right_shoulder", "right_hip", "left_hip")
    if any(n not in idx for n in need) or (keypoints[[idx[n] for n in need], 2] < _MIN_CONFIDENCE).any():
        return None
    ls, rs, rh, lh = (keypoints[idx[n], :2] for n in need)
    torso = _part_histogram(rgb, np.stack([ls, rs, rh, lh]))
    if torso is None:
        return None
    thighs = None
    if "left_knee" in idx and "right_knee" in idx and (keypoints[[idx["left_knee"], idx["right_knee"]], 2] >= _MIN_CONFIDENCE).all():
        lk, rk = keypoints[idx["left_knee"], :2], keypoints[idx["right_knee"], :2]
        thighs = _part_histogram(rgb, np.stack([lh, rh, rk, lk]))
    return np.concatenate([torso, torso if thighs is None else thighs]).astype(np.float32)


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two descriptors (SIZE,): the mean over the two parts of
    sqrt(1 - sum sqrt(p q)), 0 for the same colours, 1 for none in common."""
    a, b = np.asarray(a, np.float64).reshape(2, -1), np.asarray(b, np.float64).reshape(2, -1)
    bc = np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None)).sum(-1)
    return float(np.sqrt(np.clip(1 - bc, 0, None)).mean())
