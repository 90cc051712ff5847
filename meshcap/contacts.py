"""Foot contacts: which foot is planted in each frame, and a last fitting pass that keeps a
planted foot where it is (no skating), on the plane the person stands on.

A foot is planted when its sole (the lower of its heel and toe points) is low on the person's
own support plane and slow, and its ankle is slow too (not rolling over a planted heel or toe);
where the input had no foot points (COCO-17), its ankle is judged the same way in place of the
sole. Each person has their own plane: the ground, or a box they walk on,
and in a monocular fit people on one floor come out on parallel planes at the depths their
sizes imply (see `meshcap.world`). The probability is a smooth version of the two thresholds,
so that a sole a centimetre over either counts as half sure, not as a swing.

`plant_feet` runs after the ground is known: from the fitted Motion, it labels the contacts,
continues the fit (`SingleViewFitter.refine`, at the settled fit's temporal weight) with two
added terms (`ContactTerm`), weighted by each contact's probability: a planted sole's
horizontal movement from one frame to the next, and its height off the person's plane; and
labels the contacts again on the result.
"""
from __future__ import annotations

import copy
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.ndimage import binary_closing

from meshcap.world import (LEVEL_GAP, PLANTED_HEIGHT, PLANTED_SPEED, SOLE_POINTS, ankle_heights, ankle_points, body_up,
                           camera_centre, feet_detected, level_of, move_motion, sole_points, sole_speeds, support_levels)

# m/s across the line of sight (`meshcap.world.sole_speeds`): a planted foot moves this little.
# Labels describe the finished (planted) motion, whose planted soles stand nearly still (about
# 0.01 m/s on bench/world.py); the planting pass takes as candidates the feet that the fit moves
# a little faster. Chosen on the training takes (`bench/world.py --split train --max-clips 3`,
# candidates under 0.5 m/s): labels under 0.3 / 0.2 / 0.15 / 0.1 m/s agree with the truth (the
# ankle under 0.1 m/s) in 76.1 / 81.5 / 85.0 / 86.3% (0.1 with candidates under 0.3) of
# foot-frames. 0.1 is not taken: real footage's planted feet jitter more, and on the Sports2D
# demo the share of frames with a foot labelled fell to 14% / 36% for its two walkers (0.15:
# 25% / 53%; 0.3: 43% / 71%, over-labelling as on the bench).
CONTACT_SPEED = 0.15
# m/s across the line of sight: a planted foot's ankle is still too. The sole's lower point
# stays put through a heel strike and a toe-off while the ankle rolls over it; the truth of
# bench/world.py (the ankle under 0.1 m/s) calls those swings. Labels on the same fits (the
# held-out and training takes of `bench/world.py --max-clips 3`) against that truth, and the
# Sports2D demo's two walkers' share of frames with a foot labelled, by this limit:
#   none 83.5 / 84.2%, 24.6 / 48.0%;  0.6: 83.7 / 84.5%, 23.7 / 48.0%;  0.3: 84.7 / 85.5%,
#   21.5 / 44.5%;  0.2: 85.8 / 86.1%, 17.5 / 35.3%;  0.15: 86.6 / 85.6%, 15.4 / 22.5%.
# Stricter limits please the bench (its errors were mostly shuffles labelled planted) but
# leave a real walker, whose fitted ankles jitter more, with few labels: 0.3 keeps them.
ANKLE_SPEED = 0.3
PLANT_SPEED = 0.5
# The refit should move the body only where the contacts demand: its joints pull toward the
# fit's at this fraction of their reported sigma, which also counts the fit's distance from
# the lifted joints (a doubt about where the truth is, not a licence to move). At the full
# sigma a held-out boxing clip lost 2.4 mm PA-MPJPE to planting; at half, 0.9.
PULL_SIGMA = 0.5
CONTACT_HEIGHT = 0.06  # m: a planted sole's height above the person's plane
# s: a contact that lets go for a frame or two (a jittery fit's foot crossing the speed or height
# limit) has not lifted: such gaps are filled. On cached fits of bench/world.py's clips (three
# draws), labels against the truth (training takes / held-out) and the Sports2D walkers' share of
# frames with a foot labelled: none 84.3 / 86.9%, 21 / 43%; gaps of up to 2 frames at 30 fps
# filled (this) 85.0 / 87.1%, 23 / 48%; of up to 4, 84.5 / 86.9%, 27 / 54%. Taking out short
# contacts as well (an opening after the closing) did better on the bench (85.6 / 87.3%) but left
# the far walker on the box a foot planted in only 19% of his frames: real footage's planted feet
# flicker more.
LABEL_GAP_S = 0.1
HEIGHT_SOFTNESS = 0.015  # m
SLIDE_SCALE = 0.005  # m per frame of planted sole movement that costs as much as detector noise
FLOOR_SCALE = 0.02  # m of planted sole height off the plane that costs as much as detector noise
FLOOR_REACH = 0.05  # m: the floor's pull fades for soles further off the plane than this


