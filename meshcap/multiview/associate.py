"""Which track in each view is the same person: cross-view association of per-camera tracks
by triangulation consistency (see `associate_tracks`)."""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from meshcap.keypoints.layouts import get_layout
from meshcap.multiview.calibration import Camera
from meshcap.multiview.triangulate import triangulate

_SCALE_PX = 15.0


def _pair_cost(kp_a: np.ndarray, kp_b: np.ndarray, cam_a: Camera, cam_b: Camera) -> float:
    """Reprojection error of two views' keypoints (n, K, 3) over their shared frames,
    triangulated from just those two: the worse view's median, relative to the person's size
    in that view. (The robust triangulation may put all of a mismatch on one view; a median
    pooled over both would then hide it.)"""
    n, K = kp_a.shape[:2]
    pts = np.stack([kp_a, kp_b]).reshape(2, n * K, 3)
    _, _, res = triangulate(pts, [cam_a, cam_b], iterations=1, scale_px=_SCALE_PX)
    seen = (pts[..., 2] > 0.3).all(0)
    if seen.sum() < 4:
        return np.inf
    worst = 0.0
    for kp, r in ((kp_a, res[0, seen]), (kp_b, res[1, seen])):
        box = kp[..., 1][kp[..., 2] > 0.3]
        size = max(np.ptp(box), 1.0) if box.size else 1.0
        worst = max(worst, float(np.nanmedian(r)) / size)
    return worst


def _frame_costs(kp_a: np.ndarray, kp_b: np.ndarray, cam_a: Camera, cam_b: Camera) -> np.ndarray:
    """(n,) per shared frame, the two-view reprojection error (median over keypoints, the
    worse view) relative to the person's size; NaN where too few keypoints are seen by both.
    A detector that swaps a person's left and right in one view (common from behind) is
    still the same person: the lower of the two sides' costs counts."""
    flip = get_layout("blazepose33").flip_permutation() if kp_b.shape[1] == 33 else None
    cost = _side_costs(kp_a, kp_b, cam_a, cam_b)
    return cost if flip is None else np.fmin(cost, _side_costs(kp_a, kp_b[:, flip], cam_a, cam_b))


def _side_costs(kp_a: np.ndarray, kp_b: np.ndarray, cam_a: Camera, cam_b: Camera) -> np.ndarray:
    n, K = kp_a.shape[:2]
    pts = np.stack([kp_a, kp_b]).reshape(2, n * K, 3)
    _, _, res = triangulate(pts, [cam_a, cam_b], iterations=1, scale_px=_SCALE_PX)
    res = res.reshape(2, n, K)
    seen = (kp_a[..., 2] > 0.3) & (kp_b[..., 2] > 0.3)
    out = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for v, kp in enumerate((kp_a, kp_b)):
            ys = np.where(kp[..., 2] > 0.3, kp[..., 1], np.nan)
            size = np.maximum(np.nanmax(ys, -1) - np.nanmin(ys, -1), 1.0)
            out = np.maximum(out, np.nanmedian(np.where(seen, res[v], np.nan), -1) / size)
    return np.where(seen.sum(-1) >= 4, out, np.nan)


Key = tuple[int, int, int]  # (camera, track id, piece of the track)


def _merge(spans: dict[Key, tuple[np.ndarray, np.ndarray]], cameras: list[Camera], max_relative_error: float,
           min_shared: int) -> list[set[Key]]:
    """Groups of pieces: pairs of pieces of two cameras scored over their shared frames, merged
    best first, never two pieces of one camera at the same time in a group."""
    pairs, cost = [], {}
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
            cost[a, b] = cost[b, a] = c = _pair_cost(ka[ia], kb[ib], cameras[a[0]], cameras[b[0]])
            if c <= max_relative_error:
                pairs.append((c, a, b))
    group = {k: {k} for k in keys}

    def compatible(g1: set, g2: set, overlap: int = 0) -> bool:
        """No two pieces of one camera at once (for more than `overlap` frames), and every two
        pieces of two cameras that share frames agree (within twice the pairing threshold):
        two views may agree with a third by an epipolar coincidence and not with each other."""
        for x in g1:
            for y in g2:
                if x[0] == y[0]:
                    if np.intersect1d(spans[x][0], spans[y][0]).size > overlap:
                        return False
                elif cost.get((x, y), 0.0) > 2 * max_relative_error:
                    return False
        return True

    def join(a: Key, b: Key, overlap: int = 0) -> None:
        ga, gb = group[a], group[b]
        if ga is not gb and compatible(ga, gb, overlap):
            ga |= gb
            for k in gb:
                group[k] = ga

    for _, a, b in sorted(pairs):
        join(a, b)
    # Pieces of one track that were cut apart, each confirmed by another view, and that
    # nothing contradicts are one person again: groups of different times share no frames, so
    # only the track links them. (A tracker that hands an id from one person to the next
    # overlaps them by a frame or two.) A piece no other view confirms stays apart: that is
    # where a tracker went off to someone else.
    by_track: dict[tuple[int, int], list[Key]] = {}
    for k in keys:
        by_track.setdefault(k[:2], []).append(k)
    for ks in by_track.values():
        ks.sort(key=lambda k: spans[k][0][0])
        for a, b in zip(ks, ks[1:]):
            if min(len({k[0] for k in group[a]}), len({k[0] for k in group[b]})) >= 2:
                join(a, b, overlap=min_shared)
    out, seen = [], set()
    for g in group.values():
        if id(g) not in seen:
            seen.add(id(g))
            out.append(g)
    return out


