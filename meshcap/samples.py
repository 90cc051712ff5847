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


def cmu_bvh() -> Path:
    """usr/share/assimp/models/BVH of Debian's `assimp-testmodels`: CMU subject 01 takes
    (01_01.bvh, 01_03.bvh: 120 fps) and Boxing_Toes.bvh (100 fps), fetched with
    `apt-get download` (no root needed) and unpacked with `dpkg-deb`."""
    out = samples_dir() / "assimp-bvh"
    if not (out / "01_01.bvh").exists():
        debs = samples_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{ASSIMP_TESTMODELS}_*.deb")):
            r = subprocess.run(["apt-get", "download", ASSIMP_TESTMODELS], cwd=debs, capture_output=True, text=True)
            if r.returncode != 0:
                raise MeshcapError(f"could not fetch Debian's {ASSIMP_TESTMODELS}: {r.stderr.strip()[-300:]}")
        deb = next(debs.glob(f"{ASSIMP_TESTMODELS}_*.deb"))
        tmp = samples_dir() / "assimp-unpack"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        out.mkdir(parents=True, exist_ok=True)
        for f in (tmp / "usr/share/assimp/models/BVH").glob("*"):
            f.replace(out / f.name)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
