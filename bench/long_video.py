"""Memory and speed of fitting long tracks (`meshcap.fitting.windows`).

    python bench/long_video.py --minutes 1 5 60 [--whole-minutes 1 2] [--views 4]

Builds one person's track of the given length from real motion capture (the held-out CMU
walk, 37 s, played forward and back so that the motion never jumps) seen by a static camera
(COCO-17 keypoints with 3 px noise), and fits it as `capture` does (the shipped regressor's
initialisation), each length in a fresh process with one torch thread. Prints per length:
frames, seconds, frames/s, the process's peak memory (RSS) and its growth over the memory
before fitting (model and regressor loaded). `--whole-minutes` also fits those lengths as one window (the
old whole-track fit) for comparison. Ratios are against the first row (the shortest
windowed run). `--views N`: the same walk seen by N static calibrated cameras around it (no
lens distortion), fitted as `capture_multiview` fits a person (`MultiViewFitter.fit_windowed`;
the whole-track rows with `fit`).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _run(minutes: float, whole: bool, out) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from meshcap import load_body_model
    from meshcap.capture import fit_setup
    from meshcap.fitting.tracks import fit_tracks
    from meshcap.regression import mocap

    model = load_body_model("anny")
    take = next(t for t in mocap.split(mocap.load_takes())[1] if t.name.startswith("cmu"))
    v = mocap.static_view(take, slice(0, len(take.body)), np.random.default_rng(0), pitch=np.radians(10),
                          roll=0.0, face=True, noise_px=3.0)
    fps = mocap.FPS
    T = int(round(minutes * 60 * fps))
    loop = np.concatenate([np.arange(len(v.keypoints)), np.arange(len(v.keypoints) - 2, 0, -1)])
    kp = v.keypoints[loop[np.arange(T) % len(loop)]]
    net, fit = fit_setup(model, True, None)
    before = _rss_mb()
    t0 = time.perf_counter()
    kw = dict(window=T + 1, overlap=1) if whole else {}
    m = fit_tracks(model, {0: (np.arange(T), kp)}, num_frames=T, image_size=v.image_size, fps=fps,
                   layout="coco17", K=v.K, options=fit, regressor=net, **kw)
    out.put(dict(T=T, secs=time.perf_counter() - t0, peak=_rss_mb(), before=before, people=m.num_people))


def _run_views(minutes: float, whole: bool, views: int, out) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from meshcap import load_body_model
    from meshcap.fitting.multiview import MultiViewFitter
    from meshcap.multiview.calibration import Camera
    from meshcap.regression import mocap

    model = load_body_model("anny")
    take = next(t for t in mocap.split(mocap.load_takes())[1] if t.name.startswith("cmu"))
    fps = mocap.FPS
    T = int(round(minutes * 60 * fps))
    loop = np.concatenate([np.arange(len(take.body)), np.arange(len(take.body) - 2, 0, -1)])
    frames = loop[np.arange(T) % len(loop)]
    cams, kp = [], []
    for c in range(views):
        v = mocap.static_view(take, slice(0, len(take.body)), np.random.default_rng([0, c]), pitch=np.radians(10),
                              roll=0.0, face=True, noise_px=3.0, dropout=0.0)
        cams.append(Camera(f"cam{c}", v.K, v.R, v.t[0], v.image_size, np.zeros(5)))
        kp.append(v.keypoints[frames])
    fitter = MultiViewFitter(model, cams, layout="coco17")
    before = _rss_mb()
    t0 = time.perf_counter()
    (fitter.fit if whole else fitter.fit_windowed)(np.stack(kp), fps=fps)
    out.put(dict(T=T, secs=time.perf_counter() - t0, peak=_rss_mb(), before=before, people=1))


def measure(minutes: float, whole: bool, views: int = 0) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run_views, args=(minutes, whole, views, q)) if views else \
        ctx.Process(target=_run, args=(minutes, whole, q))
    p.start()
    r = q.get()
    p.join()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 60.0])
    ap.add_argument("--whole-minutes", type=float, nargs="*", default=[1.0])
    ap.add_argument("--views", type=int, default=0, help="calibrated cameras (0: one uncalibrated camera)")
    a = ap.parse_args()
    rows = [(m, False) for m in sorted(a.minutes)] + [(m, True) for m in sorted(a.whole_minutes)]
    ref = None
    print(f"{'fit':>9} {'minutes':>7} {'frames':>7} {'seconds':>8} {'frames/s':>8} {'peak MB':>8} "
          f"{'growth MB':>9}  vs the first row (peak, growth)")
    for minutes, whole in rows:
        r = measure(minutes, whole, a.views)
        growth = r["peak"] - r["before"]
        ref = ref or (r["peak"], max(growth, 1.0))
        print(f"{'whole' if whole else 'windowed':>9} {minutes:7.1f} {r['T']:7d} {r['secs']:8.1f} "
              f"{r['T'] / r['secs']:8.1f} {r['peak']:8.0f} {growth:9.0f}  "
              f"{r['peak'] / ref[0]:.2f}x, {growth / ref[1]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
