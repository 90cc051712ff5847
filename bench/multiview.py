"""Multi-view capture on Pose2Sim's single-person demo (four synchronised, calibrated cameras),
against plain confidence-weighted DLT triangulation of the same 2D keypoints.

    python bench/multiview.py

Prints, for the subject (the person seen longest; the demo's background people are matched
too but left out here): the left/right swaps found and undone in each view
(`meshcap.multiview.swaps`);
0. how far each camera's orientation is turned, and its focal length scaled, from the
   calibration by the refinement that `capture_multiview` runs (`meshcap.multiview.refine`);
   then sections 1-3 twice, with the calibration as given and refined (the default), each with the fitted
   bone scales (one per body part, left and right alike);
1. per-view reprojection error of the fit and of plain DLT into the views they were made
   from, pixels (median and 90th percentile);
2. leave-one-camera-out: fit (and triangulate) with three views, measure the reprojection
   error in the fourth, for each camera in turn: fit vs DLT;
3. bone lengths over time (shoulder-elbow, elbow-wrist, hip-knee, knee-ankle, per side): the
   standard deviation for the fitted body vs the DLT points, mm;
2b. leave-one-camera-out again over the take's second half, with cameras refined on its
   first half only (the refinement in 2 also saw the left-out camera's detections);
4. Pose2Sim's Demo_MultiPerson through `capture_multiview`: the people found, their frames,
   the largest frame-to-frame step of each root (an id swap would jump a metre or more) and
   how far each travels.
"""
from __future__ import annotations

import time

import numpy as np

from meshcap import load_body_model
from meshcap.fitting.multiview import MultiViewFitter, bone_length_std
from meshcap.keypoints.layouts import get_layout
from meshcap.multiview.calibration import read_calibration
from meshcap.multiview.capture import gather_people, load_views
from meshcap.multiview.refine import refine_orientations
from meshcap.multiview.triangulate import dlt, reprojection_errors, undistort
from meshcap.regression.mocap import SEGMENTS
from meshcap.samples import pose2sim_multi_person, pose2sim_single_person



def plain_dlt(kp: np.ndarray, cams) -> np.ndarray:
    """(T, K, 3): confidence-weighted DLT, no re-weighting."""
    C, T, K, _ = kp.shape
    pts = kp.reshape(C, T * K, 3)
    w = np.where(pts[..., 2] >= 0.1, pts[..., 2], 0.0)
    xn = np.zeros((C, T * K, 2))
    for c, cam in enumerate(cams):
        m = w[c] > 0
        xn[c, m] = undistort(pts[c, m, :2], cam)
    P = np.stack([np.hstack([cam.R, cam.t[:, None]]) for cam in cams])
    return dlt(xn, P, w).reshape(T, K, 3)


def stats(err: np.ndarray) -> str:
    e = err[np.isfinite(err)]
    return f"median {np.median(e):5.1f} px, p90 {np.percentile(e, 90):6.1f} px" if len(e) else "no points"


