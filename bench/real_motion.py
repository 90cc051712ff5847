"""Monocular accuracy on real human motion: held-out mocap takes seen by random cameras.

    python bench/real_motion.py [--paths default,rest,regressor,temporal] [--max-clips 2] [--seed 0 | --seeds 0,1,2]
        [--body-model smpl --model-path FILE]

Real takes (`meshcap.regression.mocap`: CMU and boxing BVH from Debian's assimp-testmodels,
DeepMimic clips from the pybullet wheel, climbing takes from the holosoma-retargeting wheel),
only the fixed held-out split (`HELD_OUT`; `--split train` tunes options on the training takes
instead, keeping the held-out ones for the figures), cut into clips of 150 frames at 30 fps. Each clip
gets its own random perspective camera (any azimuth including side and back views, focal
800-2000 px, 1920x1080 or portrait), the same camera in every condition:

- body-only: the 12 COCO-17 body keypoints, face unseen (as from behind or a body-only
  detector); full: COCO-17 with nose, eyes and ears placed from the head;
- noise 0 or 3 px per coordinate; 5% of keypoints dropped in all conditions.

Fits go through `fit_tracks` with the same defaults as `meshcap.capture` (`--paths default`),
or forced from the rest pose / from the per-frame regressor alone (`regressor`) / from the
per-frame regressor with the temporal lifter (`temporal`, `--temporal FILE` for other weights). Joint centres of the mocap
skeleton are compared with the body model's COCO-17 body keypoints (3D, camera frame):
PA-MPJPE (similarity Procrustes per frame), MPJPE after aligning the mid-hips, acceleration
error (mm/frame^2 at 30 fps), facing>90: share of frames whose torso normal is more than 90
degrees from the truth's, limbs mirrored: the share of limb segments deep in the view (one end
over 8 cm nearer than the other) that the fit points the other way in depth (`mocap.limb_depth_wrong`;
a single view sees both alike), with the PA-MPJPE of the frames that have one and of the rest,
sigma: Spearman correlation of each keypoint's fitted joint sigma
with its PA-aligned error, and its calibration (RMS error / (sqrt(3) RMS sigma): 1 when sigma
is the error's per-axis spread). The floor is the body model fitted straight to the true 3D joints
(joint definitions differ between a mocap skeleton and the body model's keypoints).

`--body-model smpl` (or smplh, smplx) fits that model instead; the regression stage then
starts it from anny's fit (`meshcap.regression.transfer`). Without licensed SMPL files, the
tests' made-up one measures the path (a rough 1.7 m body around SMPL's skeleton, with little
shape freedom, its face, foot and fingertip vertices placed by hand):
    python -c "import sys; sys.path.insert(0, 'tests'); from synthetic_smpl import \\
        write_synthetic_smpl as w; w('/tmp/SMPL_NEUTRAL.pkl')"
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import time

import numpy as np
import torch

from meshcap import load_body_model
from meshcap.capture import capture, fit_setup
from meshcap.fitting.metrics import pa_mpjpe
from meshcap.fitting.smplify import FitOptions
from meshcap.fitting.tracks import fit_tracks
from meshcap.regression import mocap
from meshcap.regression.mocap import score_motion, spearman

CONDITIONS = (("body-only", False, 0.0), ("body-only", False, 3.0), ("full", True, 0.0), ("full", True, 3.0))


def fit_clips(model, regressor, fit: FitOptions | None, clips, face: bool, noise: float, seed: int = 0) -> list[dict]:
    """Fit every clip (take, name, slice) as `fit_tracks` does, each seen by its own camera
    (drawn from [seed, index], the same in every condition; the noise and dropout draw after
    it); `score_motion`'s figures per clip, with its name."""
    rows = []
    for i, (take, name, sl) in enumerate(clips):
        v = mocap.view(take, sl, np.random.default_rng([seed, i]), face=face, noise_px=noise)
        T = len(v.keypoints)
        motion = fit_tracks(model, {0: (np.arange(T), v.keypoints)}, num_frames=T, image_size=v.image_size,
                            fps=mocap.FPS, layout="coco17", K=v.K, options=fit, regressor=regressor)
        r = score_motion(model, motion, v.truth)
        r["name"] = name
        rows.append(r)
    return rows


