"""The camera of a monocular capture: image size, frame rate and calibrated intrinsics (with lens
distortion) for keypoint input, and clear errors when they contradict the input."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from command import run_main
from meshcap import InputError, Motion, load_body_model
from meshcap.capture import capture, fit_setup
from meshcap.contacts import plant_feet
from meshcap.fitting.tracks import fit_tracks
from meshcap.keypoints.readers import read_keypoints, write_coco
from meshcap.keypoints.tracks import Tracks
from meshcap.multiview.calibration import Camera, distort_project, undistort_points, write_calibration
from meshcap.regression import mocap
from meshcap.world import place_in_world


def _run(*args):
    return subprocess.run([sys.executable, "-m", "meshcap.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def clip():
    """40 frames of a held-out real take seen by a 1920x1080 camera: COCO-17 keypoints rounded
    as a COCO file stores them, the camera, and the camera-frame points that made them."""
    take = {t.name: t for t in mocap.split(mocap.load_takes())[1]}["cmu_01_03"]
    for seed in range(20):
        v = mocap.view(take, slice(200, 240), np.random.default_rng(seed), face=True, noise_px=1.0)
        if v.image_size == (1920, 1080):
            break
    kp = v.keypoints.copy()
    kp[..., :2] = np.round(kp[..., :2], 3)
    kp[kp[..., 2] == 0] = 0.0  # as a COCO file stores an unseen keypoint
    return v, kp


@pytest.fixture(scope="module")
def model():
    return load_body_model("anny")


def test_keypoint_file_with_image_size_fps_and_focal_matches_the_library(clip, model, tmp_path):
    v, kp = clip
    T = len(kp)
    path = write_coco(Tracks("coco17", 60.0, np.arange(T) / 60.0, (1920, 1080), {0: (np.arange(T), kp)}),
                      tmp_path / "kp.json")
    out = tmp_path / "m.npz"
    r = _run(str(path), "--out", str(out), "--image-size", "1920x1080", "--fps", "60",
             "--focal", str(float(v.K[0, 0])), "--quiet", "--min-track-length", "5")
    assert r.returncode == 0, r.stderr
    got = Motion.load(out)
    net, fit = fit_setup(model, inspect_default_regressor(), None)
    frames, back = read_keypoints(path, fps=60.0).tracks[0]  # the file's keypoints (rounded as stored)
    want = fit_tracks(model, {0: (frames, back)}, num_frames=T, image_size=(1920, 1080), fps=60.0,
                      layout="coco17", K=torch.as_tensor(v.K), options=fit, regressor=net)
    # as the capture goes on: onto the ground, the feet planted there
    want = plant_feet(place_in_world(want, model), model, options=fit)
    want_cam = want.joints3d @ want.cam_R[0].T + want.cam_t[0]
    assert got.fps == 60.0 and np.allclose(got.frame_times, np.arange(T) / 60.0)
    assert got.image_size[0].tolist() == [1920, 1080]
    assert np.allclose(got.cam_K[0], v.K, atol=1e-3)
    # the command stands the body on its ground; in its camera's frame it is the library's fit
    got_cam = got.joints3d @ got.cam_R[0].T + got.cam_t[0]
    err = np.linalg.norm(got_cam - want_cam, axis=-1)
    # the same up to float round-off, which the fit's many steps and the ground estimate amplify
    # (another thread count: 2 mm median; a rate of 30 fps instead: 10 cm; a focal 5% off: 18 cm)
    assert np.median(err) < 5e-3 and err.max() < 0.03, (np.median(err), err.max())
    # without the image size, the principal point lands where the keypoints happened to end
    r = _run(str(path), "--out", str(tmp_path / "guess.npz"), "--quiet", "--min-track-length", "5")
    assert r.returncode == 0, r.stderr
    assert not np.allclose(Motion.load(tmp_path / "guess.npz").cam_K[0], v.K, atol=1.0)


def test_the_solver_flag_reaches_the_fit(clip, model, tmp_path):
    # Gauss-Newton is the default on anny; --solver adam gives the previous default's fit
    v, kp = clip
    T = len(kp)
    path = write_coco(Tracks("coco17", 30.0, np.arange(T) / 30.0, (1920, 1080), {0: (np.arange(T), kp)}),
                      tmp_path / "kp.json")
    common = ("--image-size", "1920x1080", "--focal", str(float(v.K[0, 0])), "--quiet", "--min-track-length", "5",
              "--world", "camera")
    r = _run(str(path), "--out", str(tmp_path / "adam.npz"), "--solver", "adam", *common)
    assert r.returncode == 0, r.stderr
    net, fit = fit_setup(model, inspect_default_regressor(), None)
    assert fit.solver == "gauss-newton"
    frames, back = read_keypoints(path).tracks[0]
    want = fit_tracks(model, {0: (frames, back)}, num_frames=T, image_size=(1920, 1080), fps=30.0,
                      layout="coco17", K=torch.as_tensor(v.K), options=dataclasses.replace(fit, solver="adam"),
                      regressor=net)  # in the camera's frame: no ground, no planting
    got = Motion.load(tmp_path / "adam.npz")
    err = np.linalg.norm(got.joints3d - want.joints3d, axis=-1)
    assert np.median(err) < 5e-3, np.median(err)
    r = _run(str(path), "--out", str(tmp_path / "x.npz"), "--solver", "newton", *common)
    assert r.returncode != 0 and "solver" in r.stderr


def inspect_default_regressor():
    import inspect

    return inspect.signature(capture).parameters["regressor"].default


def test_lens_distortion_is_undone_before_fitting(clip, model, tmp_path):
    v, kp = clip
    T = len(kp)
    dist = np.array([-0.25, 0.08, 0.001, -0.0005, 0.0])
    K = torch.as_tensor(v.K, dtype=torch.float64)
    # the undistortion inverts the lens model to well under a pixel, even near the corners
    uv = np.stack(np.meshgrid(np.linspace(0, 1919, 9), np.linspace(0, 1079, 7)), -1).reshape(-1, 2)
    rays = np.concatenate([(uv - v.K[:2, 2]) / v.K[0, 0], np.ones((len(uv), 1))], 1)
    seen = distort_project(torch.as_tensor(rays), K, torch.as_tensor(dist)).numpy()
    assert np.abs(undistort_points(seen, v.K, dist) - uv).max() < 1e-3
    # the person towards a corner, where the lens bends most
    kp = kp.copy()
    kp[..., :2] += np.where(kp[..., 2:] > 0, [560.0, 240.0], 0.0).astype(np.float32)
    assert kp[..., :2].max(axis=(0, 1)).tolist() < [1920, 1080]
    # keypoints seen through the lens, captured with the calibration: the pinhole fit's result
    rays = np.concatenate([(kp[..., :2] - v.K[:2, 2]) / v.K[0, 0], np.ones(kp.shape[:2] + (1,))], -1)
    lens = kp.copy()
    lens[..., :2] = distort_project(torch.as_tensor(rays), K, torch.as_tensor(dist)).numpy()
    assert np.abs(lens[..., :2] - kp[..., :2]).max() > 20  # a lens that matters
    cam = Camera("phone", v.K, np.eye(3), np.zeros(3), (1920, 1080), dist)
    calib = write_calibration([cam], tmp_path / "phone.toml")
    mk = lambda a: Tracks("coco17", 30.0, np.arange(T) / 30.0, (1920, 1080), {0: (np.arange(T), a)})  # noqa: E731
    mk(lens).save(tmp_path / "lens.keypoints.npz")
    mk(kp).save(tmp_path / "pinhole.keypoints.npz")
    tr = dict(tracker=None, world="camera")
    got = capture(tmp_path / "lens.keypoints.npz", camera=calib, **tr)
    want = capture(tmp_path / "pinhole.keypoints.npz", focal=float(v.K[0, 0]), **tr)
    err = np.linalg.norm(got.joints3d - want.joints3d, axis=-1)
    without = capture(tmp_path / "lens.keypoints.npz", focal=float(v.K[0, 0]), **tr)
    # a few mm: the undistorted keypoints differ from the pinhole ones by round-off, which the
    # fit amplifies a little
    assert np.median(err) < 0.01, np.median(err)

    def residual(m):  # median pixels between the fitted body seen through the lens and the detections
        uv = distort_project(torch.as_tensor(m.keypoints3d("coco17")[0], dtype=torch.float64), K,
                             torch.as_tensor(dist)).numpy()
        seen = lens[..., 2] > 0
        return np.median(np.linalg.norm(uv - lens[..., :2], axis=-1)[seen])

    assert residual(got) < 8.0 and residual(without) > residual(got) + 3.0, (residual(got), residual(without))
    assert np.allclose(got.keypoints2d[0, :, :, :2], lens[..., :2], atol=1e-3)  # stored as detected


def test_camera_and_keypoint_input_errors(clip, tmp_path):
    v, kp = clip
    T = len(kp)
    path = write_coco(Tracks("coco17", 30.0, np.arange(T) / 30.0, (1920, 1080), {0: (np.arange(T), kp)}),
                      tmp_path / "kp.json")
    out = tmp_path / "m.npz"
    # keypoints far outside the image size given
    r = run_main(str(path), "--out", str(out), "--image-size", "640x480")
    assert r.returncode == 2 and "far outside the 640x480 image" in r.stderr, r.stderr
    # absurd coordinates name the input, not the body model's internals
    bad = kp.copy()
    bad[5, 3, :2] = 1e30
    bad_path = write_coco(Tracks("coco17", 30.0, np.arange(T) / 30.0, (1920, 1080), {0: (np.arange(T), bad)}),
                          tmp_path / "bad.json")
    r = run_main(str(bad_path), "--out", str(out))
    assert r.returncode == 2 and "corrupt coordinates" in r.stderr and "bad.json" in r.stderr, r.stderr
    r = run_main(str(path), "--out", str(out), "--image-size", "1920by1080")
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr
    # calibration files: several cameras and no name, an unknown name, a lens model not supported
    cams = [Camera(n, v.K, np.eye(3), np.zeros(3), (1920, 1080)) for n in ("left", "right")]
    two = write_calibration(cams, tmp_path / "two.toml")
    r = run_main(str(path), "--out", str(out), "--camera", str(two))
    assert r.returncode == 2 and "holds 2 cameras (left, right)" in r.stderr and "--camera-name" in r.stderr
    r = run_main(str(path), "--out", str(out), "--camera", str(two), "--camera-name", "middle")
    assert r.returncode == 2 and "no camera named 'middle'" in r.stderr
    r = run_main(str(path), "--out", str(out), "--camera", str(two), "--camera-name", "left", "--focal", "900")
    assert r.returncode == 2 and "not both" in r.stderr
    small = write_calibration([Camera("c", v.K, np.eye(3), np.zeros(3), (1280, 720))], tmp_path / "small.toml")
    r = run_main(str(path), "--out", str(out), "--camera", str(small), "--image-size", "1920x1080")
    assert r.returncode == 2 and "calibrated at 1280x720" in r.stderr
    with pytest.raises(InputError, match="rational lens model"):
        Camera("c", v.K, np.eye(3), np.zeros(3), (1920, 1080), [0.1, 0, 0, 0, 0, 0.2, 0, 0])
    with pytest.raises(InputError, match="not a rotation matrix"):
        Camera("c", v.K, 2 * np.eye(3), np.zeros(3), (1920, 1080))
    with pytest.raises(InputError, match="fps must be positive"):
        capture(path, fps=0)
    assert not out.exists()


def test_a_video_beside_keypoints_sets_size_and_rate(sports2d_tracks, tmp_path):
    from data import sports2d_demo

    _, cache = sports2d_tracks
    video = sports2d_demo()
    with pytest.raises(InputError, match="but the image size given is 640x480"):
        capture(video, keypoints=cache, image_size=(640, 480))
    with pytest.raises(InputError, match="runs at 30 fps, but the fps given is 60"):
        capture(video, keypoints=cache, fps=60)
    # a calibration a few rows off the video (an encoder pads 994 rows to 1008) is still that
    # camera, with the video's own size; far off is an error
    K = np.array([[1800.0, 0, 884], [0, 1800.0, 497], [0, 0, 1]])
    padded = Camera("c", K, np.eye(3), np.zeros(3), (1768, 1008))
    m = capture(video, keypoints=cache, camera=padded, end=1.0, world="camera")
    assert m.image_size.tolist() == [[1768, 994]] and np.allclose(m.cam_K, K)
    with pytest.raises(InputError, match="the images are 1768x994 but camera c was calibrated at 1280x720"):
        capture(video, keypoints=cache, camera=Camera("c", K, np.eye(3), np.zeros(3), (1280, 720)), end=1.0)
