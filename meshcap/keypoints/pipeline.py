"""Video in, keypoint tracks out: decode, detect, track, with a keypoint cache.

The cache is a keypoint file (`meshcap.keypoints.tracks`) of raw per-frame detections (its
source says kind = "detections"; reading it as a keypoint input links them) written next to
the output. It
records what made it (the video's path, size and modification time, the range and stride, the
detector and its settings); a later run with the same inputs reads it instead of detecting
again, so re-fitting with other options costs no detection. Tracking options are not part of
the key: the raw per-frame detections are cached, and tracking reruns (it takes milliseconds).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from meshcap.errors import InputError
from meshcap.keypoints.appearance import SIZE as APPEARANCE_SIZE, appearance_descriptor
from meshcap.keypoints.detect import Detection, Detector, get_detector
from meshcap.keypoints.tracks import Tracker, Tracks, TrackerOptions, smooth_tracks, track_detections
from meshcap.video import VideoReader, prefetched


def cache_path_for(output: str | Path) -> Path:
    """Where the keypoint cache of an output file lives: `motion.npz` -> `motion.keypoints.npz`."""
    output = Path(output)
    name = output.name.split(".")[0] or output.name
    return output.with_name(f"{name}.keypoints.npz")


def _source_key(reader: VideoReader, detector: Detector) -> dict:
    st = reader.path.stat()
    return dict(kind="detections", path=str(reader.path.resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns,
                start=reader.start, end=reader.end, stride=reader.stride,
                detector=detector.name, detector_settings=detector.settings())


def detect_frames(reader: VideoReader, detector: Detector,
                  progress: Callable[[int, int], None] | None = None,
                  on_frame: Callable[[list[Detection], float], None] | None = None,
                  prefetch: int = 4) -> Tracks:
    """Run the detector on every frame; returns the raw detections as one-frame 'tracks'
    (ids in the order found), with the frame times and indices. on_frame(detections, time) is
    called after each frame. Up to `prefetch` frames are decoded ahead, on a thread of their
    own (`meshcap.video.prefetched`; 0: each frame decoded when its turn comes)."""
    times, index, rows = [], [], []
    total = len(reader)
    detector.reset()
    frames = prefetched(reader, prefetch) if prefetch > 0 else reader
    for i, frame in enumerate(frames):
        dets = detector.detect(frame.image, frame.time)
        for det in dets:
            if det.appearance is None:  # what each person looks like, for the tracker
                det.appearance = appearance_descriptor(frame.image, det.keypoints, det.layout)
            rows.append((i, det.keypoints, det.appearance))
        times.append(frame.time)
        index.append(frame.index)
        if on_frame is not None:
            on_frame(dets, frame.time)
        if progress is not None:
            progress(i + 1, max(total, i + 1))
    if not times:
        raise InputError(f"{reader.path}: no frames in the requested range")
    raw = {j: (np.array([f]), kp[None]) for j, (f, kp, _) in enumerate(rows)}
    appearance = {j: np.full((1, APPEARANCE_SIZE), np.nan, np.float32) if a is None else np.asarray(a, np.float32)[None]
                  for j, (_, _, a) in enumerate(rows)}
    return Tracks(detector.layout, reader.info.fps, np.asarray(times),
                  (reader.info.width, reader.info.height), raw, np.asarray(index), appearance=appearance)


def detections_from_raw(raw: Tracks) -> list[list[Detection]]:
    """Each frame's detections of a raw-detections `Tracks` (one-frame tracks), with their
    appearance where it was kept (a cache from before appearances has none)."""
    app = raw.appearance or {}

    def appearance(tid):
        a = app.get(tid)
        return a[0] if a is not None and a.shape[-1] == APPEARANCE_SIZE and np.isfinite(a[0]).all() else None

    return [[Detection(kp, float(kp[:, 2].mean()), raw.layout, appearance(tid)) for tid, kp in frame]
            for frame in raw.per_frame()]


def video_tracks(video: str | Path, detector: Detector | None = None, start: float | None = None,
                 end: float | None = None, stride: int = 1, tracker: TrackerOptions | None = None,
                 smooth: bool = False, cache: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None,
                 on_track: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None) -> Tracks:
    """People's keypoint tracks in a video (or an image, or a folder of images).

    Args:
        detector: default `BlazePoseDetector()`.
        start, end, stride: the range to read (seconds) and the frame step.
        tracker: linking options (gaps bridged, short/unsure tracks dropped).
        smooth: One-Euro filter the tracks.
        cache: a keypoint cache file to reuse if it matches, and to write otherwise.
        on_track: on_track(frames (n,), keypoints (n, K, 3), frame_times so far) is called
            while the video is being detected, for each track that has ended (unseen for more
            than the tracker's gap) and is kept, exactly as it will be in the result (smoothed
            if asked), so that it can be fitted meanwhile (`meshcap.streaming`). Tracks still
            going at the end, and every track of a reused cache, come only in the result.
    """
    reader = VideoReader(video, start=start, end=end, stride=stride)
    own = detector is None
    detector = detector or get_detector("blazepose")
    try:
        key = _source_key(reader, detector)
        raw = None
        if cache is not None and Path(cache).exists():
            try:
                cached = Tracks.load(cache)
                if cached.source == json.loads(json.dumps(key)):
                    raw = cached
                    if log:
                        log(f"keypoints: reusing {cache}")
            except InputError:
                raw = None  # an unreadable cache is simply rebuilt
        if raw is None:
            raw = detect_frames(reader, detector, progress, _streamer(reader, detector.layout, tracker, smooth, on_track))
            raw.source = key
            if cache is not None:
                raw.save(cache)
    finally:
        if own:
            detector.close()
    tracks = link(raw, tracker)
    return smooth_tracks(tracks) if smooth else tracks


def _streamer(reader: VideoReader, layout: str, options: TrackerOptions | None, smooth: bool,
              on_track: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None):
    """An on_frame for `detect_frames` that links as it goes and hands ended tracks to on_track.
    The online `Tracker` is the same linking `link` does afterwards, so the tracks handed over
    are the result's."""
    if on_track is None:
        return None
    tracker, times = Tracker(options), []

    def on_frame(dets: list[Detection], time: float) -> None:
        times.append(time)
        # the keypoints as the raw detections keep them, so that linking decides alike
        ended = tracker.update([Detection(np.asarray(d.keypoints, np.float32), d.score, d.layout,
                                          None if d.appearance is None else np.asarray(d.appearance, np.float32))
                                for d in dets])
        for _, frames, kp in ended:
            if smooth:
                t = np.asarray(times)
                one = Tracks(layout, reader.info.fps, t, (reader.info.width, reader.info.height), {0: (frames, kp)})
                frames, kp = smooth_tracks(one).tracks[0]
            on_track(frames, kp, np.asarray(times))

    return on_frame


def link(raw: Tracks, tracker: TrackerOptions | None = None) -> Tracks:
    """Tracks from raw per-frame detections (a keypoint cache, whose source says
    kind = "detections")."""
    source = dict(raw.source, kind="tracks")
    return Tracks(raw.layout, raw.fps, raw.frame_times, raw.image_size,
                  track_detections(detections_from_raw(raw), tracker), raw.frame_index, source)
