"""Calibrated cameras: what multi-view capture needs to know about each view, and the files
users already have.

Formats read: Pose2Sim's TOML (`Calib*.toml`), Qualisys' export (`*.qca.txt`, as Pose2Sim's
demo ships it), OpenCV / EasyMocap YAML (`intri.yml` + `extri.yml`, the folder or either
file), and meshcap's own JSON. Written: TOML (Pose2Sim's layout), YAML and JSON.

Conventions (meshcap's): OpenCV cameras (x right, y down, z forward); extrinsics R, t map
world to camera, X_cam = R X_world + t, metres; intrinsics K in pixels; distortion OpenCV's
(k1, k2, p1, p2[, k3]); image size (width, height).
"""
from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import roma
import torch

from meshcap.errors import InputError
from meshcap.fileio import write_text_atomic


@dataclass
class Camera:
    """One calibrated view. K (3, 3), dist (5,) k1 k2 p1 p2 k3, R (3, 3), t (3,) world ->
    camera, size (width, height) pixels."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int]
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        d = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if len(d) not in (4, 5, 8):
            raise InputError(f"camera {self.name}: distortion must have 4, 5 or 8 values, got {len(d)}")
        if len(d) == 8 and np.any(d[5:] != 0):
            raise InputError(f"camera {self.name}: the rational lens model (k4, k5, k6 = {d[5:].tolist()}) "
                             "is not supported; meshcap reads OpenCV's k1, k2, p1, p2, k3")
        self.dist = np.concatenate([d, np.zeros(5 - len(d))]) if len(d) < 5 else d[:5]
        self.size = (int(self.size[0]), int(self.size[1]))
        for what, a in (("K", self.K), ("R", self.R), ("t", self.t), ("distortion", self.dist)):
            if not np.isfinite(a).all():
                raise InputError(f"camera {self.name}: {what} has NaN or infinite values")
        if abs(np.linalg.det(self.R) - 1.0) > 1e-3 or np.abs(self.R @ self.R.T - np.eye(3)).max() > 1e-3:
            raise InputError(f"camera {self.name}: R is not a rotation matrix")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise InputError(f"camera {self.name}: focal lengths must be positive")

    @property
    def center(self) -> np.ndarray:
        """(3,) the camera's position in the world."""
        return -self.R.T @ self.t

    def project(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(..., 2) pixels of world points X (..., 3), with the lens distortion (differentiable)."""
        X = torch.as_tensor(X)
        dt = X.dtype if X.is_floating_point() else torch.float64
        R, t = torch.as_tensor(self.R, dtype=dt), torch.as_tensor(self.t, dtype=dt)
        Xc = X.to(dt) @ R.T + t
        return distort_project(Xc, torch.as_tensor(self.K, dtype=dt), torch.as_tensor(self.dist, dtype=dt))


# Calibrated sizes may differ slightly from the frames: an encoder pads 1080 rows to 1088
# (Pose2Sim's demo calibration says 1088x1920 for 1080x1920 videos). The intrinsics still hold.
SIZE_TOLERANCE = 0.05


def check_camera_size(camera: Camera, size: tuple[int, int], what: str, hint: str = "") -> None:
    """An error naming `what` (and ending with `hint`) when images of `size` (width, height)
    cannot be the camera's: more than SIZE_TOLERANCE off its calibrated size (a size of 0 is
    not known)."""
    w, h = size
    cw, ch = camera.size
    if cw and ch and (abs(w / cw - 1) > SIZE_TOLERANCE or abs(h / ch - 1) > SIZE_TOLERANCE):
        raise InputError(f"{what} {w}x{h} but camera {camera.name} was calibrated at {cw}x{ch}{hint}")


def distort_project(Xc: torch.Tensor, K: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """(..., 2) pixels of camera-frame points (..., 3) through OpenCV's lens model
    (k1, k2, p1, p2, k3); points behind the camera are clamped to a small depth."""
    z = Xc[..., 2].clamp(min=1e-3)
    x, y = Xc[..., 0] / z, Xc[..., 1] / z
    k1, k2, p1, p2, k3 = dist.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


def undistort_points(xy: np.ndarray, K: np.ndarray, dist: np.ndarray, pixels: bool = True) -> np.ndarray:
    """(..., 2) pixels of the ideal pinhole camera K (or, `pixels` False, normalised
    coordinates x/z, y/z) for pixels `xy` (..., 2) seen through the lens `dist` (k1, k2, p1,
    p2, k3): the inverse of `distort_project`."""
    import cv2

    xy = np.asarray(xy, dtype=np.float64)
    flat = np.ascontiguousarray(xy).reshape(-1, 1, 2)
    if not len(flat):
        return xy.copy()
    K = np.asarray(K, dtype=np.float64)
    # the iterative solver with a tight stop: the default stops after 5 iterations, short for
    # strong lenses
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)
    out = cv2.undistortPointsIter(flat, K, np.asarray(dist, dtype=np.float64), None, K if pixels else None, crit)
    return out.reshape(xy.shape)


# -- reading -------------------------------------------------------------------------------------


def read_camera(path: str | Path, name: str | None = None) -> Camera:
    """The one camera of a calibration file that a monocular capture uses: the only one, or the
    one called `name`."""
    cams = read_calibration(path)
    names = [c.name for c in cams]
    if name is None:
        if len(cams) > 1:
            raise InputError(f"{path}: holds {len(cams)} cameras ({', '.join(names)}); "
                             "say which one filmed the video (--camera-name)")
        return cams[0]
    for c in cams:
        if c.name == name:
            return c
    raise InputError(f"{path}: no camera named {name!r}; it holds {', '.join(names)}")


def read_calibration(path: str | Path) -> list[Camera]:
    """The cameras in a calibration file (or an OpenCV/EasyMocap folder), in the file's order
    (Qualisys: natural order of the camera names, as Pose2Sim does)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such calibration file")
    name = path.name.lower()
    try:
        if path.is_dir() or name.endswith((".yml", ".yaml")):
            cams = _read_opencv_yaml(path)
        elif name.endswith(".toml"):
            cams = _read_toml(path)
        elif name.endswith(".qca.txt") or name.endswith(".qca"):
            cams = _read_qca(path)
        elif name.endswith(".json"):
            cams = _read_json(path)
        else:
            raise InputError(f"{path}: not a calibration file meshcap reads (.toml, .qca.txt, .yml, .json)")
    except InputError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, ET.ParseError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"{path}: unreadable calibration ({type(e).__name__}: {e})") from None
    if not cams:
        raise InputError(f"{path}: holds no camera")
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: camera names repeat: {names}")
    return cams


