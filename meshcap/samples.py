"""Real sample footage for demos and tests, fetched from registry packages on first use and
cached (never shipped): the Sports2D demo video from the `sports2d` wheel on PyPI. The cache is
`$MESHCAP_SAMPLES`, else `~/.cache/meshcap/samples`."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from meshcap.errors import MeshcapError

SPORTS2D = "sports2d==0.8.34"


def samples_dir() -> Path:
    d = Path(os.environ.get("MESHCAP_SAMPLES", Path.home() / ".cache" / "meshcap" / "samples"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def sports2d_demo() -> Path:
    """Sports2D/Demo/demo.mp4 (two people, 1768x994, 30 fps, 230 frames), BSD-3-Clause, from
    the `sports2d` wheel (downloaded with pip, about 40 MB, once)."""
    out = samples_dir() / "sports2d-demo.mp4"
    if out.exists():
        return out
    wheels = samples_dir() / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), SPORTS2D],
                       capture_output=True, text=True)
    found = sorted(wheels.glob("sports2d-*.whl"))
    if r.returncode != 0 or not found:
        raise MeshcapError(f"could not fetch the sample video ({SPORTS2D} from PyPI): {r.stderr.strip()[-300:]}")
    with zipfile.ZipFile(found[-1]) as z:
        tmp = out.with_suffix(".part")
        tmp.write_bytes(z.read("Sports2D/Demo/demo.mp4"))
        tmp.replace(out)
    return out
