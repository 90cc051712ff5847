"""Detection and tracking on real footage, external keypoint files, the cache, the filter."""
import json
import subprocess
import sys

import numpy as np
import pytest

from command import run_main
from data import opencv_sample, sports2d_demo
from meshcap import InputError
from meshcap.errors import MeshcapError
from conftest import CountingDetector
from meshcap.keypoints.detect import Detection, square_tiles
from meshcap.keypoints.layouts import get_layout
from meshcap.keypoints.pipeline import video_tracks
from meshcap.keypoints.readers import read_coco, read_keypoints, read_openpose, write_coco, write_openpose
from meshcap.keypoints.tracks import Tracks, TrackerOptions, one_euro, smooth_tracks, track_detections

BP = get_layout("blazepose33")


@pytest.fixture(scope="module")
def demo(sports2d_tracks):
    return sports2d_tracks


def _center_x(kp):
    return np.array([k[k[:, 2] > 0.3, 0].mean() for k in kp])


def test_sports2d_demo_gives_two_stable_tracks(demo):
    tracks, _ = demo
    assert tracks.num_frames == 230 and tracks.layout == "blazepose33"
    assert sorted(tracks.tracks) == [0, 1]
    f0, f1 = tracks.tracks[0][0], tracks.tracks[1][0]
    # the man on the wall is there from the start; the woman walks in from the right later
    assert f0.min() == 0 and len(f0) > 200
    assert 30 <= f1.min() <= 50 and len(f1) > 150
    _assert_walkers_keep_their_ids(tracks)


def _assert_walkers_keep_their_ids(tracks):
    """The Sports2D demo's two people: together in over 150 frames, each id on one person."""
    (f0, kp0), (f1, kp1) = tracks.tracks[0], tracks.tracks[1]
    assert len(np.intersect1d(f0, f1)) > 150
    W = tracks.image_size[0]
    for f, kp in ((f0, kp0), (f1, kp1)):
        x = _center_x(kp)
        # a stable id never jumps across the frame between consecutive frames in which the
        # person is seen whole (the centre of the few points left of someone walking out of the
        # picture moves 9% of the width in a frame)
        seen = (kp[:, :, 2] > 0.3).sum(1) >= 10
        consecutive = (np.diff(f) == 1) & seen[1:] & seen[:-1]
        assert np.abs(np.diff(x))[consecutive].max() < 0.1 * W
    # she crosses the whole frame right to left, he moves right: they swap sides, ids do not
    x1 = _center_x(kp1)
    assert x1[0] > 0.8 * W and x1[-1] < 0.1 * W
    x0 = _center_x(kp0)
    assert x0[0] < 0.45 * W and x0[-1] > 0.7 * W


def test_keypoint_cache_skips_detection(demo):
    tracks, cache = demo
    assert cache.exists()
    calls = CountingDetector.calls
    with CountingDetector() as det:
        again = video_tracks(sports2d_demo(), detector=det, cache=cache,
                             tracker=TrackerOptions(min_length=50))
    assert CountingDetector.calls == calls  # nothing detected again
    assert sorted(again.tracks) == [0, 1]
    # other range: the cache does not match, detection runs
    with CountingDetector() as det:
        short = video_tracks(sports2d_demo(), detector=det, cache=cache, end=0.5)
    assert CountingDetector.calls == calls + 15 and short.num_frames == 15


def test_landmarks_land_on_the_body_in_messi5():
    tracks = video_tracks(opencv_sample("messi5.jpg"), tracker=TrackerOptions(min_length=1))
    assert len(tracks) == 1
    kp = tracks.tracks[0][1][0]
    y = {n: kp[BP.index(n), 1] for n in BP.names}
    for side in ("left", "right"):
        assert y["nose"] < y[f"{side}_shoulder"] < y[f"{side}_hip"] < y[f"{side}_knee"] < y[f"{side}_ankle"]
    body = [BP.index(f"{s}_{j}") for s in ("left", "right") for j in ("shoulder", "hip", "knee", "ankle")]
    assert (kp[body, 2] > 0.4).all()  # the body's landmarks are seen with confidence
    w, h = tracks.image_size
    assert (w, h) == (548, 342)


