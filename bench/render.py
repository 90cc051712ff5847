"""Overlay rendering throughput: frames/s of `OverlayRenderer.frame` at 640x480 and 1920x1080
(two people, uncertainty colours, 4x MSAA and without), against decoding the same frames in the
same process.

    python bench/render.py [--frames N]

The motion is a capture of the Sports2D demo (made once and cached beside the sample video);
frames are the demo's, resized, so the people cover the same share of the image at both sizes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from meshcap import Motion
from meshcap.capture import capture
from meshcap.render import OverlayOptions, OverlayRenderer
from meshcap.samples import sports2d_demo
from meshcap.video import VideoReader


def demo_motion(video: Path) -> Motion:
    path = video.with_name(video.stem + ".bench-motion.npz")
    if path.exists():
        return Motion.load(path)
    motion = capture(video)
    motion.save(path)
    return motion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    args = ap.parse_args()
    video = sports2d_demo()
    motion = demo_motion(video)
    model = motion.load_body_model()
    model.faces  # the mesh cache loads outside the timings
    t0 = time.perf_counter()
    frames = [f.image for f, _ in zip(VideoReader(video), range(args.frames))]
    decode_s = time.perf_counter() - t0
    n = len(frames)
    print(f"{video.name}: {n} frames, {motion.num_people} people; decode {n / decode_s:.1f} frames/s "
          f"at {frames[0].shape[1]}x{frames[0].shape[0]}")
    for w, h in ((640, 480), (1920, 1080)):
        resized = [np.asarray(Image.fromarray(f).resize((w, h))) for f in frames]
        for samples in (4, 0):
            overlay = OverlayRenderer(motion, w, h, model, OverlayOptions(antialias=bool(samples)))
            overlay.frame(0, resized[0])  # context and buffers outside the timings
            t0 = time.perf_counter()
            for i, f in enumerate(resized):
                overlay.frame(i, f)
            s = time.perf_counter() - t0
            print(f"render {w}x{h}, MSAA {samples or 'off'}: {n / s:6.1f} frames/s, "
                  f"ratio to decoding {decode_s / s:.3f}")
            overlay.release()


if __name__ == "__main__":
    main()
