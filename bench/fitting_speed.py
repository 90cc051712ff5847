"""Fitting throughput on a 300-frame single-person track (temporal fitting, anny, blazepose33).

    python bench/fitting_speed.py [--frames 300] [--threads N]

Prints the fit's wall time and frames/s, its stages, and the ratio of fitting frames/s to the
body model's full-mesh forward+backward bodies/s at the same batch size, both measured here in
the same process (so the ratio holds across machines), and the same fit without its final
smoothing and settling. Issue target: >= 30 frames/s on the 2-core CI machine, aiming for >= 100.
"""
from __future__ import annotations

import argparse
import time

import torch

from meshcap import load_body_model
from meshcap.fitting.camera import intrinsics
from meshcap.fitting.smplify import FitOptions, SingleViewFitter
from meshcap.synthetic import camera_root_rotation, limb_indices, observe, sample_shapes, smooth_motion
from meshcap.keypoints.layouts import get_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    T = args.frames
    g = torch.Generator().manual_seed(0)
    model = load_body_model("anny")
    layout = get_layout("blazepose33")
    K = intrinsics(1280, 720)
    poses = smooth_motion(model, T, 30.0, g)
    t = torch.arange(T) / 30.0
    poses[:, 0] = camera_root_rotation(0.5 * torch.sin(t), torch.zeros(T))
    transl = torch.stack([0.5 * torch.sin(t / 2), torch.full_like(t, 0.2), 4.0 + 0.5 * torch.cos(t / 3)], -1)
    shape = sample_shapes(model, 1, g)
    with torch.no_grad():
        out = model(poses, shape, transl, layout=layout.name, vertices=False)
    obs, _ = observe(out.keypoints, K, (1280, 720), 3.0, generator=g, limbs=limb_indices(layout))

    fitter = SingleViewFitter(model)
    fitter.fit(obs[:8], K)  # warm-up (first-call allocations, layout tables)
    t0 = time.perf_counter()
    res = fitter.fit(obs, K, fps=30.0)
    fit_s = time.perf_counter() - t0
    fps = T / fit_s

    # the same fit without the final smoothing and settling (the fit before they came)
    plain = SingleViewFitter(model, options=FitOptions(smooth_s=0.0, iters_settle=0))
    plain.fit(obs[:8], K)
    t0 = time.perf_counter()
    plain.fit(obs, K, fps=30.0)
    plain_fps = T / (time.perf_counter() - t0)

    # reference: the full mesh forward+backward at the same batch, same process
    model._ensure_full()
    pose = poses.clone().requires_grad_(True)
    sh = shape.clone().requires_grad_(True)
    tr = transl.clone().requires_grad_(True)

    def full_step():
        o = model(pose, sh, tr, layout=layout.name, vertices=True)
        (o.vertices.square().sum() + o.keypoints.square().sum()).backward()

    full_step()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < 2.0:
        full_step()
        n += 1
    full_bps = n * T / (time.perf_counter() - t0)
    o = fitter.options
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {T} frames, "
          f"{o.iters_camera} root-stage x 4 headings + {o.iters_body} body-stage Adam steps")
    print(f"fit: {fit_s:.2f} s, {fps:.1f} frames/s (target >= 30), "
          f"median reprojection {res.reprojection_px.nanmedian():.2f} px")
    print(f"without smoothing and settling: {plain_fps:.1f} frames/s (the defaults run at "
          f"{fps / plain_fps:.2f} of that)")
    print(f"reference: full-mesh forward+backward at batch {T}: {full_bps:.0f} bodies/s")
    print(f"ratio fitting frames/s / full forward+backward bodies/s: {fps / full_bps:.3f} "
          f"(one full fwd+bwd of the track every {T / full_bps:.2f} s; the fit costs "
          f"{fit_s * full_bps / T:.0f} of them)")


if __name__ == "__main__":
    main()
