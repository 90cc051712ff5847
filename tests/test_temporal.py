"""The temporal lifter: on held-out real motion it lifts body-only keypoints closer to the truth
than the per-frame regressor; it reads any frame rate at its own; bad weights are named; and
the fit's temporal smoothing removes jitter without averaging across the axis-angle wrap, and the
default fit jitters less than one that follows the detections, at no cost in accuracy."""
import math

import numpy as np
import pytest
import roma
import torch

from meshcap import load_body_model
from meshcap.errors import MeshcapError
from meshcap.fitting.metrics import pa_mpjpe
from meshcap.fitting.smoothing import smooth_linear, smooth_rotvecs
from meshcap.regression import (SHIPPED_TEMPORAL, UNSEEN_SIGMA, RegressionStage, lift_track, load_regressor,
                               load_temporal, mirror_keypoints, mocap, regress)

needs_weights = pytest.mark.skipif(not SHIPPED_TEMPORAL.exists(), reason="no temporal lifter weights shipped")


@pytest.fixture(scope="module")
def model():
    return load_body_model("anny")


def held_out_views(max_clips: int):
    """(keypoints, K, truth) tensors of each held-out clip of the real-motion benchmark through
    its camera: body-only keypoints with 3 px noise."""
    takes = mocap.split(mocap.load_takes())[1]
    clips = [(t, sl) for t in takes for _, sl in mocap.clips(t, max_clips=max_clips)]
    for i, (take, sl) in enumerate(clips):
        v = mocap.view(take, sl, np.random.default_rng([0, i]), face=False, noise_px=3.0)
        yield torch.as_tensor(v.keypoints), torch.as_tensor(v.K), torch.as_tensor(v.truth)


@needs_weights
def test_lifter_beats_the_per_frame_regressor_on_held_out_real_motion(model):
    """Every held-out clip of the real-motion benchmark (its cameras), body-only keypoints with
    3 px noise: the lifter's joints against the per-frame regressor's (each COCO body point
    taken at its body-model joint, PA-aligned per frame)."""
    lifter, net = load_temporal(), load_regressor()
    cols = mocap.sigma_columns(model)
    lifted, frame = [], []
    for kp, K, truth in held_out_views(max_clips=2):
        lift = lift_track(lifter, kp, "coco17", K, mocap.FPS)
        assert torch.isfinite(lift["joints"]).all() and (lift["sigma"] > 0).all()
        lifted.append(pa_mpjpe(lift["joints"][:, cols], truth))
        r = regress(net, model, kp, "coco17", K)
        with torch.no_grad():
            j = model(r["poses"].to(model.dtype), r["shape"].to(model.dtype), vertices=False).joints
        frame.append(pa_mpjpe(j[:, cols].float(), truth))
    lifted, frame = torch.cat(lifted).mean() * 1000, torch.cat(frame).mean() * 1000
    assert lifted < frame - 5.0, (float(lifted), float(frame))


@needs_weights
def test_reading_the_mirror_image_too_is_exactly_mirror_symmetric_and_no_worse(model):
    """With `mirror`, the lifter averages its reading of a track with its (reflected back)
    reading of the track's mirror image: the mirror image of a track then lifts to exactly the
    mirror image of its joints (the plain network is only nearly symmetric), and on held-out
    real motion the average is no further from the truth than the plain reading."""
    lifter, perm = load_temporal(), model.mirror_permutation()
    cols = mocap.sigma_columns(model)
    plain, both = [], []
    for i, (kp, K, truth) in enumerate(held_out_views(max_clips=1)):
        lift = lift_track(lifter, kp, "coco17", K, mocap.FPS, mirror=perm)
        if i == 0:
            seen_in_mirror = lift_track(lifter, mirror_keypoints(kp, "coco17", K), "coco17", K, mocap.FPS, mirror=perm)
            back = seen_in_mirror["joints"][:, perm].clone()
            back[..., 0] = -back[..., 0]
            assert torch.allclose(back, lift["joints"], atol=1e-5)
            assert torch.allclose(seen_in_mirror["sigma"][:, perm], lift["sigma"], atol=1e-6)
            one_way = lift_track(lifter, kp, "coco17", K, mocap.FPS)["joints"]
            assert (one_way - lift["joints"]).norm(dim=-1).mean() > 1e-3  # the two readings differ
        plain.append(pa_mpjpe(lift_track(lifter, kp, "coco17", K, mocap.FPS)["joints"][:, cols], truth))
        both.append(pa_mpjpe(lift["joints"][:, cols], truth))
    plain, both = torch.cat(plain).mean() * 1000, torch.cat(both).mean() * 1000
    assert both <= plain + 0.2, (float(both), float(plain))


