"""motion.npz: bit-exact round trips, atomic writes, clear errors for bad files."""
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from meshcap import Motion, MotionFileError
from meshcap.cli import main


def make_motion(model, P=2, T=7, seed=0) -> Motion:
    rng = np.random.default_rng(seed)
    J = model.num_joints
    poses = rng.normal(0, 0.3, (P, T, J, 3)).astype(np.float32)
    shape = rng.uniform(0.2, 0.8, (P, 6)).astype(np.float32)
    transl = rng.normal(0, 1, (P, T, 3)).astype(np.float32)
    valid = np.ones((P, T), bool)
    valid[1, :3] = False  # the second person enters late
    joints = np.zeros((P, T, J, 3), np.float32)
    with torch.no_grad():
        for p in range(P):
            joints[p] = model(torch.as_tensor(poses[p]), torch.as_tensor(shape[p:p + 1]),
                              torch.as_tensor(transl[p]), vertices=False).joints.numpy()
    poses[~valid] = transl[~valid] = joints[~valid] = 0
    return Motion(
        fps=30.0, body_model="anny", joint_names=model.joint_names, parents=model.parents,
        poses=poses, shape=shape, transl=transl, joints3d=joints, valid=valid,
        keypoints2d=rng.uniform(0, 640, (P, T, 33, 3)).astype(np.float32), keypoint_layout="blazepose33",
        uncertainty=rng.uniform(0.01, 0.1, (P, T, J)).astype(np.float32),
        cam_K=np.array([[[1000, 0, 320], [0, 1000, 240], [0, 0, 1]]], np.float32),
        image_size=np.array([[640, 480]]), person_ids=np.array([3, 7]),
        body_model_settings={"note": "test"},
    )


@pytest.fixture(scope="module")
def motion():
    from meshcap import load_body_model

    return make_motion(load_body_model("anny"))


def test_round_trip_is_bit_exact(motion, tmp_path):
    path = motion.save(tmp_path / "m.npz")
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual mode, not mkstemp's 0600
    back = Motion.load(path)
    for k, v in motion._arrays().items():
        b = back._arrays()[k]
        assert b.dtype == v.dtype and b.shape == v.shape, k
        assert np.array_equal(b, v), k
    assert back.joint_names == motion.joint_names and back.body_model_settings == {"note": "test"}
    # a plain numpy reader sees the schema without meshcap
    with np.load(path, allow_pickle=False) as f:
        assert str(f["format"]) == "meshcap.motion" and int(f["version"]) == 2
        assert f["poses"].shape == (2, 7, 20, 3) and f["valid"].dtype == bool


def test_keypoints3d_over_time(motion):
    kp = motion.keypoints3d("coco17")
    assert kp.shape == (2, 7, 17, 3)
    assert np.isnan(kp[1, :3]).all() and np.isfinite(kp[motion.valid]).all()
    # hips sit near the root joint of the same frame
    root = motion.joints3d[0, :, 0]
    hips = kp[0, :, 11:13].mean(1)
    assert np.linalg.norm(hips - root, axis=-1).max() < 0.15


