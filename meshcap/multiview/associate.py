"""Which detection in each view is the same person: cross-view association by triangulation
consistency, then identities over time by 3D proximity.

Per frame, every way of picking one detection (or none) per camera is triangulated and scored
by how well the result reprojects into the views it used (a robust cost per view; a view left
out costs as much as a poor fit, so more views win when they agree). The best pick is a
person; its detections are removed and the next person is sought, up to `max_people`. People
are then linked over frames by the distance between their 3D centres (Hungarian matching).
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from meshcap.multiview.calibration import Camera
from meshcap.multiview.triangulate import triangulate

_SCALE_PX = 15.0
_MISSING = np.log1p(9.0)  # a view left out costs as much as a median error of 3 scales


def _view_costs(kp: np.ndarray, cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """For candidate picks kp (M, C, K, 3): (M,) total cost, (M, K, 3) triangulated points."""
    M, C, K, _ = kp.shape
    X, _, res = triangulate(kp.transpose(1, 0, 2, 3).reshape(C, M * K, 3), cameras, scale_px=_SCALE_PX)
    res = res.reshape(C, M, K)
    used = (kp[..., 2] > 0.3).sum(-1).T >= 4  # (C, M): the view has a detection with enough points
    with warnings.catch_warnings():  # views that saw nothing give all-NaN rows: that is the point
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(res, axis=-1)  # (C, M)
    cost = np.where(used & np.isfinite(med), np.log1p(np.square(np.nan_to_num(med, nan=1e6) / _SCALE_PX)), _MISSING)
    cost = np.where(used, cost, _MISSING).sum(0)
    cost[used.sum(0) < 2] = np.inf
    return cost, X.reshape(M, K, 3)


def associate_frame(candidates: list[list[np.ndarray]], cameras: list[Camera], max_people: int,
                    max_cost: float | None = None) -> list[tuple[list[int | None], np.ndarray]]:
    """People in one frame: candidates[c] lists the detections (K, 3) of camera c. Returns, per
    person found, (index of its detection in each camera or None, triangulated keypoints (K, 3))."""
    C = len(cameras)
    K = next((len(d) for cs in candidates for d in cs), 0)
    if K == 0:
        return []
    max_cost = (C - 2) * _MISSING + 2 * np.log1p(4.0) if max_cost is None else max_cost
    free = [list(range(len(cs))) for cs in candidates]
    people = []
    for _ in range(2 * max_people):  # duplicates take turns too
        if len(people) >= max_people:
            break
        options = [f + [None] for f in free]
        picks = list(itertools.product(*options))
        kp = np.zeros((len(picks), C, K, 3))
        for m, pick in enumerate(picks):
            for c, i in enumerate(pick):
                if i is not None:
                    kp[m, c] = candidates[c][i]
        cost, X = _view_costs(kp, cameras)
        best = int(np.argmin(cost))
        if not np.isfinite(cost[best]) or cost[best] > max_cost:
            break
        pick = list(picks[best])
        for c, i in enumerate(pick):
            if i is not None:
                free[c].remove(i)
        # A detector sometimes reports one body twice; such a second pick lands on a person
        # already found, and is dropped (its detections are used up all the same).
        if not any(_same_place(X[best], Y) for _, Y in people):
            people.append((pick, X[best]))
    return people


def _same_place(X: np.ndarray, Y: np.ndarray, radius: float = 0.3) -> bool:
    """Whether two triangulated bodies (K, 3) are the same: median keypoint distance < radius."""
    d = np.linalg.norm(X - Y, axis=-1)
    d = d[np.isfinite(d)]
    return len(d) > 0 and float(np.median(d)) < radius


def link_people(frames: list[list[tuple[list[int | None], np.ndarray]]], max_jump: float = 0.5,
                max_gap: int = 15) -> list[dict[int, int]]:
    """Identities over time: per person, {frame: index into that frame's people}. People are
    matched frame to frame by the distance of their 3D centres (metres), within `max_jump`
    per frame of gap; unmatched ones start new identities."""
    tracks: list[dict[int, int]] = []
    last: list[tuple[int, np.ndarray]] = []  # per identity: (frame, centre)
    for t, people in enumerate(frames):
        centres = [np.nanmean(X, axis=0) for _, X in people]
        alive = [k for k, (f, _) in enumerate(last) if t - f <= max_gap]
        cost = np.full((len(alive), len(centres)), 1e6)
        for a, k in enumerate(alive):
            f, c0 = last[k]
            for b, c in enumerate(centres):
                d = np.linalg.norm(c - c0)
                if np.isfinite(d) and d <= max_jump * (t - f):
                    cost[a, b] = d
        matched = set()
        if cost.size:
            for a, b in zip(*linear_sum_assignment(cost)):
                if cost[a, b] < 1e6:
                    k = alive[a]
                    tracks[k][t] = b
                    last[k] = (t, centres[b])
                    matched.add(b)
        for b, c in enumerate(centres):
            if b not in matched and np.isfinite(c).all():
                tracks.append({t: b})
                last.append((t, c))
    return tracks


def _pair_cost(kp_a: np.ndarray, kp_b: np.ndarray, cam_a: Camera, cam_b: Camera) -> float:
    """Median reprojection error (pixels, relative to the person's size in view a) of two
    views' keypoints (n, K, 3) over their shared frames, triangulated from just those two."""
    n, K = kp_a.shape[:2]
    pts = np.stack([kp_a, kp_b]).reshape(2, n * K, 3)
    _, _, res = triangulate(pts, [cam_a, cam_b], iterations=1, scale_px=_SCALE_PX)
    seen = (pts[..., 2] > 0.3).all(0)
    r = res[:, seen]
    if r.size < 8:
        return np.inf
    box = kp_a[..., 1][kp_a[..., 2] > 0.3]
    size = max(np.ptp(box), 1.0) if box.size else 1.0
    return float(np.nanmedian(r)) / size


def associate_tracks(tracks: list[dict[int, tuple[np.ndarray, np.ndarray]]], cameras: list[Camera],
                     offsets: list[int], T: int, max_relative_error: float = 0.04,
                     min_shared: int = 5) -> list[dict[int, list[int]]]:
    """People as groups of per-camera tracks: per person {camera: [track ids]}.

    Every pair of tracks of two cameras is scored over the frames they share (the two views
    triangulated, the median reprojection error relative to the person's size); pairs are
    merged greedily, best first, into groups that never hold two tracks of one camera at the
    same time. A person's track broken in one view is thereby rejoined through the others, and
    ids follow the per-camera tracks instead of being re-decided every frame.
    """
    C = len(cameras)
    spans: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for c in range(C):
        for tid, (f, kp) in tracks[c].items():
            g = np.asarray(f) - offsets[c]
            keep = (g >= 0) & (g < T)
            if keep.sum():
                spans[(c, tid)] = (g[keep], np.asarray(kp)[keep])
    pairs = []
    keys = sorted(spans)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if a[0] == b[0]:
                continue
            fa, ka = spans[a]
            fb, kb = spans[b]
            shared, ia, ib = np.intersect1d(fa, fb, return_indices=True)
            if len(shared) < min_shared:
                continue
            cost = _pair_cost(ka[ia], kb[ib], cameras[a[0]], cameras[b[0]])
            if cost <= max_relative_error:
                pairs.append((cost, a, b))
    group = {k: {k} for k in keys}

    def clash(g1: set, g2: set) -> bool:
        for x in g1:
            for y in g2:
                if x[0] == y[0] and np.intersect1d(spans[x][0], spans[y][0]).size:
                    return True
        return False

    for _, a, b in sorted(pairs):
        ga, gb = group[a], group[b]
        if ga is gb or clash(ga, gb):
            continue
        ga |= gb
        for k in gb:
            group[k] = ga
    people, seen = [], set()
    for g in group.values():
        if id(g) in seen or len({c for c, _ in g}) < 2:
            continue
        seen.add(id(g))
        person: dict[int, list[int]] = {}
        for c, tid in sorted(g):
            person.setdefault(c, []).append(tid)
        people.append(person)
    return people