@needs_weights
def test_a_60_fps_track_is_read_as_two_30_fps_tracks(model):
    take = mocap.split(mocap.load_takes())[1][0]
    v = mocap.view(take, slice(0, 120), np.random.default_rng(1), noise_px=1.0)
    lifter = load_temporal()
    kp, K = torch.as_tensor(v.keypoints), torch.as_tensor(v.K)
    at60 = lift_track(lifter, kp, "coco17", K, fps=60.0)
    for k in (0, 1):
        at30 = lift_track(lifter, kp[k::2], "coco17", K, fps=30.0)
        assert torch.allclose(at60["joints"][k::2], at30["joints"], atol=1e-6)


def test_a_lifter_of_another_rate_reads_a_track_at_its_own_stride(tmp_path):
    """A lifter trained at 15 fps (`TemporalConfig.fps`, `train_temporal --fps`) reads a 30 fps
    track as two interleaved 15 fps tracks, and its rate survives saving and loading."""
    from meshcap.regression.temporal import TemporalConfig, TemporalLifter, save_temporal

    torch.manual_seed(0)
    path = save_temporal(TemporalLifter(TemporalConfig(fps=15.0)).eval(), tmp_path / "l15.safetensors")
    lifter = load_temporal(path)
    assert lifter.config.fps == 15.0
    take = mocap.split(mocap.load_takes())[1][0]
    v = mocap.view(take, slice(0, 90), np.random.default_rng(2), noise_px=1.0)
    kp, K = torch.as_tensor(v.keypoints), torch.as_tensor(v.K)
    at30 = lift_track(lifter, kp, "coco17", K, fps=30.0)
    for k in (0, 1):
        alone = lift_track(lifter, kp[k::2], "coco17", K, fps=15.0)
        assert torch.allclose(at30["joints"][k::2], alone["joints"], atol=1e-6)
    # and not as one 30 fps track
    assert not torch.allclose(at30["joints"], lift_track(lifter, kp, "coco17", K, fps=15.0)["joints"], atol=1e-4)


@needs_weights
def test_frames_with_nothing_seen_are_filled_and_do_not_hold_the_fit(model):
    take = mocap.split(mocap.load_takes())[1][0]
    v = mocap.view(take, slice(0, 90), np.random.default_rng(2), noise_px=1.0)
    kp = torch.as_tensor(v.keypoints).clone()
    kp[40:48, :, 2] = 0.0  # the person unseen for 8 frames
    K, truth = torch.as_tensor(v.K), torch.as_tensor(v.truth)
    out = lift_track(load_temporal(), kp, "coco17", K, mocap.FPS)
    assert torch.isfinite(out["joints"]).all()
    err = pa_mpjpe(out["joints"][:, mocap.sigma_columns(model)], truth)
    assert err[40:48].mean() < 2 * err[:35].mean() + 0.02, (float(err[40:48].mean()), float(err[:35].mean()))
    init = RegressionStage(load_regressor(), load_temporal()).init_track(model, kp, "coco17", K, mocap.FPS)
    assert (init.sigma[40:48] == UNSEEN_SIGMA).all() and (init.sigma[:35] < 0.5).all()


def test_bad_temporal_weights_are_named(tmp_path):
    bad = tmp_path / "lifter.safetensors"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(MeshcapError, match="lifter.safetensors"):
        load_temporal(bad)
    with pytest.raises(MeshcapError, match="no temporal lifter weights"):
        load_temporal(tmp_path / "missing.safetensors")


def test_smoothing_removes_jitter_and_respects_the_wrap():
    g = torch.Generator().manual_seed(0)
    T = 200
    t = torch.arange(T, dtype=torch.float64) / 30.0
    # a body turning slowly about y through the axis-angle wrap at pi (2.6 -> 3.6 rad)
    angle = 2.6 + t / t[-1]
    truth = roma.rotvec_to_rotmat(torch.stack([torch.zeros(T), angle, torch.zeros(T)], -1).double())
    noisy = roma.rotvec_to_rotmat(torch.randn(T, 3, generator=g, dtype=torch.float64) * 0.03) @ truth
    smoothed = roma.rotvec_to_rotmat(smooth_rotvecs(roma.rotmat_to_rotvec(noisy), 1.5))
    before = roma.rotmat_geodesic_distance(noisy, truth).mean()
    after = roma.rotmat_geodesic_distance(smoothed, truth).mean()
    assert after < 0.6 * before and after < 0.03, (float(before), float(after))
    x = torch.sin(t)[:, None] + torch.randn(T, 1, generator=g, dtype=torch.float64) * 0.01
    assert (smooth_linear(x, 1.5) - torch.sin(t)[:, None]).abs().mean() < 0.6 * (x - torch.sin(t)[:, None]).abs().mean()
    assert math.isclose(float(smooth_linear(torch.ones(5, 2), 1.5).mean()), 1.0, abs_tol=1e-6)


