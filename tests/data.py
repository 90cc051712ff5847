"""Real footage for the tests, fetched from registry packages on first use and cached (never
committed): the Sports2D demo video from the `sports2d` wheel on PyPI, and `messi5.jpg` from
Debian's `opencv-doc`. The cache is `$MESHCAP_TEST_DATA`, else `~/.cache/meshcap-testdata`
(the video's: `meshcap.samples`)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

OPENCV_DOC_DATA = "./usr/share/doc/opencv-doc/examples/data"


def cache() -> Path:
    d = Path(os.environ.get("MESHCAP_TEST_DATA", Path.home() / ".cache" / "meshcap-testdata"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def sports2d_demo() -> Path:
    """Sports2D/Demo/demo.mp4: two people walking, 1768x994, 30 fps, 230 frames."""
    from meshcap.samples import sports2d_demo as fetch

    return fetch()


def opencv_sample(name: str) -> Path:
    """A file of opencv-doc's examples/data (e.g. messi5.jpg): from the installed package if
    there is one, else from the .deb fetched with `apt-get download` (no root needed)."""
    installed = Path("/usr/share/doc/opencv-doc/examples/data") / name
    if installed.exists():
        return installed
    out = cache() / "opencv-doc" / name
    if not out.exists():
        debs = cache() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob("opencv-doc_*.deb")):
            subprocess.run(["apt-get", "download", "opencv-doc"], cwd=debs, check=True,
                           stdout=subprocess.DEVNULL)
        deb = next(debs.glob("opencv-doc_*.deb"))
        out.parent.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            data = t.extractfile(f"{OPENCV_DOC_DATA}/{name}").read()
        tmp = out.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out