def _read_toml(path: Path) -> list[Camera]:
    data = tomllib.loads(path.read_text())
    cams = []
    for key, c in data.items():
        if key == "metadata" or not isinstance(c, dict):
            continue
        missing = [k for k in ("size", "matrix", "distortions", "rotation", "translation") if k not in c]
        if missing:
            raise InputError(f"{path}: camera [{key}] lacks {', '.join(missing)}")
        R = roma.rotvec_to_rotmat(torch.tensor(c["rotation"], dtype=torch.float64)).numpy()
        cams.append(Camera(str(c.get("name", key)), c["matrix"], R, c["translation"], c["size"], c["distortions"]))
    return cams


def _natural_key(s: str):
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]


def _read_qca(path: Path) -> list[Camera]:
    """Qualisys: positions in mm, the camera-to-world rotation by columns, sub-pixel units of
    1/64 pixel, camera axes turned half a turn about x from OpenCV's; converted as Pose2Sim
    converts them (so both tools agree on the same file)."""
    root = ET.parse(path).getroot()
    cams = []
    for tag in root.findall("cameras/camera"):
        fov = tag.find("fov_video")
        left, top = float(fov.get("left")), float(fov.get("top"))
        size = (int(float(fov.get("right")) - left + 1), int(float(fov.get("bottom")) - top + 1))
        i = tag.find("intrinsic")
        g = lambda k: float(i.get(k))  # noqa: E731
        K = [[g("focalLengthU") / 64, 0.0, g("centerPointU") / 64 - left],
             [0.0, g("focalLengthV") / 64, g("centerPointV") / 64 - top], [0.0, 0.0, 1.0]]
        dist = [g("radialDistortion1") / 64, g("radialDistortion2") / 64,
                g("tangentalDistortion1") / 64, g("tangentalDistortion2") / 64]
        tr = tag.find("transform")
        rows = np.array([[float(tr.get(f"r{a}{b}")) for b in "123"] for a in "123"])
        position = np.array([float(tr.get(k)) for k in "xyz"]) / 1000.0
        R = rows  # world -> camera (Qualisys' camera-to-world, transposed)
        t = -R @ position
        flip = np.diag([1.0, -1.0, -1.0])  # Qualisys' camera axes -> OpenCV's
        cams.append(Camera(tag.get("serial"), K, flip @ R, flip @ t, size, dist))
    return sorted(cams, key=lambda c: _natural_key(c.name))