def test_coco_and_openpose_files_round_trip(demo, tmp_path):
    tracks, _ = demo
    coco = tracks.convert("coco17")
    back = read_coco(write_coco(tracks, tmp_path / "kp.json"), num_frames=tracks.num_frames)
    assert sorted(back.tracks) == sorted(coco.tracks)
    for t in coco.tracks:
        np.testing.assert_array_equal(back.tracks[t][0], coco.tracks[t][0])
        seen = coco.tracks[t][1][..., 2] > 0  # unseen keypoints are written as 0, 0, 0
        np.testing.assert_allclose(back.tracks[t][1][seen], coco.tracks[t][1][seen], atol=1e-3)
        assert (back.tracks[t][1][~seen] == 0).all()
    # OpenPose BODY_25 folders, with person ids and, as OpenPose writes them, without
    op = tracks.convert("openpose25")
    folder = write_openpose(tracks, tmp_path / "openpose")
    with_ids = read_openpose(folder)
    assert with_ids.layout == "openpose25"
    for t in op.tracks:
        np.testing.assert_array_equal(with_ids.tracks[t][0], op.tracks[t][0])
        seen = op.tracks[t][1][..., 2] > 0
        np.testing.assert_allclose(with_ids.tracks[t][1][seen], op.tracks[t][1][seen], atol=1e-3)
        assert (with_ids.tracks[t][1][~seen] == 0).all()
    for p in folder.glob("*.json"):
        d = json.loads(p.read_text())
        for person in d["people"]:
            person["person_id"] = [-1]
        p.write_text(json.dumps(d))
    relinked = read_keypoints(folder)
    assert len(relinked) == 2
    for t in op.tracks:  # the tracker finds the same people in the same frames
        frames = [set(relinked.tracks[r][0].tolist()) for r in relinked.tracks]
        best = max(frames, key=lambda s: len(s & set(op.tracks[t][0].tolist())))
        assert len(best ^ set(op.tracks[t][0].tolist())) <= 5
    # meshcap's own file
    saved = Tracks.load(tracks.save(tmp_path / "kp.npz"))
    for t in tracks.tracks:
        np.testing.assert_array_equal(saved.tracks[t][1], tracks.tracks[t][1])


