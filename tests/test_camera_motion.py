"""Panning cameras (`meshcap.camera_motion`, `capture(..., panning=True)`): the turn followed on
the background of real footage, the people's paths kept where the static shot has them, the
Motion's per-frame camera read back and drawn through, and clear errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from meshcap.camera_motion import (MOVING_PX, CameraMotion, estimate_camera_motion, rotation_zoom,
                                   rotations_to_yaw_pitch_roll)
from meshcap.errors import InputError, MotionFileError
from meshcap.motion import Motion


@pytest.fixture(scope="module")
def panned(sports2d_tracks, tmp_path_factory):
    """(pan, the static shot's Motion, the panning capture's Motion): the Sports2D demo fitted
    as shot, and a virtual pan across it (the window turns 15 degrees and zooms 7%) fitted with
    panning, both from the same detections (the pan's are the static ones seen through the
    window), so what differs is what the turning camera does."""
    from data import sports2d_demo
    from meshcap.capture import capture
    from meshcap.samples import sports2d_pan

    tracks, cache = sports2d_tracks
    video, pan = sports2d_pan()
    d = tmp_path_factory.mktemp("pan")
    pan.tracks(tracks).save(d / "pan.keypoints.npz")
    static = capture(sports2d_demo(), keypoints=cache)
    moving = capture(video, keypoints=d / "pan.keypoints.npz", focal=float(pan.focals()[0]), panning=True)
    return pan, static, moving


def test_the_virtual_pan_is_the_turned_cameras_exact_view():
    """`VirtualPan` maps the static shot's pixels as a camera turned toward each window centre,
    with the window's focal, sees them: a 3D point projected by the static camera and mapped
    to the window lands where the turned camera projects it, also far off the axis."""
    from meshcap.samples import sports2d_pan

    _, pan = sports2d_pan()
    f, (cx, cy) = pan.source_focal, pan.source_principal
    rng = np.random.default_rng(0)
    X = rng.uniform([-4, -2, 5], [4, 2, 12], (50, 3))  # static camera frame, metres
    src = X[:, :2] / X[:, 2:] * f + [cx, cy]
    for t in (0, 120, 229):
        Xw = X @ pan.source_from_window(t)  # into frame t's window camera: R^T X
        want = Xw[:, :2] / Xw[:, 2:] * pan.focals()[t] + np.array(pan.size) / 2
        got = pan.to_window(np.full(len(X), t), src)
        assert np.abs(got - want).max() < 1e-6
        assert np.abs(pan.to_source(np.full(len(X), t), got) - src).max() < 1e-6


def test_a_virtual_pan_recovers_the_turn_and_the_static_shots_paths(panned):
    pan, static, moving = panned
    yaw = rotations_to_yaw_pitch_roll(moving.frame_R)
    assert np.abs(yaw[:, 0] - pan.yaw_deg()).max() < 1.0  # the window's equivalent turn, every frame
    assert np.abs(yaw[:, 1:]).max() < 1.0  # it neither tilts nor rolls
    assert np.allclose(moving.frame_K[:, 0, 0] / pan.focals(), 1.0, atol=0.04)  # the zoom
    assert moving.world == static.world == "y-up"
    got = pan.source_camera_roots(moving)
    want = static.joints3d[:, :, 0].astype(np.float64) @ static.cam_R[0].T.astype(np.float64) + static.cam_t[0]
    assert list(moving.person_ids) == list(static.person_ids)
    both = moving.valid & static.valid
    assert both.sum() > 250
    err = np.linalg.norm(got - want, axis=-1)[both]
    assert np.median(err) < 0.10, np.median(err)


def test_the_motion_keeps_the_turning_camera_and_fits_through_it(panned, tmp_path):
    pan, static, moving = panned
    back = Motion.load(moving.save(tmp_path / "m.npz"))
    assert np.array_equal(back.frame_R, moving.frame_R) and np.array_equal(back.frame_K, moving.frame_K)
    # keypoints2d are as detected in each frame; the fit reprojects onto them through camera_at(t)
    kp3 = moving.keypoints3d(moving.keypoint_layout)
    errs = []
    for p in range(moving.num_people):
        for t in np.flatnonzero(moving.valid[p]):
            K, R, tr = moving.camera_at(int(t))
            X = kp3[p, t].astype(np.float64) @ R.T + tr
            uv = X[:, :2] / X[:, 2:] @ K[:2, :2].T + K[:2, 2]
            kp = moving.keypoints2d[p, t]
            ok = kp[:, 2] > 0.5
            errs.append(np.linalg.norm(uv[ok] - kp[ok, :2], axis=1))
    assert np.median(np.concatenate(errs)) < 12.0
    # the same through a camera that stands still lands far off once the pan has turned
    K, R, tr = moving.camera_at(0)
    X = kp3[0, 200].astype(np.float64) @ R.T + tr
    still = X[:, :2] / X[:, 2:] @ K[:2, :2].T + K[:2, 2]
    ok = moving.keypoints2d[0, 200, :, 2] > 0.5
    assert np.median(np.linalg.norm(still[ok] - moving.keypoints2d[0, 200, ok, :2], axis=1)) > 200


def test_the_overlay_draws_each_person_where_the_turned_camera_sees_them(panned):
    from meshcap.render.overlay import OverlayOptions, OverlayRenderer

    pan, _, moving = panned
    r = OverlayRenderer(moving, options=OverlayOptions(keypoints=False, antialias=False, opacity=1.0))
    try:
        for t in (10, 200):
            black = np.zeros((pan.size[1], pan.size[0], 3), np.uint8)
            drawn = r.frame(t, black).any(-1)
            kp = moving.keypoints2d[0, t]
            ok = kp[:, 2] > 0.5
            x, y = np.round(kp[ok, :2].mean(0)).astype(int)
            assert drawn[max(0, y - 15): y + 15, max(0, x - 15): x + 15].mean() > 0.5, t
    finally:
        r.release()


def _scene(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), np.ones(n)] * rng.uniform(2, 30, n)[:, None]
    return X, rng.normal(size=(n, 2)) * 0.2


def _view(X, R, t, f, c):
    Y = X @ R.T + t
    return Y[:, :2] / Y[:, 2:] * f + c


def test_rotation_zoom_recovers_a_turn_and_exposes_a_camera_that_travels():
    X, noise = _scene()
    f, c = 1500.0, np.array([960.0, 540.0])
    R = cv2.Rodrigues(np.radians([0.4, -1.5, 0.3]))[0]
    p = _view(X, np.eye(3), np.zeros(3), f, c)
    q = _view(X, R, np.zeros(3), f * 1.03, c)
    got, zoom, inl, res = rotation_zoom(p + noise, q + noise, f, c)
    angle = np.degrees(np.linalg.norm(cv2.Rodrigues(got @ R.T)[0]))
    assert angle < 0.02 and abs(zoom - 1.03) < 1e-3 and inl.mean() > 0.95 and np.median(res) < 0.5
    # a camera that walks 0.3 m: near and far points part ways, which no turn explains
    q = _view(X, R, np.array([0.3, 0.0, 0.0]), f * 1.03, c)
    *_, res = rotation_zoom(p, q, f, c)
    assert np.median(res) > MOVING_PX * np.hypot(*(2 * c)) / 2000


def test_estimate_camera_motion_follows_a_synthetic_turn_and_refuses_a_blank_video():
    rng = np.random.default_rng(1)
    scene = cv2.GaussianBlur((rng.random((1400, 2400)) * 255).astype(np.uint8), (0, 0), 2.0)
    scene = np.repeat(scene[..., None], 3, -1)
    f, c = 1200.0, np.array([480.0, 270.0])
    Ks = np.array([[f, 0, 1200.0], [0, f, 700.0], [0, 0, 1]])  # the scene as a far wall
    frames = []
    for t in range(12):  # the camera turns 0.6 degrees right a frame
        R = cv2.Rodrigues(np.radians([0.0, 0.6 * t, 0.0]))[0]  # its axes in the first camera's frame
        K = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1]])
        H = Ks @ R @ np.linalg.inv(K)  # frame pixels -> scene pixels
        frames.append(cv2.warpPerspective(scene, H, (960, 540), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR))
    boxes = [np.array([[400.0, 150.0, 560.0, 500.0]])] * len(frames)  # a "person" masked out
    cm = estimate_camera_motion(frames, boxes, f, c)
    yaw = rotations_to_yaw_pitch_roll(cm.rotations)[:, 0]
    assert np.abs(yaw - 0.6 * np.arange(12)).max() < 0.05
    assert not cm.moving.any()
    assert isinstance(cm.referenced(), CameraMotion)
    with pytest.raises(InputError, match="could not be followed"):
        estimate_camera_motion([np.zeros((540, 960, 3), np.uint8)] * 6, [np.zeros((0, 4))] * 6, f, c)
    with pytest.raises(InputError, match="at least 2 frames"):
        estimate_camera_motion(frames[:1], boxes[:1], f, c)


def test_panning_needs_the_video_and_the_motion_file_checks_the_camera_keys(tmp_path, sports2d_tracks):
    from meshcap.capture import capture

    _, cache = sports2d_tracks
    with pytest.raises(InputError, match="panning camera is followed on the video"):
        capture(cache, panning=True)
    T = 5
    m = Motion(fps=30.0, body_model="anny", joint_names=["root"], parents=[-1], poses=np.zeros((1, T, 1, 3)),
               shape=np.zeros((1, 4)), transl=np.zeros((1, T, 3)), joints3d=np.zeros((1, T, 1, 3)),
               valid=np.ones((1, T), bool), keypoints2d=np.zeros((1, T, 1, 3)), keypoint_layout="coco17",
               uncertainty=np.zeros((1, T, 1)), cam_K=np.eye(3)[None],
               frame_R=np.repeat(np.eye(3)[None], T, 0), frame_K=np.repeat(np.eye(3)[None], T, 0))
    path = m.save(tmp_path / "m.npz")
    with np.load(path) as z:
        d = dict(z)
    d.pop("frame_K")
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(MotionFileError, match="come together"):
        Motion.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="frame_R"):
        Motion(**{**{k: getattr(m, k) for k in ("fps", "body_model", "joint_names", "parents", "poses", "shape",
                                                 "transl", "joints3d", "valid", "keypoints2d", "keypoint_layout",
                                                 "uncertainty", "cam_K")},
                  "frame_R": np.repeat(np.eye(3)[None], T + 1, 0), "frame_K": np.repeat(np.eye(3)[None], T + 1, 0)})
