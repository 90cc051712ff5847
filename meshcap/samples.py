"""Real sample footage for demos and tests, fetched from registry packages on first use and
cached (never shipped): the Sports2D demo video from the `sports2d` wheel on PyPI, and
Pose2Sim's single-person demo (four synchronised cameras and their calibration) from the
`pose2sim` wheel. The cache is `$MESHCAP_SAMPLES`, else `~/.cache/meshcap/samples`."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from meshcap.errors import MeshcapError

SPORTS2D = "sports2d==0.8.34"
POSE2SIM = "pose2sim==0.10.49"


def samples_dir() -> Path:
    d = Path(os.environ.get("MESHCAP_SAMPLES", Path.home() / ".cache" / "meshcap" / "samples"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wheel(requirement: str) -> Path:
    """The wheel of `requirement` (name==version), downloaded with pip once into the cache."""
    name = requirement.split("==")[0].replace("-", "_")  # wheel file names use underscores
    wheels = samples_dir() / "wheels"
    found = sorted(wheels.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))
    if found:
        return found[-1]
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), requirement],
                       capture_output=True, text=True)
    found = sorted(wheels.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))
    if r.returncode != 0 or not found:
        raise MeshcapError(f"could not fetch the sample footage ({requirement} from PyPI): {r.stderr.strip()[-300:]}")
    return found[-1]


def _extract(wheel: Path, member: str, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        tmp = out.with_suffix(out.suffix + ".part")
        tmp.write_bytes(z.read(member))
        tmp.replace(out)
    return out


def sports2d_demo() -> Path:
    """Sports2D/Demo/demo.mp4 (two people, 1768x994, 30 fps, 230 frames), BSD-3-Clause, from
    the `sports2d` wheel (downloaded with pip, about 40 MB, once)."""
    out = samples_dir() / "sports2d-demo.mp4"
    if not out.exists():
        _extract(_wheel(SPORTS2D), "Sports2D/Demo/demo.mp4", out)
    return out


def _pose2sim_demo(demo: str, folder: str) -> Path:
    out = samples_dir() / folder
    files = [f"videos/cam0{i}.mp4" for i in range(1, 5)] + ["calibration/Calib.qca.txt"]
    if not all((out / f).exists() for f in files):
        wheel = _wheel(POSE2SIM)
        for f in files:
            _extract(wheel, f"Pose2Sim/{demo}/{f}", out / f)
    return out


def pose2sim_single_person() -> Path:
    """A folder with Pose2Sim's Demo_SinglePerson: `videos/cam01.mp4` ... `cam04.mp4` (the
    subject, with two people in the background; four synchronised portrait cameras, 1080x1920,
    60 fps, 100 frames) and `calibration/Calib.qca.txt` (Qualisys export), BSD-3-Clause, from
    the `pose2sim` wheel (about 50 MB, once)."""
    return _pose2sim_demo("Demo_SinglePerson", "pose2sim-single-person")


def pose2sim_multi_person() -> Path:
    """Pose2Sim's Demo_MultiPerson, laid out as `pose2sim_single_person`."""
    return _pose2sim_demo("Demo_MultiPerson", "pose2sim-multi-person")


# Real motion capture for the real-motion benchmark and regressor training (never shipped).
PYBULLET = "pybullet==3.2.7"  # zlib licence: DeepMimic's humanoid clips and their humanoid URDF
HOLOSOMA = "holosoma-retargeting==0.1.0"  # Apache-2.0: climbing takes as 3D joint positions
ASSIMP_TESTMODELS = "assimp-testmodels"  # Debian: CMU subject 01 BVH takes (CMU: free for any use)


def deepmimic_motions() -> Path:
    """pybullet_data/data/motions (DeepMimic humanoid3d_*.txt clips) with humanoid/humanoid.urdf
    beside it, from the `pybullet` wheel (zlib; about 100 MB, once)."""
    out = samples_dir() / "deepmimic"
    if not (out / "humanoid.urdf").exists():
        wheel = _wheel(PYBULLET)
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.startswith("pybullet_data/data/motions/humanoid3d_")]
        for n in names:
            _extract(wheel, n, out / Path(n).name)
        _extract(wheel, "pybullet_data/humanoid/humanoid.urdf", out / "humanoid.urdf")
    return out


def holosoma_climbs() -> Path:
    """holosoma_retargeting/demo_data/climb: five climbing takes, (T, 53, 3) joint positions
    each (`*_joint_positions_*.npy`), from the `holosoma-retargeting` wheel (Apache-2.0)."""
    out = samples_dir() / "holosoma-climb"
    if not any(out.glob("*.npy")):
        wheel = _wheel(HOLOSOMA)
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist()
                     if n.startswith("holosoma_retargeting/demo_data/climb/") and n.endswith(".npy")]
        for n in names:
            _extract(wheel, n, out / Path(n).name)
    return out


