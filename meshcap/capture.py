"""The main job as a function: video (or keypoint file) in, `Motion` out.

    motion = meshcap.capture("video.mp4")
    motion = meshcap.capture("video.mp4", keypoints="video.keypoints.npz", focal=1400)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from meshcap.errors import InputError
from meshcap.fitting.camera import intrinsics
from meshcap.fitting.smplify import FitOptions
from meshcap.fitting.tracks import fit_tracks
from meshcap.keypoints.tracks import Tracks, TrackerOptions
from meshcap.motion import Motion

Progress = Callable[[str, int, int], None]


def is_keypoint_source(path: str | Path) -> bool:
    """Whether `path` holds keypoints (meshcap npz, COCO json, OpenPose folder), not images."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob("*.json"))
    return path.suffix.lower() in (".npz", ".json")


def load_tracks(source: str | Path, *, keypoints: str | Path | None = None, start: float | None = None,
                end: float | None = None, stride: int = 1, tracker: TrackerOptions | None = None,
                smooth: bool = False, cache: str | Path | None = None,
                progress: Progress | None = None) -> Tracks:
    """2D tracks from a video (detected, cached in `cache`) or from a keypoint source."""
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.keypoints.readers import read_keypoints
    from meshcap.keypoints.tracks import smooth_tracks

    kp_source = keypoints if keypoints is not None else (source if is_keypoint_source(source) else None)
    if kp_source is not None:
        tracks = read_keypoints(kp_source, tracker=tracker)
        return smooth_tracks(tracks) if smooth else tracks
    step = (lambda d, t: progress("detecting people", d, t)) if progress else None
    return video_tracks(source, start=start, end=end, stride=stride, tracker=tracker, smooth=smooth,
                        cache=cache, progress=step)


def fit_setup(model, regressor: str | Path | bool = False, fit: FitOptions | None = None):
    """(regressor network or None, fit options) as `capture` uses them: `regressor` True for the
    shipped weights, a weights file, or False; with a regressor the body stage needs half the
    steps (unless `fit` is given)."""
    net = None
    if regressor is not False and model.name == "anny":
        from meshcap.regression import SHIPPED, load_regressor

        path = SHIPPED if regressor is True else Path(regressor)
        if regressor is not True or path.exists():
            net = load_regressor(path)
            if fit is None:
                fit = FitOptions(iters_body=FitOptions().iters_body // 2)
    return net, fit


def capture(source: str | Path, *, keypoints: str | Path | None = None, body_model: str = "anny",
            model_path: str | Path | None = None, focal: float | None = None,
            start: float | None = None, end: float | None = None, stride: int = 1,
            max_people: int | None = None, device: str = "cpu", smooth: bool = False,
            tracker: TrackerOptions | None = None, fit: FitOptions | None = None,
            regressor: str | Path | bool = False,
            cache: str | Path | None = None, progress: Progress | None = None) -> Motion:
    """Capture the people in a video as a Motion.

    Args:
        source: a video, an image, a folder of images, or a keypoint source (meshcap
            `.keypoints.npz`, COCO results `.json`, OpenPose folder).
        keypoints: a keypoint source to use instead of running the detector on `source`.
        body_model, model_path: "anny" (default, free) or "smpl"/"smplh"/"smplx" with its file.
        focal: focal length in pixels (default: the image diagonal, see `fitting.camera`).
        start, end, stride: range (seconds) and frame step of the video.
        max_people: keep only this many tracks (the longest, most confident ones).
        device: torch device for fitting. smooth: One-Euro filter the 2D tracks first.
        cache: keypoint cache file (detections are reused when it matches).
        regressor: True for the shipped regressor weights (initialising the fit, which then
            needs half the steps), a weights file, or False (default) to fit from the rest
            pose. Not the default yet: on the Sports2D demo its initialisation leaves a median
            reprojection of 7.8 px against 2.9 px from the rest pose (synthetic-to-real gap).
        progress: progress(stage, done, total).
    """
    from meshcap.body_models import load_body_model

    if max_people is not None and max_people < 1:
        raise InputError(f"max_people must be at least 1, got {max_people}")
    if focal is not None and not focal > 0:
        raise InputError(f"focal must be positive (pixels), got {focal}")
    model = load_body_model(body_model, model_path).to(device)  # bad model paths fail before detection
    tracks = load_tracks(source, keypoints=keypoints, start=start, end=end, stride=stride,
                         tracker=tracker, smooth=smooth, cache=cache, progress=progress)
    if not tracks.tracks:
        raise InputError(f"{source}: no person found (no track of {tracker.min_length if tracker else 10}"
                         " or more frames)")
    chosen = tracks.tracks
    if max_people is not None and len(chosen) > max_people:
        rank = sorted(chosen, key=lambda t: -float(chosen[t][1][..., 2].sum()))
        chosen = {t: chosen[t] for t in sorted(rank[:max_people])}
    w, h = tracks.image_size
    K = intrinsics(w, h, focal)
    step = (lambda d, t: progress("fitting bodies", d, t)) if progress else None
    if progress:
        progress("fitting bodies", 0, len(chosen))
    net, fit = fit_setup(model, regressor, fit)
    # the rate of the frames actually used (a stride or a variable frame rate changes it)
    dt = np.diff(tracks.frame_times)
    fps = 1.0 / float(np.median(dt)) if len(dt) and np.median(dt) > 0 else tracks.fps
    motion = fit_tracks(model, chosen, num_frames=tracks.num_frames, image_size=(w, h), fps=fps,
                        layout=tracks.layout, K=K, frame_times=tracks.frame_times, options=fit,
                        regressor=net, progress=step)
    if model_path is not None:
        motion.body_model_settings["model_path"] = str(Path(model_path).resolve())
    return motion
