"""Per-person 2D keypoint tracks: the container and its file, the tracker, the One-Euro filter.

A keypoint file (`*.keypoints.npz`, format "meshcap.keypoints", version 1) is a plain npz:

| key          | shape / type   | meaning                                                    |
|--------------|----------------|------------------------------------------------------------|
| format       | str            | "meshcap.keypoints"                                        |
| version      | int            | 1                                                          |
| layout       | str            | keypoint layout name                                       |
| fps          | float          | frame rate of the source                                   |
| frame_times  | (T,) float64   | timestamp of every frame of the source range, seconds      |
| frame_index  | (T,) int64     | index of each of those frames in the source video          |
| image_size   | (2,) int       | width, height                                              |
| track_ids    | (N,) int       | track id of each row                                       |
| frames       | (N,) int       | frame (0..T-1, into frame_times) of each row               |
| keypoints    | (N, K, 3) f32  | x, y pixels and confidence (0 = not seen)                  |
| source       | str (JSON)     | what produced it (video path, size, detector settings); the keypoint cache compares it |
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from meshcap.errors import InputError
from meshcap.fileio import save_npz_atomic
from meshcap.keypoints.appearance import appearance_distance
from meshcap.keypoints.detect import Detection, is_part_of, keypoint_box
from meshcap.keypoints.layouts import convert_keypoints, get_layout

FORMAT = "meshcap.keypoints"
VERSION = 1


@dataclass(eq=False)
class Tracks:
    """Keypoint tracks of the people in one video.

    tracks: id -> (frames (n,) int into frame_times, keypoints (n, K, 3)); frame_times (T,);
    frame_index (T,) index in the source of each frame; image_size (width, height);
    appearance: id -> (n, D) descriptors of the detections (`meshcap.keypoints.appearance`, NaN
    where there is none), kept for raw detections (the keypoint cache) so that linking can use
    them, or None.
    """

    layout: str
    fps: float
    frame_times: np.ndarray
    image_size: tuple[int, int]
    tracks: dict[int, tuple[np.ndarray, np.ndarray]]
    frame_index: np.ndarray | None = None
    source: dict = field(default_factory=dict)
    appearance: dict[int, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.frame_times = np.asarray(self.frame_times, dtype=np.float64)
        if self.frame_index is None:
            self.frame_index = np.arange(len(self.frame_times))
        self.frame_index = np.asarray(self.frame_index, dtype=np.int64)
        K = len(get_layout(self.layout))
        for tid, (f, kp) in self.tracks.items():
            f, kp = np.asarray(f, dtype=np.int64), np.asarray(kp, dtype=np.float32)
            if f.ndim != 1 or kp.shape != (len(f), K, 3):
                raise InputError(f"track {tid}: frames (n,) and keypoints (n, {K}, 3) expected, "
                                 f"got {f.shape} and {kp.shape}")
            self.tracks[tid] = (f, kp)

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)

    def check_in_image(self, where: str = "keypoints", margin: float = 0.5) -> None:
        """Raise InputError naming the first seen keypoint that lies more than `margin` of the
        image's size beyond its edges: a wrong image size or corrupt coordinates (detectors
        place truncated joints a little outside the frame, never far)."""
        w, h = self.image_size
        lo = np.array([-margin * w, -margin * h])
        hi = np.array([(1 + margin) * w, (1 + margin) * h])
        names = get_layout(self.layout).names
        for tid, (f, kp) in self.tracks.items():
            xy = kp[..., :2]
            bad = (kp[..., 2] > 0) & ((xy < lo) | (xy > hi) | ~np.isfinite(xy)).any(-1)
            if bad.any():
                i, k = np.argwhere(bad)[0]
                x, y = xy[i, k]
                raise InputError(f"{where}: person {tid}, frame {int(self.frame_index[f[i]])}: keypoint "
                                 f"{names[k]} at ({x:.4g}, {y:.4g}) lies far outside the {w}x{h} image "
                                 "(a wrong --image-size, or corrupt coordinates)")

    def __len__(self) -> int:
        return len(self.tracks)

    def per_frame(self) -> list[list[tuple[int, np.ndarray]]]:
        """For every frame, the (track id, keypoints (K, 3)) seen in it."""
        out: list[list] = [[] for _ in range(self.num_frames)]
        for tid, (f, kp) in sorted(self.tracks.items()):
            for i, k in zip(f, kp):
                out[i].append((tid, k))
        return out

    def convert(self, layout: str) -> "Tracks":
        """The same tracks in another layout (by keypoint name; see `convert_keypoints`)."""
        conv = {t: (f, convert_keypoints(kp, self.layout, layout)) for t, (f, kp) in self.tracks.items()}
        return Tracks(layout, self.fps, self.frame_times, self.image_size, conv, self.frame_index, dict(self.source))

    def save(self, path: str | Path) -> Path:
        ids = sorted(self.tracks)
        K = len(get_layout(self.layout))
        rows = [(t, f, kp) for t in ids for f, kp in [self.tracks[t]]]
        arrays = dict(
            format=np.array(FORMAT), version=np.array(VERSION), layout=np.array(self.layout),
            fps=np.array(float(self.fps)), frame_times=self.frame_times, frame_index=self.frame_index,
            image_size=np.asarray(self.image_size, dtype=np.int64),
            track_ids=np.concatenate([np.full(len(f), t) for t, f, _ in rows]).astype(np.int64) if rows else np.zeros(0, np.int64),
            frames=np.concatenate([f for _, f, _ in rows]).astype(np.int64) if rows else np.zeros(0, np.int64),
            keypoints=np.concatenate([kp for *_, kp in rows]).astype(np.float32) if rows else np.zeros((0, K, 3), np.float32),
            source=np.array(json.dumps(self.source, sort_keys=True)))
        if self.appearance is not None and rows and all(t in self.appearance for t in ids):
            arrays["appearance"] = np.concatenate([self.appearance[t] for t in ids]).astype(np.float32)
        return save_npz_atomic(path, arrays, compressed=True)

    @classmethod
    def load(cls, path: str | Path) -> "Tracks":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise InputError(f"{path}: no such keypoint file") from None
        except Exception as e:
            raise InputError(f"{path}: not a readable keypoint file ({e})") from None
        if str(d.get("format", "")) != FORMAT:
            raise InputError(f"{path}: not a meshcap keypoint file (format {str(d.get('format'))!r})")
        need = ("layout", "fps", "frame_times", "image_size", "track_ids", "frames", "keypoints")
        missing = [k for k in need if k not in d]
        if missing:
            raise InputError(f"{path}: missing {', '.join(missing)}")
        try:
            layout = get_layout(str(d["layout"]))
        except Exception as e:
            raise InputError(f"{path}: {e}") from None
        kp, frames, ids = d["keypoints"], d["frames"], d["track_ids"]
        T = len(d["frame_times"])
        if kp.ndim != 3 or kp.shape[1:] != (len(layout), 3) or frames.shape != (len(kp),) or ids.shape != (len(kp),):
            raise InputError(f"{path}: keypoints must be (N, {len(layout)}, 3) with N frames and track ids, "
                             f"got {kp.shape}, {frames.shape}, {ids.shape}")
        if len(frames) and (frames.min() < 0 or frames.max() >= T):
            raise InputError(f"{path}: frame numbers outside 0..{T - 1}")
        check_keypoints(kp, path)
        app = d.get("appearance")
        if app is not None and (app.ndim != 2 or len(app) != len(kp)):
            raise InputError(f"{path}: appearance must be (N, D) with one row per keypoint row, got {app.shape}")
        tracks, appearance = {}, ({} if app is not None else None)
        for t in np.unique(ids):
            m = ids == t
            tracks[int(t)] = (frames[m], kp[m])
            if app is not None:
                appearance[int(t)] = app[m]
        try:
            source = json.loads(str(d.get("source", "{}")))
        except json.JSONDecodeError:
            source = {}
        return cls(layout.name, float(d["fps"]), d["frame_times"], tuple(int(v) for v in d["image_size"]),
                   tracks, d.get("frame_index"), source, appearance)


def check_keypoints(kp: np.ndarray, where) -> None:
    """Keypoints (..., 3) from a file: positions finite where confidence > 0, confidence in [0, 1]."""
    if not np.isfinite(kp[..., 2]).all():
        raise InputError(f"{where}: keypoint confidences contain NaN or infinite values")
    if (kp[..., 2] < 0).any() or (kp[..., 2] > 1.0 + 1e-6).any():
        raise InputError(f"{where}: keypoint confidences must lie in [0, 1]")
    if not np.isfinite(kp[..., :2][kp[..., 2] > 0]).all():
        raise InputError(f"{where}: keypoint positions contain NaN or infinite values")


# -- tracking ----------------------------------------------------------------------------------

@dataclass
class TrackerOptions:
    """max_gap: frames a person may go unseen and keep their id; min_length: shorter tracks are
    dropped; min_mean_confidence: tracks whose keypoints are on average less sure are dropped;
    max_distance: largest match distance, in units of the person's size; max_part_share: a track
    that is a part of another person (`detect.is_part_of`: inside their box, on their joints) in
    more than this share of its frames is dropped (1 keeps every such track); appearance_weight:
    what a match's appearance distance (0-1, `keypoints.appearance`) adds to its cost, where
    both the track and the detection have one (0: keypoints alone)."""

    max_gap: int = 15
    min_length: int = 10
    min_mean_confidence: float = 0.3
    max_distance: float = 1.0
    max_part_share: float = 0.4
    appearance_weight: float = 0.3


def _size(kp: np.ndarray) -> float:
    ok = kp[:, 2] > 0.3
    if ok.sum() < 2:
        ok = kp[:, 2] > 0
    xy = kp[ok, :2]
    return float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1.0)) if len(xy) >= 2 else 1.0


def _distance(pred: np.ndarray, kp: np.ndarray, scale: float) -> float:
    """Mean distance of keypoints both sides saw, relative to `scale`, the track's own recent
    size (inf if too few are shared). Not the larger of the two sizes: a near, large person
    would then make a far, small one's track a close match (in camera 1 of the Pose2Sim demo
    a bystander's track took the subject over that way)."""
    both = (pred[:, 2] > 0.2) & (kp[:, 2] > 0.2)
    if both.sum() < 3:
        return math.inf
    d = np.linalg.norm(pred[both, :2] - kp[both, :2], axis=1)
    return float(d.mean() / scale)