def _deb(package: str) -> Path:
    """Debian's `package` .deb, fetched once into the cache with `apt-get download` (no root
    needed)."""
    debs = samples_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        r = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        if r.returncode != 0:
            raise MeshcapError(f"could not fetch Debian's {package}: {r.stderr.strip()[-300:]}")
    return next(debs.glob(f"{package}_*.deb"))


def cmu_bvh() -> Path:
    """usr/share/assimp/models/BVH of Debian's `assimp-testmodels`: CMU subject 01 takes
    (01_01.bvh, 01_03.bvh: 120 fps) and Boxing_Toes.bvh (100 fps), fetched with
    `apt-get download` (no root needed) and unpacked with `dpkg-deb`."""
    out = samples_dir() / "assimp-bvh"
    if not (out / "01_01.bvh").exists():
        deb = _deb(ASSIMP_TESTMODELS)
        tmp = samples_dir() / "assimp-unpack"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        out.mkdir(parents=True, exist_ok=True)
        for f in (tmp / "usr/share/assimp/models/BVH").glob("*"):
            f.replace(out / f.name)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


OPENCV_DOC = "opencv-doc"


def opencv_doc(name: str) -> Path:
    """A file of Debian's `opencv-doc` examples/data (messi5.jpg; vtest.avi: 795 frames,
    768x576, 10 fps, people walking into and out of a square): from the installed package if
    there is one, else from the .deb fetched with `apt-get download` (no root needed)."""
    installed = Path("/usr/share/doc/opencv-doc/examples/data") / name
    if installed.exists():
        return installed
    out = samples_dir() / "opencv-doc" / name
    if not out.exists():
        deb = _deb(OPENCV_DOC)
        import io
        import tarfile

        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            member = f"./usr/share/doc/opencv-doc/examples/data/{name}"
            try:
                data = t.extractfile(member).read()
            except KeyError:
                raise MeshcapError(f"Debian's {OPENCV_DOC} has no examples/data/{name}") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


