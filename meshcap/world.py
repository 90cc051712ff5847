"""The world a Motion stands in: the ground and gravity's direction from the feet on it, and the
rigid move that puts a Motion on that ground (y up, the ground at y = 0).

A monocular fit lives in its camera's frame, tilted by the camera's pitch and roll and metres
away from the origin; an animation tool wants the character standing on its floor grid. The
ground is estimated from the soles (heel and toe points of the fitted body) in the frames where
a foot is planted: low, and slow (the ankles, a flat foot's ankle height above it, where the
input had no foot points). Walking alone leaves the plane's tilt about the walking line
open (the soles lie along a line), and someone who stays on one spot leaves nearly all of it
open, so a prior on the normal enters: gravity's up as the people's posture tells it
(`meshcap.posture`, a small network trained on real motion capture). The torso's mean
direction (hips to shoulders) leans with the motion (a get-up, a boxer's crouch) and the
stance (planted sole to hip) with the footwork; the prior was their mean until the posture
network replaced it. People standing, turning, or several people on one floor pin the plane
down from the data. The fit is robust (reweighted) so that a minority of
soles off the floor (someone on a box, a mis-fitted frame) does not tilt it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from meshcap.errors import InputError
from meshcap.posture import posture_up

SOLE_POINTS = ("left_heel", "left_foot_index", "right_heel", "right_foot_index")
# the soles that may tell where a person stands (also `meshcap.contacts.support_levels_of`)
PLANTED_SPEED = 0.5  # m/s: a planted foot in a monocular fit (depth jitter moves it a little)
PLANTED_HEIGHT = 0.08  # m above the lower foot, or above the ground once it is known
# m^2: how much the posture's up direction steers the plane's normal. On cached fits of
# bench/world.py's training takes (up's median / p90 off gravity): 0.01 6.1 / 11.0 deg, 0.02
# 4.2 / 11.0, 0.03 5.0 / 12.0, 0.05 4.7 / 14.3, 0.1 4.7 / 13.8 (held-out: 0.02 5.6 / 13.1, 0.05
# 5.9 / 15.6): no trend beyond the median of ten clips moving between clips. 0.02 was shipped
# for a commit and taken back: it put the tilted walk of tests/test_posture.py 3.8 degrees off
# instead of 2.2. Measured again with the ankle planes and the sigma-weighted posture (stop 44,
# cached fits, three draws; held-out seeds 0-2 / 3-5 / training takes, up's median / p90 /
# mean): 0.01 3.4 / 10.6 / 5.3, 4.2 / 12.0 / 6.9, 3.1 / 9.5 / 4.3; 0.02 4.2 / 11.1 / 5.5, 5.3 /
# 12.3 / 6.3, 3.6 / 9.8 / 4.5; 0.05 5.6 / 12.5 / 6.6, 4.6 / 16.0 / 7.6, 3.8 / 12.0 / 5.1 (the
# Sports2D people 3.6 degrees apart at 0.01, 5.1 at 0.05). Not taken: straight walks lose (that
# tilted walk over six camera draws: median 2.3 degrees at 0.05, 4.6 at 0.02, 5.4 at 0.01, one
# bench draw of a walk 33 degrees off), and walking is the common case; the gain is in
# boxing, dancing, kicks and cartwheels. Stop 45 tried weights that follow the data (its count,
# its collinearity, footprints' scatter, each foot centred on its own) on 172 cached fits: each
# gain on the random cameras cost the straight walk (docs/design.md, The world, the table).
PRIOR_WEIGHT = 0.05
ROBUST_SCALE = 0.05  # m: soles this far off the plane weigh half
# m: planted soles of one person that lie this much further apart along the up than their
# neighbours stand on different levels (a box and the floor: the Sports2D demo's man walks on a
# wall about 1.7 m high, flips off it and lands on the grass the woman walks on); a foot this
# far below every level of its person stands on none of them
LEVEL_GAP = 0.3
LEVEL_SHARE = 0.05  # a level holds at least this share of its person's planted soles (and 3)


class WorldError(InputError):
    """The ground cannot be estimated from this motion (no feet on it)."""


@dataclass
class Ground:
    """A ground plane in a Motion's frame: the points X with up . X = height.

    up (3,) unit normal, against gravity; height () metres; contacts (P, T, 2) bool: the
    (left, right) foot of each person planted in each frame; residual (): robust RMS distance
    of the planted soles from the plane, metres; points: how many soles it rests on; heights
    (P,): each person's own plane (monocular depth places people on parallel planes), the
    level they stand on most; levels: per person, (L,) ascending, every level they stand on
    (`support_levels`: a box and the floor beside it). `height` is the floor: the lowest level
    anyone stands on, or among levels within LEVEL_GAP of it the one whose soles pin its height
    best (their robust spread over the square root of their count)."""

    up: np.ndarray
    height: float
    contacts: np.ndarray
    residual: float
    points: int
    heights: np.ndarray | None = None
    levels: list | None = None

    def tilt_to(self, other: "Ground") -> float:
        """Angle between the two planes' normals, degrees."""
        return float(np.degrees(np.arccos(np.clip(self.up @ other.up, -1.0, 1.0))))


