"""One SPIN round on real footage: does fine-tuning the regressor on fits of unlabelled tracks
keep it at least as good?

    python bench/spin.py [--steps 300] [--distill 10] [--max-clips 2]

Footage: the Sports2D demo (two people) and Pose2Sim's single- and multi-person demos (four
cameras each, each used as a monocular video), all fetched from PyPI wheels; keypoints are
detected once and cached beside them. The round fits them as `capture` does (regressor and
temporal lifter) and is gated on synthetic people and on the real-motion training takes
(`meshcap.regression.spin.spin_round`). Prints, before and after one round:
1. the regressor alone on a held-out synthetic split (MPJPE, PA-MPJPE, mm);
2. fits of every real track, initialised from the regressor: median reprojection error of
   the seen keypoints (pixels, and share of the person's size);
3. the real-motion benchmark's held-out takes (`bench/real_motion.py`'s clips and cameras),
   fitted as `capture` does, with the shipped and with the tuned regressor: PA-MPJPE, MPJPE,
   acceleration error, facing>90, per condition, and the paired per-clip difference.
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np

from real_motion import CONDITIONS, fit_clips

from meshcap import load_body_model
from meshcap.fitting.smplify import FitOptions
from meshcap.keypoints.pipeline import video_tracks
from meshcap.regression import RegressionStage, load_regressor, load_temporal, mocap
from meshcap.regression.spin import SpinOptions, fit_tracks_with, heldout_metrics, spin_round
from meshcap.samples import pose2sim_multi_person, pose2sim_single_person, samples_dir, sports2d_demo


def real_tracks():
    videos = [sports2d_demo()] + [v for demo in (pose2sim_single_person(), pose2sim_multi_person())
                                  for v in sorted((demo / "videos").glob("cam0*.mp4"))]
    return [(str(v.relative_to(samples_dir())), video_tracks(v, cache=v.with_suffix(".keypoints.npz")))
            for v in videos]


def summary(fits) -> str:
    px = np.array([f.median_px for f in fits])
    rel = np.array([f.median_rel for f in fits])
    return f"median over tracks {np.median(px):.2f} px ({100 * np.median(rel):.2f}% of size), mean {px.mean():.2f} px; per track " + \
        ", ".join(f"{p:.1f}" for p in px)


def paired_heldout(a, b, model, people: int = 2048, seed: int = 1234) -> str:
    """Per-person PA-MPJPE of networks a and b on the same held-out people: the mean paired
    difference b - a and its standard error (the split's own spread cancels)."""
    import math

    d = (heldout_metrics(b, model, people, seed, per_person=True)["pa_per_person"]
         - heldout_metrics(a, model, people, seed, per_person=True)["pa_per_person"])
    return f"{d.mean():+.2f} +- {d.std() / math.sqrt(len(d)):.2f} mm (1 SE, {len(d)} people)"


def held_out(model, net, tuned, lifter, max_clips: int) -> None:
    """Section 3: the real-motion benchmark's held-out clips fitted as `capture` does (regressor
    and lifter, `w_init` 0.5), the shipped regressor against the tuned one, same cameras."""
    _, takes = mocap.split(mocap.load_takes())
    clips = [(t, n, sl) for t in takes for n, sl in mocap.clips(t, max_clips=max_clips)]
    fit = FitOptions(w_init=0.5)
    print(f"3. real-motion benchmark, held-out takes ({len(clips)} clips), fitted as capture does:")
    if tuned is net:
        print("   the round returned the shipped weights unchanged: nothing to compare")
        return
    for cond, face, noise in CONDITIONS:
        rows = {name: fit_clips(model, RegressionStage(n, lifter), fit, clips, face, noise)
                for name, n in (("before", net), ("after", tuned))}
        figs = {k: (np.concatenate([r["pa"] for r in v]).mean(), np.concatenate([r["mpjpe"] for r in v]).mean(),
                    np.mean([r["accel"] for r in v]), 100 * np.concatenate([r["facing"] for r in v]).mean())
                for k, v in rows.items()}
        d = np.array([a["pa"].mean() - b["pa"].mean() for a, b in zip(rows["after"], rows["before"])])
        print(f"   {cond}, noise {noise:g} px: " + "; ".join(
            f"{k} PA-MPJPE {f[0]:.1f} mm, MPJPE {f[1]:.1f} mm, accel {f[2]:.1f}, facing>90 {f[3]:.1f}%"
            for k, f in figs.items())
            + f"; per-clip PA after - before {d.mean():+.2f} +- {d.std() / np.sqrt(len(d)):.2f} mm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=SpinOptions.steps)
    ap.add_argument("--people", type=int, default=512)
    ap.add_argument("--max-clips", type=int, default=2, help="clips per held-out take in section 3")
    ap.add_argument("--distill", type=float, default=SpinOptions.distill_weight,
                    help="weight of holding the tuned network to the original on synthetic people")
    args = ap.parse_args()
    model = load_body_model("anny")
    net = load_regressor()
    named = real_tracks()
    tracks = [t for _, t in named]
    print("footage:", ", ".join(f"{n} ({len(t)} tracks, {t.num_frames} frames)" for n, t in named))
    opts = SpinOptions(steps=args.steps, distill_weight=args.distill)
    lifter = load_temporal()
    t0 = time.perf_counter()
    tuned, report = spin_round(net, model, tracks, opts, temporal=lifter)
    fits_before = [SimpleNamespace(**f) for f in report["tracks"]]
    print(f"pseudo-labels: {report['labels']} of {sum(f.frames for f in fits_before)} frames kept; "
          f"round {time.perf_counter() - t0:.0f} s; validation PA-MPJPE "
          f"{report['validation_before']['pa_mpjpe_mm']:.1f} mm before (real motion, regressor alone: "
          f"{report['real_before']['pa_mpjpe_mm']:.1f}), tried: "
          + ", ".join(f"weight {t['pseudo_weight']} mix {t['mix']}: {t['validation']['pa_mpjpe_mm']:.2f} "
                      f"({t['paired_diff_mm']:+.3f} +- {t['paired_se_mm']:.3f}), real motion "
                      f"{t['real']['pa_mpjpe_mm']:.2f} ({t['real_diff_mm']:+.3f} +- {t['real_se_mm']:.3f})"
                      for t in report["tried"])
          + f"; accepted weight {report['accepted_weight']}, mix {report['accepted_mix']}")
    before, after = heldout_metrics(net, model, args.people), heldout_metrics(tuned, model, args.people)
    print(f"1. held-out synthetic, regressor alone: MPJPE {before['mpjpe_mm']:.1f} -> {after['mpjpe_mm']:.1f} mm, "
          f"PA-MPJPE {before['pa_mpjpe_mm']:.1f} -> {after['pa_mpjpe_mm']:.1f} mm "
          f"(ratio after/before {after['pa_mpjpe_mm'] / before['pa_mpjpe_mm']:.3f})")
    print(f"   paired PA-MPJPE difference after - before: {paired_heldout(net, tuned, model)}")
    _, fits_after = fit_tracks_with(tuned, model, tracks, opts, temporal=lifter)
    print(f"2. real tracks, fit from the regressor, reprojection:\n   before: {summary(fits_before)}\n"
          f"   after:  {summary(fits_after)}")
    ratio = np.median([a.median_px / b.median_px for a, b in zip(fits_after, fits_before)])
    print(f"   median per-track ratio after/before: {ratio:.3f} (no worse: <= 1)")
    held_out(model, net, tuned, lifter, args.max_clips)
    print(json.dumps(dict(labels=report["labels"], accepted_weight=report["accepted_weight"],
                     accepted_mix=report["accepted_mix"], before=before,
                          after=after)))


if __name__ == "__main__":
    main()
