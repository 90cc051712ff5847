"""The main job as a function: video (or keypoint file) in, `Motion` out.

    motion = meshcap.capture("video.mp4")
    motion = meshcap.capture("video.mp4", keypoints="video.keypoints.npz", focal=1400)
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from meshcap.camera_motion import follow_camera, warn_if_moving
from meshcap.contacts import plant_feet
from meshcap.errors import InputError
from meshcap.fitting.camera import intrinsics
from meshcap.fitting.smplify import FitOptions
from meshcap.fitting.tracks import TrackFitter, fit_tracks
from meshcap.keypoints.tracks import Tracks, TrackerOptions
from meshcap.motion import Motion
from meshcap.streaming import StreamingFits, fit_rate
from meshcap.world import check_world_option, place_in_world

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
                image_size: tuple[int, int] | None = None, fps: float | None = None,
                progress: Progress | None = None, on_track=None, detect_in_crops: bool = True) -> Tracks:
    """2D tracks from a video (detected, cached in `cache`) or from a keypoint source.

    on_track: while a video is detected, called with each track that has ended
    (`meshcap.keypoints.pipeline.video_tracks`), so that it can be fitted meanwhile.

    image_size (width, height) and fps describe keypoint input (default: how far the keypoints
    reach, and 30 fps); with a video beside the keypoints, the video's own size and rate are
    used, and values that contradict them are an error, as are keypoints far outside the image.
    detect_in_crops: the detector follows people in crops around where they were
    (`BlazePoseDetector(follow=True)`, the default); False searches every whole frame.
    """
    from meshcap.keypoints.detect import get_detector
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.keypoints.readers import read_keypoints
    from meshcap.keypoints.tracks import smooth_tracks
    from meshcap.video import VideoReader

    if image_size is not None:
        image_size = (int(image_size[0]), int(image_size[1]))
        if min(image_size) < 1:
            raise InputError(f"image size must be positive, got {image_size[0]}x{image_size[1]}")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}")
    kp_source = keypoints if keypoints is not None else (source if is_keypoint_source(source) else None)
    if kp_source is None or keypoints is not None and not is_keypoint_source(source):
        # a video is there: its size and rate are facts
        info = VideoReader(source, fps=fps).info
        size = (info.width, info.height)
        if image_size is not None and image_size != size:
            raise InputError(f"{source} is {size[0]}x{size[1]}, but the image size given is "
                             f"{image_size[0]}x{image_size[1]}")
        if fps is not None and info.kind == "video" and abs(fps - info.fps) > 1e-3 * info.fps:
            raise InputError(f"{source} runs at {info.fps:g} fps, but the fps given is {fps:g}")
        image_size, fps = size, info.fps
    if kp_source is not None:
        tracks = read_keypoints(kp_source, fps=fps or 30.0, image_size=image_size, tracker=tracker)
        if image_size is not None and tuple(tracks.image_size) != image_size:
            raise InputError(f"{kp_source} says its images are {tracks.image_size[0]}x{tracks.image_size[1]}, "
                             f"but the image size given is {image_size[0]}x{image_size[1]}")
        if fps is not None and abs(tracks.fps - fps) > 1e-3 * fps:
            raise InputError(f"{kp_source} says it runs at {tracks.fps:g} fps, but the fps given is {fps:g}")
        tracks.check_in_image(str(kp_source))
        return smooth_tracks(tracks) if smooth else tracks
    step = (lambda d, t: progress("detecting people", d, t)) if progress else None
    with get_detector("blazepose", follow=bool(detect_in_crops)) as detector:
        return video_tracks(source, detector, start=start, end=end, stride=stride, tracker=tracker,
                            smooth=smooth, cache=cache, progress=step, on_track=on_track)


def monocular_camera(camera, focal: float | None, image_size: tuple[int, int]):
    """(K (3, 3), lens distortion (5,) or None) of a monocular capture: a calibrated `Camera`
    (its size must be the images'), else a pinhole with `focal` (default: the image diagonal)
    at the centre."""
    if camera is None:
        return intrinsics(*image_size, focal), None
    from meshcap.multiview.calibration import check_camera_size

    check_camera_size(camera, image_size, "the images are")
    dist = camera.dist if np.any(camera.dist) else None
    return torch.as_tensor(camera.K, dtype=torch.float32), dist


def _undistorter(K, dist):
    """keypoints (n, K, 3) of frames (n,) -> the same through the pinhole K (as they are when
    dist is None)."""
    from meshcap.multiview.calibration import undistort_points

    def undistort(frames: np.ndarray, kp: np.ndarray) -> np.ndarray:
        if dist is None:
            return kp
        kp = kp.copy()
        kp[..., :2] = undistort_points(kp[..., :2], np.asarray(K, np.float64), dist).astype(kp.dtype)
        return kp

    return undistort


def fit_setup(model, regressor: str | Path | bool = False, fit: FitOptions | None = None,
              temporal: str | Path | bool = True):
    """(regression stage or None, fit options) as `capture` uses them: `regressor` True for the
    shipped per-frame weights, a weights file, or False (no regression stage); `temporal` True
    for the shipped temporal lifter (where it ships), a weights file, or False. From a
    regression stage the fit is pulled toward the regressed joints at half the default weight
    (`w_init` 0.5; measured on the real-motion benchmark and the Sports2D demo, see
    MODEL_CARD.md) in at most six Gauss-Newton body steps, unless `fit` is given. The weights
    read anny's skeleton: another body model (the SMPL family) starts from anny's fit of each
    track (`meshcap.regression.transfer`)."""
    stage = None
    if regressor is not False:
        from meshcap.regression import SHIPPED, load_stage

        path = SHIPPED if regressor is True else Path(regressor)
        if regressor is not True or path.exists():
            stage = load_stage(path, temporal)
            if model.name != "anny":
                from meshcap.body_models import load_body_model
                from meshcap.regression.transfer import TransferStage

                stage = TransferStage(stage, load_body_model("anny").to(model.device))
            if fit is None:
                # six body steps: from the lifter's start the later ones lowered the objective,
                # not the error (bench/real_motion.py --seeds 0,1,2, body-only 3 px: PA-MPJPE
                # 61.9 / 61.8 / 61.8 mm, MPJPE 88.0 / 87.4 / 86.3 mm with 12 / 6 / 4 steps);
                # four left the shape short of settled (a clip's fitted size 5-11% apart at 0
                # and 3 px noise, tests/test_real_motion.py), see docs/design.md
                fit = FitOptions(w_init=0.5, iters_gn=6)
    return stage, fit


def capture(source: str | Path, *, keypoints: str | Path | None = None, body_model: str = "anny",
            model_path: str | Path | None = None, focal: float | None = None,
            start: float | None = None, end: float | None = None, stride: int = 1,
            max_people: int | None = None, device: str = "cpu", smooth: bool = False,
            tracker: TrackerOptions | None = None, fit: FitOptions | None = None,
            regressor: str | Path | bool = True, temporal: str | Path | bool = True,
            image_size: tuple[int, int] | None = None, fps: float | None = None,
            camera=None, camera_name: str | None = None, world: str | None = None,
            smooth_fit: float | None = None, solver: str | None = None, panning: bool = False,
            stream: bool = True, detect_in_crops: bool = True,
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
        regressor: True (default) to initialise the fit from the shipped regressor weights, a
            weights file, or False to fit from the rest pose (the old path: on the real-motion
            benchmark it is about 45 mm PA-MPJPE worse, see MODEL_CARD.md). An SMPL-family
            `body_model` starts from anny's fit of each track (`meshcap.regression.transfer`).
        temporal: with a regressor, the temporal lifter that sees each frame's motion: True
            (default) the shipped weights, a weights file, or False for the per-frame
            regressor alone.
        image_size, fps: (width, height) and frame rate of keypoint input (a video's own are
            used when there is one; values that contradict it are an error).
        camera, camera_name: a calibration file (any format `meshcap multiview` reads) or a
            `Camera`: its intrinsics and lens distortion replace `focal`; a file with several
            cameras needs `camera_name`.
        world: None (default): stand the people on the ground estimated from their feet (y up,
            the ground at y = 0, see `meshcap.world`), or, with a warning, keep the camera's
            frame when no feet are seen; "ground": the same, an error without feet;
            "camera": the camera's frame. On a ground, the feet are planted: foot contacts
            are labelled and a last fitting pass keeps planted feet still on their plane
            (`meshcap.contacts`; the Motion's `contact` and `contact_prob`).
        smooth_fit: seconds of the fit's smoothing over time (`FitOptions.smooth_s`; None: its
            default, 0.05): 0 follows the detections, jitter included (closer reprojection,
            about twice the acceleration error on real motion; see docs/design.md).
        solver: the fit's solver, "gauss-newton" or "adam" (`FitOptions.solver`; None: its
            default, Gauss-Newton on anny), on top of the other fit options.
        panning: the camera turns (pans, tilts) and zooms about a fixed centre: its turn is
            followed frame by frame on the background (`meshcap.camera_motion`; needs the
            video) and the people are fitted in a world that stays put; the Motion keeps the
            camera's turn (`frame_R`, `frame_K`). A camera that also travels is warned about.
        stream: fit the people whose tracks have ended while the rest of the video is still
            being detected (`meshcap.streaming`; the same result, sooner). Not with
            `max_people` or `panning`, which need the whole video first.
        detect_in_crops: detect the people found in crops around where they were and search
            the whole frame only every 10 frames (`BlazePoseDetector(follow=True)`; the
            default): about 1.3 times the frames/s of searching every whole frame (False) on
            two cores, tracks as long or longer on the sample videos (docs/design.md).
        progress: progress(stage, done, total).
    """
    from meshcap.body_models import load_body_model

    check_world_option(world)  # before detection
    if max_people is not None and max_people < 1:
        raise InputError(f"max_people must be at least 1, got {max_people}")
    if focal is not None and not focal > 0:
        raise InputError(f"focal must be positive (pixels), got {focal}")
    if smooth_fit is not None and not (smooth_fit >= 0 and np.isfinite(smooth_fit)):
        raise InputError(f"smooth_fit must be 0 or more seconds, got {smooth_fit}")
    model = load_body_model(body_model, model_path).to(device)  # bad model paths fail before detection
    if camera is None and camera_name is not None:
        raise InputError("a camera name was given without a camera file")
    if camera is not None:  # a bad camera file fails before detection
        from meshcap.multiview.calibration import Camera, read_camera

        if focal is not None:
            raise InputError("give a focal length or a camera file, not both (the file's K holds the focal)")
        camera = camera if isinstance(camera, Camera) else read_camera(camera, camera_name)
        # keypoints alone: the calibration says how large their images were (a video says it itself)
        if image_size is None and all(camera.size) and is_keypoint_source(source):
            image_size = camera.size
    if panning and is_keypoint_source(source):
        raise InputError(f"{source}: a panning camera is followed on the video's background; give the "
                         "video, with the keypoint file as `keypoints`")
    net, fit = fit_setup(model, regressor, fit, temporal)
    if smooth_fit is not None:
        fit = dataclasses.replace(fit or FitOptions(), smooth_s=float(smooth_fit))
    if solver is not None:
        fit = dataclasses.replace(fit or FitOptions(), solver=solver)
    # People whose tracks end are fitted while the rest of the video is detected
    # (`meshcap.streaming`), except where the fit needs the whole video first: choosing the
    # `max_people` best tracks, or following a panning camera.
    streaming = None
    if stream and max_people is None and not panning and keypoints is None and not is_keypoint_source(source):
        from meshcap.keypoints.detect import detector_layout
        from meshcap.video import VideoReader

        info = VideoReader(source, fps=fps).info
        K, dist = monocular_camera(camera, focal, (info.width, info.height))
        fitter = TrackFitter(model, detector_layout(), (info.width, info.height), K, fit, net)
        streaming = StreamingFits(fitter, info.fps, _undistorter(K, dist))
    with streaming.fitter if streaming else contextlib.nullcontext():  # an error stops the fits under way
        tracks = load_tracks(source, keypoints=keypoints, start=start, end=end, stride=stride,
                             tracker=tracker, smooth=smooth, cache=cache, image_size=image_size, fps=fps,
                             progress=progress, on_track=streaming.on_track if streaming else None,
                             detect_in_crops=detect_in_crops)
        if not tracks.tracks:
            raise InputError(f"{source}: no person found (no track of {tracker.min_length if tracker else 10}"
                             " or more frames)")
        chosen = tracks.tracks
        if max_people is not None and len(chosen) > max_people:
            rank = sorted(chosen, key=lambda t: -float(chosen[t][1][..., 2].sum()))
            chosen = {t: chosen[t] for t in sorted(rank[:max_people])}
        w, h = tracks.image_size
        step = (lambda d, t: progress("fitting bodies", d, t)) if progress else None
        if progress:
            progress("fitting bodies", 0, len(chosen))
        turn = None
        if streaming is not None:
            motion = streaming.motion(tracks, progress=step)
        else:
            K, dist = monocular_camera(camera, focal, (w, h))
            fitted = _undistorter(K, dist)
            fitted = {tid: (f, fitted(f, kp)) for tid, (f, kp) in chosen.items()}
            if panning:  # fit in the reference view, where the camera stands still
                turn = follow_camera(source, tracks, float(K[0, 0]), np.asarray(K[:2, 2], np.float64), dist,
                                     progress=(lambda d, t: progress("following the camera", d, t)) if progress else None)
                fitted = {tid: (f, turn.to_reference(f, kp)) for tid, (f, kp) in fitted.items()}
                K = torch.as_tensor(turn.reference_intrinsics(), dtype=torch.float32)
                warn_if_moving(turn)
            motion = fit_tracks(model, fitted, num_frames=tracks.num_frames, image_size=(w, h),
                                fps=fit_rate(tracks.frame_times, tracks.fps), layout=tracks.layout, K=K,
                                frame_times=tracks.frame_times, options=fit, regressor=net, progress=step)
    motion = place_in_world(motion, model, world)
    if motion.world != "camera":  # on a ground: plant the feet (keypoints2d: what the fit saw)
        motion = plant_feet(motion, model, options=fit)
    if turn is not None:
        motion.frame_R, motion.frame_K = turn.rotations.astype(np.float32), turn.intrinsics().astype(np.float32)
    for p, tid in enumerate(motion.person_ids):  # keypoints2d: as detected, through the lens
        f, kp = chosen[int(tid)]
        motion.keypoints2d[p, f] = kp
    if model_path is not None:
        motion.body_model_settings["model_path"] = str(Path(model_path).resolve())
    return motion