def test_bad_keypoint_files_are_named(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: not valid JSON"):
        read_coco(p)
    p.write_text(json.dumps([{"image_id": 0, "keypoints": [1.0, 2.0, 1.0] * 16}]))
    with pytest.raises(InputError, match="bad.json: entry 0: expected 51 numbers"):
        read_coco(p)
    p.write_text(json.dumps([{"image_id": 0, "keypoints": [float("nan"), 2.0, 1.0] * 17}]))
    with pytest.raises(InputError, match="NaN"):
        read_coco(p)
    p.write_text(json.dumps([{"image_id": "x", "keypoints": [1.0, 2.0, 1.0] * 17}]))
    with pytest.raises(InputError, match="image_id must be a frame number"):
        read_coco(p)
    folder = tmp_path / "op"
    folder.mkdir()
    (folder / "f_000000000000_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [0.0] * 60}]}))
    with pytest.raises(InputError, match="has 60 numbers; expected 75"):
        read_openpose(folder)
    with pytest.raises(InputError, match="nothing.npz: no such keypoint file"):
        read_keypoints(tmp_path / "nothing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(InputError, match="junk.npz: not a readable keypoint file"):
        Tracks.load(junk)


def _person(x, y, seed, size=100.0, conf=0.9):
    """Person `seed`'s 33 BlazePose keypoints (a fixed random figure) around (x, y)."""
    rng = np.random.default_rng(seed)
    offs = rng.uniform(-0.5, 0.5, size=(33, 2)) * size
    kp = np.concatenate([offs + [x, y], np.full((33, 1), conf)], 1).astype(np.float32)
    return kp


def test_tracker_bridges_gaps_and_drops_short_tracks():
    frames = []
    for t in range(60):
        dets = []
        a = _person(100 + 5 * t, 200, seed=1)  # walks right
        b = _person(400 - 5 * t, 210, seed=2)  # walks left, passes person a
        dets.append(Detection(a, 0.9, "blazepose33"))
        if not 20 <= t < 26:  # b is missed for six frames
            dets.append(Detection(b, 0.9, "blazepose33"))
        if t in (40, 41):  # a false detection for two frames
            dets.append(Detection(_person(900, 50, seed=3), 0.9, "blazepose33"))
        frames.append(dets)
    tracks = track_detections(frames, TrackerOptions(max_gap=10, min_length=5))
    assert sorted(tracks) == [0, 1]
    fa, kpa = tracks[0]
    fb, kpb = tracks[1]
    assert len(fa) == 60 and np.all(np.diff(_center_x(kpa)) > 0)
    assert len(fb) == 54 and set(range(20, 26)).isdisjoint(fb) and np.all(np.diff(_center_x(kpb)) < 0)
    # with gaps not bridged, b is split in two
    split = track_detections(frames, TrackerOptions(max_gap=3, min_length=5))
    assert len(split) == 3


def test_a_small_far_track_never_takes_a_near_person_over():
    """A near person (700 px tall) walks on while a far one (200 px) is detected once as a
    60 px blip (so its track predicts a wild jump): the far track must not take the near
    person over (measured against the larger size, the near person's, the jump looked small)."""
    frames = []
    for t in range(20):
        near = Detection(_person(600 + 2 * t, 500, seed=1, size=700.0), 0.9, "blazepose33")
        if t == 10:
            far = _person(290, 780, seed=5, size=60.0)  # a blip: few, scattered points
        else:
            far = _person(250 + 5 * (t > 10), 900 + 50 * (t > 10), seed=2, size=200.0 + 50 * (t > 10))
        frames.append([Detection(far, 0.9, "blazepose33"), near])
    tracks = track_detections(frames, TrackerOptions(max_gap=15, min_length=5))
    sizes = {i: np.ptp(kp[:, :, 1], axis=1) for i, (_, kp) in tracks.items()}
    near = max(tracks, key=lambda i: sizes[i].max())
    assert len(tracks[near][0]) == 20 and sizes[near].min() > 400  # only ever the near person


# a standing figure's BlazePose keypoints, (x, y) per name in units of its height, feet at y = 0
_FIGURE = dict(nose=(0, -0.93), left_eye_inner=(0.01, -0.95), left_eye=(0.02, -0.95), left_eye_outer=(0.03, -0.95),
               right_eye_inner=(-0.01, -0.95), right_eye=(-0.02, -0.95), right_eye_outer=(-0.03, -0.95),
               left_ear=(0.05, -0.94), right_ear=(-0.05, -0.94), mouth_left=(0.015, -0.9), mouth_right=(-0.015, -0.9),
               left_shoulder=(0.12, -0.82), right_shoulder=(-0.12, -0.82), left_elbow=(0.16, -0.65),
               right_elbow=(-0.16, -0.65), left_wrist=(0.18, -0.5), right_wrist=(-0.18, -0.5),
               left_pinky=(0.19, -0.46), right_pinky=(-0.19, -0.46), left_index=(0.18, -0.45),
               right_index=(-0.18, -0.45), left_thumb=(0.17, -0.47), right_thumb=(-0.17, -0.47),
               left_hip=(0.09, -0.5), right_hip=(-0.09, -0.5), left_knee=(0.1, -0.27), right_knee=(-0.1, -0.27),
               left_ankle=(0.1, -0.04), right_ankle=(-0.1, -0.04), left_heel=(0.09, -0.01), right_heel=(-0.11, -0.01),
               left_foot_index=(0.12, 0.0), right_foot_index=(-0.08, 0.0))


def _figure(x, feet_y, height, conf=0.9):
    xy = np.array([_FIGURE[n] for n in BP.names]) * height + [x, feet_y]
    return np.concatenate([xy, np.full((33, 1), conf)], 1).astype(np.float32)


def test_a_second_find_in_someones_legs_is_not_a_person():
    """MediaPipe's multi-person landmarker often finds a second, smaller "person" on someone's
    legs for dozens of frames (every camera of the Pose2Sim single-person demo): that track is
    dropped, while a smaller bystander walking behind the same person is kept."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(60):
        host = _figure(500 + 2 * t, 900, 700)
        legs = host[BP.names.index("left_hip"):]  # hips, knees, ankles and feet
        ghost = legs[rng.integers(0, len(legs), 33)].copy()  # every landmark somewhere on them
        ghost[:, :2] += rng.normal(0, 5, (33, 2))
        bystander = _figure(300 + 8 * t, 700, 350)  # far, smaller, crosses behind the host
        frames.append([Detection(k, 0.9, BP.name) for k in (host, ghost, bystander)])
    tracks = track_detections(frames)
    heights = sorted(round(float(np.ptp(kp[0, :, 1])) / 0.95) for _, kp in tracks.values())
    assert heights == [350, 700], heights  # the bystander and the host, each whole
    kept_all = track_detections(frames, TrackerOptions(max_part_share=1.0))
    assert len(kept_all) == 3


def _plain(hue_bin: int) -> np.ndarray:
    """An appearance descriptor of one colour in both parts."""
    from meshcap.keypoints.appearance import SIZE

    a = np.zeros(SIZE, np.float32)
    a[[hue_bin, SIZE // 2 + hue_bin]] = 1.0
    return a


def test_appearance_keeps_ids_where_people_meet_and_turn_back():
    """A walks right and stops; B walks left into A, is hidden behind them for six frames, and
    both turn back the way they came. From where the keypoints are alone, B's track, predicted
    onward, takes A when they part (a swap); what they wear keeps each id on its person."""
    red, blue = _plain(0), _plain(32)
    xa = np.concatenate([np.linspace(300, 600, 31), np.full(6, 600.0), np.linspace(590, 350, 25)])
    xb = np.concatenate([np.linspace(900, 600, 31), np.full(6, np.nan), np.linspace(610, 850, 25)])
    frames = []
    for t in range(len(xa)):
        dets = [Detection(_figure(xa[t], 900, 500), 0.9, BP.name, red)]
        if np.isfinite(xb[t]):
            dets.append(Detection(_figure(xb[t], 905, 500), 0.9, BP.name, blue))
        frames.append(dets)

    def ends(options):
        tracks = track_detections(frames, options)
        assert len(tracks) == 2
        return [round(float(kp[-1, :, 0].mean()), -1) for _, kp in tracks.values() if kp[0, :, 0].mean() < 450]

    assert ends(TrackerOptions()) == [350.0]  # A's track starts left and ends left
    assert ends(TrackerOptions(appearance_weight=0.0)) == [850.0]  # the swap it prevents


def test_appearance_tells_real_people_apart_and_survives_the_cache(tmp_path):
    """On the Pose2Sim multi-person demo (camera 1: a man and a woman), each person's
    descriptor at three moments is closer to their own than to the other's, and the
    keypoint cache keeps the descriptors for linking."""
    from meshcap.keypoints.appearance import appearance_descriptor, appearance_distance
    from meshcap.samples import pose2sim_multi_person
    from meshcap.video import VideoReader

    video = pose2sim_multi_person() / "videos" / "cam01.mp4"
    tracks = video_tracks(video, cache=tmp_path / "kp.npz")
    raw = Tracks.load(tmp_path / "kp.npz")
    assert raw.appearance is not None and np.mean([np.isfinite(a).all() for a in raw.appearance.values()]) > 0.8
    (f0, kp0), (f1, kp1) = sorted(tracks.tracks.values(), key=lambda t: -len(t[0]))[:2]
    moments = [t for t in (10, 50, 90) if t in f0 and t in f1]
    assert len(moments) == 3
    image = {i: fr.image for i, fr in enumerate(VideoReader(video)) if i in moments}
    desc = [[appearance_descriptor(image[t], kp[list(f).index(t)], BP.name) for t in moments] for f, kp in ((f0, kp0), (f1, kp1))]
    same = [appearance_distance(d[i], d[j]) for d in desc for i in range(3) for j in range(i + 1, 3)]
    other = [appearance_distance(a, b) for a in desc[0] for b in desc[1]]
    assert max(same) < min(other), (same, other)


def test_the_pose2sim_subject_is_the_one_person_in_every_camera():
    """Pose2Sim's single-person demo (four cameras): in every camera one track holds the
    subject from the first frame to the last, and no other track is kept (MediaPipe's second
    finds in the subject's legs used to make a second "person" in every camera, and in camera 1
    such a track took the subject over near frame 60)."""
    from meshcap.multiview.calibration import read_calibration
    from meshcap.multiview.capture import load_views
    from meshcap.samples import pose2sim_single_person

    demo = pose2sim_single_person()
    cams = read_calibration(demo / "calibration" / "Calib.qca.txt")
    views = load_views(sorted((demo / "videos").glob("cam0*.mp4")), cams, cache_dir=demo / "videos")
    for c, v in enumerate(views):
        assert len(v.tracks) == 1, (c, {i: len(f) for i, (f, _) in v.tracks.items()})
        frames, kp = next(iter(v.tracks.values()))
        assert frames[0] == 0 and frames[-1] == v.num_frames - 1 and len(frames) >= 0.95 * v.num_frames, c
        assert np.median([np.ptp(k[k[:, 2] > 0.3, 1]) for k in kp]) > 500, c  # the subject, not a part of them


def test_one_euro_filter_smooths_jitter_and_follows_motion():
    t = np.arange(300) / 30.0
    rng = np.random.default_rng(0)
    still = 100 + rng.normal(0, 2.0, size=(300, 1))
    f = one_euro(t, still, min_cutoff=1.0, beta=0.05)
    assert f[30:].std() < 0.5 * still[30:].std()
    ramp = 300 * t[:, None]  # 300 px/s
    g = one_euro(t, ramp + rng.normal(0, 2.0, size=(300, 1)), min_cutoff=1.0, beta=0.05)
    assert np.abs(g[60:] - ramp[60:]).mean() < 10


def test_smoothing_tracks_keeps_confidences(demo):
    tracks, _ = demo
    s = smooth_tracks(tracks)
    for t in tracks.tracks:
        np.testing.assert_array_equal(s.tracks[t][1][..., 2], tracks.tracks[t][1][..., 2])
        jitter = lambda kp: np.abs(np.diff(kp[:, :25, :2], 2, axis=0)).mean()  # noqa: E731
        assert jitter(s.tracks[t][1]) < jitter(tracks.tracks[t][1])


def test_searching_every_whole_frame_also_keeps_both_walkers_apart():
    """`follow=False` searches the whole frame (its tiles) in every frame instead of following
    each person in a crop (the default, which the `demo` fixture uses): on the Sports2D demo
    it gives the same two people, together for most of the clip, each crossing the frame
    without a swap."""
    from meshcap.keypoints.detect import BlazePoseDetector

    with BlazePoseDetector(follow=False) as det:
        tracks = video_tracks(sports2d_demo(), detector=det)
    assert "follow" not in det.settings() and sorted(tracks.tracks) == [0, 1]
    _assert_walkers_keep_their_ids(tracks)


def test_following_keeps_the_pose2sim_subject_whole_in_every_camera():
    """`follow=True` on the four Pose2Sim single-person cameras: one track, the subject's, over
    every frame. A search's second find in the subject's legs used to get a follower of its
    own that MediaPipe's tracking kept alive: the subject split into two or three tracks, or
    ended ten frames early."""
    from meshcap.keypoints.detect import BlazePoseDetector
    from meshcap.samples import pose2sim_single_person

    for c, video in enumerate(sorted((pose2sim_single_person() / "videos").glob("cam0*.mp4"))):
        with BlazePoseDetector(follow=True) as det:
            tracks = video_tracks(video, detector=det)
        assert len(tracks.tracks) == 1, (c, {i: len(f) for i, (f, _) in tracks.tracks.items()})
        frames, kp = next(iter(tracks.tracks.values()))
        assert len(frames) == tracks.num_frames, c
        assert np.median([np.ptp(k[k[:, 2] > 0.3, 1]) for k in kp]) > 500, c


def test_detector_options_are_checked():
    from meshcap.keypoints.detect import BlazePoseDetector

    with pytest.raises(MeshcapError, match="search_every"):
        BlazePoseDetector(search_every=0)
    with pytest.raises(MeshcapError, match="threads"):
        BlazePoseDetector(threads=-1)


def test_square_tiles():
    assert square_tiles(640, 480) == [(0, 0, 640, 480)]
    assert square_tiles(1768, 994) == [(0, 0, 994, 994), (774, 0, 1768, 994)]
    assert square_tiles(720, 1920) == [(0, 0, 720, 720), (0, 600, 720, 1320), (0, 1200, 720, 1920)]


def test_detect_command_follows_people_in_crops_unless_told_not_to(tmp_path):
    """Following people in crops is the default and the keypoint file says so;
    `--no-detect-in-crops` reaches the detector, which then searches every whole frame."""
    r = run_main("detect", str(sports2d_demo()), "--out", str(tmp_path / "kp.npz"), "--end", "2")
    assert r.returncode == 0, r.stderr
    kp = Tracks.load(tmp_path / "kp.npz")
    assert kp.source["detector_settings"].get("follow") is True and len(kp.tracks) >= 1
    r = run_main("detect", str(sports2d_demo()), "--out", str(tmp_path / "tiles.npz"), "--end", "1",
                 "--no-detect-in-crops")
    assert r.returncode == 0, r.stderr
    assert "follow" not in Tracks.load(tmp_path / "tiles.npz").source["detector_settings"]


def test_detect_command_exit_codes(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "meshcap.cli", *a], capture_output=True, text=True)  # noqa: E731
    r = run_main("detect", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "kp.npz"))
    assert r.returncode == 2 and "none.mp4: no such file" in r.stderr
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    r = run_main("detect", str(bad), "--out", str(tmp_path / "kp.npz"))
    assert r.returncode == 2 and "bad.mp4: not a readable video" in r.stderr
    assert not (tmp_path / "kp.npz").exists()
    r = run("detect", str(opencv_sample("messi5.jpg")), "--out", str(tmp_path / "kp.json"), "--min-track-length", "1")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "kp.json").read_text())) == 1


def test_the_detector_keeps_mediapipes_native_log_off_the_terminal(tmp_path):
    """MediaPipe's C++ core writes to file descriptor 2 past Python: start-up chatter, and a
    warning at the process's first find. vtest.avi's first seconds are empty, so that find came
    on a warm landmarker and printed `W0000 ... landmark_projection_calculator.cc ...`."""
    r = subprocess.run([sys.executable, "-m", "meshcap.cli", "detect", str(opencv_sample("vtest.avi")),
                        "--out", str(tmp_path / "kp.npz"), "--end", "20"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "track(s)" in r.stdout + r.stderr and " 0 track(s)" not in r.stdout + r.stderr
    native = [line for line in r.stderr.splitlines() if line[:1] in "IWEF" and line[1:5].isdigit()]
    assert not native, native
