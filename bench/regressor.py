"""The regressor on held-out synthetic people, and fitting initialised from it.

    python bench/regressor.py [--weights FILE] [--people 512]

Prints, on a held-out split (its own seed) with detector-like noise and occlusion:
1. the regressor alone: MPJPE (root-aligned) and PA-MPJPE of the 20 joints, mm;
2. its sigma: Spearman rank correlation with the real per-joint error, and the fraction of
   errors within sqrt(3)*sigma and 2*sqrt(3)*sigma (sigma is per axis; a calibrated isotropic
   Gaussian puts 61% and 97% there);
3. throughput, people/s, at batch 1 and 256;
4. fitting initialised from the rest pose vs from the regressor (varied poses, one track per
   body, no temporal terms): PA-MPJPE and the steps each needs to come within 1% of its own
   final loss.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from meshcap import load_body_model
from meshcap.fitting.metrics import mpjpe, pa_mpjpe
from meshcap.fitting.smplify import FitOptions, SingleViewFitter
from meshcap.regression import load_regressor, regress_track
from meshcap.regression.train import _grouped, synthetic_batch, training_poses

sys.path.insert(0, str(Path(__file__).parent))
from fitting_accuracy import make_view, random_camera  # noqa: E402

from meshcap.keypoints.layouts import get_layout  # noqa: E402
from meshcap.synthetic import sample_shapes  # noqa: E402


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def steps_to_final(history, tol=0.01):
    final = history[-1]
    for i, v in enumerate(history):
        if v <= final + tol * abs(final):
            return i + 1
    return len(history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--people", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    model = load_body_model("anny")
    net = load_regressor(args.weights)
    g = torch.Generator().manual_seed(args.seed)
    print(f"weights: {args.weights or 'shipped'}; training record: {getattr(net, 'record', {})}")

    errs, pas, mps, sig = [], [], [], []
    with torch.no_grad():
        for _ in range(max(1, args.people // 256)):
            b = synthetic_batch(model, 256, g)
            pred = net(b.tokens)
            joints, _ = _grouped(model, pred["rotmats"], b.shape)
            j_rel = joints - joints[:, :1]
            errs.append((j_rel - b.joints_rel).norm(dim=-1))
            sig.append(pred["sigma"])
            mps.append(mpjpe(j_rel, b.joints_rel))
            pas.append(pa_mpjpe(j_rel, b.joints_rel))
    e, s = torch.cat(errs).flatten().numpy(), torch.cat(sig).flatten().numpy()
    print(f"1. regressor alone ({len(torch.cat(mps))} people): MPJPE {1000 * torch.cat(mps).mean():.1f} mm, "
          f"PA-MPJPE {1000 * torch.cat(pas).mean():.1f} mm")
    within1 = (e <= math.sqrt(3) * s).mean()
    within2 = (e <= 2 * math.sqrt(3) * s).mean()
    print(f"2. sigma: Spearman {spearman(s, e):.2f} (target >= 0.5); within sqrt3*sigma {within1:.0%}, "
          f"within 2sqrt3*sigma {within2:.0%} (calibrated: 61%, 97%); median sigma {1000 * np.median(s):.0f} mm, "
          f"median error {1000 * np.median(e):.0f} mm")

    tok = synthetic_batch(model, 256, g).tokens
    with torch.no_grad():
        for B in (1, 256):
            x = tok[:B]
            net(x)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 1.0:
                net(x)
                n += 1
            print(f"3. throughput batch {B:>3}: {n * B / (time.perf_counter() - t0):7.0f} people/s")

    layout = get_layout("blazepose33")
    res_rest, res_reg = [], []
    for p in range(4):
        shape = sample_shapes(model, 1, g)
        poses = training_poses(model, 32, g)
        yaw = (2 * torch.rand(32, generator=g) - 1) * math.pi
        K = random_camera(g)
        poses, transl, gt, obs, clean = make_view(model, poses, shape, yaw, torch.zeros(3), K, g, layout)
        rest = SingleViewFitter(model, options=FitOptions(temporal=False)).fit(obs, K)
        init = regress_track(net, model, obs, "blazepose33", K)
        half = FitOptions(temporal=False, iters_body=FitOptions().iters_body // 2)
        reg = SingleViewFitter(model, options=half).fit(obs, K, init=init)
        with torch.no_grad():
            alone = model(init.poses, init.shape, init.transl, vertices=False).joints
        res_rest.append((pa_mpjpe(rest.joints, gt.joints), steps_to_final(rest.loss_history), len(rest.loss_history)))
        res_reg.append((pa_mpjpe(reg.joints, gt.joints), steps_to_final(reg.loss_history), len(reg.loss_history),
                        pa_mpjpe(alone, gt.joints)))
    pa_rest = torch.cat([r[0] for r in res_rest]) * 1000
    pa_reg = torch.cat([r[0] for r in res_reg]) * 1000
    pa_alone = torch.cat([r[3] for r in res_reg]) * 1000
    print(f"4. fitting, 4 bodies x 32 poses: regressor alone PA-MPJPE {pa_alone.mean():.1f} mm; "
          f"from rest pose {pa_rest.mean():.1f} mm ({res_rest[0][2]} steps, within 1% of final after "
          f"{np.mean([r[1] for r in res_rest]):.0f}); from regressor {pa_reg.mean():.1f} mm "
          f"({res_reg[0][2]} steps, within 1% after {np.mean([r[1] for r in res_reg]):.0f})")


if __name__ == "__main__":
    main()
