"""Real footage for the tests, fetched from registry packages on first use and cached (never
committed), by `meshcap.samples`: the Sports2D demo video from the `sports2d` wheel on PyPI, and
`messi5.jpg` and `vtest.avi` from Debian's `opencv-doc`. Other test data's cache is
`$MESHCAP_TEST_DATA`, else `~/.cache/meshcap-testdata`."""
from __future__ import annotations

import os
from pathlib import Path

def cache() -> Path:
    d = Path(os.environ.get("MESHCAP_TEST_DATA", Path.home() / ".cache" / "meshcap-testdata"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def sports2d_demo() -> Path:
    """Sports2D/Demo/demo.mp4: two people walking, 1768x994, 30 fps, 230 frames."""
    from meshcap.samples import sports2d_demo as fetch

    return fetch()


def opencv_sample(name: str) -> Path:
    """A file of opencv-doc's examples/data (e.g. messi5.jpg), `meshcap.samples.opencv_doc`."""
    from meshcap.samples import opencv_doc

    return opencv_doc(name)
