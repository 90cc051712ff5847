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
    name = requirement.split("==")[0]
    wheels = samples_dir() / "wheels"
    found = sorted(wheels.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))
    if found:
        return found[-1]
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), requirement],
                       capture_output=True, text=True)
    found = sorted(wheels.glob(f"{name}-*.whl"))
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
