"""Long tracks fitted in overlapping windows, so that memory does not grow with the track.

A whole-track fit holds the autograd graph of every frame at once (a 3-minute track peaks at
1.26 GB, `bench/long_video.py`; an hour would need about 20 GB); windowed, an hour peaks at
0.83 GB. Here a track longer than a window is fitted as:
1. one body shape for the person, from frames spread evenly over the whole track (every k-th
   frame, at most a window's worth, the temporal terms at fps/k);
2. windows of `window` frames that overlap by `overlap`, each fitted with that shape fixed;
3. in each overlap the two fits are blended, weights ramping linearly from one to the other
   (rotations along the geodesic between them, translations and sigmas linearly); joints and
   keypoints are recomputed from the blended parameters.
The result has the shape of a whole-track `FitResult`; only one window's graph is alive at a
time, and the per-frame arrays of the result grow by a few hundred bytes a frame. The foot
planting pass (`meshcap.contacts`) refines window by window the same way (`refine_windowed`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import roma
import torch

from meshcap.errors import InputError
from meshcap.fitting.smplify import FitInit, FitResult, SingleViewFitter

WINDOW_S = 20.0  # seconds: long enough for the temporal terms and the heading path
OVERLAP_S = 1.0


def window_spans(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering 0..num_frames, each `window` long (the last may be longer
    by under a window's step, so that no window is short), consecutive ones sharing `overlap`
    frames; one span when the track fits in a window and an overlap."""
    if window < 2 or not 0 < overlap < window:
        raise InputError(f"window ({window}) must exceed overlap ({overlap}) > 0")
    if num_frames <= window + overlap:
        return [(0, num_frames)]
    step = window - overlap
    n = max(1, (num_frames - overlap) // step)
    spans = [(k * step, k * step + window) for k in range(n)]
    spans[-1] = (spans[-1][0], num_frames)
    return spans


def blend_rotvecs(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotations from a toward b (axis-angle, same shape) by w (...), along the
    geodesic: a's rotation times w of the relative one."""
    Ra, Rb = roma.rotvec_to_rotmat(a), roma.rotvec_to_rotmat(b)
    rel = roma.rotmat_to_rotvec(Ra.transpose(-1, -2) @ Rb)
    return roma.rotmat_to_rotvec(Ra @ roma.rotvec_to_rotmat(w[..., None] * rel))


def fit_windowed(fitter: SingleViewFitter, keypoints: torch.Tensor, K: torch.Tensor, fps: float,
                 make_init: Callable[[torch.Tensor], FitInit | None] | None = None,
                 window: int | None = None, overlap: int | None = None) -> FitResult:
    """Fit a track (T, K, 3) like `SingleViewFitter.fit`, window by window (module docstring).

    make_init(frames) gives the starting point (the regressor's, say) of the track's frames
    (n,) (indices into it, increasing), or None; `init_slicer` and `regressor_init` make one.
    window, overlap: frames (default WINDOW_S and OVERLAP_S at `fps`). A track that fits in one window is fitted whole, exactly as `fitter.fit` does."""
    T = keypoints.shape[0]
    window = window or max(2, round(WINDOW_S * fps))
    overlap = overlap or max(1, round(OVERLAP_S * fps))
    spans = window_spans(T, window, overlap)
    init_of = make_init or (lambda frames: None)
    if len(spans) == 1:
        return fitter.fit(keypoints, K, init=init_of(torch.arange(T)), fps=fps)

    # 1. one shape, from frames spread over the whole track; only the shape is kept, which the
    # body stage settles (the smoothing and settling after it keep the shape): skipped
    stride = math.ceil(T / window)
    sparse = torch.arange(0, T, stride)
    shape_fitter = SingleViewFitter(fitter.model, fitter.layout.name, dataclasses.replace(fitter.options, smooth_s=0.0))
    shape = shape_fitter.fit(keypoints[sparse], K, init=init_of(sparse), fps=fps / stride).shape

    # 2. windows with that shape; 3. blended where they overlap
    fit_span = lambda a, b: fitter.fit(keypoints[a:b], K, init=init_of(torch.arange(a, b)), fps=fps,  # noqa: E731
                                       shape=shape)
    poses, transl, sigma = _blend_windows(spans, fitter.model.num_joints, keypoints.dtype, fit_span)
    return _finish(fitter, keypoints, K, poses, shape, transl, sigma, window)


def refine_windowed(fitter: SingleViewFitter, keypoints: torch.Tensor, K: torch.Tensor, start: FitInit,
                    make_term: Callable[[int, int], Callable], fps: float, iters: int = 40,
                    window: int | None = None, overlap: int | None = None,
                    temporal_scale: float = 1.0) -> FitResult:
    """`SingleViewFitter.refine` window by window: make_term(a, b) is the added term for the
    track's frames a..b. The shape is the start's (refine keeps it)."""
    T = keypoints.shape[0]
    window = window or max(2, round(WINDOW_S * fps))
    overlap = overlap or max(1, round(OVERLAP_S * fps))
    spans = window_spans(T, window, overlap)
    if len(spans) == 1:
        return fitter.refine(keypoints, K, start, make_term(0, T), fps=fps, iters=iters, temporal_scale=temporal_scale)
    at = init_slicer(start)
    fit_span = lambda a, b: fitter.refine(keypoints[a:b], K, at(torch.arange(a, b)), make_term(a, b),  # noqa: E731
                                          fps=fps, iters=iters, temporal_scale=temporal_scale)
    poses, transl, sigma = _blend_windows(spans, fitter.model.num_joints, keypoints.dtype, fit_span)
    return _finish(fitter, keypoints, K, poses, start.shape, transl, sigma, window)


def _blend_windows(spans: list[tuple[int, int]], J: int, dt: torch.dtype,
                   fit_span: Callable[[int, int], FitResult]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """poses (T, J, 3), transl (T, 3), sigma (T, J) from fit_span(a, b) of each span, blended
    where consecutive spans overlap (the weight of the later one ramping up linearly)."""
    T = spans[-1][1]
    poses = torch.zeros(T, J, 3, dtype=dt)
    transl = torch.zeros(T, 3, dtype=dt)
    sigma = torch.zeros(T, J, dtype=dt)
    prev_stop = 0
    for a, b in spans:
        res = fit_span(a, b)
        n = prev_stop - a  # frames shared with the previous window
        if n > 0:
            w = torch.arange(1, n + 1, dtype=dt) / (n + 1)
            poses[a:prev_stop] = blend_rotvecs(poses[a:prev_stop], res.poses[:n].to(dt), w[:, None].expand(n, J))
            transl[a:prev_stop] = (1 - w[:, None]) * transl[a:prev_stop] + w[:, None] * res.transl[:n]
            sigma[a:prev_stop] = (1 - w[:, None]) * sigma[a:prev_stop] + w[:, None] * res.uncertainty[:n]
        n = max(n, 0)
        poses[prev_stop:b], transl[prev_stop:b], sigma[prev_stop:b] = res.poses[n:], res.transl[n:], res.uncertainty[n:]
        prev_stop = b
        del res  # this window's tensors go before the next is fitted
    return poses, transl, sigma


def _finish(fitter: SingleViewFitter, keypoints: torch.Tensor, K: torch.Tensor, poses: torch.Tensor,
            shape: torch.Tensor, transl: torch.Tensor, sigma: torch.Tensor, chunk: int) -> FitResult:
    """The FitResult of blended parameters: joints, keypoints and reprojection errors computed
    `chunk` frames at a time."""
    T, J = poses.shape[:2]
    xy, conf = fitter._check(keypoints)  # the confidences the fit itself used
    dt = xy.dtype
    joints = torch.empty(T, J, 3, dtype=dt)
    kp3 = torch.empty(T, len(fitter.layout), 3, dtype=dt)
    err = torch.empty(T, len(fitter.layout), dtype=dt)
    Kt = torch.as_tensor(K, dtype=dt)
    for a in range(0, T, chunk):
        c = slice(a, a + chunk)
        out, err[c] = fitter.evaluate(poses[c], shape, transl[c], xy[c], conf[c], Kt)
        joints[c], kp3[c] = out.joints, out.keypoints
    return FitResult(poses, shape, transl, joints, kp3, err, sigma, None)


def init_slicer(init: FitInit) -> Callable[[torch.Tensor], FitInit]:
    """make_init for a FitInit given over the whole track: its frames, sliced."""
    def at(frames: torch.Tensor) -> FitInit:
        pick = lambda x: None if x is None else x[frames]  # noqa: E731
        return FitInit(poses=init.poses[frames], shape=init.shape, transl=pick(init.transl), sigma=pick(init.sigma),
                       joints=pick(init.joints))
    return at


def regressor_init(regressor, body_model, keypoints: torch.Tensor, layout: str,
                   K: torch.Tensor, fps: float = 30.0) -> Callable[[torch.Tensor], FitInit | None]:
    """make_init from the regression stage (anything with `init_track`, as
    `meshcap.regression.RegressionStage`, or a per-frame `KeypointRegressor` alone), run on
    just the frames asked for (never the whole track at once: memory stays flat); frames
    spread evenly, every k-th (the shape step of `fit_windowed`), are read at fps / k."""
    from meshcap.regression import RegressionStage

    stage = regressor if hasattr(regressor, "init_track") else RegressionStage(regressor)

    def init(frames: torch.Tensor) -> FitInit | None:
        step = int(frames[1] - frames[0]) if len(frames) > 1 else 1
        return stage.init_track(body_model, keypoints[frames], layout, K, fps / max(step, 1))
    return init