def sole_points(motion, body_model=None, keypoints: np.ndarray | None = None) -> np.ndarray:
    """(P, T, 2, 2, 3) heel and toe (last but one axis) of the left and right foot of each person
    in each frame, in the Motion's frame; NaN where the person was not fitted. `keypoints`:
    the Motion's blazepose33 keypoints (P, T, 33, 3) if already evaluated."""
    from meshcap.keypoints.layouts import get_layout

    kp = motion.keypoints3d("blazepose33", body_model) if keypoints is None else keypoints
    names = get_layout("blazepose33").names
    idx = [names.index(n) for n in SOLE_POINTS]
    return kp[:, :, idx].reshape(kp.shape[0], kp.shape[1], 2, 2, 3)


def feet_detected(motion) -> bool:
    """Whether the Motion's keypoints include heels and toes (BlazePose-33 and OpenPose BODY_25
    do, COCO-17 does not): without them the fit's feet point wherever its priors put them."""
    from meshcap.keypoints.layouts import get_layout

    names = set(get_layout(motion.keypoint_layout).names)
    toes = {"left_foot_index", "right_foot_index"} <= names or {"left_big_toe", "right_big_toe"} <= names
    return {"left_heel", "right_heel"} <= names and toes


def ankle_points(keypoints: np.ndarray) -> np.ndarray:
    """(P, T, 2, 2, 3) the left and right ankle of blazepose33 keypoints (P, T, 33, 3), each
    twice: `sole_points`' shape, for inputs without foot points (`feet_detected`)."""
    from meshcap.keypoints.layouts import get_layout

    names = get_layout("blazepose33").names
    ankles = keypoints[:, :, [names.index("left_ankle"), names.index("right_ankle")]]
    return np.repeat(ankles[:, :, :, None], 2, axis=3)


def ankle_heights(motion, body_model=None) -> np.ndarray:
    """(P,) metres: how high each person's ankles stand over the ground on a flat foot, their
    body in the rest pose: the ankle keypoints over the mid-point of heel and toe, along the
    body model's up (y)."""
    import torch

    from meshcap.keypoints.layouts import get_layout

    model = body_model if body_model is not None else motion.load_body_model()
    names = get_layout("blazepose33").names
    out = np.zeros(motion.num_people)
    with torch.no_grad():
        for p in range(motion.num_people):
            kp = model(torch.zeros(1, model.num_joints, 3, dtype=model.dtype, device=model.device),
                       torch.as_tensor(motion.shape[p: p + 1]).to(model.device, model.dtype), layout="blazepose33",
                       vertices=False, bone_scale=motion.bone_scale_of(p)).keypoints[0, :, 1].cpu().numpy()
            out[p] = np.mean([kp[names.index(f"{side}_ankle")]
                              - (kp[names.index(f"{side}_heel")] + kp[names.index(f"{side}_foot_index")]) / 2
                              for side in ("left", "right")])
    return out