def test_save_is_atomic(motion, tmp_path, monkeypatch):
    path = motion.save(tmp_path / "m.npz")
    good = path.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        motion.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def test_save_to_missing_folder(motion, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        motion.save(tmp_path / "nope" / "m.npz")


def _rewrite(tmp_path, motion, **changes):
    arrays = motion._arrays()
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def test_truncated_file(motion, tmp_path):
    path = motion.save(tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MotionFileError, match="m.npz: not a readable .npz file"):
        Motion.load(path)


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello")
    with pytest.raises(MotionFileError, match="x.npz"):
        Motion.load(p)


def test_missing_key(motion, tmp_path):
    with pytest.raises(MotionFileError, match="missing poses"):
        Motion.load(_rewrite(tmp_path, motion, poses=None))


def test_wrong_types_and_shapes(motion, tmp_path):
    with pytest.raises(MotionFileError, match="'poses' has dtype <U"):
        Motion.load(_rewrite(tmp_path, motion, poses=np.array(["a", "b"])))
    with pytest.raises(MotionFileError, match="'valid' has dtype float"):
        Motion.load(_rewrite(tmp_path, motion, valid=np.ones((2, 7))))
    with pytest.raises(MotionFileError, match=r"'transl' has shape \(2, 6, 3\), expected \(2, 7, 3\)"):
        Motion.load(_rewrite(tmp_path, motion, transl=np.zeros((2, 6, 3), np.float32)))
    with pytest.raises(MotionFileError, match="format is 'other'"):
        Motion.load(_rewrite(tmp_path, motion, format=np.array("other")))
    with pytest.raises(MotionFileError, match="schema version 4"):
        Motion.load(_rewrite(tmp_path, motion, version=np.array(4)))


def test_foot_contacts_and_version_1_files(motion, tmp_path):
    c = np.zeros((2, 7, 2), bool)
    c[0, 2:5, 0] = True
    prob = np.where(c, 0.9, 0.1).astype(np.float32)
    m = Motion(**{**{f: getattr(motion, f) for f in motion.__dataclass_fields__}, "contact": c, "contact_prob": prob})
    back = Motion.load(m.save(tmp_path / "c.npz"))
    assert np.array_equal(back.contact, c) and np.allclose(back.contact_prob, prob)
    assert f"a foot planted in #{m.person_ids[0]}: 43%" in m.summary()  # 3 of 7 frames
    # a version-1 file (no contact keys) still loads, without contacts
    old = Motion.load(_rewrite(tmp_path, motion, version=np.array(1)))
    assert old.contact is None and old.contact_prob is None
    with pytest.raises(MotionFileError, match="'contact' and 'contact_prob' come together"):
        Motion.load(_rewrite(tmp_path, m, contact_prob=None))
    with pytest.raises(MotionFileError, match=r"'contact' has shape \(2, 7, 3\)"):
        Motion.load(_rewrite(tmp_path, m, contact=np.zeros((2, 7, 3), bool)))
    with pytest.raises(MotionFileError, match="'contact_prob' must lie in"):
        Motion.load(_rewrite(tmp_path, m, contact_prob=prob * 2))
    with pytest.raises(MotionFileError, match="'contact' has dtype float"):
        Motion.load(_rewrite(tmp_path, m, contact=prob))
    # a multi-view capture's record of views relabelled left/right, (P, T, C)
    swaps = np.zeros((2, 7, 1), bool)
    swaps[0, 3] = True
    s = Motion(**{**{f: getattr(motion, f) for f in motion.__dataclass_fields__}, "view_swaps": swaps})
    assert np.array_equal(Motion.load(s.save(tmp_path / "s.npz")).view_swaps, swaps)
    assert "1 view-frames relabelled left/right" in s.summary()
    with pytest.raises(MotionFileError, match=r"'view_swaps' has shape \(2, 7, 2\)"):
        Motion.load(_rewrite(tmp_path, s, view_swaps=np.zeros((2, 7, 2), bool)))


def test_bone_scales_round_trip_as_version_3(motion, tmp_path):
    """Bone scales are kept (version 3); the motion's 3D keypoints are those of the scaled body;
    bad scales are named; a file without them stays version 2."""
    import copy

    from meshcap import load_body_model

    scaled = copy.deepcopy(motion)
    scaled.bone_scale = np.ones((2, 20), np.float32)
    scaled.bone_scale[1, 4:6] = 0.9  # the second person's shins
    path = scaled.save(tmp_path / "s.npz")
    with np.load(path) as f:
        assert int(f["version"]) == 3
    back = Motion.load(path)
    assert np.array_equal(back.bone_scale, scaled.bone_scale)
    assert "bone scales 0.90-1.00" in back.summary()
    model = load_body_model("anny")
    a, b = motion.keypoints3d("coco17", model), back.keypoints3d("coco17", model)
    assert np.array_equal(a[0], b[0], equal_nan=True)
    ankle = 15  # coco17's left ankle, carried by the shin
    assert np.nanmax(np.abs(a[1, :, ankle] - b[1, :, ankle])) > 0.01
    with pytest.raises(MotionFileError, match=r"'bone_scale' has shape \(2, 19\), expected \(2, 20\)"):
        Motion.load(_rewrite(tmp_path, back, bone_scale=np.ones((2, 19), np.float32)))
    with pytest.raises(MotionFileError, match="'bone_scale' must be finite and positive"):
        Motion.load(_rewrite(tmp_path, back, bone_scale=np.zeros((2, 20), np.float32)))
    with np.load(motion.save(tmp_path / "m.npz")) as f:
        assert int(f["version"]) == 2 and "bone_scale" not in f.files


def test_pickled_objects_are_refused(motion, tmp_path):
    arrays = motion._arrays()
    arrays["poses"] = np.array([{"evil": 1}], dtype=object)
    p = tmp_path / "obj.npz"
    np.savez(p, **arrays)
    with pytest.raises(MotionFileError, match="pickled Python objects"):
        Motion.load(p)


def test_nan_in_valid_frames(motion, tmp_path):
    poses = motion.poses.copy()
    poses[0, 2, 5, 1] = np.nan
    with pytest.raises(MotionFileError, match="'poses' has NaN"):
        Motion.load(_rewrite(tmp_path, motion, poses=poses))
    poses = motion.poses.copy()
    poses[1, 0] = np.nan  # invalid frame: its numbers carry no meaning
    Motion.load(_rewrite(tmp_path, motion, poses=poses))


def test_cli_info(motion, tmp_path, capsys):
    path = motion.save(tmp_path / "m.npz")
    assert main(["info", str(path)]) == 0
    assert "2 people, 7 frames at 30 fps" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("x.npy", b"junk")
    r = subprocess.run([sys.executable, "-m", "meshcap.cli", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "bad.npz" in r.stderr and "Traceback" not in r.stderr
