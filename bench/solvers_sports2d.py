"""The two fitting solvers on real footage: the Sports2D demo captured from the same detections.

    python bench/solvers_sports2d.py [gauss-newton] [adam]

Per solver: the capture's wall time (regression and fitting; detection is cached once first)
and, per person, the median reprojection of the fitted keypoints against the detections
(confidence > 0.1) and the fitted joints' mean frame-to-frame acceleration (mm/frame^2), in
the camera's frame, with the capture's own fit options (w_init 0.5 from the regressor).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from footage import reprojection  # bench/ is on the path when run as a script
from meshcap.capture import capture
from meshcap.fitting.smplify import FitOptions
from meshcap.keypoints.pipeline import video_tracks
from meshcap.samples import sports2d_demo


def main() -> None:
    video = sports2d_demo()
    cache = Path(tempfile.gettempdir()) / "meshcap_bench_solvers.keypoints.npz"
    video_tracks(video, cache=cache)
    for solver in sys.argv[1:] or ["gauss-newton", "adam"]:
        t0 = time.perf_counter()
        m = capture(video, cache=cache, world="camera", fit=FitOptions(w_init=0.5, solver=solver))
        secs = time.perf_counter() - t0
        out = []
        for p in range(m.num_people):
            err, acc = reprojection(m, p)
            out.append(f"person {p}: {m.valid[p].sum()} frames, reprojection median {err:.2f} px, joint accel {acc:.1f} mm/frame^2")
        print(solver, f"{secs:.1f} s;", "; ".join(out))


if __name__ == "__main__":
    main()
