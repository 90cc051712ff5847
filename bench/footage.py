"""Monocular capture on real footage, where no mocap truth exists.

    python bench/footage.py [--paths default,rest,per-frame] [--temporal FILE] [--weights FILE] [--fit K=V,...] [--no-sports2d]
        [--body-model smpl --model-path FILE]

1. Pose2Sim's single-person demo: each of its four calibrated cameras used as a monocular
   video (`meshcap.capture` with that camera's intrinsics and distortion, its own detections),
   scored against the four-camera fit of the same frames (`capture_multiview`), the reference
   here (its leave-one-camera-out error is about 21 px, see bench/multiview.py). On the COCO
   body points (shoulders to ankles) of the same body model: PA-MPJPE per frame (similarity
   Procrustes), and MPJPE after moving the reference into the camera's frame and aligning
   the mid-hips (a wrong heading or lean shows there, not in PA); and each camera's median
   size ratio, the monocular person's summed limb and trunk lengths over the reference's (one
   camera cannot measure a body's size: the fit's is the lifter's and regressor's guess,
   which moves its depth). In each frame the monocular person is the one whose fitted points
   project closest to the reference's; frames where none is within a fifth of the subject's
   height are counted as missed.
2. The Sports2D demo (`world="camera"`): each person's median reprojection of the fitted
   keypoints against the detections (confidence > 0.1) and the fitted joints' mean
   acceleration (mm/frame^2).

Paths: default (`meshcap.capture` as shipped: per-frame regressor + temporal lifter), per-frame
(the regressor without the lifter), rest (no regression stage); `--temporal FILE` tries
other lifter weights on the default path, `--fit` other fit options on every path (as
bench/real_motion.py's), `--body-model` another body model for every fit, the reference
included (an SMPL-family model starts from anny's fit, `meshcap.regression.transfer`).
Detections are cached beside the samples.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from meshcap import capture, capture_multiview, load_body_model
from meshcap.capture import fit_setup
from meshcap.fitting.camera import project as camera_project
from meshcap.fitting.metrics import pa_mpjpe
from meshcap.fitting.smplify import FitOptions
from meshcap.keypoints.pipeline import video_tracks
from meshcap.multiview.calibration import read_calibration
from meshcap.regression.mocap import BODY
from meshcap.samples import pose2sim_single_person, sports2d_demo
from real_motion import fit_overrides

HIPS = [BODY.index("left_hip"), BODY.index("right_hip")]
# shoulder-elbow-wrist, hip-knee-ankle (both sides), shoulder-hip: what a body's size is read from
SEGMENTS = [(BODY.index(f"{s}_{a}"), BODY.index(f"{s}_{b}")) for s in ("left", "right")
            for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"), ("shoulder", "hip"))]


def segment_length(x: np.ndarray) -> float:
    """Summed length of `SEGMENTS` of body points x (12, 3)."""
    return float(sum(np.linalg.norm(x[a] - x[b]) for a, b in SEGMENTS))


def body_points(motion) -> np.ndarray:
    """(P, T, 12, 3) the fitted COCO body points, in the Motion's frame."""
    from meshcap.keypoints.layouts import get_layout

    names = get_layout("coco17").names
    return motion.keypoints3d("coco17")[:, :, [names.index(n) for n in BODY]]


