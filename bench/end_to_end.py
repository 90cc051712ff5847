"""End-to-end throughput: `meshcap.capture` (decode, detect, track, fit) against detection
alone (decode + detect + track) on the same video, in the same process.

    python bench/end_to_end.py [--video sports2d|vtest] [--frames N]

sports2d: the Sports2D demo (two people in almost every frame, 1768x994, 30 fps); vtest:
opencv-doc's vtest.avi (people walking into and out of a square, 768x576, 10 fps), where
tracks end while the video goes on and are fitted meanwhile (`meshcap.streaming`). Both runs
write no cache, so both detect. The issue target is end-to-end >= 0.9x detection-only.
"""
from __future__ import annotations

import argparse
import time

from meshcap.capture import capture
from meshcap.keypoints.detect import BlazePoseDetector
from meshcap.keypoints.pipeline import video_tracks
from meshcap.samples import opencv_doc, sports2d_demo
from meshcap.video import VideoReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", choices=("sports2d", "vtest"), default="sports2d")
    ap.add_argument("--frames", type=int, default=None)
    args = ap.parse_args()
    video = sports2d_demo() if args.video == "sports2d" else opencv_doc("vtest.avi")
    end = args.frames / VideoReader(video).info.fps if args.frames else None
    n = len(VideoReader(video, end=end))
    with BlazePoseDetector() as det:  # model load outside the timings
        det.detect(next(iter(VideoReader(video))).image, 0.0)
    t0 = time.perf_counter()
    ended = []  # tracks that end before the video does: what streaming can fit meanwhile
    tracks = video_tracks(video, end=end, on_track=lambda f, kp, times: ended.append(len(times)))
    detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    motion = capture(video, end=end)
    total_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    capture(video, end=end, stream=False)
    after_s = time.perf_counter() - t0
    print(f"{video.name}: {n} frames, {len(tracks)} tracks, {len(ended)} of them ended before the video "
          f"(at frames {ended}) and were fitted during detection")
    print(f"detection only (decode+detect+track): {n / detect_s:6.1f} frames/s ({detect_s:.1f} s)")
    print(f"end to end (… + fit {motion.num_people} people):  {n / total_s:6.1f} frames/s ({total_s:.1f} s)")
    print(f"ratio end-to-end / detection-only: {detect_s / total_s:.2f} (target >= 0.9); "
          f"fitting added {total_s - detect_s:.1f} s")
    print(f"without streaming (every fit after detection): {n / after_s:6.1f} frames/s ({after_s:.1f} s), "
          f"ratio {detect_s / after_s:.2f}; streaming saves {after_s - total_s:.1f} s")


if __name__ == "__main__":
    main()
