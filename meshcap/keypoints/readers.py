"""External keypoint files in and out: COCO keypoint results, OpenPose JSON folders, and
meshcap's own keypoint npz.

- COCO keypoint-results JSON: a list of {"image_id": frame index, "keypoints": [x, y, v] * 17,
  "score": ..., optional "track_id"} (`coco17`). v is taken as a confidence: COCO ground-truth
  flags (0 absent, 1 occluded, 2 visible) map to 0, 0.5 and 1.
- OpenPose: a folder of per-frame `*_keypoints.json` files, each {"people": [{
  "pose_keypoints_2d": [x, y, c] * 25 (BODY_25) or * 18 (COCO-18), "person_id": ...}]}; files
  are ordered by name (OpenPose's `_000000000123_` numbering).
- `*.npz`: `meshcap.keypoints.tracks.Tracks`.

Detections without track ids (OpenPose's person_id is usually -1) are linked by the tracker.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from meshcap.errors import InputError
from meshcap.fileio import write_text_atomic
from meshcap.keypoints.detect import Detection
from meshcap.keypoints.layouts import get_layout
from meshcap.keypoints.tracks import Tracks, TrackerOptions, check_keypoints, track_detections

_OPENPOSE_LAYOUTS = {25: "openpose25", 18: "openpose18"}


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def _keypoint_array(values, n: int, where: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: keypoints must be numbers") from None
    if a.shape != (3 * n,):
        raise InputError(f"{where}: expected {3 * n} numbers (x, y, confidence for {n} keypoints), "
                         f"got {a.size}")
    a = a.reshape(n, 3).astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError(f"{where}: keypoints contain NaN or infinite values")
    return a


def _build(layout: str, per_frame: list[list[tuple[int | None, np.ndarray]]], fps: float,
           image_size, tracker: TrackerOptions | None, where) -> Tracks:
    T = len(per_frame)
    rows = [(t, tid, kp) for t, dets in enumerate(per_frame) for tid, kp in dets]
    if rows:
        check_keypoints(np.stack([kp for *_, kp in rows]), where)
    if rows and all(tid is not None for _, tid, _ in rows):
        tracks: dict[int, tuple[list, list]] = {}
        for t, tid, kp in rows:
            f, k = tracks.setdefault(int(tid), ([], []))
            if f and f[-1] == t:
                raise InputError(f"{where}: track {tid} appears twice in frame {t}")
            f.append(t)
            k.append(kp)
        linked = {tid: (np.asarray(f), np.stack(k)) for tid, (f, k) in tracks.items()}
    else:
        dets = [[Detection(kp, float(kp[:, 2].mean()), layout) for _, kp in frame] for frame in per_frame]
        linked = track_detections(dets, tracker)
    if image_size is None:
        xy = np.concatenate([kp[kp[:, 2] > 0, :2] for *_, kp in rows]) if rows else np.zeros((1, 2))
        reach = xy.max(0)
        if (reach > 100_000).any() or (xy.min(0) < -100_000).any():
            raise InputError(f"{where}: keypoint coordinates reach ({xy[:, 0].min():.4g}..{reach[0]:.4g}, "
                             f"{xy[:, 1].min():.4g}..{reach[1]:.4g}) pixels: corrupt coordinates")
        image_size = (int(np.ceil(reach[0])) + 1, int(np.ceil(reach[1])) + 1)
    return Tracks(layout, fps, np.arange(T) / fps, tuple(image_size), linked)


def read_coco(path: str | Path, fps: float = 30.0, num_frames: int | None = None,
              image_size: tuple[int, int] | None = None, tracker: TrackerOptions | None = None) -> Tracks:
    """Tracks from a COCO keypoint-results JSON (image_id = frame index)."""
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]  # a COCO dataset file: its annotations
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of keypoint results")
    n = len(get_layout("coco17"))
    entries = []
    for i, e in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict) or "image_id" not in e or "keypoints" not in e:
            raise InputError(f"{where}: needs 'image_id' and 'keypoints'")
        try:
            frame = int(e["image_id"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: image_id must be a frame number, got {e['image_id']!r}") from None
        if frame < 0:
            raise InputError(f"{where}: image_id must not be negative")
        kp = _keypoint_array(e["keypoints"], n, where)
        if kp[:, 2].max() > 1.0:  # ground-truth visibility flags
            kp[:, 2] = np.select([kp[:, 2] >= 2, kp[:, 2] >= 1], [1.0, 0.5], 0.0)
        tid = e.get("track_id")
        entries.append((frame, None if tid is None else int(tid), kp))
    T = max([f for f, *_ in entries], default=-1) + 1
    if num_frames is not None:
        if T > num_frames:
            raise InputError(f"{path}: frame {T - 1} is beyond the video's {num_frames} frames")
        T = num_frames
    per_frame: list[list] = [[] for _ in range(T)]
    for f, tid, kp in entries:
        per_frame[f].append((tid, kp))
    if any(tid is None for _, tid, _ in entries) and any(tid is not None for _, tid, _ in entries):
        raise InputError(f"{path}: some entries have a track_id and some do not")
    return _build("coco17", per_frame, fps, image_size, tracker, path)


def _for_file(kp: np.ndarray) -> np.ndarray:
    """Keypoints as the file formats write them: unseen ones (confidence 0) as 0, 0, 0."""
    return np.where(kp[..., 2:] > 0, np.nan_to_num(kp), 0.0)


def write_coco(tracks: Tracks, path: str | Path) -> Path:
    """COCO keypoint results (with track_id) of coco17 tracks (others are converted by name)."""
    t = tracks if tracks.layout == "coco17" else tracks.convert("coco17")
    out = []
    for tid, (frames, kp) in sorted(t.tracks.items()):
        for f, k in zip(frames, kp):
            out.append(dict(image_id=int(f), category_id=1, track_id=int(tid),
                            keypoints=[round(float(v), 3) for v in _for_file(k).reshape(-1)],
                            score=round(float(k[:, 2].mean()), 4)))
    return write_text_atomic(path, json.dumps(out))


def read_openpose(folder: str | Path, fps: float = 30.0, image_size: tuple[int, int] | None = None,
                  tracker: TrackerOptions | None = None) -> Tracks:
    """Tracks from an OpenPose output folder of per-frame JSON files (BODY_25 or COCO-18)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of OpenPose JSON files")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(f"{folder}: no OpenPose .json files")

    def frame_number(p: Path) -> int:
        m = re.findall(r"(\d+)", p.stem)
        return int(m[-1]) if m else -1

    numbers = [frame_number(p) for p in files]
    if all(n >= 0 for n in numbers) and len(set(numbers)) == len(numbers):
        files = [p for _, p in sorted(zip(numbers, files))]
    layout, per_frame = None, []
    for p in files:
        data = _load_json(p)
        if not isinstance(data, dict) or not isinstance(data.get("people"), list):
            raise InputError(f"{p}: not an OpenPose keypoint file (no 'people' list)")
        dets = []
        for i, person in enumerate(data["people"]):
            values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
            if values is None:
                raise InputError(f"{p}: person {i} has no 'pose_keypoints_2d'")
            n = len(values) // 3
            if n not in _OPENPOSE_LAYOUTS or len(values) != 3 * n:
                raise InputError(f"{p}: person {i} has {len(values)} numbers; expected 75 (BODY_25) "
                                 "or 54 (COCO-18)")
            if layout is None:
                layout = _OPENPOSE_LAYOUTS[n]
            elif _OPENPOSE_LAYOUTS[n] != layout:
                raise InputError(f"{p}: mixes BODY_25 and COCO-18 keypoints")
            kp = _keypoint_array(values, n, f"{p}: person {i}")
            pid = person.get("person_id", -1)
            pid = pid[0] if isinstance(pid, list) and pid else pid
            dets.append((int(pid) if isinstance(pid, (int, float)) and pid >= 0 else None, kp))
        if any(d[0] is None for d in dets):
            dets = [(None, kp) for _, kp in dets]
        per_frame.append(dets)
    if layout is None:
        raise InputError(f"{folder}: no person in any file")
    if any(tid is None for frame in per_frame for tid, _ in frame):
        per_frame = [[(None, kp) for _, kp in frame] for frame in per_frame]
    return _build(layout, per_frame, fps, image_size, tracker, folder)


