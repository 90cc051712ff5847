import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def anny_model():
    from meshcap import load_body_model

    return load_body_model("anny", dtype=torch.float64)


@pytest.fixture(scope="session")
def anny_reference():
    """anny's own model (float64), built once for the session; it also fills meshcap's
    per-machine mesh cache if this machine has none, so the build happens once."""
    from meshcap.body_models import anny_data

    model = anny_data.build_anny_model()
    if not anny_data.full_cache_path().exists():
        anny_data.save_npz_atomic(anny_data.full_cache_path(),
                                  anny_data.full_mesh_arrays(anny_data.extract_arrays(model)))
    return model


@pytest.fixture(scope="session")
def anny_full(anny_model, anny_reference):
    """The meshcap anny model with its full mesh available."""
    anny_model._ensure_full()
    return anny_model


@pytest.fixture
def smpl_file(tmp_path):
    from synthetic_smpl import write_synthetic_smpl

    return write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl")


class CountingDetector:
    """The default detector, counting its calls (to see the keypoint cache work)."""

    calls = 0

    def __new__(cls, *args, **kwargs):
        from meshcap.keypoints.detect import BlazePoseDetector

        class _Counting(BlazePoseDetector):
            def detect(self, image, time):
                CountingDetector.calls += 1
                return super().detect(image, time)

        return _Counting(*args, **kwargs)


@pytest.fixture(scope="session")
def sports2d_tracks(tmp_path_factory):
    """Tracks of the Sports2D demo, detected once per test session, and their cache file."""
    from data import sports2d_demo
    from meshcap.keypoints.pipeline import video_tracks

    cache = tmp_path_factory.mktemp("kp") / "motion.keypoints.npz"
    with CountingDetector() as det:
        tracks = video_tracks(sports2d_demo(), detector=det, cache=cache)
    return tracks, cache


@pytest.fixture(scope="session")
def clip_capture(tmp_path_factory):
    """The first 1.5 s of the Sports2D demo (45 frames, 30 fps) as its own video, captured by
    the command with an overlay: (clip, motion.npz, overlay.mp4)."""
    import subprocess

    from data import sports2d_demo
    from meshcap.video import VideoReader, VideoWriter

    d = tmp_path_factory.mktemp("clip")
    clip = d / "walk.mp4"
    with VideoWriter(clip, 30.0) as w:
        for f in VideoReader(sports2d_demo(), end=1.5):
            w.write(f.image)
    out, overlay = d / "motion.npz", d / "overlay.mp4"
    r = subprocess.run([sys.executable, "-m", "meshcap.cli", str(clip), "--out", str(out), "--render", str(overlay),
                        "--quiet", "--min-track-length", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return clip, out, overlay
