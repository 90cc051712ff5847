"""Keypoint stage throughput on the Sports2D demo (1768x994, 230 frames, two people).

    python bench/keypoints.py [--video PATH] [--frames N]

Prints decode-only frames/s (PyAV, RGB conversion and rotation included), detect+track
frames/s (BlazePose on the default tiles, plus tracking), the whole-frame (untiled) detector
for comparison, and the ratios to decoding, all measured in this process. The video is
fetched from the `sports2d` wheel on PyPI into the test-data cache if no path is given.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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

    results = {}
    for name, tiles in (("detect+track (tiles)", "auto"), ("detect+track (whole)", "none")):
        with BlazePoseDetector(tiles=tiles) as det:
            det.detect(next(iter(reader)).image, 0.0)  # model load, outside the timing
            det.reset()
            t0 = time.perf_counter()
            raw = detect_frames(reader, det)
            tracks = track_detections(detections_from_raw(raw))
            fps = n / (time.perf_counter() - t0)
        both = sum(1 for frame in raw.per_frame() if len(frame) >= 2)
        results[name] = fps
        print(f"{name}: {fps:7.1f} frames/s, ratio to decode {fps / decode_fps:.3f}; "
              f"{len(tracks)} tracks, two or more people found in {both}/{n} frames")


if __name__ == "__main__":
    main()