def write_openpose(tracks: Tracks, folder: str | Path, name: str = "frame") -> Path:
    """One OpenPose JSON per frame (`{name}_000000000000_keypoints.json`), with person ids."""
    if tracks.layout not in ("openpose25", "openpose18"):
        tracks = tracks.convert("openpose25")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(tracks.per_frame()):
        people = [dict(person_id=[int(tid)], pose_keypoints_2d=[round(float(v), 3) for v in _for_file(kp).reshape(-1)])
                  for tid, kp in frame]
        write_text_atomic(folder / f"{name}_{t:012d}_keypoints.json", json.dumps(dict(version=1.3, people=people)))
    return folder


def read_keypoints(path: str | Path, fps: float = 30.0, image_size: tuple[int, int] | None = None,
                   tracker: TrackerOptions | None = None) -> Tracks:
    """Any supported keypoint input, by what `path` is: a `.npz`, a COCO `.json`, or an
    OpenPose folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such keypoint file or folder")
    if path.is_dir():
        return read_openpose(path, fps, image_size, tracker)
    if path.suffix.lower() == ".npz":
        tracks = Tracks.load(path)
        if tracks.source.get("kind") == "detections":  # a keypoint cache: link it
            from meshcap.keypoints.pipeline import link

            tracks = link(tracks, tracker)
        return tracks
    if path.suffix.lower() == ".json":
        return read_coco(path, fps, image_size=image_size, tracker=tracker)
    raise InputError(f"{path}: unknown keypoint file type (expected .npz, COCO .json, or an OpenPose folder)")