@needs_weights
def test_the_default_fit_jitters_less_than_one_following_the_detections(model, tmp_path):
    """A held-out real clip (a kick), body-only keypoints with 3 px noise: the default fit
    (smoothed, then settled) has a far smaller acceleration error than the same fit following
    the detections (`smooth_fit=0`) and is no less accurate; a negative smoothing is refused
    before anything runs."""
    import dataclasses

    from meshcap.capture import capture, fit_setup
    from meshcap.errors import InputError
    from meshcap.fitting.tracks import fit_tracks

    take = {t.name: t for t in mocap.split(mocap.load_takes())[1]}["deepmimic_kick"]
    name, sl = mocap.clips(take, max_clips=1)[0]
    v = mocap.view(take, sl, np.random.default_rng([0, 5]), face=False, noise_px=3.0)
    T = len(v.keypoints)
    stage, fit = fit_setup(model, True, None)
    scores = {}
    for label, options in (("default", fit), ("raw", dataclasses.replace(fit, smooth_s=0.0))):
        torch.manual_seed(0)
        m = fit_tracks(model, {0: (np.arange(T), v.keypoints)}, num_frames=T, image_size=v.image_size,
                       fps=mocap.FPS, layout="coco17", K=v.K, options=options, regressor=stage)
        scores[label] = mocap.score_motion(model, m, v.truth)
    accel = {k: s["accel"] for k, s in scores.items()}
    pa = {k: float(s["pa"].mean()) for k, s in scores.items()}
    # measured: accel 19.7 vs 29.0 mm/frame^2, PA-MPJPE 66.9 vs 68.2 mm
    assert accel["default"] < 0.75 * accel["raw"], accel
    assert pa["default"] < pa["raw"] + 1.0, pa
    with pytest.raises(InputError, match="smooth_fit"):
        capture(tmp_path / "missing.mp4", smooth_fit=-1.0)


@needs_weights
def test_training_goes_on_from_a_weights_file():
    """`train(init=...)` starts from the given lifter (its config and weights), not afresh."""
    from meshcap.regression.train_temporal import train

    shipped = load_temporal()
    net, history = train(2, batch=4, lr=1e-7, real_fraction=0.0, init=SHIPPED_TEMPORAL, log=lambda *_: None)
    assert net.config == shipped.config and len(history) == 1
    ref = shipped.state_dict()
    drift = max(float((v - ref[k]).abs().max()) for k, v in net.state_dict().items())
    assert drift < 1e-4, drift


def test_rolled_training_cameras_show_bodies_in_every_orientation(model):
    """`window_batch(roll=...)`: that share of the cameras turns by any angle about its axis,
    so the camera-frame torso points every way (the targets turn with the keypoints); without
    it the cameras stay level and heads are up but for the real takes' lying and acrobatics."""
    from meshcap.regression.train_temporal import window_batch

    spine = [model.joint_names.index("root"), model.joint_names.index("neck01")]

    def torso_angles(roll: float) -> np.ndarray:
        b = window_batch(model, 64, 9, torch.Generator().manual_seed(3), None, roll=roll)
        up = b.joints[:, :, spine[1]] - b.joints[:, :, spine[0]]
        return np.degrees(np.arctan2(up[..., 0], -up[..., 1]).numpy().ravel())  # 0: upright in the image

    level, rolled = torso_angles(0.0), torso_angles(1.0)
    assert np.mean(np.abs(level) > 90) < 0.02
    assert 0.35 < np.mean(np.abs(rolled) > 90) < 0.65
    # every quarter of the circle is seen
    assert np.histogram(rolled, bins=4, range=(-180, 180))[0].min() > 0.15 * rolled.size


def test_inverse_kinematics_reaches_the_joints_of_other_poses(model):
    """`joints_to_poses` from the rest pose to the joints of whole-body poses (turned as a
    whole, as a lifter's camera-frame joints are): within a centimetre or so of each joint;
    bad shapes are named."""
    import roma

    from meshcap.fitting.inverse_kinematics import joints_to_poses
    from meshcap.synthetic import sample_structured_poses

    g = torch.Generator().manual_seed(0)
    poses = sample_structured_poses(model, 16, g).to(model.dtype)
    poses[:, 0] = roma.random_rotvec(16, dtype=model.dtype, generator=g)
    shape = model.default_shape()
    with torch.no_grad():
        target = model(poses, shape, vertices=False).joints
    start = torch.zeros_like(poses)
    start[:, 0] = poses[:, 0]  # the root's turn is the registration's job, as in the regression stage
    reached = joints_to_poses(model, start, shape, target, steps=200)
    with torch.no_grad():
        j = model(reached, shape, vertices=False).joints
    err = ((j - j[:, :1]) - (target - target[:, :1])).norm(dim=-1)
    assert err.mean() < 0.015 and err.max() < 0.08, (float(err.mean()), float(err.max()))
    with pytest.raises(MeshcapError, match="must be"):
        joints_to_poses(model, start, shape, target[:, :5])