class Tracker:
    """Links per-frame detections into tracks online, one frame at a time.

    Each live track predicts its keypoints with constant velocity; detections are assigned to
    tracks by the Hungarian algorithm on the mean keypoint distance (relative to body size),
    gated by `max_distance` (widened with the time unseen), plus `appearance_weight` times the
    appearance distance between the detection and the track's running mean appearance where
    both have one (what people wear tells them apart where they cross, or meet and turn back,
    and where they are fits either labelling). Unmatched detections start new
    tracks; tracks unseen for more than `max_gap` frames end. `update` hands back the tracks
    that ended in that frame and are kept (long and sure enough), so that they can be used
    while the video goes on; `tracks()` gives every kept track with its final id (ids count up
    from 0 in order of first appearance).

        tracker = Tracker()
        for dets in frames:
            for key, frames, kps in tracker.update(dets): ...   # ended: fit it now
        final = tracker.tracks()   # {id: (frames, kps)}; tracker.key_of[id] = its key
    """

    def __init__(self, options: TrackerOptions | None = None):
        self.options = options or TrackerOptions()
        self.t = 0
        self._live: list[dict] = []
        self._done: list[dict] = []
        self._count = 0
        self.key_of: dict[int, int] = {}

    def _kept(self, tr: dict) -> bool:
        o = self.options
        return (len(tr["frames"]) >= o.min_length
                and float(np.mean([k[:, 2].mean() for k in tr["kps"]])) >= o.min_mean_confidence
                and (o.max_part_share >= 1 or self._part_share(tr) <= o.max_part_share))

    def _part_share(self, tr: dict) -> float:
        """The share of a track's frames in which it is a part of someone else's detection
        (a second find of that person, `detect.is_part_of`) and moves with them: its box's
        centre, relative to theirs, spreads over at most 0.3 of their size (10th to 90th
        percentile; the Pose2Sim ghosts spread 0.05-0.24), where someone passing behind them
        sweeps across. Every other track
        counts, kept or not, so a track is judged alike when it ends and at the end of the
        video: all its frames and theirs until then are in the past."""
        lo, hi = tr["frames"][0], tr["frames"][-1]
        others = [dict(zip(o["frames"], o["kps"])) for o in self._live + self._done
                  if o is not tr and o["frames"][-1] >= lo and o["frames"][0] <= hi]
        offsets = []
        for f, k in zip(tr["frames"], tr["kps"]):
            host = next((o[f] for o in others if f in o and is_part_of(k, o[f])), None)
            if host is not None:
                a, b = keypoint_box(k), keypoint_box(host)
                offsets.append(((a[:2] + a[2:]) - (b[:2] + b[2:])) / 2 / max(b[2:] - b[:2]))
        if not offsets:
            return 0.0
        spread = np.percentile(offsets, 90, axis=0) - np.percentile(offsets, 10, axis=0)
        return len(offsets) / len(tr["frames"]) if spread.max() <= 0.3 else 0.0

    @staticmethod
    def _arrays(tr: dict) -> tuple[int, np.ndarray, np.ndarray]:
        return tr["key"], np.asarray(tr["frames"], np.int64), np.stack(tr["kps"]).astype(np.float32)

    def update(self, dets: list[Detection]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Link one frame's detections. Returns the kept tracks that ended with this frame, each
        (key, frames (n,), keypoints (n, K, 3)); the key is the track's for good, its id is not
        known before `tracks()`."""
        o, t, live = self.options, self.t, self._live
        preds = []
        for tr in live:
            last_t, last = tr["frames"][-1], tr["kps"][-1]
            p = last.copy()
            if tr["vel"] is not None:
                p[:, :2] += tr["vel"] * (t - last_t)
            preds.append(p)
        cost = np.full((len(live), len(dets)), np.inf)
        gates = np.array([o.max_distance * (1 + 0.1 * (t - tr["frames"][-1] - 1)) for tr in live])
        for i, (gate, p) in enumerate(zip(gates, preds)):
            scale = float(np.median([_size(k) for k in live[i]["kps"][-5:]]))  # one odd frame cannot shrink it
            for j, d in enumerate(dets):
                c = _distance(p, d.keypoints, scale)
                if c <= gate:  # the gate is on where the keypoints are; appearance only ranks
                    if o.appearance_weight > 0 and live[i]["app"] is not None and d.appearance is not None:
                        c += o.appearance_weight * appearance_distance(live[i]["app"], d.appearance)
                    cost[i, j] = c
        matched_d = set()
        if live and dets:
            # leaving a track or a detection unmatched costs `max_distance` (the gate of a track
            # seen last frame; plus half the largest appearance cost, so that a gated match
            # still costs less than leaving both unmatched): without that option a square
            # assignment with a forbidden pair in it trades two good matches for two crossed ones
            n, m = cost.shape
            alone = o.max_distance + 0.5 * max(o.appearance_weight, 0.0)
            full = np.full((n + m, m + n), 1e6)
            full[:n, :m] = np.where(np.isfinite(cost), cost, 1e6)
            full[np.arange(n), m + np.arange(n)] = alone
            full[n + np.arange(m), np.arange(m)] = alone
            full[n:, m:] = 0.0
            rows, cols = linear_sum_assignment(full)
            for i, j in zip(rows, cols):
                if i < n and j < m and np.isfinite(cost[i, j]):
                    tr, kp = live[i], dets[j].keypoints
                    dt = t - tr["frames"][-1]
                    v = (kp[:, :2] - tr["kps"][-1][:, :2]) / dt
                    seen = (kp[:, 2] > 0.2) & (tr["kps"][-1][:, 2] > 0.2)
                    v[~seen] = 0
                    tr["vel"] = v if tr["vel"] is None else 0.5 * tr["vel"] + 0.5 * v
                    tr["frames"].append(t)
                    tr["kps"].append(kp)
                    a = dets[j].appearance
                    if a is not None and np.isfinite(a).all():
                        # a running mean: one odd frame (a turn, a shadow) moves it little
                        tr["app"] = a.astype(np.float64) if tr["app"] is None else 0.8 * tr["app"] + 0.2 * a
                    matched_d.add(j)
        for j, d in enumerate(dets):
            if j not in matched_d:
                a = d.appearance
                live.append(dict(frames=[t], kps=[d.keypoints], vel=None, key=self._count,
                                 app=a.astype(np.float64) if a is not None and np.isfinite(a).all() else None))
                self._count += 1
        still, ended = [], []
        for tr in live:
            (still if t - tr["frames"][-1] <= o.max_gap else ended).append(tr)
        self._live = still
        self._done.extend(ended)
        self.t += 1
        return [self._arrays(tr) for tr in ended if self._kept(tr)]

    def live(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """The kept tracks that have not ended yet (key, frames, keypoints), as they stand."""
        return [self._arrays(tr) for tr in self._live if self._kept(tr)]

    def tracks(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Every kept track, ended or live: id -> (frames, keypoints); fills `key_of`."""
        kept = [tr for tr in self._done + self._live if self._kept(tr)]
        kept.sort(key=lambda tr: tr["frames"][0])
        self.key_of = {i: tr["key"] for i, tr in enumerate(kept)}
        return {i: self._arrays(tr)[1:] for i, tr in enumerate(kept)}


def track_detections(detections: list[list[Detection]], options: TrackerOptions | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Link per-frame detections into tracks (`Tracker`). Returns id -> (frames, keypoints
    (n, K, 3)); ids count up from 0 in order of first appearance among the tracks kept."""
    tracker = Tracker(options)
    for dets in detections:
        tracker.update(dets)
    return tracker.tracks()


# -- One-Euro filter ---------------------------------------------------------------------------
# Written here: it is ten lines, and the PyPI packages that implement it filter one scalar
# per call, not arrays with confidences and gaps.

def one_euro(times: np.ndarray, values: np.ndarray, min_cutoff: float = 1.0, beta: float = 0.05,
             d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter (Casiez et al., CHI 2012) along axis 0 of values (n, ...) sampled at
    `times` (n,) seconds (any spacing): smooths jitter at low speed, follows fast motion."""
    out = np.array(values, dtype=np.float64)
    if len(out) < 2:
        return out.astype(values.dtype)

    def alpha(cutoff, dt):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    dx_prev = np.zeros_like(out[0])
    for i in range(1, len(out)):
        dt = max(float(times[i] - times[i - 1]), 1e-6)
        dx = (values[i] - out[i - 1]) / dt
        a_d = alpha(d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * dx_prev
        cutoff = min_cutoff + beta * np.abs(dx_hat)
        a = alpha(cutoff, dt)
        out[i] = a * values[i] + (1 - a) * out[i - 1]
        dx_prev = dx_hat
    return out.astype(values.dtype)


def smooth_tracks(tracks: Tracks, min_cutoff: float = 1.0, beta: float = 0.05) -> Tracks:
    """One-Euro filter the x, y of every track (confidences unchanged); a gap restarts the filter
    so a person's reappearance is not pulled toward where they were last seen."""
    out = {}
    for tid, (f, kp) in tracks.tracks.items():
        kp = kp.copy()
        breaks = np.flatnonzero(np.diff(f) > 1) + 1
        for seg in np.split(np.arange(len(f)), breaks):
            if len(seg) < 2:
                continue
            t = tracks.frame_times[f[seg]]
            xy = kp[seg, :, :2].copy()
            for k in range(xy.shape[1]):  # unseen keypoints: interpolated, so they pull nothing
                seen = kp[seg, k, 2] > 0
                if 0 < seen.sum() < len(seg):
                    for c in range(2):
                        xy[~seen, k, c] = np.interp(t[~seen], t[seen], xy[seen, k, c])
            kp[seg, :, :2] = one_euro(t, xy, min_cutoff, beta)
        out[tid] = (f, kp)
    return Tracks(tracks.layout, tracks.fps, tracks.frame_times, tracks.image_size, out,
                  tracks.frame_index, dict(tracks.source))
