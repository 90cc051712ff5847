"""`Motion`, the one result type, and the motion.npz file format (schema version 3 when it holds
per-bone scales, else 2; version-1 files, which have no foot contacts, still load).

A motion.npz is a plain `.npz` that numpy alone reads (`np.load(path)`, no pickled objects).
Every per-person array has a leading person axis P, even for one person; frames where a person
was not seen are `valid == False` and hold zeros (their numbers carry no meaning).

| key                  | shape / type        | meaning                                                  |
|----------------------|---------------------|----------------------------------------------------------|
| format               | str                 | "meshcap.motion"                                         |
| version              | int                 | 3 with bone_scale, else 2 (1: without the contact keys)  |
| fps                  | float               | frames per second of the result                          |
| frame_times          | (T,) float64        | timestamp of each frame, seconds                         |
| body_model           | str                 | "anny", "smpl", "smplh" or "smplx"                       |
| body_model_settings  | str (JSON)          | e.g. {"gender": "neutral"}                               |
| joint_names, parents | (J,) str, (J,) int  | the fitted skeleton; parents[0] == -1                    |
| person_ids           | (P,) int            | track id of each person                                  |
| poses                | (P, T, J, 3) f32    | local joint rotations, axis-angle, root first            |
| shape                | (P, S) f32          | one body shape per person                                |
| bone_scale           | (P, J) f32, opt     | per-joint scale of the body part it carries (absent: 1)  |
| transl               | (P, T, 3) f32       | root translation, metres, world frame                    |
| joints3d             | (P, T, J, 3) f32    | posed joints, metres, world frame                        |
| keypoints2d          | (P, T, K, 3) f32    | detected keypoints (x, y, confidence), pixels, camera 0  |
| keypoint_layout      | str                 | layout name of keypoints2d (e.g. "blazepose33")          |
| uncertainty          | (P, T, J) f32       | per-joint 1-sigma uncertainty, metres                    |
| valid                | (P, T) bool         | whether the person was fitted in that frame              |
| cam_K                | (C, 3, 3) f32       | intrinsics per camera                                    |
| cam_R, cam_t         | (C, 3, 3), (C, 3)   | world -> camera (OpenCV: x right, y down, z forward)     |
| image_size           | (C, 2) int          | width, height per camera                                 |
| world                | str (optional)      | "y-up", "z-up" or "camera" (absent: "camera"), see below |
| contact              | (P, T, 2) bool, opt | (left, right) foot planted on its support, per frame     |
| contact_prob         | (P, T, 2) f32, opt  | probability of that contact, in [0, 1]                   |
| view_swaps           | (P, T, C) bool, opt | camera c's detection relabelled left <-> right (multi-view) |
| calibration_turn     | (C,) f32, opt       | degrees each camera's orientation was turned from its calibration (multi-view) |
| calibration_focal    | (C,) f32, opt       | each camera's refined focal length over its calibration's (multi-view) |
| floor                | f32, opt            | height of the floor under the feet along a calibrated world's up, metres (absent: 0) |
| frame_R              | (T, 3, 3) f32, opt  | a panning camera 0: its turn, reference view -> frame t  |
| frame_K              | (T, 3, 3) f32, opt  | a panning camera 0: its intrinsics at frame t (zoom)     |

A monocular capture stands on its ground: world "y-up", y against gravity, the ground at
y = 0, the origin under the first person's first position, the camera placed by cam_R/cam_t
(`meshcap.world`); with `--world camera`, or when no feet were seen, the world is camera 0's
frame (cam_R = I, cam_t = 0; world "camera"). A calibrated capture keeps its calibration's
world ("z-up" or "y-up" when its floor is known), and `floor` says where the floor under the
feet is along its up (the planted soles' height: a calibration's origin need not lie on the
floor people stand on). Exports and the viewer turn every world y-up and put that floor at
y = 0 (`Motion.y_up_transform`). The body model's
canonical frame is y up, facing +z; root rotations in `poses` map it into the world.

A panning camera (`capture(..., panning=True)`, `meshcap.camera_motion`) turns and zooms about
a fixed centre: cam_K[0], cam_R[0], cam_t[0] are its reference view (world -> reference), and at
frame t the camera is world -> camera `frame_R[t] @ cam_R[0]`, `frame_R[t] @ cam_t[0]` with
intrinsics `frame_K[t]`; keypoints2d are in frame t's pixels. Both keys are absent for a camera
that stands still.

Bone scales (`BodyModel.forward`'s bone_scale): proportions that the shape space cannot
reach, fitted once per person where several calibrated views pin them down
(`meshcap.fitting.multiview`); joint j's body part (mesh, keypoints, child offsets) is scaled by
bone_scale[p, j] about the joint. Every reader of a Motion poses the body with them (BVH
offsets, glTF skin, renders, the viewer); a file without the key has every scale 1, and
it is then written as version 2, which older meshcap reads.

Foot contacts (`meshcap.contacts`): a foot is planted when its sole is low on the person's own
support (the ground, or whatever they stand on) and still; `contact_prob` is how sure that is
(1 - probability of a swing), `contact` is `contact_prob >= 0.5`. Both keys are absent when no
contacts were estimated (version-1 files, `--world camera` without a ground).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from meshcap.errors import MotionFileError
from meshcap.fileio import save_npz_atomic

FORMAT = "meshcap.motion"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

# What the world frame is (the optional key `world`; files without it are "camera"):
# "camera": camera 0's frame as it was (OpenCV: y down), no gravity known;
# "y-up": y against gravity, the ground at y = 0 (a grounded capture, or a y-up calibration);
# "z-up": z against gravity, the floor at z = 0 (Qualisys and Pose2Sim calibrations).
WORLDS = ("camera", "y-up", "z-up")
# OpenCV camera frame (y down, z forward) -> y up: a half turn about x.
CAMERA_TO_Y_UP = np.diag([1.0, -1.0, -1.0])
_Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# key -> (dtype kind, number of dims); kinds: f float, i int, b bool, U str
_SCHEMA: dict[str, tuple[str, int]] = {
    "format": ("U", 0), "version": ("i", 0), "fps": ("f", 0), "frame_times": ("f", 1),
    "body_model": ("U", 0), "body_model_settings": ("U", 0),
    "joint_names": ("U", 1), "parents": ("i", 1), "person_ids": ("i", 1),
    "poses": ("f", 4), "shape": ("f", 2), "transl": ("f", 3), "joints3d": ("f", 4),
    "keypoints2d": ("f", 4), "keypoint_layout": ("U", 0), "uncertainty": ("f", 3),
    "valid": ("b", 2), "cam_K": ("f", 3), "cam_R": ("f", 3), "cam_t": ("f", 2),
    "image_size": ("i", 2),
}
# keys a file may lack (version 1 never has the contacts; `world` absent means "camera")
_OPTIONAL: dict[str, tuple[str, int]] = {"world": ("U", 0), "contact": ("b", 3), "contact_prob": ("f", 3),
                                         "view_swaps": ("b", 3), "frame_R": ("f", 3), "frame_K": ("f", 3),
                                         "bone_scale": ("f", 2), "calibration_turn": ("f", 1),
                                         "calibration_focal": ("f", 1),
                                         "floor": ("f", 0)}


@dataclass(eq=False)
class Motion:
    """Fitted bodies over time, for P people, T frames, J joints, K keypoints, C cameras.

    Shapes are those of the module table. Construct it directly, or `Motion.load(path)`.
    """

    fps: float
    body_model: str
    joint_names: list[str]
    parents: np.ndarray
    poses: np.ndarray
    shape: np.ndarray
    transl: np.ndarray
    joints3d: np.ndarray
    valid: np.ndarray
    keypoints2d: np.ndarray
    keypoint_layout: str
    uncertainty: np.ndarray
    cam_K: np.ndarray
    cam_R: np.ndarray | None = None
    cam_t: np.ndarray | None = None
    image_size: np.ndarray | None = None
    person_ids: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    body_model_settings: dict = field(default_factory=dict)
    world: str = "camera"
    contact: np.ndarray | None = None
    contact_prob: np.ndarray | None = None
    view_swaps: np.ndarray | None = None
    frame_R: np.ndarray | None = None
    frame_K: np.ndarray | None = None
    bone_scale: np.ndarray | None = None
    calibration_turn: np.ndarray | None = None
    calibration_focal: np.ndarray | None = None
    floor: float | None = None

    def __post_init__(self) -> None:
        self.world = str(self.world)
        if self.world not in WORLDS:
            raise ValueError(f"invalid Motion: world must be one of {', '.join(WORLDS)}, got {self.world!r}")
        f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
        self.poses, self.shape, self.transl = f32(self.poses), f32(self.shape), f32(self.transl)
        self.joints3d, self.keypoints2d = f32(self.joints3d), f32(self.keypoints2d)
        self.uncertainty, self.cam_K = f32(self.uncertainty), f32(self.cam_K)
        self.valid = np.asarray(self.valid, dtype=bool)
        self.parents = np.asarray(self.parents, dtype=np.int64)
        self.joint_names = [str(n) for n in self.joint_names]
        P, T = self.valid.shape if self.valid.ndim == 2 else (0, 0)
        C = self.cam_K.shape[0] if self.cam_K.ndim == 3 else 1
        if self.cam_R is None:
            self.cam_R = np.repeat(np.eye(3, dtype=np.float32)[None], C, 0)
        if self.cam_t is None:
            self.cam_t = np.zeros((C, 3), dtype=np.float32)
        if self.image_size is None:
            self.image_size = np.zeros((C, 2), dtype=np.int64)
        if self.person_ids is None:
            self.person_ids = np.arange(P)
        if self.frame_times is None:
            self.frame_times = np.arange(T) / float(self.fps)
        self.cam_R, self.cam_t = f32(self.cam_R), f32(self.cam_t)
        self.image_size = np.asarray(self.image_size, dtype=np.int64)
        self.person_ids = np.asarray(self.person_ids, dtype=np.int64)
        self.frame_times = np.asarray(self.frame_times, dtype=np.float64)
        if (self.contact is None) != (self.contact_prob is None):
            raise ValueError("invalid Motion: contact and contact_prob come together")
        if self.contact is not None:
            self.contact = np.asarray(self.contact, dtype=bool)
            self.contact_prob = f32(self.contact_prob)
        if self.view_swaps is not None:
            self.view_swaps = np.asarray(self.view_swaps, dtype=bool)
        if (self.frame_R is None) != (self.frame_K is None):
            raise ValueError("invalid Motion: frame_R and frame_K come together")
        if self.frame_R is not None:
            self.frame_R, self.frame_K = f32(self.frame_R), f32(self.frame_K)
        if self.bone_scale is not None:
            self.bone_scale = f32(self.bone_scale)
        if self.calibration_turn is not None:
            self.calibration_turn = f32(self.calibration_turn)
        if self.calibration_focal is not None:
            self.calibration_focal = f32(self.calibration_focal)
        if self.floor is not None:
            self.floor = float(self.floor)
            if not np.isfinite(self.floor):
                raise ValueError(f"invalid Motion: floor must be finite, got {self.floor}")
        problems = _check_consistency(self._arrays())
        if problems:
            raise ValueError("invalid Motion: " + "; ".join(problems))

    def y_up_rotation(self) -> np.ndarray:
        """(3, 3) the rotation from this Motion's world into the y-up frame that exports and the
        viewer use: the world itself when it knows gravity; otherwise camera 0's view turned
        half a turn about x (its image's up as y)."""
        if self.world == "y-up":
            return np.eye(3)
        if self.world == "z-up":
            return _Z_UP_TO_Y_UP.copy()
        return CAMERA_TO_Y_UP @ self.cam_R[0].astype(np.float64)

    def y_up_transform(self) -> tuple[np.ndarray, np.ndarray]:
        """(R (3, 3), t (3,)): world point x -> R x + t in the y-up frame that exports and the
        viewer use: `y_up_rotation`, then the floor under the feet (`floor`, along a calibrated
        world's up) lowered to y = 0."""
        R = self.y_up_rotation()
        return R, np.array([0.0, -(self.floor or 0.0), 0.0])

    def bone_scale_of(self, person: int):
        """(1, J) torch float32 bone scales of `person` for the body model's `bone_scale`, or
        None when the Motion has none (every scale 1)."""
        if self.bone_scale is None:
            return None
        import torch

        return torch.as_tensor(self.bone_scale[person: person + 1])

    def camera_at(self, frame: int, camera: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K (3, 3), R (3, 3), t (3,)) float64: camera `camera` at `frame`, world -> camera; a
        panning camera turns and zooms (frame_R, frame_K), the others stand still."""
        K, R, t = (np.asarray(a[camera], np.float64) for a in (self.cam_K, self.cam_R, self.cam_t))
        if self.frame_R is not None and camera == 0:
            turn = self.frame_R[frame].astype(np.float64)
            return self.frame_K[frame].astype(np.float64), turn @ R, turn @ t
        return K, R, t

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def num_people(self) -> int:
        return self.valid.shape[0]

    @property
    def num_frames(self) -> int:
        return self.valid.shape[1]

    # -- file I/O ------------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        d["body_model_settings"] = json.dumps(self.body_model_settings, sort_keys=True)
        d["joint_names"] = np.array(self.joint_names, dtype=str)
        # without bone scales the file is version 2's, which older readers take
        d["format"], d["version"] = FORMAT, VERSION if self.bone_scale is not None else 2
        return {k: np.asarray(v) for k, v in d.items()}

    def save(self, path: str | Path) -> Path:
        """Write atomically: a temporary file beside `path`, renamed over it when complete."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a motion file must end in .npz")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
        save_npz_atomic(path, self._arrays(), compressed=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Motion":
        """Read and validate a motion.npz; raises MotionFileError saying what is wrong."""
        path = Path(path)
        if not path.exists():
            raise MotionFileError(f"{path}: no such motion file")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise MotionFileError(f"{path}: holds pickled Python objects, which a motion file never does") from None
            raise MotionFileError(f"{path}: not a readable .npz file ({e})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise MotionFileError(f"{path}: not a readable .npz file, truncated or corrupt ({e})") from None
        missing = [k for k in _SCHEMA if k not in data]
        if missing:
            raise MotionFileError(f"{path}: not a meshcap motion file, missing {', '.join(missing)}")
        if str(data["format"]) != FORMAT:
            raise MotionFileError(f"{path}: format is {str(data['format'])!r}, expected {FORMAT!r}")
        if int(data["version"]) not in READABLE_VERSIONS:
            raise MotionFileError(f"{path}: schema version {int(data['version'])}, this meshcap reads versions "
                                  f"{', '.join(map(str, READABLE_VERSIONS))}")
        for k, (kind, ndim) in _OPTIONAL.items():
            if k in data and (data[k].dtype.kind != kind or data[k].ndim != ndim):
                raise MotionFileError(f"{path}: {k!r} has dtype {data[k].dtype} and shape {data[k].shape}, "
                                      f"expected {_KIND_NAMES[kind]} of {ndim} dimensions")
        for a, b in (("contact", "contact_prob"), ("frame_R", "frame_K")):
            if (a in data) != (b in data):
                raise MotionFileError(f"{path}: {a!r} and {b!r} come together, one is missing")
        for k, (kind, ndim) in _SCHEMA.items():
            a = data[k]
            if a.dtype.kind != kind and not (kind == "f" and a.dtype.kind == "i"):
                raise MotionFileError(f"{path}: {k!r} has dtype {a.dtype}, expected {_KIND_NAMES[kind]}")
            if a.ndim != ndim:
                raise MotionFileError(f"{path}: {k!r} has {a.ndim} dimensions {a.shape}, expected {ndim}")
        problems = _check_consistency(data)
        if problems:
            raise MotionFileError(f"{path}: " + "; ".join(problems))
        try:
            settings = json.loads(str(data["body_model_settings"]))
        except json.JSONDecodeError as e:
            raise MotionFileError(f"{path}: body_model_settings is not valid JSON ({e})") from None
        kw = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if "world" in data and str(data["world"]) not in WORLDS:
            raise MotionFileError(f"{path}: world is {str(data['world'])!r}, expected one of {', '.join(WORLDS)}")
        kw.update(fps=float(data["fps"]), body_model=str(data["body_model"]),
                  keypoint_layout=str(data["keypoint_layout"]), body_model_settings=settings,
                  joint_names=[str(n) for n in data["joint_names"]])
        return cls(**kw)

    # -- derived quantities --------------------------------------------------------------------

    def to_bvh(self, path: str | Path, person: int | None = None, body_model=None) -> list[Path]:
        """Write BVH (metres, y up; see `meshcap.export.bvh`): one file per person, or only
        `person` (an index). Several people get `name_p{id}.bvh`. Returns the paths written."""
        from meshcap.export.bvh import per_person_paths, write_bvh

        model = body_model or self.load_body_model()
        people = range(self.num_people) if person is None else [person]
        paths = per_person_paths(path, [self.person_ids[p] for p in people])
        return [write_bvh(self, out, p, model) for p, out in zip(people, paths)]

    def to_gltf(self, path: str | Path, body_model=None) -> Path:
        """Write glTF 2.0 (`.glb` or `.gltf`): every person as a skinned, animated mesh
        (metres, y up; see `meshcap.export.gltf`)."""
        from meshcap.export.gltf import write_gltf

        return write_gltf(self, path, body_model)

    def to_fbx(self, path: str | Path, body_model=None) -> Path:
        """Write FBX (metres, Y up), converted from the glTF export by Blender in a child
        process; needs the optional extra `meshcap[fbx]` (see `meshcap.export.fbx`)."""
        from meshcap.export.fbx import write_fbx

        return write_fbx(self, path, body_model)

    def load_body_model(self, model_path: str | Path | None = None):
        """The body model this motion was fitted with (SMPL family: give the model file)."""
        from meshcap.body_models import load_body_model

        s = dict(self.body_model_settings)
        if self.body_model == "anny":
            return load_body_model("anny")
        return load_body_model(self.body_model, model_path or s.get("model_path"),
                               gender=s.get("gender", "neutral"))

    def keypoints3d(self, layout: str, body_model=None, batch_size: int = 512) -> np.ndarray:
        """3D positions (P, T, K, 3) of any named keypoint layout over time (NaN where invalid),
        evaluated on the body model's fast path."""
        import torch

        from meshcap.keypoints.layouts import get_layout

        model = body_model if body_model is not None else self.load_body_model()
        K = len(get_layout(layout))
        out = np.full((self.num_people, self.num_frames, K, 3), np.nan, dtype=np.float32)
        with torch.no_grad():
            for p in range(self.num_people):
                frames = np.flatnonzero(self.valid[p])
                for s in range(0, len(frames), batch_size):
                    idx = frames[s: s + batch_size]
                    r = model(torch.as_tensor(self.poses[p, idx]), torch.as_tensor(self.shape[p: p + 1]),
                              torch.as_tensor(self.transl[p, idx]), layout=layout, vertices=False,
                              bone_scale=self.bone_scale_of(p))
                    out[p, idx] = r.keypoints.cpu().numpy()
        return out

    def summary(self) -> str:
        seen = self.valid.sum(1)
        people = ", ".join(f"#{i}: {n} frames" for i, n in zip(self.person_ids, seen))
        swaps = (f"; {int(self.view_swaps.sum())} view-frames relabelled left/right"
                 if self.view_swaps is not None and self.view_swaps.any() else "")
        planted = ""
        if self.contact is not None:  # the share of each person's fitted frames with a foot down
            share = [self.contact[p][self.valid[p]].any(-1).mean() if self.valid[p].any() else 0.0
                     for p in range(self.num_people)]
            planted = "; a foot planted in " + ", ".join(f"#{i}: {100 * s:.0f}%" for i, s in zip(self.person_ids, share))
        scales = ""
        if self.bone_scale is not None:
            scales = f"; bone scales {self.bone_scale.min():.2f}-{self.bone_scale.max():.2f}"
        floor = (f"; the floor {self.floor:.2f} m up the world's {self.world[0]} axis (from the feet)"
                 if self.floor is not None else "")
        turned = ("; camera orientations refined by " + ", ".join(f"{a:.2f}" for a in self.calibration_turn)
                  + " deg" if self.calibration_turn is not None else "")
        if self.calibration_focal is not None:
            turned += ", focal lengths scaled by " + ", ".join(f"{f:.3f}" for f in self.calibration_focal)
        return (f"{self.num_people} people, {self.num_frames} frames at {self.fps:g} fps, "
                f"body model {self.body_model} ({len(self.joint_names)} joints), world {self.world}; "
                f"{people}{planted}{swaps}{scales}{floor}{turned}")


_KIND_NAMES = {"f": "a float array", "i": "an integer array", "b": "a boolean array", "U": "a string"}


def _check_consistency(d: dict[str, np.ndarray]) -> list[str]:
    """Shape agreements across the arrays, and finite numbers in valid frames."""
    out: list[str] = []
    v = np.asarray(d["valid"])
    if v.ndim != 2:
        return [f"'valid' must be (P, T), got shape {v.shape}"]
    P, T = v.shape
    J = len(d["joint_names"])
    C = np.asarray(d["cam_K"]).shape[0] if np.asarray(d["cam_K"]).ndim == 3 else -1
    expect = {
        "poses": (P, T, J, 3), "transl": (P, T, 3), "joints3d": (P, T, J, 3),
        "uncertainty": (P, T, J), "parents": (J,), "person_ids": (P,), "frame_times": (T,),
        "cam_K": (C, 3, 3), "cam_R": (C, 3, 3), "cam_t": (C, 3), "image_size": (C, 2),
    }
    for k, shp in expect.items():
        a = np.asarray(d[k])
        if a.shape != shp:
            out.append(f"{k!r} has shape {a.shape}, expected {shp}")
    kp, sh = np.asarray(d["keypoints2d"]), np.asarray(d["shape"])
    if kp.ndim != 4 or kp.shape[:2] != (P, T) or kp.shape[3] != 3:
        out.append(f"'keypoints2d' has shape {kp.shape}, expected ({P}, {T}, K, 3)")
    if sh.ndim != 2 or sh.shape[0] != P:
        out.append(f"'shape' has shape {sh.shape}, expected ({P}, S)")
    if out:
        return out
    par = np.asarray(d["parents"])
    if J and (par[0] != -1 or any(not (0 <= par[j] < j) for j in range(1, J))):
        out.append("'parents' must start with -1 and list each joint's parent before it")
    if not float(np.asarray(d["fps"])) > 0:
        out.append(f"fps must be positive, got {float(np.asarray(d['fps']))}")
    for k in ("contact", "contact_prob"):
        if k in d and np.asarray(d[k]).shape != (P, T, 2):
            out.append(f"{k!r} has shape {np.asarray(d[k]).shape}, expected ({P}, {T}, 2)")
    if "bone_scale" in d:
        bs = np.asarray(d["bone_scale"])
        if bs.shape != (P, J):
            out.append(f"'bone_scale' has shape {bs.shape}, expected ({P}, {J})")
        elif not (np.isfinite(bs).all() and (bs > 0).all()):
            out.append("'bone_scale' must be finite and positive")
    for k in ("calibration_turn", "calibration_focal"):
        if k in d and np.asarray(d[k]).shape != (C,):
            out.append(f"'{k}' has shape {np.asarray(d[k]).shape}, expected ({C},)")
    if "view_swaps" in d and np.asarray(d["view_swaps"]).shape != (P, T, C):
        out.append(f"'view_swaps' has shape {np.asarray(d['view_swaps']).shape}, expected ({P}, {T}, {C})")
    for k in ("frame_R", "frame_K"):
        if k in d and np.asarray(d[k]).shape != (T, 3, 3):
            out.append(f"{k!r} has shape {np.asarray(d[k]).shape}, expected ({T}, 3, 3)")
        elif k in d and not np.isfinite(np.asarray(d[k])).all():
            out.append(f"{k!r} has NaN or infinite values")
    if "frame_R" in d and np.asarray(d["frame_R"]).shape == (T, 3, 3) and C != 1:
        out.append("'frame_R' (a panning camera) needs exactly one camera")
    if "contact_prob" in d:
        cp = np.asarray(d["contact_prob"])
        if cp.shape == (P, T, 2) and not (np.isfinite(cp).all() and (cp >= 0).all() and (cp <= 1).all()):
            out.append("'contact_prob' must lie in [0, 1]")
    for k in ("poses", "transl", "joints3d", "uncertainty"):
        if not np.isfinite(np.asarray(d[k])[v]).all():
            out.append(f"{k!r} has NaN or infinite values in valid frames")
    if not np.isfinite(sh).all():
        out.append("'shape' has NaN or infinite values")
    return out
