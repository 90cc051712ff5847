"""From per-person 2D tracks seen by one camera to a `Motion`."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError
from meshcap.fitting.camera import intrinsics
from meshcap.fitting.smplify import FitInit, FitOptions, SingleViewFitter
from meshcap.fitting.windows import fit_windowed, init_slicer, regressor_init
from meshcap.keypoints.layouts import get_layout
from meshcap.motion import Motion


def fit_tracks(body_model: BodyModel, tracks: Mapping[int, tuple[np.ndarray, np.ndarray]],
               num_frames: int, image_size: tuple[int, int], fps: float,
               layout: str = "blazepose33", K: np.ndarray | torch.Tensor | None = None,
               frame_times: np.ndarray | None = None, options: FitOptions | None = None,
               inits: Mapping[int, FitInit] | None = None, regressor=None,
               progress: Callable[[int, int], None] | None = None,
               window: int | None = None, overlap: int | None = None) -> Motion:
    """Fit every track and gather the results into one Motion (camera 0 = the world).

    Args:
        tracks: track id -> (frames (n,) int indices into the video, keypoints (n, K, 3)
            pixels + confidence in `layout`). A track covers the span from its first to its
            last frame; frames missing inside it are gaps, filled by the temporal terms and
            reported `valid` with a large uncertainty.
        num_frames: T, the length of the result. image_size: (width, height).
        K: (3, 3) intrinsics; None for the default (`meshcap.fitting.camera.intrinsics`).
        inits: optional track id -> FitInit over the track's span.
        regressor: a `meshcap.regression.RegressionStage` (or a `KeypointRegressor` alone):
            tracks without an entry in `inits` are initialised from its predictions (pose,
            shape, the joints to pull toward and their sigma).
        progress: called as progress(done, total) after each track.
        window, overlap: tracks longer than a window are fitted window by window, so that
            memory does not grow with their length (`meshcap.fitting.windows`; default 20 s
            windows overlapping by 1 s).
    """
    lay = get_layout(layout)
    if not tracks:
        raise InputError("no person to fit: the video has no tracks")
    if num_frames <= 0:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    w, h = int(image_size[0]), int(image_size[1])
    K = intrinsics(w, h) if K is None else torch.as_tensor(K, dtype=torch.float32)
    fitter = SingleViewFitter(body_model, layout, options)
    J, S, P, T = body_model.num_joints, body_model.shape_dim, len(tracks), num_frames
    poses = np.zeros((P, T, J, 3), np.float32)
    shape = np.zeros((P, S), np.float32)
    transl = np.zeros((P, T, 3), np.float32)
    joints = np.zeros((P, T, J, 3), np.float32)
    kp2d = np.zeros((P, T, len(lay), 3), np.float32)
    sigma = np.zeros((P, T, J), np.float32)
    valid = np.zeros((P, T), bool)
    ids = sorted(tracks)
    jobs = []
    for tid in ids:
        frames, kp = tracks[tid]
        frames = np.asarray(frames, dtype=np.int64)
        kp = np.asarray(kp, dtype=np.float32)
        if frames.ndim != 1 or kp.shape != (len(frames), len(lay), 3):
            raise InputError(f"track {tid}: frames (n,) and keypoints (n, {len(lay)}, 3) expected, "
                             f"got {frames.shape} and {kp.shape}")
        if len(frames) == 0:
            raise InputError(f"track {tid} is empty")
        if frames.min() < 0 or frames.max() >= T or len(np.unique(frames)) != len(frames):
            raise InputError(f"track {tid}: frame indices must be unique and within 0..{T - 1}")
        jobs.append((tid, frames, kp))

    def fit_one(job):
        tid, frames, kp = job
        first, last = int(frames.min()), int(frames.max())
        span = np.zeros((last - first + 1, len(lay), 3), np.float32)
        span[frames - first] = kp
        init = (inits or {}).get(tid)
        kp_span = torch.from_numpy(span)
        if init is not None:
            make_init = init_slicer(init)
        elif regressor is not None:
            make_init = regressor_init(regressor, body_model, kp_span, lay.name, K, fps)
        else:
            make_init = None
        return fit_windowed(fitter, kp_span, K, fps, make_init, window, overlap)

    # Tracks are fitted two at a time: a fit is thousands of small tensor operations, each
    # mostly dispatch overhead, and PyTorch releases the GIL inside them, so two threads keep
    # two cores busy (measured: 1.35-1.5x on the Sports2D demo's two people).
    workers = max(1, min(2, len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(fit_one, job): p for p, job in enumerate(jobs)}
        for done, fut in enumerate(as_completed(futures), start=1):
            p = futures[fut]
            _, frames, kp = jobs[p]
            res = fut.result()
            sl = slice(int(frames.min()), int(frames.max()) + 1)
            poses[p, sl] = res.poses.numpy()
            shape[p] = res.shape[0].numpy()
            transl[p, sl] = res.transl.numpy()
            joints[p, sl] = res.joints.numpy()
            kp2d[p, frames] = kp
            sigma[p, sl] = res.uncertainty.numpy()
            valid[p, sl] = True
            if progress is not None:
                progress(done, P)
    settings = {} if body_model.name == "anny" else {"gender": getattr(body_model, "gender", "neutral")}
    return Motion(fps=float(fps), body_model=body_model.name, joint_names=list(body_model.joint_names),
                  parents=np.asarray(body_model.parents), poses=poses, shape=shape, transl=transl,
                  joints3d=joints, valid=valid, keypoints2d=kp2d, keypoint_layout=lay.name,
                  uncertainty=sigma, cam_K=K.numpy()[None].astype(np.float32),
                  image_size=np.array([[w, h]]), person_ids=np.asarray(ids), frame_times=frame_times,
                  body_model_settings=settings)
