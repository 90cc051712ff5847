"""Keypoint stage throughput on the Sports2D demo (1768x994, 230 frames, two people).

    python bench/keypoints.py [--video PATH] [--frames N]

Prints decode-only frames/s (PyAV, RGB conversion and rotation included), then detect+track
frames/s (BlazePose plus tracking) for: the whole-frame search (tiles) in every frame on one
thread with each frame decoded in its turn, the reference the ratios are taken against (the
default when issue 16 was filed); the same on two threads; the untiled whole frame; and
`follow=True` (the default since stop 47), which follows the people found in crops around them
and searches the tiles every 10 frames, with each frame decoded in its turn and (the default)
with frames decoded ahead on a thread of their own (`meshcap.video.prefetched`). Each line also says whether the outcome held: tracks, the
frames the two people share, and the largest jump of a track between frames (a swap). The video is
fetched from the `sports2d` wheel on PyPI into the test-data cache if no path is given.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from meshcap.keypoints.detect import BlazePoseDetector
from meshcap.keypoints.pipeline import detect_frames, detections_from_raw
from meshcap.keypoints.tracks import track_detections
from meshcap.video import VideoReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=None)
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames")
    args = ap.parse_args()
    if args.video is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from data import sports2d_demo

        args.video = sports2d_demo()
    end = None
    reader = VideoReader(args.video)
    if args.frames:
        end = args.frames / reader.info.fps
        reader = VideoReader(args.video, end=end)
    print(f"{args.video}: {reader.info.width}x{reader.info.height}, {len(reader)} frames")

    t0 = time.perf_counter()
    n = sum(1 for _ in reader)
    decode_fps = n / (time.perf_counter() - t0)
    print(f"decode only:            {decode_fps:7.1f} frames/s")

    configs = (  # (name, detector options, frames decoded ahead)
        ("every frame, tiles, 1 thread, decoding in turn (reference)", dict(follow=False, threads=1), 0),
        ("every frame, tiles, threads", dict(follow=False), 4),
        ("whole frame, 1 thread", dict(follow=False, tiles="none", threads=1), 4),
        ("following, decoding in turn", dict(follow=True), 0),
        ("following (follow=True, the default)", dict(follow=True), 4),
    )
    reference = None
    for name, kwargs, ahead in configs:
        with BlazePoseDetector(**kwargs) as det:
            det.detect(next(iter(reader)).image, 0.0)  # model load, outside the timing
            det.reset()
            t0 = time.perf_counter()
            raw = detect_frames(reader, det, prefetch=ahead)
            tracks = track_detections(detections_from_raw(raw))
            fps = n / (time.perf_counter() - t0)
        reference = reference or fps
        both = sum(1 for frame in raw.per_frame() if len(frame) >= 2)
        print(f"{name}: {fps:6.1f} frames/s ({fps / reference:.2f}x the reference, "
              f"{fps / decode_fps:.3f} of decoding); {len(tracks)} tracks, {_outcome(tracks, raw.image_size[0])}; "
              f"two or more people found in {both}/{n} frames")


def _outcome(tracks: dict, width: int) -> str:
    """Shared frames of the two longest tracks, and the largest jump of a track's centre
    between consecutive frames (an identity swap jumps across the frame)."""
    if len(tracks) < 2:
        return "fewer than two tracks"
    (f0, kp0), (f1, kp1) = sorted(tracks.values(), key=lambda t: -len(t[0]))[:2]
    jump = 0.0
    for f, kp in ((f0, kp0), (f1, kp1)):
        x = np.array([k[k[:, 2] > 0.3, 0].mean() for k in kp])
        step = np.abs(np.diff(x))[np.diff(f) == 1]
        jump = max(jump, float(step.max()) if len(step) else 0.0)
    return (f"the two longest share {len(np.intersect1d(f0, f1))} frames, "
            f"largest centre jump {jump / width:.1%} of the width")


if __name__ == "__main__":
    main()