def world_up(motion, keypoints: np.ndarray | None = None) -> np.ndarray:
    """(3,) the up direction of `motion`'s world: +y or +z when it knows gravity, else the
    bodies' mean up (hips to shoulders, `meshcap.world.body_up`)."""
    if motion.world == "y-up":
        return np.array([0.0, 1.0, 0.0])
    if motion.world == "z-up":
        return np.array([0.0, 0.0, 1.0])
    return body_up(motion, keypoints=keypoints)


def _lowest(soles: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(..., 2) height along `up` of each foot's lower sole point, soles (..., 2, 2, 3)."""
    return np.min(soles @ up, axis=-1)


def support_levels_of(soles: np.ndarray, speed: np.ndarray, valid: np.ndarray, up: np.ndarray) -> list[np.ndarray]:
    """Per person, (L,) ascending: the heights along `up` of the levels they stand on
    (`meshcap.world.support_levels`: the floor, a box) from their slow soles (speed (P, T, 2)
    m/s) that are near the lower foot; empty for a person who never plants a foot."""
    low = _lowest(soles, up)  # (P, T, 2)
    lower = np.where(np.isfinite(low), low, np.inf).min(-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        ok = valid[..., None] & np.isfinite(low) & (speed < PLANTED_SPEED) & (low - lower < PLANTED_HEIGHT)
    return [support_levels(low[p][ok[p]]) for p in range(len(valid))]


def contact_probability(soles: np.ndarray, speed: np.ndarray, valid: np.ndarray, up: np.ndarray,
                        heights: np.ndarray, speed_limit: float = CONTACT_SPEED,
                        ankle_speed: np.ndarray | None = None) -> np.ndarray:
    """(P, T, 2) probability that each (left, right) foot is planted: its lower sole within
    CONTACT_HEIGHT above the level it stands on, `heights` (P,) one per person or (P, T, 2)
    per foot, and not over LEVEL_GAP below it (a level of its own), and slower than
    `speed_limit` (speed (P, T, 2) m/s, `sole_speeds`), and, given `ankle_speed` (P, T, 2)
    m/s, its ankle slower than ANKLE_SPEED; each softened by a logistic (a quarter of the
    limit, and HEIGHT_SOFTNESS). soles (P, T, 2, 2, 3) heel and toe per foot; 0 where not
    valid or the speed or level is unknown."""
    low = _lowest(soles, up)
    heights = np.asarray(heights, dtype=np.float64)
    h = low - (heights[:, None, None] if heights.ndim == 1 else heights)
    with np.errstate(over="ignore", invalid="ignore"):
        p = _slower(speed, speed_limit) / (1.0 + np.exp((h - CONTACT_HEIGHT) / HEIGHT_SOFTNESS))
        p = np.where(h > -LEVEL_GAP, p, 0.0)
        if ankle_speed is not None:
            p = p * _slower(ankle_speed, ANKLE_SPEED)
    return np.where(valid[..., None] & np.isfinite(p), p, 0.0).astype(np.float32)


def _slower(speed: np.ndarray, limit: float) -> np.ndarray:
    """The logistic 'slower than limit' (a quarter of the limit wide); unknown speeds are fast."""
    speed = np.where(np.isfinite(speed), speed, 10.0)
    return 1.0 / (1.0 + np.exp((speed - limit) / (limit / 4)))


def _planted(motion, model, speed_limit: float = CONTACT_SPEED,
             ankles: bool = True) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """(up (3,), each person's support levels (L,), the level each foot stands on (P, T, 2),
    NaN where its person has none, contact probability (P, T, 2)) of `motion` as it stands;
    `ankles`: the ankle must be still too (the labels; not the planting pass's candidates)."""
    kp = motion.keypoints3d("blazepose33", model)
    # without foot points in the input (COCO-17) the fit's heels and toes are its priors'
    # guess, its ankles were seen: the ankles are judged instead (bench/world.py, labels
    # against the truth: held-out 83.9 -> 87.0%, training takes 82.9 -> 84.3%), and the
    # plane they give is lowered to the soles by a flat foot's ankle height
    feet = feet_detected(motion)
    soles = sole_points(motion, keypoints=kp) if feet else ankle_points(kp)
    up = world_up(motion, kp)
    eye = camera_centre(motion)
    speed = sole_speeds(soles, motion.valid, motion.fps, eye)
    levels = support_levels_of(soles, speed, motion.valid, up)
    on = level_of(_lowest(soles, up), levels)  # (P, T, 2)
    ankle_speed = None
    if ankles and feet:
        ankle_speed = sole_speeds(ankle_points(kp), motion.valid, motion.fps, eye)
    # a person who never plants a foot has no level and no contacts
    prob = contact_probability(soles, speed, motion.valid, up, on, speed_limit, ankle_speed)
    if not feet:
        lift = ankle_heights(motion, model)
        levels = [lv - lift[p] for p, lv in enumerate(levels)]
        on = on - lift[:, None, None]
    return up, levels, on, prob


def foot_contacts(motion, body_model=None, speed_limit: float = CONTACT_SPEED) -> tuple[np.ndarray, np.ndarray]:
    """(contact (P, T, 2) bool, contact_prob (P, T, 2)) of `motion` as it stands (any world):
    see the module docstring."""
    prob = _planted(motion, body_model if body_model is not None else motion.load_body_model(), speed_limit)[3]
    return steady_labels(prob >= 0.5, motion.valid, motion.fps), prob


def steady_labels(labels: np.ndarray, valid: np.ndarray, fps: float, seconds: float = LABEL_GAP_S) -> np.ndarray:
    """(P, T, 2) labels (P, T, 2) bool with the gaps inside a contact that are shorter than
    about `seconds` filled (a morphological closing along time over an odd window of
    `seconds * fps` frames rounded up, 3 at 30 fps); False where not `valid` (P, T)."""
    k = max(1, int(math.ceil(seconds * fps)) // 2 * 2 + 1)
    if k == 1:
        return labels & valid[..., None]
    padded = np.pad(labels, ((0, 0), (k, k), (0, 0)), mode="edge")
    return binary_closing(padded, np.ones((1, k, 1), bool))[:, k:-k] & valid[..., None]


def floor_height(motion, body_model=None) -> float | None:
    """The floor people stand on, in a Motion whose world knows its up ("z-up" or "y-up", as
    a calibrated capture's does): its height along the up, metres, as the lowest level anyone
    stands on (`support_levels_of`: the medians of their slow, low soles; someone on a box
    stands higher); None when nobody's feet are seen planted."""
    if motion.world not in ("z-up", "y-up"):
        raise ValueError(f"floor_height needs a world that knows its up, not {motion.world!r}")
    levels = _planted(motion, body_model if body_model is not None else motion.load_body_model(), ankles=False)[1]
    heights = np.concatenate([np.asarray(lv, dtype=np.float64) for lv in levels]) if levels else np.zeros(0)
    return float(heights.min()) if len(heights) else None


class ContactTerm:
    """The added cost of `plant_feet` for one person, in the fit's (camera) frame: prob (T, 2)
    per foot; up (3,) and the height along it of the level each foot stands on, (T, 2) (or
    one number for all). A `meshcap.fitting.gauss_newton.PointTerm`
    on the four sole points (heel, toe of each foot), and callable as `SingleViewFitter.refine`'s
    Adam path takes a term: term(out, pose, transl).

    - floor: a planted foot's lower sole point at the plane's height, Geman-McClure at
      FLOOR_REACH (robust: a plane that is off by a tilt of a few degrees over a long walk must
      not drag the feet, only settle the ones that are near it), weighed by the probability;
    - slide: the sole point that is lower over both frames of a pair stays put along the plane,
      weighed by the lower of the two frames' probabilities.
    """

    def __init__(self, model, layout: str, shape: torch.Tensor, up: torch.Tensor, height: torch.Tensor | float,
                 prob: torch.Tensor) -> None:
        from meshcap.keypoints.layouts import get_layout

        names = get_layout(layout).names
        own = all(n in names for n in SOLE_POINTS)
        self.layout = layout if own else "blazepose33"
        self.index = [get_layout(self.layout).names.index(n) for n in SOLE_POINTS]
        self._own, self._model, self._shape = own, model, shape
        height = torch.as_tensor(height, dtype=prob.dtype)
        # a foot on no level is not planted (prob 0): any height will do there
        self.up, self.prob = up, prob
        self.height = torch.where(torch.isfinite(height), height, torch.zeros_like(height)).expand_as(prob)
        self.flat = torch.eye(3, dtype=up.dtype) - torch.outer(up, up)  # the plane's own directions
        self.pair = torch.minimum(prob[1:], prob[:-1])  # (T-1, 2): both frames planted

    def _parts(self, pts: torch.Tensor):
        soles = pts.reshape(-1, 2, 2, 3)  # (T, foot, heel/toe, 3)
        h = soles @ self.up  # (T, 2, 2)
        low, sel = h.min(-1)
        k = (h[1:] + h[:-1]).argmin(-1)  # (T-1, 2): the point that must stay, per pair
        step = soles[1:] - soles[:-1]  # (T-1, 2, 2, 3)
        step = torch.take_along_dim(step, k[..., None, None].expand(-1, -1, 1, 3), dim=2)[:, :, 0]
        return low, sel, k, step

    def cost(self, pts: torch.Tensor) -> torch.Tensor:
        from meshcap.fitting.smplify import gmof

        low, _, _, step = self._parts(pts)
        floor = (self.prob * gmof((low - self.height).square(), FLOOR_REACH)).sum(-1) / FLOOR_SCALE ** 2
        slide = (self.pair * (step @ self.flat).square().sum(-1)).sum(-1) / SLIDE_SCALE ** 2
        return floor + torch.cat([slide, slide.new_zeros(1)])

    def linearise(self, pts: torch.Tensor):
        T = pts.shape[0]
        low, sel, k, step = self._parts(pts)
        r = low - self.height
        s2 = FLOOR_REACH ** 2
        # the kernel reweighted (IRLS), as the fit's data term is
        w = (self.prob * s2 * s2 / (s2 + r.square()).square()).sqrt() / FLOOR_SCALE  # (T, 2)
        ru = w * r
        Ju = pts.new_zeros(T, 2, 4, 3)
        feet = torch.arange(2)[None]
        Ju[torch.arange(T)[:, None], feet, 2 * feet + sel] = w[..., None] * self.up  # each foot's lower point
        c = self.pair.sqrt() / SLIDE_SCALE  # (T-1, 2)
        rp = (c[..., None] * (step @ self.flat)).reshape(T - 1, 6)
        Jp1 = pts.new_zeros(T - 1, 2, 3, 4, 3)  # (pair, foot, residual axis, point, axis)
        for f in range(2):
            block = c[:, f, None, None] * self.flat  # (T-1, 3, 3)
            Jp1[torch.arange(T - 1), f, :, 2 * f + k[:, f]] = block
        Jp1 = Jp1.reshape(T - 1, 6, 4, 3)
        return ru, Ju, rp, -Jp1, Jp1

    def __call__(self, out, pose, transl) -> torch.Tensor:
        kp = (out.keypoints if self._own
              else self._model(pose, self._shape, transl, layout="blazepose33", vertices=False).keypoints)
        return self.cost(kp[:, self.index]).sum()


def plant_feet(motion, body_model=None, keypoints: np.ndarray | None = None, options=None,
               iters: int = 40):
    """`motion` with its feet planted: refit (see the module docstring) every person of a
    single-camera Motion in any world, then label its contacts (`contact`, `contact_prob`).

    keypoints (P, T, K, 3): what the fit saw in `motion.keypoint_layout`, if not
    `motion.keypoints2d` (e.g. undistorted); options: the `FitOptions` of the fit (its solver:
    Gauss-Newton takes at most `iters_gn_settle` steps, Adam `iters`). A person who never
    plants a foot is left as fitted. Raises WorldError (from `world_up`) in the camera's frame
    without anybody fitted."""
    from meshcap.fitting.smplify import FitInit, SingleViewFitter
    from meshcap.fitting.windows import refine_windowed
    from meshcap.fitting.banded import one_blas_thread

    if motion.cam_K.shape[0] != 1:
        raise ValueError("plant_feet refits single-camera motions only")
    model = body_model if body_model is not None else motion.load_body_model()
    up, levels, on, prob = _planted(motion, model, PLANT_SPEED, ankles=False)
    # refit in the camera's frame, where the fitter projects; the world's levels go with it
    R, t = motion.cam_R[0].astype(np.float64), motion.cam_t[0].astype(np.float64)
    cam = move_motion(motion, R, t, "camera", model) if motion.world != "camera" else copy.deepcopy(motion)
    up_c = R @ up if motion.world != "camera" else up
    on_c = on + up_c @ t if motion.world != "camera" else on
    kp2 = motion.keypoints2d if keypoints is None else np.asarray(keypoints, dtype=np.float32)
    fitter = SingleViewFitter(model, motion.keypoint_layout, options)
    o = fitter.options
    out = cam

    def refit(p: int) -> None:
        fr = np.flatnonzero(motion.valid[p])
        if not len(levels[p]) or len(fr) < 3 or not (prob[p, fr] >= 0.5).any():
            return
        sl = slice(int(fr[0]), int(fr[-1]) + 1)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=model.dtype)  # noqa: E731
        # the fit's joints pull at PULL_SIGMA of their reported sigma (see there)
        start = FitInit(as_t(cam.poses[p, sl]), as_t(cam.shape[p:p + 1]), as_t(cam.transl[p, sl]),
                        as_t(np.maximum(PULL_SIGMA * cam.uncertainty[p, sl], 1e-3)))
        prob_p, on_p = as_t(prob[p, sl]), as_t(on_c[p, sl])
        term = lambda a, b: ContactTerm(model, motion.keypoint_layout, start.shape, as_t(up_c),  # noqa: E731
                                        on_p[a:b], prob_p[a:b])
        # long tracks window by window, as fitting does (flat memory)
        # the fit ended settled: temporal terms `settle_accel` times stronger (see
        # `SingleViewFitter.fit`); at their plain weight the refit brought the detector's
        # jitter back (bench/world.py: accel 10.6 -> 21.4 mm/frame^2 for every joint)
        res = refine_windowed(fitter, as_t(kp2[p, sl]), as_t(motion.cam_K[0]), start, term, motion.fps, iters,
                              temporal_scale=o.settle_accel if o.temporal and o.smooth_s > 0 else 1.0)
        out.poses[p, sl] = res.poses.numpy()
        out.transl[p, sl] = res.transl.numpy()
        out.joints3d[p, sl] = res.joints.numpy()

    # people two at a time (PyTorch releases the GIL in its ops), NumPy's BLAS on one thread
    # throughout, so that the result does not depend on how the two interleave
    workers = max(1, min(2, motion.num_people, os.cpu_count() or 1))
    with one_blas_thread(), ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(refit, p) for p in range(motion.num_people)]:
            fut.result()
    if motion.world != "camera":
        out = move_motion(out, R.T, -R.T @ t, motion.world, model)
        out.floor = motion.floor  # back in the world it was measured in
    out.contact, out.contact_prob = foot_contacts(out, model)
    return out
