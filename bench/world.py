"""The world from real motion: up direction, ground, foot contacts and skating, on held-out mocap.

    python bench/world.py [--max-clips 2] [--seed 0 | --seeds 0,1] [--noise 3] [--split held-out|train]

Held-out takes of `meshcap.regression.mocap` whose feet are on a floor (climbing left out),
clips of 150 frames at 30 fps, each seen by a static camera (`mocap.static_view`) at any
azimuth with pitch and roll drawn in [-30, 30] degrees; COCO-17 with face points, `--noise` px,
5% dropout. Each clip is fitted as `meshcap.capture` fits (`fit_tracks`, the default
regressor), then:

- up: angle between the ground's normal (`meshcap.world.estimate_ground`) and gravity's up
  in the camera frame; height: the ground under the person, as the fitted mid-hips' median
  height above it against the truth's above the floor (y = 0 in every take), the truth scaled
  by the fit's depth over the true depth (a monocular fit's size and depth are one unknown),
  and unscaled;
- contacts: the labels of `meshcap.contacts` on the planted result against the truth (a foot
  planted when its ankle moves under 0.1 m/s and is within 5 cm of the take's planted ankle
  height, its 2nd percentile), per foot and frame;
- skating: median horizontal speed (one frame to the next, in the grounded world) of the
  lower sole point of feet labelled planted in both frames, before and after `plant_feet`,
  on the same frames (the planted result's labels);
- accuracy before and after planting: PA-MPJPE and mid-hip-aligned MPJPE against the truth
  (`mocap.score_motion`), so that planting the feet does not buy stillness with error.

Ends with one summary line per figure. `--sports2d` adds real footage: the Sports2D demo
captured as `meshcap.capture` does (detections cached beside the samples), each person's ground
estimated alone and both together (issue 15: the two within 3 degrees), and the levels each
stands on.
"""
from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

from meshcap import load_body_model
from meshcap.capture import fit_setup
from meshcap.contacts import foot_contacts, plant_feet
from meshcap.fitting.tracks import fit_tracks
from meshcap.regression import mocap
from meshcap.world import WorldError, estimate_ground, move_motion, place_in_world, sole_points

TRUTH_SPEED, TRUTH_HEIGHT = 0.1, 0.05  # m/s, m
LIMITS = (0.1, 0.15, 0.2, 0.3, 0.5)  # label speed limits to compare, m/s


def truth_contacts(take: mocap.Take, frames: slice) -> np.ndarray:
    """(T, 2) whether each (left, right) ankle of the take is planted (see the docstring)."""
    ia = [mocap.BODY.index("left_ankle"), mocap.BODY.index("right_ankle")]
    ankles = take.body[:, ia]
    planted = np.percentile(ankles[..., 1], 2)
    speed = np.linalg.norm(np.gradient(ankles, axis=0), axis=-1) * mocap.FPS
    return ((speed < TRUTH_SPEED) & (ankles[..., 1] < planted + TRUTH_HEIGHT))[frames]


def slide_speeds(motion, model, labels: np.ndarray) -> np.ndarray:
    """Horizontal speed, m/s, of the lower sole point of each foot from one frame to the next,
    for the pairs of frames both labelled planted (labels (P, T, 2)); motion in a y-up world."""
    soles = sole_points(motion, model)  # (P, T, 2, 2, 3)
    up = np.array([0.0, 1.0, 0.0])
    k = (soles[:, 1:] @ up + soles[:, :-1] @ up).argmin(-1)  # the lower point over both frames
    step = np.take_along_axis(soles[:, 1:] - soles[:, :-1], k[..., None, None], axis=3)[..., 0, :]
    horiz = np.linalg.norm(step - (step @ up)[..., None] * up, axis=-1) * motion.fps
    return horiz[labels[:, 1:] & labels[:, :-1]]