def leave_one_out(model, kp: np.ndarray, cams, seen: np.ndarray, fps: float, frames: slice = slice(None),
                  verbose: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fit (and triangulate) with three views, measure in the fourth, each camera in turn; the
    errors (C, T', K) of the fit and of DLT over `frames`."""
    C = len(cams)
    fit_all, dlt_all = [], []
    for c in range(C):
        rest = [i for i in range(C) if i != c]
        sub = [cams[i] for i in rest]
        r = MultiViewFitter(model, sub).fit(kp[rest][:, frames], fps=fps)
        uv = cams[c].project(r.keypoints3d.double()).numpy()
        e_fit = np.where(seen[c, frames], np.linalg.norm(uv - kp[c, frames, :, :2], axis=-1), np.nan)
        X = plain_dlt(kp[rest][:, frames], sub)
        e_dlt = np.where(seen[c, frames], reprojection_errors(X.reshape(-1, 3), kp[c, frames].reshape(1, -1, 3),
                                                              [cams[c]])[0].reshape(X.shape[:2]), np.nan)
        fit_all.append(e_fit)
        dlt_all.append(e_dlt)
        if verbose:
            print(f"   {cams[c].name}: fit {stats(e_fit)} | DLT {stats(e_dlt)}")
    return np.stack(fit_all), np.stack(dlt_all)


def evaluate(model, kp: np.ndarray, cams, seen: np.ndarray, fps: float) -> None:
    """Sections 1-3 with these cameras."""
    C = len(cams)
    t0 = time.perf_counter()
    res = MultiViewFitter(model, cams).fit(kp, fps=fps)
    print(f"fit of {C} views: {time.perf_counter() - t0:.1f} s")
    scales = res.bone_scale[0].tolist()
    print("bone scales: " + ", ".join(f"{n.removesuffix('.L')} {s:.3f}" for n, s in zip(model.joint_names, scales)
                                      if not n.endswith(".R")))
    print("1. per-view reprojection into the views fitted (fit | DLT of all views):")
    X_all = plain_dlt(kp, cams)
    for c, cam in enumerate(cams):
        e_dlt = reprojection_errors(X_all.reshape(-1, 3), kp[c].reshape(1, -1, 3), [cam])[0].reshape(X_all.shape[:2])
        print(f"   {cam.name}: fit {stats(np.where(seen[c], res.reprojection_px[c], np.nan))} | "
              f"DLT {stats(np.where(seen[c], e_dlt, np.nan))}")

    print("2. leave-one-camera-out (reprojection into the camera left out):")
    fit_all, dlt_all = leave_one_out(model, kp, cams, seen, fps)
    print(f"   all cameras: fit {stats(fit_all)} | DLT {stats(dlt_all)}")

    names = get_layout("blazepose33").names
    pairs = [(names.index(a), names.index(b)) for a, b in SEGMENTS]
    s_fit = bone_length_std(res.keypoints3d.numpy(), pairs) * 1000
    s_dlt = bone_length_std(X_all, pairs) * 1000
    print("3. bone-length standard deviation over time, mm (fit | DLT):")
    for (a, b), f, d in zip(SEGMENTS, s_fit, s_dlt):
        print(f"   {a}-{b.split('_', 1)[1]}: {f:6.2f} | {d:6.1f}")
    print(f"   mean: fit {np.nanmean(s_fit):.2f} mm, DLT {np.nanmean(s_dlt):.1f} mm")


def main() -> None:
    demo = pose2sim_single_person()
    cams = read_calibration(demo / "calibration" / "Calib.qca.txt")
    videos = sorted((demo / "videos").glob("cam0*.mp4"))
    views = load_views(videos, cams, cache_dir=demo / "videos")
    T = min(v.num_frames for v in views)
    first, kp, swapped = gather_people(views, cams, [0] * len(cams), T, 1, 10)[0]
    C = len(cams)
    fps = views[0].fps
    print(f"{demo.name}: {C} cameras, {kp.shape[1]} frames of the subject (from frame {first}), {fps:g} fps")
    print(f"left/right swaps found and undone (view-frames, per view): {swapped.sum(1).tolist()}")
    model = load_body_model("anny")
    seen = kp[..., 2] > 0.5  # (C, T, K): judged on confident keypoints

    # 0. the cameras' orientations refined from the subject, as capture_multiview does
    refined = refine_orientations(kp.reshape(C, -1, 3), cams)
    print("0. cameras refined (`meshcap.multiview.refine`): turned "
          + ", ".join(f"{c.name} {a:.2f}" for c, a in zip(cams, refined.turned_deg)) + " deg, focal lengths x "
          + ", ".join(f"{f:.4f}" for f in refined.focal_scale) + "; robust triangulation's "
          "median reprojection " + " ".join(f"{b:.1f}" for b in refined.before_px) + " -> "
          + " ".join(f"{a:.1f}" for a in refined.after_px) + " px")
    for title, cc in (("the calibration as given (--keep-calibration)", cams),
                      ("orientations and focal lengths refined (the default)", refined.cameras)):
        print(f"\n== {title}")
        evaluate(model, kp, cc, seen, fps)
    # the refinement above saw the left-out camera's own detections; here the cameras are
    # refined on the first half of the take and the second half is left out camera by camera
    n = kp.shape[1] // 2
    half = refine_orientations(kp[:, :n].reshape(C, -1, 3), cams)
    print(f"\n2b. leave-one-camera-out over frames {n}-{kp.shape[1] - 1}, cameras refined on frames 0-{n - 1} "
          f"(turned " + ", ".join(f"{a:.2f}" for a in half.turned_deg) + " deg, focal lengths x "
          + ", ".join(f"{f:.4f}" for f in half.focal_scale) + "):")
    for title, cc in (("as given", cams), ("refined", half.cameras)):
        f_all, d_all = leave_one_out(model, kp, cc, seen, fps, slice(n, None), verbose=False)
        print(f"   {title:9s} fit {stats(f_all)} | DLT {stats(d_all)}; per camera, fit medians "
              + " ".join(f"{np.nanmedian(e):.1f}" for e in f_all))
    print()

    from meshcap import capture_multiview

    multi = pose2sim_multi_person()
    m = capture_multiview(sorted((multi / "videos").glob("cam0*.mp4")), multi / "calibration" / "Calib.qca.txt",
                          cache_dir=multi / "videos")
    print(f"4. {multi.name}: {m.num_people} people")
    for p in range(m.num_people):
        f = np.flatnonzero(m.valid[p])
        root = m.joints3d[p, f, 0]
        step = np.linalg.norm(np.diff(root, axis=0), axis=-1).max() if len(f) > 1 else 0.0
        print(f"   id {m.person_ids[p]}: frames {f[0]}-{f[-1]} ({len(f)}), largest root step {100 * step:.1f} cm, "
              f"from {np.round(root[0, :2], 2)} to {np.round(root[-1, :2], 2)} m")


if __name__ == "__main__":
    main()