def _read_opencv_yaml(path: Path) -> list[Camera]:
    import cv2

    folder = path if path.is_dir() else path.parent
    intri, extri = folder / "intri.yml", folder / "extri.yml"
    for f in (intri, extri):
        if not f.exists():
            raise InputError(f"{f}: missing; OpenCV/EasyMocap calibration needs intri.yml and extri.yml together")
    fi, fe = cv2.FileStorage(str(intri), cv2.FILE_STORAGE_READ), cv2.FileStorage(str(extri), cv2.FILE_STORAGE_READ)
    try:
        names_node = fi.getNode("names")
        names = [names_node.at(k).string() for k in range(names_node.size())]
        cams = []
        for n in names:
            K = fi.getNode(f"K_{n}").mat()
            dist = fi.getNode(f"dist_{n}").mat()
            if K is None or dist is None:
                raise InputError(f"{intri}: camera {n!r} has no K_{n} or dist_{n}")
            rot = fe.getNode(f"Rot_{n}").mat()
            if rot is None:
                rv = fe.getNode(f"R_{n}").mat()
                if rv is None:
                    raise InputError(f"{extri}: camera {n!r} has no R_{n} or Rot_{n}")
                rot = cv2.Rodrigues(rv.reshape(3, 1))[0]
            t = fe.getNode(f"T_{n}").mat()
            if t is None:
                raise InputError(f"{extri}: camera {n!r} has no T_{n}")
            w, h = fi.getNode(f"W_{n}").real(), fi.getNode(f"H_{n}").real()
            size = (int(w), int(h)) if w > 0 and h > 0 else (int(round(2 * K[0, 2])), int(round(2 * K[1, 2])))
            cams.append(Camera(n, K, rot, t.reshape(3), size, dist.reshape(-1)[:5]))
        return cams
    finally:
        fi.release()
        fe.release()


def _read_json(path: Path) -> list[Camera]:
    data = json.loads(path.read_text())
    if data.get("format") != "meshcap.cameras":
        raise InputError(f"{path}: not a meshcap camera file (format {data.get('format')!r})")
    return [Camera(c["name"], c["K"], c["R"], c["t"], c["size"], c.get("dist", [0.0] * 5)) for c in data["cameras"]]


# -- writing -------------------------------------------------------------------------------------


def write_calibration(cameras: list[Camera], path: str | Path) -> Path:
    """Write `.toml` (Pose2Sim's layout), `.json` (meshcap) or OpenCV YAML (give the folder,
    or intri.yml: both intri.yml and extri.yml are written)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".toml"):
        return write_text_atomic(path, _toml_text(cameras))
    if name.endswith(".json"):
        return write_text_atomic(path, json.dumps(dict(format="meshcap.cameras", version=1, cameras=[
            dict(name=c.name, K=c.K.tolist(), R=c.R.tolist(), t=c.t.tolist(), size=list(c.size),
                 dist=c.dist.tolist()) for c in cameras]), indent=1))
    if path.is_dir() or name.endswith((".yml", ".yaml")):
        return _write_opencv_yaml(cameras, path if path.is_dir() else path.parent)
    raise InputError(f"{path}: write calibration as .toml, .json, or an OpenCV YAML folder")


def _toml_text(cameras: list[Camera]) -> str:
    def arr(a) -> str:
        a = np.asarray(a)
        return "[" + ", ".join(arr(x) if a.ndim > 1 else repr(float(x)) for x in a) + "]"

    out = []
    for c in cameras:
        rv = roma.rotmat_to_rotvec(torch.as_tensor(c.R)).numpy()
        out += [f"[{c.name}]", f'name = "{c.name}"', f"size = [{c.size[0]}, {c.size[1]}]",
                f"matrix = {arr(c.K)}", f"distortions = {arr(c.dist[:4])}", f"rotation = {arr(rv)}",
                f"translation = {arr(c.t)}", "fisheye = false", ""]
    out += ["[metadata]", "adjusted = false", "error = 0.0", ""]
    return "\n".join(out)


def _write_opencv_yaml(cameras: list[Camera], folder: Path) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    fi = cv2.FileStorage(str(folder / "intri.yml"), cv2.FILE_STORAGE_WRITE)
    fe = cv2.FileStorage(str(folder / "extri.yml"), cv2.FILE_STORAGE_WRITE)
    for fs in (fi, fe):
        fs.startWriteStruct("names", cv2.FileNode_SEQ)
        for c in cameras:
            fs.write("", c.name)
        fs.endWriteStruct()
    for c in cameras:
        fi.write(f"K_{c.name}", c.K)
        fi.write(f"dist_{c.name}", c.dist.reshape(1, 5))
        fi.write(f"W_{c.name}", c.size[0])
        fi.write(f"H_{c.name}", c.size[1])
        fe.write(f"R_{c.name}", cv2.Rodrigues(c.R)[0])
        fe.write(f"Rot_{c.name}", c.R)
        fe.write(f"T_{c.name}", c.t.reshape(3, 1))
    fi.release()
    fe.release()
    return folder


def check_cameras(cameras: list[Camera], count: int, source: str = "the calibration") -> None:
    """Clear errors when the number of cameras and of inputs disagree."""
    if len(cameras) != count:
        raise InputError(f"{source} has {len(cameras)} cameras ({', '.join(c.name for c in cameras)}) "
                         f"but {count} inputs were given; give one video or keypoint file per camera, in order")
    if count < 2:
        raise InputError("multi-view capture needs at least two cameras")
