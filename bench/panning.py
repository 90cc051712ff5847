"""Panning cameras on real footage: a virtual pan across the static Sports2D shot.

    python bench/panning.py [--own-detections] [--temporal FILE]

`meshcap.samples.sports2d_pan()` warps the static Sports2D demo into a 1280x960 view that
holds, turns right 15 degrees while zooming in 7%, and holds again (230 frames): exactly what a
camera turning about its centre sees (the rotation's homography; until stop 36 a sliding crop,
right only to first order), with the turn known. Printed:

- the camera: the recovered yaw against the window's equivalent turn (median and max error,
  degrees), pitch and roll (should stay 0), the focal against the window's (zoom), per frame;
- root paths: the panning capture's people, brought into the static shot's camera frame
  through the first frame's camera and the window's known first view, against the static
  capture of the same people (`world="y-up"` both, so each is its own ground estimate); the
  median distance over shared frames, raw and with the pan's roots scaled to the static
  depth (a monocular fit's size and depth are one unknown);
- time: the panning capture against the static one from the same detections, in this process.

By default both captures use the same detections (the pan's are the static shot's seen
through the window), so what differs is what the turning camera does. `--own-detections`
also runs the detector and tracker on the pan video itself and matches its tracks to the
static people by their root paths.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def camera_roots(motion) -> np.ndarray:
    """(P, T, 3) float64: each person's root in camera 0's frame (a static capture's)."""
    return (motion.joints3d[:, :, 0].astype(np.float64) @ motion.cam_R[0].T.astype(np.float64)
            + motion.cam_t[0].astype(np.float64))


def root_errors(got: np.ndarray, got_valid: np.ndarray, want: np.ndarray, want_valid: np.ndarray,
                pairs: list[tuple[int, int]]) -> list[dict]:
    """Per (got person, want person) pair: shared frames, median distance raw and depth-scaled."""
    rows = []
    for a, b in pairs:
        both = got_valid[a] & want_valid[b]
        if both.sum() < 2:
            continue
        g, w = got[a, both], want[b, both]
        scale = float(np.median(np.linalg.norm(w, axis=-1) / np.linalg.norm(g, axis=-1)))
        rows.append(dict(pair=(a, b), frames=int(both.sum()), scale=scale,
                         raw=float(np.median(np.linalg.norm(g - w, axis=-1))),
                         scaled=float(np.median(np.linalg.norm(scale * g - w, axis=-1)))))
    return rows


def match_people(got, got_valid, want, want_valid, min_frames: int = 20) -> list[tuple[int, int]]:
    """Each panning track to the static person whose root path it follows most closely (scaled)."""
    pairs = []
    for a in range(got.shape[0]):
        rows = root_errors(got, got_valid, want, want_valid, [(a, b) for b in range(want.shape[0])])
        rows = [r for r in rows if r["frames"] >= min_frames]
        if rows:
            pairs.append(min(rows, key=lambda r: r["scaled"])["pair"])
    return pairs


def camera_figures(pan, motion) -> dict:
    from meshcap.camera_motion import rotations_to_yaw_pitch_roll

    ypr = rotations_to_yaw_pitch_roll(motion.frame_R)
    yaw_err = np.abs(ypr[:, 0] - pan.yaw_deg())
    focal_err = np.abs(motion.frame_K[:, 0, 0] / pan.focals() - 1.0)
    return dict(yaw_med=float(np.median(yaw_err)), yaw_max=float(yaw_err.max()),
                yaw_end=float(ypr[-1, 0]), yaw_true=float(pan.yaw_deg()[-1]),
                tilt_max=float(np.abs(ypr[:, 1:]).max()), focal_med=float(np.median(focal_err)),
                focal_max=float(focal_err.max()))


def print_roots(label: str, rows: list[dict]) -> None:
    for r in rows:
        print(f"  {label} pan person {r['pair'][0]} ~ static person {r['pair'][1]}: {r['frames']} frames, "
              f"root median {100 * r['raw']:.1f} cm raw, {100 * r['scaled']:.1f} cm depth-scaled "
              f"(scale {r['scale']:.3f})")
    if rows:
        w = np.array([r["frames"] for r in rows], float)
        raw = float(np.average([r["raw"] for r in rows], weights=w))
        scaled = float(np.average([r["scaled"] for r in rows], weights=w))
        print(f"{label}: root paths, frame-weighted median {100 * raw:.1f} cm raw, {100 * scaled:.1f} cm depth-scaled")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--own-detections", action="store_true", help="also detect and track on the pan video")
    ap.add_argument("--temporal", default=None, help="temporal lifter weights (default: the shipped ones)")
    ap.add_argument("--follow", action="store_true",
                    help="detect the static shot with BlazePoseDetector(follow=True) (people followed in crops)")
    args = ap.parse_args()
    lifter = dict(temporal=args.temporal or True)

    from meshcap.capture import capture
    from meshcap.keypoints.detect import BlazePoseDetector
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.samples import sports2d_demo, sports2d_pan

    video, pan = sports2d_pan()
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "static.keypoints.npz"
        t0 = time.perf_counter()
        with BlazePoseDetector(follow=args.follow) as det:
            tracks = video_tracks(sports2d_demo(), detector=det, cache=cache)
        print(f"detections on the static shot: {len(tracks.tracks)} tracks, {time.perf_counter() - t0:.1f} s")
        pan_cache = Path(d) / "pan.keypoints.npz"
        pan.tracks(tracks).save(pan_cache)
        focal = float(pan.focals()[0])

        t0 = time.perf_counter()
        static = capture(sports2d_demo(), keypoints=cache, **lifter)
        t_static = time.perf_counter() - t0
        t0 = time.perf_counter()
        moving = capture(video, keypoints=pan_cache, focal=focal, panning=True, **lifter)
        t_pan = time.perf_counter() - t0

        cam = camera_figures(pan, moving)
        want, want_valid = camera_roots(static), static.valid
        got = pan.source_camera_roots(moving)
        same = [(a, int(np.flatnonzero(static.person_ids == pid)[0]))
                for a, pid in enumerate(moving.person_ids) if pid in static.person_ids]
        rows = root_errors(got, moving.valid, want, want_valid, same)
        print(f"same detections: {moving.num_people} people over {moving.num_frames} frames")
        print_roots("same detections", rows)

        if args.own_detections:
            t0 = time.perf_counter()
            own = capture(video, focal=focal, panning=True, **lifter)
            t_own = time.perf_counter() - t0
            got_own = pan.source_camera_roots(own)
            pairs = match_people(got_own, own.valid, want, want_valid)
            print(f"own detections: {own.num_people} tracks, {t_own:.1f} s (detection included)")
            print_roots("own detections", root_errors(got_own, own.valid, want, want_valid, pairs))
            print(f"own detections: camera yaw median error {camera_figures(pan, own)['yaw_med']:.2f} deg")

    print(f"camera: yaw median error {cam['yaw_med']:.2f} deg, max {cam['yaw_max']:.2f} deg "
          f"(end {cam['yaw_end']:.2f} vs {cam['yaw_true']:.2f} deg); pitch/roll max {cam['tilt_max']:.2f} deg; "
          f"focal median error {100 * cam['focal_med']:.1f}%, max {100 * cam['focal_max']:.1f}%")
    print(f"time: panning capture {t_pan:.1f} s vs static {t_static:.1f} s from the same detections "
          f"(ratio {t_pan / t_static:.2f})")


if __name__ == "__main__":
    main()