def project(X: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., N, 2) pinhole pixels of camera-frame points (..., N, 3) (distortion left out: for
    matching people and the reprojection of undistorted fits)."""
    return camera_project(torch.as_tensor(X), torch.as_tensor(K)).numpy()


def reprojection(motion, p: int) -> tuple[float, float]:
    """(median reprojection px of person p's fitted keypoints against its detections, mean
    acceleration of its fitted joints mm/frame^2) of a camera-frame Motion."""
    v = motion.valid[p]
    K = motion.cam_K[0] if motion.cam_K.ndim == 3 else motion.cam_K
    uv = project(motion.keypoints3d(motion.keypoint_layout)[p][v], K)
    obs = motion.keypoints2d[p][v]
    err = np.linalg.norm(uv - obs[..., :2], axis=-1)[obs[..., 2] > 0.1]
    j = motion.joints3d[p][v]
    acc = np.linalg.norm(j[2:] - 2 * j[1:-1] + j[:-2], axis=-1).mean() * 1000
    return float(np.median(err)), float(acc)


def score_view(mono, ref: np.ndarray, ref_valid: np.ndarray, R: np.ndarray, t: np.ndarray,
               K: np.ndarray) -> dict[str, np.ndarray]:
    """Per reference frame: PA and root-aligned MPJPE (mm) of the matched monocular person
    (NaN where none matched), and size: the ratio of its summed limb and trunk lengths to the
    reference's (a monocular fit's metric size is its own guess). ref (T, 12, 3) world; R, t
    world -> this camera."""
    pts = body_points(mono)
    T = min(len(ref), pts.shape[1])
    pa, mp, size = np.full(T, np.nan), np.full(T, np.nan), np.full(T, np.nan)
    for f in range(T):
        if not ref_valid[f]:
            continue
        rc = ref[f] @ R.T + t
        ruv = project(rc, K)
        height = np.ptp(ruv[:, 1]) + 1e-6
        best, dist = None, 0.2 * height
        for p in range(pts.shape[0]):
            if mono.valid[p, f]:
                d = np.median(np.linalg.norm(project(pts[p, f], K) - ruv, axis=-1))
                if d < dist:
                    best, dist = p, d
        if best is None:
            continue
        x = pts[best, f]
        pa[f] = float(pa_mpjpe(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(rc))) * 1000
        mp[f] = np.linalg.norm((x - x[HIPS].mean(0)) - (rc - rc[HIPS].mean(0)), axis=-1).mean() * 1000
        size[f] = segment_length(x) / segment_length(rc)
    return dict(pa=pa, mpjpe=mp, size=size)


def path_options(path: str, temporal: str | None, overrides: dict | None = None,
                 regressed: FitOptions | None = None, weights: str | None = None) -> dict:
    """`capture`'s keyword arguments for a path, with FitOptions `overrides` on top of the
    options that path fits with by default (`regressed`: those of a fit from a regression
    stage, as `fit_setup` gives them); `weights`: per-frame regressor weights for the paths
    that use one."""
    reg = weights or True
    opts = {"default": dict(regressor=reg, temporal=temporal or True), "per-frame": dict(regressor=reg, temporal=False),
            "rest": dict(regressor=False)}[path]
    if overrides:
        opts["fit"] = dataclasses.replace(FitOptions() if path == "rest" else regressed, **overrides)
    return opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default="default,per-frame,rest")
    ap.add_argument("--temporal", default=None, help="temporal lifter weights for the default path")
    ap.add_argument("--weights", default=None, help="per-frame regressor weights (default: the shipped ones)")
    ap.add_argument("--fit", default="", help="FitOptions overrides, e.g. iters_gn=6")
    ap.add_argument("--body-model", default="anny", help="anny, or smpl/smplh/smplx with --model-path")
    ap.add_argument("--model-path", default=None, help="the SMPL-family model file or folder")
    ap.add_argument("--no-sports2d", action="store_true")
    args = ap.parse_args()
    paths = args.paths.split(",")
    overrides = fit_overrides(args.fit)
    regressed = fit_setup(load_body_model("anny"), True, None)[1] if overrides else None
    body = dict(body_model=args.body_model, model_path=args.model_path)

    demo = pose2sim_single_person()
    calib = demo / "calibration" / "Calib.qca.txt"
    cams = read_calibration(calib)
    videos = sorted((demo / "videos").glob("cam0*.mp4"))
    t0 = time.perf_counter()
    ref_motion = capture_multiview(videos, calib, cache_dir=demo / "videos", world="camera", **body)
    subject = int(ref_motion.valid.sum(1).argmax())
    ref = body_points(ref_motion)[subject]
    ref_valid = ref_motion.valid[subject]
    print(f"{demo.name}: reference = the four-camera fit of its subject, {ref_valid.sum()} frames "
          f"({time.perf_counter() - t0:.0f} s)")
    summary = []
    for path in paths:
        pa_all, mp_all, size_all, missed = [], [], [], 0
        for c, (video, cam) in enumerate(zip(videos, cams)):
            keypoints = demo / "videos" / f"{video.stem}.cam{c}.keypoints.npz"
            mono = capture(video, keypoints=keypoints, camera=cam, world="camera", **body,
                           **path_options(path, args.temporal, overrides, regressed, args.weights))
            s = score_view(mono, ref, ref_valid, cam.R, cam.t, cam.K)
            ok = np.isfinite(s["pa"])
            missed += int(ref_valid[:len(ok)].sum() - ok.sum())
            pa_all.append(s["pa"][ok])
            mp_all.append(s["mpjpe"][ok])
            size_all.append(np.median(s["size"][ok]))
            print(f"[{path}] {cam.name}: {mono.num_people} people, {ok.sum()} frames matched: PA-MPJPE "
                  f"{s['pa'][ok].mean():.1f} mm (p90 {np.percentile(s['pa'][ok], 90):.1f}), "
                  f"MPJPE {s['mpjpe'][ok].mean():.1f} mm, size {size_all[-1]:.3f}x", flush=True)
        pa, mp = np.concatenate(pa_all), np.concatenate(mp_all)
        summary.append(f"[{path}] Pose2Sim, each camera alone vs the four-camera fit: PA-MPJPE {pa.mean():.1f} mm, "
                       f"MPJPE {mp.mean():.1f} mm, size (limbs and trunk) " + " / ".join(f"{x:.3f}" for x in size_all)
                       + f"x, {missed} frames unmatched")

    if not args.no_sports2d:
        video = sports2d_demo()
        cache = Path(tempfile.gettempdir()) / "meshcap_bench_footage.keypoints.npz"
        video_tracks(video, cache=cache)
        for path in paths:
            m = capture(video, cache=cache, world="camera", **body,
                        **path_options(path, args.temporal, overrides, regressed, args.weights))
            figs = [reprojection(m, p) for p in range(m.num_people)]
            summary.append(f"[{path}] Sports2D: reprojection " + " / ".join(f"{r:.2f}" for r, _ in figs)
                           + " px, joint accel " + " / ".join(f"{a:.1f}" for _, a in figs) + " mm/frame^2")
    print()
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