def _switches(group: set[Key], spans: dict[Key, tuple[np.ndarray, np.ndarray]], cameras: list[Camera],
              max_frame_error: float, min_run: int) -> dict[Key, list[int]]:
    """{piece: positions where to cut it}: where two pieces of the group disagree (per-frame
    error over `max_frame_error`) for at least `min_run` frames in a row, both are cut at the
    run's ends: which of the two went wrong (a per-camera tracker that swapped two people's
    ids, or followed someone else for a while) is left to the next merge, where each part
    joins whatever it agrees with."""
    cuts: dict[Key, set[int]] = {}
    members = sorted(group)
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            if a[0] == b[0]:
                continue
            (fa, ka), (fb, kb) = spans[a], spans[b]
            _, ia, ib = np.intersect1d(fa, fb, return_indices=True)
            if len(ia) < min_run:
                continue
            bad = _frame_costs(ka[ia], kb[ib], cameras[a[0]], cameras[b[0]]) > max_frame_error  # NaN: not bad
            edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(int), 0]))
            for s, e in zip(edges[::2], edges[1::2]):
                if e - s >= min_run:
                    for key, rows in ((a, ia), (b, ib)):
                        cuts.setdefault(key, set()).update(
                            c for c in (int(rows[s]), int(rows[e - 1]) + 1) if 0 < c < len(spans[key][0]))
    return {k: sorted(v) for k, v in cuts.items() if v}


def associate_tracks(tracks: list[dict[int, tuple[np.ndarray, np.ndarray]]], cameras: list[Camera],
                     offsets: list[int], T: int, max_relative_error: float = 0.04,
                     min_shared: int = 5, max_frame_error: float = 0.1, min_run: int = 5,
                     rounds: int = 3) -> list[dict[int, list[tuple[int, np.ndarray]]]]:
    """People as pieces of per-camera tracks: per person {camera: [(track id, frames)]}, the
    frames in the camera's own numbering.

    Every pair of tracks of two cameras is scored over the frames they share (the two views
    triangulated, the median reprojection error relative to the person's size); pairs are
    merged greedily, best first, into groups that never hold two tracks of one camera at the
    same time. A person's track broken in one view is thereby rejoined through the others, and
    ids follow the per-camera tracks instead of being re-decided every frame.

    Per-camera trackers sometimes swap two people's ids where they cross in that view. So,
    after merging, where two tracks of a group disagree for `min_run` frames or more in a row
    (per-frame error over `max_frame_error` of the person's size) both are cut there, and the
    pieces are merged again (at most `rounds` merges); see `_switches` and `_merge`.
    """
    C = len(cameras)
    spans: dict[Key, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(C):
        for tid, (f, kp) in tracks[c].items():
            g = np.asarray(f) - offsets[c]
            keep = (g >= 0) & (g < T)
            if keep.sum():
                spans[(c, tid, 0)] = (g[keep], np.asarray(kp)[keep])
    pieces = itertools.count(1)  # piece numbers only need to be unique
    for merge in range(rounds):
        groups = _merge(spans, cameras, max_relative_error, min_shared)
        if merge == rounds - 1:
            break  # no merge would follow a cut: the groups must keep describing `spans`
        cuts: dict[Key, list[int]] = {}
        for g in groups:
            if len({k[0] for k in g}) >= 2:
                cuts.update(_switches(g, spans, cameras, max_frame_error, min_run))
        if not cuts:
            break
        for key, at in cuts.items():
            f, kp = spans.pop(key)
            bounds = [0, *at, len(f)]
            for i in range(len(bounds) - 1):
                spans[(key[0], key[1], next(pieces))] = (f[bounds[i]:bounds[i + 1]], kp[bounds[i]:bounds[i + 1]])
    people = []
    for g in groups:
        if len({k[0] for k in g}) < 2:
            continue
        person: dict[int, list[tuple[int, np.ndarray]]] = {}
        for c, tid, piece in sorted(g):
            person.setdefault(c, []).append((tid, spans[(c, tid, piece)][0] + offsets[c]))
        people.append(person)
    return people