def body_up(motion, body_model=None, valid: np.ndarray | None = None,
            keypoints: np.ndarray | None = None) -> np.ndarray:
    """(3,) unit: the mean direction from mid-hip to mid-shoulder over the frames `valid`
    (P, T) (default: every fitted frame). `keypoints` as for `sole_points`."""
    from meshcap.keypoints.layouts import get_layout

    kp = motion.keypoints3d("blazepose33", body_model) if keypoints is None else keypoints
    names = get_layout("blazepose33").names
    sh = kp[:, :, [names.index("left_shoulder"), names.index("right_shoulder")]].mean(2)
    hip = kp[:, :, [names.index("left_hip"), names.index("right_hip")]].mean(2)
    d = (sh - hip)[motion.valid if valid is None else valid]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    m = np.nanmean(d, axis=0) if len(d) else np.full(3, np.nan)
    if not np.isfinite(m).all() or np.linalg.norm(m) < 1e-6:
        raise WorldError("cannot estimate the ground: nobody was fitted")
    return m / np.linalg.norm(m)


def velocities(x: np.ndarray, valid: np.ndarray, fps: float) -> np.ndarray:
    """(P, T, ..., 3) velocity, m/s, of positions x (P, T, ..., 3) from central differences two
    frames apart (one frame apart is mostly fitting jitter); NaN where a neighbour is missing."""
    T = x.shape[1]
    t = np.arange(T)
    a, b = np.maximum(t - 2, 0), np.minimum(t + 2, T - 1)
    ok = (b > a) & valid[:, a] & valid[:, b]  # (P, T)
    step = np.maximum(b - a, 1).reshape((1, T) + (1,) * (x.ndim - 2))
    v = (x[:, b] - x[:, a]) * fps / step
    return np.where(ok.reshape(ok.shape + (1,) * (x.ndim - 2)), v, np.nan)


def sole_speeds(soles: np.ndarray, valid: np.ndarray, fps: float, eye: np.ndarray) -> np.ndarray:
    """(P, T, 2) speed, m/s, of each foot's mid-sole across the line of sight from `eye` (3,),
    the camera's centre; inf where unknown. A monocular fit's depth jitters (a planted foot
    slides toward and away from the camera by a metre a second), while the image pins the
    movement across the line of sight: that part tells a planted foot from a swinging one."""
    x = soles.mean(3)
    v = velocities(x, valid, fps)
    ray = x - eye
    ray = ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        s = np.linalg.norm(v - (v * ray).sum(-1, keepdims=True) * ray, axis=-1)
    return np.where(np.isfinite(s), s, np.inf)


def camera_centre(motion, camera: int = 0) -> np.ndarray:
    """(3,) where camera `camera` of `motion` stands, in the Motion's frame."""
    return -motion.cam_R[camera].T.astype(np.float64) @ motion.cam_t[camera].astype(np.float64)


def feet_seen(motion, min_confidence: float = 0.5) -> np.ndarray:
    """(P, T, 2) whether each (left, right) ankle was detected in 2D (camera 0): a foot the
    detector did not see is the fit's guess and says nothing about the ground."""
    from meshcap.keypoints.layouts import get_layout

    names = get_layout(motion.keypoint_layout).names
    if "left_ankle" not in names or "right_ankle" not in names:
        return np.broadcast_to(motion.valid[..., None], motion.valid.shape + (2,)).copy()
    conf = motion.keypoints2d[..., [names.index("left_ankle"), names.index("right_ankle")], 2]
    return motion.valid[..., None] & (conf >= min_confidence)


