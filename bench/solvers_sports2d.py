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

import numpy as np
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
        kp3 = m.keypoints3d(m.keypoint_layout)
        K = m.cam_K[0] if m.cam_K.ndim == 3 else m.cam_K
        out = []
        for p in range(m.num_people):
            v = m.valid[p]
            x = kp3[p][v]
            uv = x[..., :2] / x[..., 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
            obs = m.keypoints2d[p][v]
            ok = obs[..., 2] > 0.1
            err = np.linalg.norm(uv - obs[..., :2], axis=-1)[ok]
            j = m.joints3d[p][v]
            acc = np.linalg.norm(j[2:] - 2 * j[1:-1] + j[:-2], axis=-1).mean() * 1000
            out.append(f"person {p}: {v.sum()} frames, reprojection median {np.median(err):.2f} px, joint accel {acc:.1f} mm/frame^2")
        print(solver, f"{secs:.1f} s;", "; ".join(out))


if __name__ == "__main__":
    main()
