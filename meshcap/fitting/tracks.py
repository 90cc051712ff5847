"""From per-person 2D tracks seen by one camera to a `Motion`."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

import numpy as np
import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError
from meshcap.fitting.camera import intrinsics
from meshcap.fitting.banded import one_blas_thread
from meshcap.fitting.smplify import FitInit, FitOptions, SingleViewFitter
from meshcap.fitting.windows import fit_windowed, init_slicer, regressor_init
from meshcap.keypoints.layouts import get_layout
from meshcap.motion import Motion


class TrackFitter:
    """Fits one camera's tracks, each as soon as it is handed over, on worker threads, and
    gathers them into one Motion (camera 0 = the world).

    Tracks can come while a video is still being read (`meshcap.streaming`): `submit` starts a
    track's fit at once and returns; `motion` waits for every fit. Options as `fit_tracks`;
    `workers`: how many tracks are fitted at once (default two, one on a one-core machine),
    which changes nothing in the result.

        fitter = TrackFitter(model, "blazepose33", (1920, 1080), K=K, regressor=stage)
        fitter.submit(0, frames, keypoints, fps=30.0)
        motion = fitter.motion({0: ...}, num_frames=T, fps=30.0)
    """

    def __init__(self, body_model: BodyModel, layout: str, image_size: tuple[int, int],
                 K: np.ndarray | torch.Tensor | None = None, options: FitOptions | None = None,
                 regressor=None, window: int | None = None, overlap: int | None = None,
                 workers: int | None = None):
        self.model, self.layout = body_model, get_layout(layout)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        w, h = self.image_size
        self.K = intrinsics(w, h) if K is None else torch.as_tensor(K, dtype=torch.float32)
        self.fitter = SingleViewFitter(body_model, layout, options)
        self.regressor, self.window, self.overlap = regressor, window, overlap
        # two tracks at a time keep two cores busy; each fit holds NumPy's BLAS on one thread
        # (`one_blas_thread`), or the two came out differently from run to run
        self._workers = workers or max(1, min(2, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self._workers)
        self._jobs: dict[int, tuple[Future, np.ndarray, np.ndarray, float]] = {}

    def check(self, tid: int, frames, kp, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(frames (n,) int64, keypoints (n, K, 3) float32) of a track, or an InputError."""
        frames = np.asarray(frames, dtype=np.int64)
        kp = np.asarray(kp, dtype=np.float32)
        K = len(self.layout)
        if frames.ndim != 1 or kp.shape != (len(frames), K, 3):
            raise InputError(f"track {tid}: frames (n,) and keypoints (n, {K}, 3) expected, "
                             f"got {frames.shape} and {kp.shape}")
        if len(frames) == 0:
            raise InputError(f"track {tid} is empty")
        top = num_frames if num_frames is not None else np.iinfo(np.int64).max
        if frames.min() < 0 or frames.max() >= top or len(np.unique(frames)) != len(frames):
            raise InputError(f"track {tid}: frame indices must be unique and within 0..{top - 1}")
        return frames, kp

    def submit(self, tid: int, frames, kp, fps: float, init: FitInit | None = None) -> None:
        """Start fitting track `tid`: frames (n,) indices into the video, keypoints (n, K, 3)
        (see `fit_tracks`), at `fps`; `init` over the track's span, or None for the regressor's
        (or the rest pose without one). A track submitted again replaces the earlier fit."""
        frames, kp = self.check(tid, frames, kp)
        self._jobs[tid] = (self._pool.submit(self._fit, frames, kp, float(fps), init), frames, kp, float(fps))

    def fps_of(self, tid: int) -> float:
        """The frame rate track `tid` was fitted at."""
        return self._jobs[tid][3]

    def _fit(self, frames: np.ndarray, kp: np.ndarray, fps: float, init: FitInit | None):
        with one_blas_thread():
            return self._fit_track(frames, kp, fps, init)

    def _fit_track(self, frames: np.ndarray, kp: np.ndarray, fps: float, init: FitInit | None):
        first, last = int(frames.min()), int(frames.max())
        span = np.zeros((last - first + 1, len(self.layout), 3), np.float32)
        span[frames - first] = kp
        kp_span = torch.from_numpy(span)
        if init is not None:
            make_init = init_slicer(init)
        elif self.regressor is not None:
            make_init = regressor_init(self.regressor, self.model, kp_span, self.layout.name, self.K, fps)
        else:
            make_init = None
        return fit_windowed(self.fitter, kp_span, self.K, fps, make_init, self.window, self.overlap)

    def motion(self, ids: list[int], num_frames: int, fps: float, frame_times: np.ndarray | None = None,
               progress: Callable[[int, int], None] | None = None) -> Motion:
        """Wait for the fits of the tracks `ids` (each submitted) and gather them, in that order,
        into a Motion of `num_frames` frames at `fps`; progress(done, total) after each."""
        if not ids:
            raise InputError("no person to fit: the video has no tracks")
        if num_frames <= 0:
            raise InputError(f"num_frames must be positive, got {num_frames}")
        model, lay, (w, h) = self.model, self.layout, self.image_size
        J, S, P, T = model.num_joints, model.shape_dim, len(ids), num_frames
        for tid in ids:
            self.check(tid, self._jobs[tid][1], self._jobs[tid][2], T)
        poses = np.zeros((P, T, J, 3), np.float32)
        shape = np.zeros((P, S), np.float32)
        transl = np.zeros((P, T, 3), np.float32)
        joints = np.zeros((P, T, J, 3), np.float32)
        kp2d = np.zeros((P, T, len(lay), 3), np.float32)
        sigma = np.zeros((P, T, J), np.float32)
        valid = np.zeros((P, T), bool)
        futures = {self._jobs[tid][0]: p for p, tid in enumerate(ids)}
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                p = futures[fut]
                _, frames, kp, _ = self._jobs[ids[p]]
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
        finally:
            self.close()
        settings = {} if model.name == "anny" else {"gender": getattr(model, "gender", "neutral")}
        return Motion(fps=float(fps), body_model=model.name, joint_names=list(model.joint_names),
                      parents=np.asarray(model.parents), poses=poses, shape=shape, transl=transl,
                      joints3d=joints, valid=valid, keypoints2d=kp2d, keypoint_layout=lay.name,
                      uncertainty=sigma, cam_K=self.K.numpy()[None].astype(np.float32),
                      image_size=np.array([[w, h]]), person_ids=np.asarray(ids), frame_times=frame_times,
                      body_model_settings=settings)

    def close(self) -> None:
        """Stop: fits not started are dropped (an error elsewhere ends the capture)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TrackFitter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    if not tracks:
        raise InputError("no person to fit: the video has no tracks")
    if num_frames <= 0:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    ids = sorted(tracks)
    with TrackFitter(body_model, layout, image_size, K, options, regressor, window, overlap) as fitter:
        checked = {tid: fitter.check(tid, *tracks[tid], num_frames) for tid in ids}  # all, before any fit
        for tid in ids:
            fitter.submit(tid, *checked[tid], fps=fps, init=(inits or {}).get(tid))
        return fitter.motion(ids, num_frames, fps, frame_times, progress)
