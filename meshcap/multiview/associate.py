"""Which track in each view is the same person: cross-view association of per-camera tracks
by triangulation consistency (see `associate_tracks`)."""
from __future__ import annotations

import numpy as np

from meshcap.multiview.calibration import Camera
from meshcap.multiview.triangulate import triangulate

_SCALE_PX = 15.0


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