def sports2d_grounds() -> None:
    """The Sports2D demo's people's grounds, each alone and together (camera frame)."""
    import tempfile
    from pathlib import Path

    from meshcap.capture import capture
    from meshcap.samples import sports2d_demo

    cache = Path(tempfile.gettempdir()) / "meshcap_bench_world.keypoints.npz"
    m = capture(sports2d_demo(), world="camera", cache=cache)
    model = m.load_body_model()
    both = estimate_ground(m, model)
    alone = [estimate_ground(m, model, people=[p]) for p in range(m.num_people)]
    down = math.degrees(math.acos(np.clip(both.up @ np.array([0.0, -1.0, 0.0]), -1, 1)))
    print(f"Sports2D: the people's grounds {alone[0].tilt_to(alone[1]):.2f} deg apart (each to the joint one: "
          + " / ".join(f"{a.tilt_to(both):.2f}" for a in alone) + f"), the joint one {down:.2f} deg from the "
          f"camera's -y; levels (m along the up): " + "; ".join(
              "person %d: %s" % (p, ", ".join(f"{x:.2f}" for x in lv)) for p, lv in enumerate(both.levels))
          + f"; the floor {both.height:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-clips", type=int, default=2, help="clips per held-out take")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None,
                    help="comma-separated camera draws, pooled (e.g. 0,1): one draw's up and contact "
                         "figures move with a few clips' cameras, so compare changes over several")
    ap.add_argument("--noise", type=float, default=3.0, help="2D noise, px")
    ap.add_argument("--split", choices=("held-out", "train"), default="held-out",
                    help="train: tune on the training takes, keeping the held-out ones for the figures")
    ap.add_argument("--sports2d", action="store_true", help="also the Sports2D demo's two people's grounds")
    args = ap.parse_args()
    if args.sports2d:
        sports2d_grounds()
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    torch.manual_seed(seeds[0])
    warnings.simplefilter("ignore")
    model = load_body_model("anny")
    takes = [t for t in mocap.split(mocap.load_takes())[args.split == "held-out"] if not t.name.startswith("climb")]
    clips = [(take, name, sl) for take in takes for name, sl in mocap.clips(take, max_clips=args.max_clips)]
    print(f"{args.split}, on a floor: {len(takes)} takes, {len(clips)} clips")
    net, fit = fit_setup(model, True, None)
    rows = []
    failed = 0
    t_fit = t_plant = 0.0
    for seed, i, (take, name, sl) in ((s, i, c) for s in seeds for i, c in enumerate(clips)):
        rng = np.random.default_rng([seed, 1000 + i])
        pitch, roll = np.radians(rng.uniform(-30, 30, 2))
        v = mocap.static_view(take, sl, rng, pitch=pitch, roll=roll, face=True, noise_px=args.noise)
        T = len(v.keypoints)
        t0 = time.time()
        motion = fit_tracks(model, {0: (np.arange(T), v.keypoints)}, num_frames=T, image_size=v.image_size,
                            fps=mocap.FPS, layout="coco17", K=v.K, options=fit, regressor=net)
        t_fit += time.time() - t0
        up_true = v.R @ np.array([0.0, 1.0, 0.0])
        try:
            ground = estimate_ground(motion, model)
        except WorldError as e:
            print(f"  {name:28s} no ground: {e}")
            failed += 1
            continue
        up_err = math.degrees(math.acos(np.clip(ground.up @ up_true, -1, 1)))
        # the fit's scale: its mid-hip depth over the truth's
        hips = [mocap.BODY.index("left_hip"), mocap.BODY.index("right_hip")]
        kp = motion.keypoints3d("coco17", model)[0]
        names = model.keypoint_names("coco17")
        fit_mid = kp[:, [names.index("left_hip"), names.index("right_hip")]].mean(1)
        scale = float(np.median(fit_mid[:, 2] / v.truth[:, hips].mean(1)[:, 2]))
        # the ground under the person: the fitted mid-hips' height above the ground against the
        # truth's above the floor (y = 0), scaled
        hip_fit = np.median(fit_mid @ ground.up) - ground.height
        hip_true = float(np.median((v.truth[:, hips].mean(1) - v.t[0]) @ v.R[:, 1]))  # world y
        grounded = place_in_world(motion, model, "ground")
        t0 = time.time()
        planted = plant_feet(grounded, model, options=fit)
        t_plant += time.time() - t0
        truth = truth_contacts(take, sl)
        labels = planted.contact[0]
        by_limit = {lim: int((foot_contacts(planted, model, lim)[0][0] == truth).sum()) for lim in LIMITS}
        before_labels = foot_contacts(grounded, model)[0]
        cam = lambda m: move_motion(m, m.cam_R[0], m.cam_t[0], "camera", model)  # noqa: E731
        sb, sa = mocap.score_motion(model, cam(grounded), v.truth), mocap.score_motion(model, cam(planted), v.truth)
        rows.append(dict(
            name=name, up=up_err, height=abs(hip_fit - scale * hip_true), height_raw=abs(hip_fit - hip_true),
            agree=float((labels == truth).mean()), hits=int((labels == truth).sum()), n=labels.size, by_limit=by_limit, truth_share=float(truth.mean()), label_share=float(labels.mean()),
            slide_before=slide_speeds(grounded, model, planted.contact), slide_after=slide_speeds(planted, model, planted.contact),
            slide_own=slide_speeds(grounded, model, before_labels),
            pa=(sb["pa"].mean(), sa["pa"].mean()), mpjpe=(sb["mpjpe"].mean(), sa["mpjpe"].mean()),
            accel=(sb["accel"], sa["accel"]), pitch=math.degrees(pitch), roll=math.degrees(roll), seed=seed))
        r = rows[-1]
        print(f"  {name:28s} pitch {r['pitch']:6.1f} roll {r['roll']:6.1f}  up {r['up']:5.2f} deg  "
              f"height {r['height'] * 100:5.1f} cm (raw {r['height_raw'] * 100:5.1f})  contacts agree "
              f"{r['agree'] * 100:5.1f}% (truth {r['truth_share'] * 100:4.1f}%, labelled {r['label_share'] * 100:4.1f}%)  "
              f"slide {np.median(r['slide_before']) if len(r['slide_before']) else float('nan'):.3f} -> "
              f"{np.median(r['slide_after']) if len(r['slide_after']) else float('nan'):.3f} m/s  "
              f"PA {r['pa'][0]:.1f} -> {r['pa'][1]:.1f}", flush=True)
    before = np.concatenate([r["slide_before"] for r in rows])
    after = np.concatenate([r["slide_after"] for r in rows])
    own = np.concatenate([r["slide_own"] for r in rows])
    frames = sum(sl.stop - sl.start for _, _, sl in clips) * len(seeds)
    print(f"\nfit {frames / t_fit:.0f} frames/s; plant_feet {frames / t_plant:.0f} frames/s "
          f"({t_plant / t_fit * 100:.0f}% of the fit's time)")
    print(f"no ground found in {failed} of {len(clips) * len(seeds)} clips")
    if len(seeds) > 1:
        print("up median per camera draw: " + " / ".join(
            f"{np.median([r['up'] for r in rows if r['seed'] == s]):.2f}" for s in seeds) + " deg")
    print(f"up: median {np.median([r['up'] for r in rows]):.2f} deg, p90 {np.percentile([r['up'] for r in rows], 90):.2f} deg")
    print(f"ground height (fit's scale): median {np.median([r['height'] for r in rows]) * 100:.1f} cm "
          f"(unscaled {np.median([r['height_raw'] for r in rows]) * 100:.1f} cm)")
    agree = sum(r["hits"] for r in rows) / sum(r["n"] for r in rows)
    print(f"contacts: labels agree with the truth in {agree * 100:.1f}% of foot-frames (with other speed limits: "
          + ", ".join(f"{lim:g} m/s {sum(r['by_limit'][lim] for r in rows) / sum(r['n'] for r in rows) * 100:.1f}%"
                      for lim in LIMITS) + ")")
    print(f"skating: median planted-sole speed {np.median(before):.3f} -> {np.median(after):.3f} m/s "
          f"(ratio {np.median(after) / np.median(before):.2f}; before with its own labels {np.median(own):.3f})")
    print(f"accuracy: PA-MPJPE {np.mean([r['pa'][0] for r in rows]):.1f} -> {np.mean([r['pa'][1] for r in rows]):.1f} mm, "
          f"MPJPE {np.mean([r['mpjpe'][0] for r in rows]):.1f} -> {np.mean([r['mpjpe'][1] for r in rows]):.1f} mm, "
          f"accel {np.mean([r['accel'][0] for r in rows]):.1f} -> {np.mean([r['accel'][1] for r in rows]):.1f} mm/frame^2")


if __name__ == "__main__":
    main()
