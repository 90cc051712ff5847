"""Foot contacts: labels in the Motion, and planted feet that do not skate, on real footage (the
Sports2D demo) and on real motion capture seen by a tilted static camera."""
import numpy as np
import pytest
import torch

from meshcap import Motion
from meshcap.capture import capture, fit_setup
from meshcap.contacts import foot_contacts, plant_feet
from meshcap.fitting.tracks import fit_tracks
from meshcap.world import estimate_ground, move_motion, place_in_world, sole_points




def _slides(motion, model, labels):
    """Horizontal speeds (m/s, y-up world) of the lower sole point of feet planted in two
    consecutive frames."""
    soles = sole_points(motion, model)
    k = (soles[:, 1:, ..., 1] + soles[:, :-1, ..., 1]).argmin(-1)
    step = np.take_along_axis(soles[:, 1:] - soles[:, :-1], k[..., None, None], axis=3)[..., 0, :]
    return np.linalg.norm(step[..., [0, 2]], axis=-1)[labels[:, 1:] & labels[:, :-1]] * motion.fps


@pytest.fixture(scope="module")
def demo(sports2d_tracks, tmp_path_factory):
    """(the demo's fit on its ground, the same with its feet planted), as `capture` does."""
    tracks, _ = sports2d_tracks
    path = tracks.save(tmp_path_factory.mktemp("contacts") / "demo.keypoints.npz")
    fitted = capture(path, world="camera")
    model = fitted.load_body_model()
    grounded = place_in_world(fitted, model, "ground")
    return grounded, plant_feet(grounded, model)


def test_the_demo_walks_without_skating(demo, tmp_path):
    unplanted, m = demo
    model = m.load_body_model()
    assert m.world == "y-up" and m.contact is not None
    assert m.contact.shape == (2, m.num_frames, 2) and not m.contact[~m.valid].any()
    # walking: each person has a foot planted in a good share of the frames they walk (measured
    # 24% for the man far away on the wall, whose fitted feet jitter most, over his first 150
    # frames, before he flips off it, and 50% for the woman)
    for p, walks in ((0, slice(0, 150)), (1, slice(None))):
        share = m.contact[p, walks][m.valid[p, walks]].any(-1).mean()
        assert share > 0.2, share
    # the same fit without planting, labelled the same way, skates: planting cuts the median
    # slide of planted soles to under a third (measured 1.3 -> 0.1-0.16 m/s)
    before, after = _slides(unplanted, model, m.contact), _slides(m, model, m.contact)
    assert np.median(after) < np.median(before) / 3, (np.median(before), np.median(after))
    assert np.median(after) < 0.25
    # planted soles stand on their person's level: the woman (person 1) on the ground, y = 0;
    # the man walks on top of a wall, on a level of his own about 1.7 m up (and lands from
    # his flip on a level of his own below it, which the ground's levels keep apart)
    soles = sole_points(m, model)
    low = soles[..., 1].min(-1)  # (P, T, 2)
    woman, man = low[1][m.contact[1]], low[0][m.contact[0]]
    assert np.median(np.abs(woman)) < 0.03, np.median(np.abs(woman))
    assert 1.5 < np.median(man) < 2.5 and np.median(np.abs(man - np.median(man))) < 0.03
    # the labels survive the file
    back = Motion.load(m.save(tmp_path / "m.npz"))
    assert np.array_equal(back.contact, m.contact) and np.allclose(back.contact_prob, m.contact_prob)


def test_planted_real_motion_keeps_its_accuracy():
    """A held-out mocap take (boxing: shuffling, planted feet) seen by a static camera pitched
    and rolled by about 20 degrees: planting the feet stops the skating, agrees with the
    take's own contacts, and costs no accuracy."""
    from meshcap import load_body_model
    from meshcap.regression import mocap

    model = load_body_model("anny")
    take = next(t for t in mocap.split(mocap.load_takes())[1] if t.name == "boxing")
    name, sl = mocap.clips(take, max_clips=1)[0]
    v = mocap.static_view(take, sl, np.random.default_rng(7), pitch=np.radians(20), roll=np.radians(-20),
                          face=True, noise_px=3.0)
    T = len(v.keypoints)
    net, fit = fit_setup(model, True, None)
    torch.manual_seed(0)
    m = fit_tracks(model, {0: (np.arange(T), v.keypoints)}, num_frames=T, image_size=v.image_size,
                   fps=mocap.FPS, layout="coco17", K=v.K, options=fit, regressor=net)
    # gravity's up: the ground's normal within a few degrees of the truth (the camera frame's
    # up is the world's y turned by the camera; measured 5.3 degrees)
    up = estimate_ground(m, model).up
    assert np.degrees(np.arccos(up @ (v.R @ np.array([0.0, 1.0, 0.0])))) < 8.0
    grounded = place_in_world(m, model, "ground")
    planted = plant_feet(grounded, model, options=fit)
    ia = [mocap.BODY.index("left_ankle"), mocap.BODY.index("right_ankle")]
    ankles = take.body[:, ia]
    speed = np.linalg.norm(np.gradient(ankles, axis=0), axis=-1) * mocap.FPS
    truth = ((speed < 0.1) & (ankles[..., 1] < np.percentile(ankles[..., 1], 2) + 0.05))[sl]
    assert (planted.contact[0] == truth).mean() > 0.65
    # planted soles slide under 5 mm a frame and at most half as fast as the fit's own (which
    # is smoothed over time already: measured 0.29 -> 0.10 m/s median)
    before, after = _slides(grounded, model, planted.contact), _slides(planted, model, planted.contact)
    assert np.median(after) < min(0.15, np.median(before) / 2), (np.median(before), np.median(after))
    cam = lambda x: move_motion(x, x.cam_R[0], x.cam_t[0], "camera", model)  # noqa: E731
    s0, s1 = mocap.score_motion(model, cam(grounded), v.truth), mocap.score_motion(model, cam(planted), v.truth)
    assert s1["pa"].mean() < s0["pa"].mean() + 2.0, (s0["pa"].mean(), s1["pa"].mean())
    # nor jitter: the refit is the fit's own Gauss-Newton solve with the contact term (Adam's
    # steps there nearly doubled the acceleration error on bench/world.py: 10.5 -> 19.9)
    assert s1["accel"] < 1.2 * s0["accel"], (s0["accel"], s1["accel"])


def test_contacts_of_any_world_and_bad_input(demo):
    m = demo[1]
    model = m.load_body_model()
    c, prob = foot_contacts(m, model)
    assert c.shape == prob.shape == (2, m.num_frames, 2) and ((prob >= 0) & (prob <= 1)).all()
    # the same motion moved back to the camera's frame gets nearly the same labels (its up
    # comes from the bodies there, not from the ground)
    cam = move_motion(m, m.cam_R[0], m.cam_t[0], "camera", model)
    c2, _ = foot_contacts(cam, model)
    assert (c2 == c).mean() > 0.85
    with pytest.raises(ValueError, match="single-camera"):
        two = Motion(**{**{f: getattr(m, f) for f in m.__dataclass_fields__},
                        "cam_K": np.repeat(m.cam_K, 2, 0), "cam_R": np.repeat(m.cam_R, 2, 0),
                        "cam_t": np.repeat(m.cam_t, 2, 0), "image_size": np.repeat(m.image_size, 2, 0)})
        plant_feet(two, model)
