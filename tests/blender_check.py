"""Blender's importers as an independent check of meshcap's animation files: the world position
of every bone head, on every frame, against `Motion.joints3d`."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from meshcap.export.fbx import BLENDER_SCRIPT, blender_available

needs_blender = pytest.mark.skipif(
    not blender_available() and not os.environ.get("MESHCAP_REQUIRE_BLENDER"),
    reason='Blender\'s Python module is not installed (pip install "meshcap[fbx]")')

# y-up (BVH, glTF, FBX) -> Blender's Z-up, as its importers convert
Y_UP_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def blender_joints(path: Path, frames: int, fps: float) -> dict[str, np.ndarray]:
    """{"armature/bone": (frames, 3)} from Blender's importer for `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "joints.npz"
        r = subprocess.run([sys.executable, str(BLENDER_SCRIPT), "joints", str(path), str(out),
                            "--frames", str(frames), "--fps", repr(float(fps))], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        with np.load(out) as d:
            return {k: d[k] for k in d.files}


def assert_blender_matches(motion, path: Path, person: int | None = None, tol: float = 1e-3) -> float:
    """Every fitted joint of every person (or only `person`, an index, for per-person BVH
    files) in Blender matches the motion within `tol` metres on every valid frame; returns the
    largest error."""
    got = blender_joints(path, motion.num_frames, motion.fps)
    R, lift = motion.y_up_transform()
    C = Y_UP_TO_BLENDER @ R
    people = range(motion.num_people) if person is None else [person]
    worst = 0.0
    for p in people:
        prefix = f"p{motion.person_ids[p]}_" if person is None else ""
        want = motion.joints3d[p].astype(np.float64) @ C.T + Y_UP_TO_BLENDER @ lift  # (T, J, 3)
        v = motion.valid[p]
        for j, name in enumerate(motion.joint_names):
            keys = [k for k in got if k.split("/", 1)[1] == prefix + name]
            assert len(keys) == 1, (prefix + name, sorted(got)[:8])
            err = np.linalg.norm(got[keys[0]][v] - want[v, j], axis=-1).max()
            assert err < tol, (path.name, p, name, err)
            worst = max(worst, float(err))
    return worst