def support_levels(heights: np.ndarray) -> np.ndarray:
    """(L,) ascending: the levels that one person's planted soles, at `heights` (N,) metres
    along the up, stand on: runs of the sorted heights without a step over LEVEL_GAP, each
    the median of its run; runs with under LEVEL_SHARE of the soles (or under 3) are left out
    (a foot the fit sank for a frame or two is no level). Empty when nothing is left."""
    h = np.sort(np.asarray(heights, dtype=np.float64)[np.isfinite(heights)])
    runs = np.split(h, np.flatnonzero(np.diff(h) > LEVEL_GAP) + 1) if len(h) else []
    least = max(3, LEVEL_SHARE * len(h))
    return np.array([float(np.median(r)) for r in runs if len(r) >= least])


def _level_index(h: np.ndarray, levels: list) -> np.ndarray:
    """(P, T, 2) int: which of its person's `levels` (L,) each foot at height h (P, T, 2)
    stands on, the nearest; -1 where the person has none or h is not finite."""
    out = np.full(h.shape, -1)
    for p, lv in enumerate(levels):
        lv = np.asarray(lv, dtype=np.float64)
        if len(lv) and p < len(h):
            near = np.abs(np.nan_to_num(h[p], nan=np.inf)[..., None] - lv).argmin(-1)
            out[p] = np.where(np.isfinite(h[p]), near, -1)
    return out


def level_of(h: np.ndarray, levels: list) -> np.ndarray:
    """(P, T, 2) the level each foot stands on, of heights h (P, T, 2) along the up and each
    person's `levels` (L,): the nearest one; NaN where the person has none or h is not finite."""
    idx = _level_index(h, levels)
    out = np.full(h.shape, np.nan)
    for p, lv in enumerate(levels):
        if len(lv) and p < len(h):
            out[p] = np.where(idx[p] >= 0, np.asarray(lv, dtype=np.float64)[idx[p]], np.nan)
    return out


def _contacts(soles: np.ndarray, valid: np.ndarray, seen: np.ndarray, speed: np.ndarray, up: np.ndarray,
              levels: list | None) -> tuple[np.ndarray, np.ndarray]:
    """(contacts (P, T, 2) bool, sole points (P, T, 2, 3)): each foot's lower point along `up`,
    planted when seen, slow (`speed` (P, T, 2) m/s) and low (near the lower foot, or, once the
    person's `levels` are known, near the level it stands on and not far below it)."""
    h = soles @ up  # (P, T, 2, 2)
    fin = np.isfinite(h)
    low = np.take_along_axis(soles, np.where(fin, h, np.inf).argmin(-1)[..., None, None], axis=3)[:, :, :, 0]
    hl = np.where(fin.any(-1), np.where(fin, h, np.inf).min(-1), np.nan)  # (P, T, 2)
    if levels is None:
        ref = np.where(np.isfinite(hl), hl, np.inf).min(-1, keepdims=True)
    else:
        ref = level_of(hl, levels)
    with np.errstate(invalid="ignore"):
        c = valid[..., None] & seen & (speed < PLANTED_SPEED) & (hl - ref < PLANTED_HEIGHT)
        if levels is not None:
            c &= hl - ref > -LEVEL_GAP
    return c & np.isfinite(hl), low


def _fit_plane(points: np.ndarray, group: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal, heights (G,), weights (N,)) of parallel planes through points (N, 3), one
    height per `group` (N,) int in [0, G): reweighted (Cauchy at ROBUST_SCALE), the normal
    drawn toward `prior` by PRIOR_WEIGHT.

    One height per person, because a monocular fit places each person at the depth their
    body's size implies: people on one floor come out on parallel planes, not on one."""
    G = int(group.max()) + 1
    w = np.ones(len(points))
    n = prior
    d = np.zeros(G)
    # the prior acts on the plane's tilt: it penalises the normal's departure from `prior`
    P = PRIOR_WEIGHT * (np.eye(3) - np.outer(prior, prior))
    for _ in range(10):
        c = np.zeros((G, 3))
        for g in range(G):
            sel = group == g
            if sel.any():
                c[g] = (w[sel, None] * points[sel]).sum(0) / w[sel].sum()
        X = points - c[group]
        M = (w[:, None, None] * X[:, :, None] * X[:, None, :]).sum(0) / w.sum() + P
        n = np.linalg.eigh(M)[1][:, 0]
        n = n if n @ prior > 0 else -n
        d = c @ n
        r = points @ n - d[group]
        w = 1.0 / (1.0 + (r / ROBUST_SCALE) ** 2)
    return n, d, w


