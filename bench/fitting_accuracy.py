"""Fitting accuracy on synthetic people made by the body model (anny).

    python bench/fitting_accuracy.py [--people 4] [--poses 32] [--sequences 3] [--frames 90]

1. Varied poses: `--people` bodies of random shape, each in `--poses` random poses seen by its
   own random camera (1280x720, focal 0.8-1.3x the diagonal, 3-7 m away, any heading), with
   detector-like noise (2-5 px Gaussian), 10% of keypoints dropped and a whole limb dropped in
   10% of frames. Each body's frames are fitted as one track without temporal terms.
2. Sequences: smooth random motions (cubic splines through key poses, a turning, walking
   root) at 30 fps, the same noise; fitted per frame (temporal terms off) and as a track.
Fits start from the rest pose (150 body steps) and/or the shipped regressor (75 steps).

Prints MPJPE (root-aligned) and PA-MPJPE (similarity Procrustes per frame) of the 20 joints in
mm, reprojection error in px (against the observations and the clean projections), the
acceleration error in mm/frame^2 and its per-frame/temporal ratio, and how the per-joint
uncertainty compares with the real errors (calibration: RMS error / (sqrt(3) RMS sigma), 1 is
ideal; Spearman rank correlation of sigma with error).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from meshcap import load_body_model
from meshcap.fitting.camera import default_focal
from meshcap.fitting.metrics import accel_error, mpjpe, pa_mpjpe
from meshcap.fitting.smplify import FitOptions, SingleViewFitter
from meshcap.keypoints.layouts import get_layout
from meshcap.regression import load_regressor, regress_track
from meshcap.synthetic import (camera_root_rotation, limb_indices, observe, sample_body_poses,
                               sample_shapes, smooth_motion)

W, H = 1280, 720


def random_camera(g):
    f = default_focal(W, H) * (0.8 + 0.5 * torch.rand((), generator=g).item())
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    return K


def make_view(model, poses, shape, yaw, walk, K, g, layout):
    """Bodies (T,) in camera frame: root yaw per frame, a walk offset (T, 3) in metres."""
    T = poses.shape[0]
    tilt = torch.full((T,), 0.15 * (2 * torch.rand((), generator=g).item() - 1))
    poses = poses.clone()
    poses[:, 0] = camera_root_rotation(yaw, tilt)
    depth = 3.0 + 4.0 * torch.rand((), generator=g).item()
    transl = (torch.tensor([0.0, 0.2, depth]) + walk).expand(T, 3).contiguous()
    with torch.no_grad():
        out = model(poses, shape, transl, layout=layout.name, vertices=False)
    noise = 2.0 + 3.0 * torch.rand(T, generator=g)
    obs, clean = observe(out.keypoints, K, (W, H), noise, generator=g, limbs=limb_indices(layout))
    return poses, transl, out, obs, clean


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def report(name, res, gt_joints, obs, clean, secs, frames):
    e_mp = 1000 * mpjpe(res.joints, gt_joints)
    e_pa = 1000 * pa_mpjpe(res.joints, gt_joints)
    seen = obs[..., 2] > 0
    rep_obs = res.reprojection_px[seen]
    from meshcap.fitting.camera import project
    rep_clean = (project(res.keypoints3d, res.K) - clean).norm(dim=-1)[seen]
    # per-joint errors with the root's depth aligned: what the uncertainty describes
    d = res.joints - gt_joints
    d[..., 2] -= d[..., :1, 2]
    err = d.norm(dim=-1).flatten().numpy()
    sig = res.uncertainty.flatten().numpy()
    calib = math.sqrt((err ** 2).mean()) / (math.sqrt(3) * math.sqrt((sig ** 2).mean()))
    print(f"{name:>22}: MPJPE {e_mp.mean():6.1f}  PA-MPJPE {e_pa.mean():6.1f} (median {e_pa.median():5.1f})"
          f"  reproj {rep_obs.mean():5.2f} px (clean {rep_clean.mean():5.2f})"
          f"  sigma calib {calib:4.2f} rho {spearman(sig, err):4.2f}"
          f"  {frames / secs:6.1f} frames/s")
    return e_mp, e_pa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--poses", type=int, default=32)
    ap.add_argument("--sequences", type=int, default=3)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=("rest", "regressor", "both"), default="both",
                    help="initialise from the rest pose, the shipped regressor, or compare both "
                         "(sequences use the last)")
    args = ap.parse_args()
    inits = ["rest", "regressor"] if args.init == "both" else [args.init]
    iters = {"rest": FitOptions().iters_body, "regressor": FitOptions().iters_body // 2}
    net = load_regressor() if "regressor" in inits else None
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = load_body_model("anny")
    layout = get_layout("blazepose33")
    print(f"anny, blazepose33, {W}x{H}, noise 2-5 px, 10% keypoints + 10% limbs dropped, "
          f"{torch.get_num_threads()} threads")

    print("\n1. varied poses, one track per body, no temporal terms")
    all_mp, all_pa = {}, {}
    for p in range(args.people):
        shape = sample_shapes(model, 1, g)
        poses = sample_body_poses(model, args.poses, g)
        yaw = (2 * torch.rand(args.poses, generator=g) - 1) * math.pi
        K = random_camera(g)
        poses, transl, gt, obs, clean = make_view(model, poses, shape, yaw, torch.zeros(3), K, g, layout)
        for init_name in inits:
            fitter = SingleViewFitter(model, options=FitOptions(temporal=False, iters_body=iters[init_name]))
            t0 = time.perf_counter()
            init = regress_track(net, model, obs, "blazepose33", K) if init_name == "regressor" else None
            res = fitter.fit(obs, K, init=init)
            res.K = K
            mp, pa = report(f"body {p} {init_name}", res, gt.joints, obs, clean, time.perf_counter() - t0, args.poses)
            all_mp.setdefault(init_name, []).append(mp)
            all_pa.setdefault(init_name, []).append(pa)
    for init_name in inits:
        mp, pa = torch.cat(all_mp[init_name]), torch.cat(all_pa[init_name])
        print(f"{'all, from ' + init_name:>22}: MPJPE {mp.mean():6.1f} mm  PA-MPJPE {pa.mean():6.1f} mm "
              f"(median {pa.median():5.1f}, 90th pct {pa.quantile(0.9):5.1f})  target PA-MPJPE <= 50")

    print(f"\n2. sequences of {args.frames} frames at 30 fps: per-frame vs temporal fitting, "
          f"initialised from {inits[-1]}")
    acc_pf, acc_t, pa_pf, pa_t = [], [], [], []
    for s in range(args.sequences):
        T = args.frames
        shape = sample_shapes(model, 1, g)
        poses = smooth_motion(model, T, 30.0, g)
        t = torch.arange(T) / 30.0
        yaw0 = (2 * torch.rand((), generator=g).item() - 1) * math.pi
        yaw = yaw0 + 0.6 * torch.sin(2 * math.pi * t / 3.0)
        walk = torch.stack([0.8 * torch.sin(2 * math.pi * t / 6.0), 0.02 * torch.sin(4 * math.pi * t),
                            0.5 * torch.sin(2 * math.pi * t / 5.0)], -1)
        K = random_camera(g)
        poses, transl, gt, obs, clean = make_view(model, poses, shape, yaw, walk, K, g, layout)
        init_name = inits[-1]
        for name, temporal in (("per-frame", False), ("temporal", True)):
            fitter = SingleViewFitter(model, options=FitOptions(temporal=temporal, iters_body=iters[init_name]))
            t0 = time.perf_counter()
            init = regress_track(net, model, obs, "blazepose33", K) if init_name == "regressor" else None
            res = fitter.fit(obs, K, init=init, fps=30.0)
            res.K = K
            _, pa = report(f"seq {s} {name}", res, gt.joints, obs, clean, time.perf_counter() - t0, T)
            acc = 1000 * accel_error(res.joints, gt.joints)
            print(f"{'':>22}  acceleration error {acc:6.2f} mm/frame^2")
            (acc_t if temporal else acc_pf).append(float(acc))
            (pa_t if temporal else pa_pf).append(float(pa.mean()))
    a_pf, a_t = np.mean(acc_pf), np.mean(acc_t)
    print(f"{'sequences':>22}: accel per-frame {a_pf:.2f}, temporal {a_t:.2f} mm/frame^2, "
          f"ratio {a_pf / a_t:.1f}x (target >= 3x); PA-MPJPE per-frame {np.mean(pa_pf):.1f}, "
          f"temporal {np.mean(pa_t):.1f} mm")


if __name__ == "__main__":
    main()
