"""End-to-end throughput on the Sports2D demo: `meshcap.capture` (decode, detect, track, fit)
against detection alone (decode + detect + track) on the same video, in the same process.

    python bench/end_to_end.py [--frames N]

The issue target is end-to-end >= 0.8x the detector-only throughput.
"""
from __future__ import annotations

import argparse
import time

from meshcap.capture import capture
from meshcap.keypoints.detect import BlazePoseDetector
from meshcap.keypoints.pipeline import video_tracks
from meshcap.samples import sports2d_demo
from meshcap.video import VideoReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=None)
    args = ap.parse_args()
    video = sports2d_demo()
    end = args.frames / VideoReader(video).info.fps if args.frames else None
    n = len(VideoReader(video, end=end))
    with BlazePoseDetector() as det:  # model load outside the timings
        det.detect(next(iter(VideoReader(video))).image, 0.0)
    t0 = time.perf_counter()
    tracks = video_tracks(video, end=end)
    detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    motion = capture(video, end=end)
    total_s = time.perf_counter() - t0
    print(f"{video.name}: {n} frames, {len(tracks)} tracks")
    print(f"detection only (decode+detect+track): {n / detect_s:6.1f} frames/s ({detect_s:.1f} s)")
    print(f"end to end (… + fit {motion.num_people} people):  {n / total_s:6.1f} frames/s ({total_s:.1f} s)")
    print(f"ratio end-to-end / detection-only: {detect_s / total_s:.2f} (target >= 0.8); "
          f"fitting took {total_s - detect_s:.1f} s")


if __name__ == "__main__":
    main()
