"""The temporal lifter alone on real motion: how close its root-relative joints come to the truth.

    python bench/lifter.py [--weights A.safetensors B.safetensors ...] [--max-clips 2] [--noise 3]

The takes and cameras of `bench/real_motion.py` (the same clips, each its own random camera,
5% dropout), body-only COCO-17 input (no face points). Each COCO body point is compared with
the skeleton joint that carries it (`mocap.sigma_columns`: upper arm, forearm, wrist, thigh,
shin, foot), after a similarity alignment per frame, so the figures include the offsets
between the two joint definitions. Printed per weights file: PA-MPJPE on the held-out takes and
on the training takes (the gap says how much the lifter has learnt the takes themselves rather
than motion in general), and the frames/s of the lifting; each as one reading and as the fit's
regression stage reads a track (with its mirror image, averaged). No fitting: what `bench/real_motion.py`
measures is the fit that this pulls on.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from meshcap import load_body_model
from meshcap.fitting.metrics import pa_mpjpe
from meshcap.regression import mocap
from meshcap.regression.temporal import lift_track, load_temporal


def lifter_errors(net, model, clips, noise: float, seed: int = 0, mirror: bool = False) -> tuple[np.ndarray, float]:
    """(per-frame PA-MPJPE (N,) mm over every clip, seconds spent lifting); `mirror`: each
    track read as seen and as its mirror image, averaged (as the fit's regression stage reads it)."""
    cols = mocap.sigma_columns(model)
    errs, secs = [], 0.0
    for i, (take, _, sl) in enumerate(clips):
        v = mocap.view(take, sl, np.random.default_rng([seed, i]), face=False, noise_px=noise)
        t0 = time.perf_counter()
        with torch.no_grad():
            r = lift_track(net, torch.as_tensor(v.keypoints, dtype=torch.float32), "coco17",
                           torch.as_tensor(v.K, dtype=torch.float32),
                           mirror=model.mirror_permutation() if mirror else None)
        secs += time.perf_counter() - t0
        errs.append(pa_mpjpe(r["joints"][:, cols], torch.as_tensor(v.truth, dtype=torch.float32)).numpy() * 1000)
    return np.concatenate(errs), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", nargs="*", default=[None], help="lifter weights (default: the shipped ones)")
    ap.add_argument("--max-clips", type=int, default=2, help="clips per take")
    ap.add_argument("--noise", type=float, default=3.0, help="2D noise, px")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = load_body_model("anny")
    train, held_out = mocap.split(mocap.load_takes())
    splits = {name: [(t, n, sl) for t in takes for n, sl in mocap.clips(t, max_clips=args.max_clips)]
              for name, takes in (("held-out", held_out), ("train", train))}
    for w in args.weights:
        net = load_temporal(w).eval()
        for mirror in (False, True):
            figures = {}
            for name, clips in splits.items():
                err, secs = lifter_errors(net, model, clips, args.noise, args.seed, mirror)
                figures[name] = (err.mean(), len(err) / secs)
            print(f"{w or 'shipped'}{', with its mirror image (as the fit reads it)' if mirror else ', one reading'}: "
                  f"body-only, noise {args.noise:g} px: PA-MPJPE held-out {figures['held-out'][0]:.1f} mm, "
                  f"training takes {figures['train'][0]:.1f} mm ({figures['held-out'][1]:.0f} frames/s)")

if __name__ == "__main__":
    main()