def estimate_ground(motion, body_model=None, people=None, min_points: int = 10) -> Ground:
    """The ground under the people of `motion` (indices `people`, default all), in its frame:
    their planted feet, with the up direction their posture says (`posture_up`) as the prior
    on its tilt. Raises
    WorldError when too few planted feet are seen."""
    model = body_model if body_model is not None else motion.load_body_model()
    kp = motion.keypoints3d("blazepose33", model)  # one pass over the frames for soles, torsos and posture
    soles = sole_points(motion, keypoints=kp)
    lift = np.zeros(motion.num_people)
    if not feet_detected(motion):
        # No foot points in the input (COCO-17): the fit's heels and toes are its priors'
        # guess, and a foot that points down put the ground 5-10 cm low. The ankles were seen:
        # the plane rests on planted ankles and drops by a flat foot's ankle height
        # (`bench/world.py --seeds 0,1`: the ground height 5.5 -> 4.7 cm off median, 9.5 -> 6.7
        # mean; up 7.2 -> 6.9 degrees mean; docs/design.md, The world).
        soles = ankle_points(kp)
        lift = ankle_heights(motion, model)
    valid = motion.valid.copy()
    if people is not None:
        keep = np.zeros(len(valid), bool)
        keep[list(people)] = True
        valid &= keep[:, None]
    if not valid.any():
        raise WorldError("cannot estimate the ground: nobody was fitted")
    up = body_up(motion, keypoints=kp)  # every fitted person's torso: which feet are low
    seen = feet_seen(motion)
    # each foot's mid-sole, full speed: the slower, across-the-sight speed of `sole_speeds`
    # finds more planted feet (the ground in 6 of 7 bench/world.py clips instead of 4) but
    # moved the Sports2D people's separate estimates from 2.7 to 3.2 degrees apart
    with np.errstate(invalid="ignore"):
        speed = np.linalg.norm(velocities(soles.mean(3), valid, motion.fps), axis=-1)  # (P, T, 2)
    speed = np.where(np.isfinite(speed), speed, np.inf)
    levels = None
    for it in range(2):  # contacts from the bodies' up, then from the levels found with them
        contacts, low = _contacts(soles, valid, seen, speed, up, levels)
        if contacts.sum() < min_points and it == 0 and motion.cam_K.shape[0] == 1:
            # nobody's foot is still in the fit: running, skipping. A runner's stance is a
            # quarter of a second, and depth jitter moves it faster than PLANTED_SPEED: judge
            # the feet by their speed across the line of sight only, which the image pins
            planted = int(contacts.sum())
            speed = sole_speeds(soles, valid, motion.fps, camera_centre(motion))
            contacts, low = _contacts(soles, valid, seen, speed, up, levels)
            if contacts.sum() >= min_points:
                warnings.warn(f"a foot is planted in only {planted} frames (running?); the ground rests "
                              f"on the {int(contacts.sum())} foot-frames whose feet hold still across the "
                              f"camera's line of sight, and is less certain", stacklevel=2)
        pts = low[contacts]
        group = np.nonzero(contacts)[0]
        if len(pts) < min_points:
            raise WorldError(f"cannot estimate the ground: feet planted and seen in only {len(pts)} "
                             f"foot-frames (need {min_points}); are the feet in view?")
        if it == 0:
            # the people's posture (`meshcap.posture`); on bench/world.py's held-out clips the
            # ground with it is 5.5 deg median and 15.6 p90 off gravity, with the mean of the
            # torso's and the stance's directions 7.1 and 30.7
            prior = posture_up(motion, valid=valid, keypoints=kp, layout="blazepose33")
        if levels is None:
            # one plane per person first (its robust weights keep it on the level they stand
            # on most), then the levels each person's planted soles stand on along its up
            up, d, w = _fit_plane(pts, group, prior)
            levels = [support_levels(pts[group == p] @ up) for p in range(len(valid))]
            continue
        # one plane height per level of each person, the normal shared
        keys = np.stack([group, _level_index(low @ up, levels)[contacts]], -1)  # (person, level)
        uniq, member = np.unique(keys, axis=0, return_inverse=True)
        member = member.reshape(-1)
        up, d, w = _fit_plane(pts, member, prior)
    counts = np.bincount(member, minlength=len(uniq))
    r2 = w * (pts @ up - d[member]) ** 2
    residual = float(np.sqrt(r2.sum() / w.sum()))
    spread = np.array([np.sqrt(r2[member == k].sum() / w[member == k].sum()) for k in range(len(uniq))])
    by_person = [[k for k in range(len(uniq)) if uniq[k, 0] == p] for p in range(len(valid))]
    heights = np.array([d[max(ks, key=lambda k: counts[k])] if ks else np.nan for ks in by_person])
    # people without planted feet of their own: the mean (a guess; they keep their depth)
    heights = np.where(np.isfinite(heights), heights, np.nanmean(heights))
    # The floor is the lowest level anyone stands on (people stand on boxes, not in pits):
    # until stop 47 it was the person whose soles lay flattest, and once the Sports2D demo's
    # man was followed through his flip off the wall, his wall (most of his soles) became the
    # floor and the woman walked 1.6 m under it. Levels near the lowest are the same floor seen
    # through each person's depth: the one whose height its soles pin best, their robust spread
    # over the square root of their count (a fit whose feet bob in depth says least about where
    # the floor is, and so do six soles of a man crouching after a flip).
    enough = np.flatnonzero(counts >= max(3, min_points // 2))
    if not len(enough):
        enough = np.array([int(counts.argmax())])
    near = enough[d[enough] < d[enough].min() + LEVEL_GAP]
    ref = int(near[(spread[near] / np.sqrt(counts[near])).argmin()])
    heights = heights - lift
    per_level = [np.sort(d[ks] - lift[p]) for p, ks in enumerate(by_person)]
    return Ground(up, float(d[ref] - lift[uniq[ref, 0]]), contacts, residual, len(pts), heights, per_level)


def ground_frame(ground: Ground, motion) -> tuple[np.ndarray, np.ndarray]:
    """(R (3, 3), t (3,)) with X_world = R X + t: y along the ground's up, the ground at y = 0,
    z toward camera 0 (level), x to its right; the origin under the first person's first
    fitted root position."""
    y = ground.up
    cam_R = np.asarray(motion.cam_R[0], dtype=np.float64)
    forward = cam_R.T @ np.array([0.0, 0.0, 1.0])  # camera 0's viewing direction, motion frame
    z = -(forward - (forward @ y) * y)
    if np.linalg.norm(z) < 1e-6:  # looking straight down: keep the camera's own up as -z
        z = cam_R.T @ np.array([0.0, 1.0, 0.0])
        z = z - (z @ y) * y
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    R = np.stack([x, y, z])
    p = int(np.flatnonzero(motion.valid.any(1))[0])
    t0 = int(np.flatnonzero(motion.valid[p])[0])
    root = motion.joints3d[p, t0, 0].astype(np.float64)
    origin = root - (root @ y - ground.height) * y
    return R, -R @ origin


def move_motion(motion, R: np.ndarray, t: np.ndarray, world: str, body_model=None):
    """A copy of `motion` moved rigidly by X' = R X + t into the frame called `world` (see
    `meshcap.motion`): joints, root rotations and translations, and the cameras' extrinsics
    so that every camera still sees the same image; its `floor` (a height in the old world)
    is dropped."""
    import copy

    import roma
    import torch

    model = body_model if body_model is not None else motion.load_body_model()
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    m = copy.deepcopy(motion)
    with torch.no_grad():
        rest_root = model.rest_joints(torch.as_tensor(motion.shape, dtype=model.dtype))[:, 0].cpu().numpy()
    v = m.valid
    root = roma.rotvec_to_rotmat(torch.as_tensor(m.poses[..., 0, :], dtype=torch.float64)).numpy()
    new_root = roma.rotmat_to_rotvec(torch.as_tensor(R @ root)).numpy()
    # the root turns about its own joint: joint = R_root (rest - rest_root) + rest_root + transl
    anchor = m.transl + rest_root[:, None]
    new_transl = anchor @ R.T + t - rest_root[:, None]
    m.poses[..., 0, :] = np.where(v[..., None], new_root, 0.0)
    m.transl = np.where(v[..., None], new_transl, 0.0).astype(np.float32)
    m.joints3d = np.where(v[..., None, None], m.joints3d @ R.T + t, 0.0).astype(np.float32)
    cam_R = m.cam_R.astype(np.float64) @ R.T
    m.cam_t = (m.cam_t - np.einsum("cij,j->ci", cam_R, t)).astype(np.float32)
    m.cam_R = cam_R.astype(np.float32)
    m.world = world
    m.floor = None  # a height along the old world's up
    return m


def ground_motion(motion, body_model=None, required: bool = False):
    """`motion` moved onto its ground (world "y-up": y up, the ground at y = 0) and that
    Ground (in the original frame), or, when the ground cannot be estimated, `motion` as it is
    with a warning (`required` False) or a WorldError (`required` True)."""
    model = body_model if body_model is not None else motion.load_body_model()
    try:
        ground = estimate_ground(motion, model)
    except WorldError as e:
        if required:
            raise
        warnings.warn(f"{e}; the motion stays in the camera's frame", stacklevel=2)
        return motion, None
    R, t = ground_frame(ground, motion)
    return move_motion(motion, R, t, "y-up", model), ground


def calibration_up(cameras) -> str | None:
    """"z-up" or "y-up" when a calibration's cameras agree on which world axis points up (their
    images' up directions average within 30 degrees of +z or +y: cameras stand upright), else
    None (a calibration whose world is tilted or arbitrary)."""
    ups = np.stack([-np.asarray(c.R, dtype=np.float64)[1] for c in cameras])  # image up, world frame
    m = ups.mean(0)
    if np.linalg.norm(m) < 1e-6:
        return None
    m /= np.linalg.norm(m)
    for name, axis in (("z-up", np.array([0.0, 0.0, 1.0])), ("y-up", np.array([0.0, 1.0, 0.0]))):
        if m @ axis > np.cos(np.radians(30.0)):
            return name
    return None


WORLD_OPTIONS = (None, "ground", "camera")


def check_world_option(world: str | None) -> None:
    """Raise InputError unless `world` is one of WORLD_OPTIONS (what `place_in_world` takes)."""
    if world not in WORLD_OPTIONS:
        raise InputError(f"world must be 'ground' or 'camera', got {world!r}")


def place_in_world(motion, body_model=None, world: str | None = None, cameras=None):
    """The Motion in the world a user wants (see `meshcap.motion`): `world` "camera" keeps it
    as fitted; "ground" (required) or None (with a warning and the camera frame when the ground
    cannot be estimated) stands it on its ground. With `cameras` (a calibrated capture), a
    calibration whose cameras stand upright in a z-up or y-up world keeps that world."""
    check_world_option(world)
    if world == "camera":
        return motion
    if cameras is not None:
        up = calibration_up(cameras)
        if up is not None:
            motion.world = up
            return motion
    return ground_motion(motion, body_model, required=world == "ground")[0]