def _option_value(text: str):
    """A --fit value: an int, a float, else the text (e.g. solver=adam)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def fit_overrides(text: str) -> dict:
    """FitOptions overrides from a --fit value such as "w_init=0.5,iters_gn=4" (also
    bench/footage.py's)."""
    return {k: _option_value(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", default="default", help="comma-separated: default, rest, regressor, temporal")
    ap.add_argument("--max-clips", type=int, default=2, help="clips per held-out take")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None,
                    help="comma-separated camera draws, pooled (e.g. 0,1,2): a few clips' limb mirrors move one "
                         "draw's PA-MPJPE by 1-3 mm either way, so compare changes over several")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--weights", default=None, help="per-frame regressor weights (default: the shipped ones)")
    ap.add_argument("--temporal", default=None, help="temporal lifter weights for --paths temporal (default: the shipped ones)")
    ap.add_argument("--fit", default="", help="FitOptions overrides, e.g. w_init=0.5,w_accel=1e-4")
    ap.add_argument("--conditions", default="", help="comma-separated subset, e.g. body-only:3,full:0")
    ap.add_argument("--body-model", default="anny", help="anny, or smpl/smplh/smplx with --model-path")
    ap.add_argument("--model-path", default=None, help="the SMPL-family model file or folder")
    ap.add_argument("--split", choices=("held-out", "train"), default="held-out",
                    help="train: tune options on the training takes, keeping the held-out ones for the figures")
    args = ap.parse_args()
    overrides = fit_overrides(args.fit)
    conditions = [c for c in CONDITIONS if not args.conditions or f"{c[0]}:{c[2]:g}" in args.conditions.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    torch.manual_seed(seeds[0])
    model = load_body_model(args.body_model, args.model_path)
    takes = {t.name: t for t in mocap.split(mocap.load_takes())[args.split == "held-out"]}
    clips = [(take, name, sl) for take in takes.values() for name, sl in mocap.clips(take, max_clips=args.max_clips)]
    print(f"{args.split}: {len(takes)} takes, {len(clips)} clips, {sum(s.stop - s.start for _, _, s in clips)} frames")

    if not args.no_floor:
        floor = []
        t0 = time.time()
        for i, (take, name, sl) in enumerate(clips):
            v = mocap.view(take, sl, np.random.default_rng([seeds[0], i]))
            fit = mocap.fit_points3d(model, torch.as_tensor(v.truth, dtype=torch.float32))
            floor.append(pa_mpjpe(fit["keypoints"].float(), torch.as_tensor(v.truth)).numpy() * 1000)
        floor_pa = float(np.concatenate(floor).mean())
        print(f"floor (body model fitted to the true 3D joints): PA-MPJPE {floor_pa:.1f} mm ({time.time() - t0:.0f} s)")

    summary = []
    for path in args.paths.split(","):
        # "default": whatever meshcap.capture does when not told
        regressor = {"default": inspect.signature(capture).parameters["regressor"].default, "rest": False,
                     "regressor": args.weights or True, "temporal": args.weights or True}[path]
        temporal = {"default": True, "rest": False, "regressor": False, "temporal": args.temporal or True}[path]
        net, fit = fit_setup(model, regressor, None, temporal=temporal)
        if overrides:
            fit = dataclasses.replace(fit or FitOptions(), **overrides)
        for cond, face, noise in conditions:
            t0 = time.time()
            per_draw = [fit_clips(model, net, fit, clips, face, noise, seed) for seed in seeds]
            rows = [r for draw in per_draw for r in draw]
            nframes = sum(len(r["pa"]) for r in rows)
            secs = time.time() - t0
            pa = np.concatenate([r["pa"] for r in rows])
            mp = np.concatenate([r["mpjpe"] for r in rows])
            acc = np.mean([r["accel"] for r in rows])
            facing = np.concatenate([r["facing"] for r in rows]).mean() * 100
            wrong = np.concatenate([r["depth_wrong"] for r in rows])
            deep = np.concatenate([r["deep"] for r in rows])
            # limb segments mirrored in depth, and the error of the frames with at least one
            flipped = wrong.any(1)
            limbs = (f"limbs mirrored {wrong.sum() / max(deep.sum(), 1) * 100:.1f}% of deep segments, "
                     f"in {flipped.mean() * 100:.0f}% of frames (PA {pa[flipped].mean() if flipped.any() else 0:.0f} "
                     f"mm there, {pa[~flipped].mean() if (~flipped).any() else 0:.0f} elsewhere)")
            sig = np.concatenate([r["sigma"].ravel() for r in rows])
            err = np.concatenate([r["jerr"].ravel() for r in rows])
            rho = spearman(sig, err)
            # 1.0 when sigma is the per-axis spread of the error; below 1: sigma too large
            calib = np.sqrt(np.mean(err ** 2)) / (np.sqrt(3) * np.sqrt(np.mean(sig ** 2)))
            print(f"\n[{path}] {cond}, noise {noise:g} px ({nframes / secs:.0f} frames/s)")
            if len(seeds) > 1:
                per = [np.concatenate([r["pa"] for r in draw]).mean() for draw in per_draw]
                print("  PA-MPJPE per camera draw: " + " / ".join(f"{x:.1f}" for x in per) + " mm")
            for r in rows:
                print(f"  {r['name']:28s} PA {r['pa'].mean():6.1f}  MPJPE {r['mpjpe'].mean():6.1f}  "
                      f"accel {r['accel']:5.1f}  facing>90 {r['facing'].mean() * 100:5.1f}%")
            summary.append(f"{'' if path == 'default' else f'[{path}] '}{cond}, noise {noise:g} px: "
                           f"PA-MPJPE {pa.mean():.1f} mm, MPJPE {mp.mean():.1f} mm, accel {acc:.1f} mm/frame^2, "
                           f"facing>90 {facing:.1f}%, sigma rho {rho:.2f} (calibration {calib:.2f}), {limbs}")
    print()
    if not args.no_floor:
        print(f"floor: PA-MPJPE {floor_pa:.1f} mm")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
