"""Streaming fits: people whose tracks have ended are fitted while the rest of the video is
still being detected.

A track ends when its person has gone unseen for longer than the tracker's gap
(`TrackerOptions.max_gap`); from then on nothing in the video can change it, so its fit can
start at once, on a worker thread (`meshcap.fitting.tracks.TrackFitter`), while decoding and
detection go on. Tracks still going at the end of the video are fitted then. The result is the
same Motion as fitting every track afterwards: the tracks handed over during detection are
exactly the final ones (the same online linking), and a track whose frame rate turns out
different at the end (a variable frame rate) is fitted again.

    fits = StreamingFits(fitter, stated_fps=30.0, prepare=undistort)
    tracks = video_tracks(video, on_track=fits.on_track)
    motion = fits.motion(tracks)
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from meshcap.fitting.tracks import TrackFitter
from meshcap.keypoints.tracks import Tracks
from meshcap.motion import Motion

Prepare = Callable[[np.ndarray, np.ndarray], np.ndarray]


def fit_rate(frame_times: np.ndarray, stated_fps: float) -> float:
    """The rate of the frames actually used (a stride or a variable frame rate changes it):
    1 / the median step of frame_times (T,) seconds, or `stated_fps` when that is within
    round-off of it (the stated rate, not its round-off through the timestamps) or there are
    too few frames to tell."""
    dt = np.diff(np.asarray(frame_times, np.float64))
    fps = 1.0 / float(np.median(dt)) if len(dt) and np.median(dt) > 0 else stated_fps
    return stated_fps if abs(fps - stated_fps) < 1e-6 * stated_fps else fps


class StreamingFits:
    """Hands the tracks that end during detection to a `TrackFitter` at once, and the rest at
    the end.

    fitter: the TrackFitter (its workers fit while detection runs). stated_fps: the video's
    own rate. prepare(frames (n,), keypoints (n, K, 3)) -> keypoints: what the fit sees of a
    track's detections (lens undistortion, say); default as detected.
    """

    def __init__(self, fitter: TrackFitter, stated_fps: float, prepare: Prepare | None = None):
        self.fitter, self.stated_fps = fitter, float(stated_fps)
        self.prepare = prepare or (lambda frames, kp: kp)
        self._streamed: list[tuple[np.ndarray, np.ndarray, int]] = []  # (frames, keypoints, key)

    @property
    def streamed(self) -> int:
        """How many tracks were handed over before the end of the video."""
        return len(self._streamed)

    def on_track(self, frames: np.ndarray, keypoints: np.ndarray, frame_times: np.ndarray) -> None:
        """A track that has ended (`video_tracks`' on_track): fit it now, at the rate of the
        frames read so far."""
        key = -1 - len(self._streamed)  # never a final id (those count up from 0)
        self._streamed.append((frames, keypoints, key))
        self.fitter.submit(key, frames, self.prepare(frames, keypoints), fps=fit_rate(frame_times, self.stated_fps))

    def _key_of(self, frames: np.ndarray, keypoints: np.ndarray) -> int | None:
        # The final tracks carry no trace of the streamed ones' keys, but they are the same
        # arrays: the same online linking ran over the same detections.
        for f, kp, key in self._streamed:
            if len(f) == len(frames) and np.array_equal(f, frames) and np.array_equal(kp, keypoints):
                return key
        return None

    def motion(self, tracks: Tracks, ids: list[int] | None = None,
               progress: Callable[[int, int], None] | None = None) -> Motion:
        """The Motion of `tracks` (their people `ids`, default all, in id order): the streamed
        fits where they match a final track at the final rate, the others fitted now."""
        ids = sorted(tracks.tracks) if ids is None else list(ids)
        fps = fit_rate(tracks.frame_times, tracks.fps)
        keys = []
        for tid in ids:
            frames, kp = tracks.tracks[tid]
            key = self._key_of(frames, kp)
            if key is None or abs(self.fitter.fps_of(key) - fps) > 1e-6 * fps:
                key = tid
                self.fitter.submit(key, frames, self.prepare(frames, kp), fps=fps)
            keys.append(key)
        motion = self.fitter.motion(keys, tracks.num_frames, fps, tracks.frame_times, progress)
        motion.person_ids = np.asarray(ids)
        return motion
