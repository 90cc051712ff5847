"""Batch capture (`meshcap batch`): a folder of three short clips of the Sports2D demo and one
corrupt file, locally and on a local Ray cluster: three results, one clear error, a non-zero
exit, and a second run that skips what is finished."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from meshcap.batch import _run_local, capture_batch, finished
from meshcap.errors import InputError
from meshcap.motion import Motion


def _meshcap(*args):
    return subprocess.run([sys.executable, "-m", "meshcap.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three one-second clips (the first with one person in view, the second with two) and a
    corrupt .mp4."""
    from data import sports2d_demo
    from meshcap.video import VideoReader, VideoWriter

    d = tmp_path_factory.mktemp("videos")
    for i, start in enumerate((0.0, 2.0, 4.0)):
        with VideoWriter(d / f"clip{i}.mp4", 30.0) as w:
            for f in VideoReader(sports2d_demo(), start=start, end=start + 1.0):
                w.write(f.image)
    (d / "broken.mp4").write_bytes(b"\x00 not a video" * 100)
    return d


@pytest.fixture(scope="module")
def local_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return out, _meshcap("batch", folder, "--out", out, "--bvh", "--workers", "2", "--quiet")


def test_batch_captures_every_good_video_and_names_the_bad_one(folder, local_run):
    out, r = local_run
    assert r.returncode == 2, r.stderr  # one video failed: bad input
    assert "3 done, 0 skipped (done before), 1 failed" in r.stdout
    assert "broken.mp4: failed:" in r.stderr and "not a readable video" in r.stderr
    for i, people in enumerate((1, 2, 1)):
        m = Motion.load(out / f"clip{i}.npz")
        assert m.num_frames == 30 and m.num_people == people
        assert m.valid.sum(1).min() >= 20  # everyone kept is fitted in most frames
        bvh = sorted(out.glob(f"clip{i}*.bvh"))
        assert len(bvh) == people and all(p.stat().st_size > 1000 for p in bvh)
    # the corrupt file left nothing behind, and no temporary file is left anywhere
    assert not list(out.glob("broken*")) and not list(out.glob(".*"))


def test_a_second_run_skips_what_is_finished(folder, local_run):
    out, _ = local_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = _meshcap("batch", folder, "--out", out, "--bvh", "--quiet")
    assert r.returncode == 2, r.stderr
    assert "0 done, 3 skipped (done before), 1 failed" in r.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # asking for a format that an earlier run did not write redoes the videos
    assert finished(folder / "clip0.mp4", out, ("glb",)) is None
    assert finished(folder / "clip0.mp4", out, ("bvh",)).status == "skipped"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_linked_video_is_named_by_its_link(folder, tmp_path):
    """A symbolic link in the folder (walk.mp4 -> clip0.mp4) gives walk.npz, the name the
    summary and the next run's skip look for (the worker was handed the resolved path and
    named the outputs after the target, so every run redid it)."""
    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    (d / "walk.mp4").symlink_to(folder / "clip0.mp4")
    r = _meshcap("batch", d, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["walk.npz"]
    again = _meshcap("batch", d, "--out", out, "--quiet")
    assert again.returncode == 0 and "0 done, 1 skipped (done before), 0 failed" in again.stdout, again.stdout


@pytest.mark.heavy  # starts a Ray head: about 40 s; .ci/run runs it after the default run
def test_batch_on_a_local_ray_cluster_gives_the_same_results(folder, local_run, tmp_path):
    """A Ray cluster started here (two CPUs): the videos that an earlier run left unfinished are
    captured as Ray tasks, with the same result as a local worker's."""
    pytest.importorskip("ray")
    out, _ = local_run
    ray_out = tmp_path / "ray"
    shutil.copytree(out, ray_out)
    for p in ray_out.glob("clip1*"):  # clip1 (two people) is left to the cluster
        p.unlink()
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command, wherever pip put it
    start = subprocess.run([*ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                            "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr
    try:
        r = _meshcap("batch", folder, "--out", ray_out, "--bvh", "--ray", f"127.0.0.1:{port}", "--quiet")
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "1 done, 2 skipped (done before), 1 failed" in r.stdout
    a, b = Motion.load(out / "clip1.npz"), Motion.load(ray_out / "clip1.npz")
    assert a.num_people == b.num_people == 2 and np.array_equal(a.valid, b.valid)
    assert np.abs(a.joints3d - b.joints3d)[a.valid].max() < 0.005
    assert len(list(ray_out.glob("clip1_p*.bvh"))) == 2


def _die(stage, done, total):  # a worker that is killed in the middle of fitting
    if stage == "fitting bodies":
        os._exit(9)


def test_a_worker_killed_mid_video_leaves_nothing_and_is_redone(folder, tmp_path):
    seen = {}
    _run_local([folder / "clip0.mp4"], (), {"progress": _die, "cache": None}, 1,
               lambda video, out: seen.setdefault(video.name, out))
    out = seen["clip0.mp4"]
    assert out["internal"] and "worker process died (exit code 9)" in out["error"]
    assert not list(tmp_path.iterdir()) and finished(folder / "clip0.mp4", tmp_path, ()) is None


def test_bad_batch_input_fails_before_any_work(folder, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        capture_batch(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos in it"):
        capture_batch(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="cannot be written"):
        capture_batch(folder, tmp_path / "a_file" / "out")
    with pytest.raises(InputError, match="unknown export format"):
        capture_batch(folder, tmp_path / "out", formats=("obj",))
    twins = tmp_path / "twins"
    twins.mkdir()
    (twins / "a.mp4").write_bytes(b"")
    (twins / "a.mov").write_bytes(b"")
    with pytest.raises(InputError, match="same outputs"):
        capture_batch(twins, tmp_path / "out")
    # a Ray address that does not answer: a clear error, and no output folder made
    pytest.importorskip("ray")
    r = _meshcap("batch", folder, "--out", tmp_path / "ray_out", "--ray", f"127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "does not answer" in r.stderr
    assert not (tmp_path / "ray_out").exists()