class VirtualPan:
    """A panning, zooming camera made from a static shot: per frame t, the view of a camera at
    the shot's centre turned to look along the ray through `centres[t]` (x, y source pixels),
    with a focal that makes `widths[t]` source pixels (at that ray) fill the output's width,
    output `size` (width, height), principal point in the middle. Each output frame is the
    source image warped by that rotation's homography, which is exactly what a camera turning
    about its centre and zooming sees of a still scene (a crop that slides would be so only to
    first order: off the axis it magnifies by up to 1 / cos^2 of the angle, a few per cent here,
    which a monocular fit takes for depth). So footage with a known turn can be made from real
    video. `source_focal` is the static shot's focal, pixels; `source_principal` its principal
    point."""

    def __init__(self, centres: np.ndarray, widths: np.ndarray, size: tuple[int, int], source_focal: float,
                 source_principal: tuple[float, float]) -> None:
        self.centres, self.widths = np.asarray(centres, np.float64), np.asarray(widths, np.float64)
        self.size, self.source_focal = (int(size[0]), int(size[1])), float(source_focal)
        self.source_principal = np.asarray(source_principal, np.float64)
        R = np.stack([self.source_from_window(t) for t in range(len(self.centres))])
        f = self.focals()
        K = np.zeros((len(f), 3, 3))
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, self.size[0] / 2, self.size[1] / 2, 1.0
        K_src = np.array([[self.source_focal, 0, self.source_principal[0]],
                          [0, self.source_focal, self.source_principal[1]], [0, 0, 1.0]])
        # (T, 3, 3) source pixels -> output pixels: into the source camera's rays, turned into
        # the window camera's frame, through its intrinsics
        self._H = K @ np.swapaxes(R, 1, 2) @ np.linalg.inv(K_src)

    def focals(self) -> np.ndarray:
        """(T,) the window's focal per frame, output pixels."""
        return self.source_focal * self.size[0] / self.widths

    def yaw_deg(self) -> np.ndarray:
        """(T,) degrees: the turn about the vertical from the first frame (the angle of the
        centre's ray), positive to the right."""
        a = np.degrees(np.arctan((self.centres[:, 0] - self.source_principal[0]) / self.source_focal))
        return a - a[0]

    def source_from_window(self, t: int) -> np.ndarray:
        """(3, 3) the rotation from frame t's window camera to the static shot's camera: the
        window looks along its centre's ray (yaw about y, then pitch about x)."""
        ray = np.array([*(self.centres[t] - self.source_principal) / self.source_focal, 1.0])
        yaw, pitch = np.arctan2(ray[0], ray[2]), -np.arcsin(ray[1] / np.linalg.norm(ray))
        Ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        Rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        return Ry @ Rx

    def source_from_first(self) -> np.ndarray:
        """(3, 3) the rotation from the first window's camera frame to the static shot's."""
        return self.source_from_window(0)

    def source_camera_roots(self, motion) -> np.ndarray:
        """(P, T, 3) float64: the roots of a capture of this pan (`panning=True`, so with
        `frame_R`) in the static shot's camera frame: through the capture's first-frame camera,
        then the first window's view."""
        X = (motion.joints3d[:, :, 0].astype(np.float64) @ motion.cam_R[0].T.astype(np.float64)
             + motion.cam_t[0].astype(np.float64))
        return X @ motion.frame_R[0].T.astype(np.float64) @ self.source_from_first().T

    def window(self, t: int, image: np.ndarray) -> np.ndarray:
        """The output frame (H, W, 3) of source image (h, w, 3) at frame t."""
        import cv2

        return cv2.warpPerspective(image, self._H[t], self.size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)

    @staticmethod
    def _apply(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
        p = np.einsum("...ij,...j->...i", H, np.concatenate([xy, np.ones_like(xy[..., :1])], -1))
        return p[..., :2] / p[..., 2:]

    def to_window(self, t: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """Source pixels xy (..., 2) at frames t (...) -> output pixels (..., 2)."""
        return self._apply(self._H[np.asarray(t)], np.asarray(xy, np.float64))

    def tracks(self, tracks, min_seen: int = 6):
        """2D tracks of the source shot (a `meshcap.keypoints.Tracks`) as the window sees them:
        keypoints outside it unseen (confidence 0, placed on its edge), frames with fewer than
        `min_seen` keypoints in view dropped from their track."""
        from meshcap.keypoints.tracks import Tracks

        W, H = self.size
        out = {}
        for tid, (f, kp) in tracks.tracks.items():
            kp = kp.astype(np.float32).copy()
            kp[..., :2] = self.to_window(f[:, None], kp[..., :2].astype(np.float64))
            inside = (kp[..., 0] >= 0) & (kp[..., 0] < W) & (kp[..., 1] >= 0) & (kp[..., 1] < H)
            kp[..., 2] = np.where(inside, kp[..., 2], 0.0)
            kp[..., 0], kp[..., 1] = np.clip(kp[..., 0], 0, W - 1), np.clip(kp[..., 1], 0, H - 1)
            keep = (kp[..., 2] > 0.3).sum(1) >= min_seen
            if keep.any():
                out[tid] = (f[keep], kp[keep])
        return Tracks(tracks.layout, tracks.fps, tracks.frame_times, (W, H), out, tracks.frame_index,
                      dict(tracks.source))

    def to_source(self, t: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Output pixels uv (..., 2) of frames t (...) -> source pixels (..., 2)."""
        return self._apply(np.linalg.inv(self._H[np.asarray(t)]), np.asarray(uv, np.float64))


def sports2d_pan() -> tuple[Path, VirtualPan]:
    """A virtual pan of the Sports2D demo (1280x960, 230 frames, 30 fps): a 4:3 view, nearly
    the shot's full height, holds on the man on the box for three seconds, then turns right
    15 degrees following him while zooming in by 7%, and holds again (`VirtualPan`: the
    rotated camera's exact view). Made once from `sports2d_demo()` into the samples cache."""
    import math

    from meshcap.video import VideoReader, VideoWriter

    src = sports2d_demo()
    T, (w, h) = 230, (1768, 994)
    u = np.clip((np.arange(T) - 90) / 120.0, 0.0, 1.0)
    ease = 0.5 - 0.5 * np.cos(np.pi * u)  # a hand's pan speeds up and slows down
    centres = np.stack([634.0 + 540.0 * ease, np.full(T, 480.0)], 1)
    pan = VirtualPan(centres, 1267.0 - 80.0 * ease, (1280, 960), math.hypot(w, h), (w / 2, h / 2))
    out = samples_dir() / "sports2d-pan-v2.mp4"  # v2: the exact rotated view, not a sliding crop
    if not out.exists():
        with VideoWriter(out, fps=30.0, crf=18) as writer:
            for n, frame in enumerate(VideoReader(src)):
                if n >= T:
                    break
                writer.write(pan.window(n, frame.image))
    return out, pan
