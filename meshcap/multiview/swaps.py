"""Left/right swaps: a detector that, in one view, labels a person's left side as the right for
a while (common from behind, or when the legs cross), found and undone against the other views.

For each view and frame, the other views triangulate the person's points; the view's own
left/right points are compared with where those land in it, as labelled and swapped. A frame
whose swapped labelling lands clearly closer is swapped, and a short run of frames (a median
over `window` frames) smooths the decisions over time, so one noisy frame neither starts nor
breaks a swap. A swapped view also pulls the others' triangulation, so that a good view can
look swapped: each pass changes only the clearest view of each frame, and the next pass looks
again with that repair made (as many passes as views, at most).
"""
from __future__ import annotations

import warnings

import numpy as np

from meshcap.keypoints.layouts import get_layout
from meshcap.multiview.calibration import Camera
from meshcap.multiview.triangulate import triangulate

MIN_GAIN = 0.5  # the swapped labelling's median error under this share of the labelled one
MIN_ERROR = 0.04  # and the labelled one's over this share of the person's size in that view


def _swap_costs(kp: np.ndarray, cameras: list[Camera], layout: str,
                min_confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled, swapped, size), each (C, T): the median pixel distance of each view's paired
    left/right points from where the other views put them, as labelled and swapped, and the
    person's size in the view (pixels); NaN where it cannot be told."""
    C, T, K, _ = kp.shape
    perm = np.asarray(get_layout(layout).flip_permutation())
    paired = np.flatnonzero(perm != np.arange(K))
    labelled = np.full((C, T), np.nan)
    swapped = np.full((C, T), np.nan)
    ys = np.where(kp[..., 2] >= min_confidence, kp[..., 1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        size = np.nanmax(ys, -1) - np.nanmin(ys, -1)
        for c in range(C):
            others = [o for o in range(C) if o != c]
            if len(others) < 2:
                continue
            X, _, _ = triangulate(kp[others].reshape(len(others), T * K, 3), [cameras[o] for o in others],
                                  min_confidence=min_confidence)
            X = X.reshape(T, K, 3)[:, paired]
            ok = np.isfinite(X).all(-1)
            uv = np.full(X.shape[:2] + (2,), np.nan)
            uv[ok] = cameras[c].project(X[ok]).numpy()
            own = kp[c][:, paired]
            mirror = kp[c][:, perm[paired]]
            seen = (own[..., 2] >= min_confidence) & (mirror[..., 2] >= min_confidence) & ok
            e_l = np.where(seen, np.linalg.norm(uv - own[..., :2], axis=-1), np.nan)
            e_s = np.where(seen, np.linalg.norm(uv - mirror[..., :2], axis=-1), np.nan)
            enough = seen.sum(-1) >= 4
            labelled[c] = np.where(enough, np.nanmedian(e_l, -1), np.nan)
            swapped[c] = np.where(enough, np.nanmedian(e_s, -1), np.nan)
    return labelled, swapped, size


def _median_filter(x: np.ndarray, window: int) -> np.ndarray:
    """(C, T) bool: the majority of each frame's `window` neighbours (edges: what there is)."""
    h = window // 2
    pad = np.pad(x.astype(float), ((0, 0), (h, h)), mode="edge")
    runs = np.lib.stride_tricks.sliding_window_view(pad, window, axis=1)
    return runs.mean(-1) > 0.5


def find_swaps(kp: np.ndarray, cameras: list[Camera], layout: str = "blazepose33", window: int = 5,
               min_confidence: float = 0.3) -> np.ndarray:
    """(C, T) bool: where view c's keypoints kp (C, T, K, 3) (pixels + confidence, one person,
    zeros where unseen) have the person's left and right swapped. Needs three views or more
    (two cannot outvote each other); with fewer, nothing is swapped."""
    kp = np.asarray(kp, dtype=np.float64)
    C, T = kp.shape[:2]
    if len(cameras) != C:
        raise ValueError(f"keypoints of {C} views, but {len(cameras)} cameras")
    found = np.zeros((C, T), bool)
    if C < 3:
        return found
    perm = get_layout(layout).flip_permutation()
    current = kp
    for _ in range(C + 1):
        lab, swp, size = _swap_costs(current, cameras, layout, min_confidence)
        with np.errstate(invalid="ignore"):
            vote = (swp < MIN_GAIN * lab) & (lab > MIN_ERROR * np.nan_to_num(size, nan=np.inf))
            gain = np.where(vote, (lab - swp) / size, -np.inf)
        # one view per frame and pass, the clearest: a swapped view also spoils the other
        # views' triangulation, which can make a good view look swapped until it is repaired
        best = gain.argmax(0)
        change = np.zeros_like(found)
        change[best, np.arange(T)] = vote[best, np.arange(T)]
        new = _median_filter(found ^ change, window)
        if (new == found).all():
            break
        found = new
        current = apply_swaps(kp, found, perm)
    return found


def apply_swaps(kp: np.ndarray, swapped: np.ndarray, perm) -> np.ndarray:
    """A copy of kp (C, T, K, 3) with the rows of `swapped` (C, T) relabelled by `perm` (the
    layout's left/right permutation)."""
    out = np.array(kp, copy=True)
    out[swapped] = out[swapped][:, perm]
    return out
