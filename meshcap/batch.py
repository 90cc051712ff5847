"""Capturing a folder of videos: every video through `meshcap.capture.capture`, each in its own
worker process (local) or Ray task (a cluster), one failure never stopping the others.

Outputs, per video `NAME.ext` in the input folder: `OUT/NAME.npz` (the Motion) and, when asked,
`OUT/NAME.bvh` (several people: `NAME_p<id>.bvh`), `OUT/NAME.glb`, `OUT/NAME.fbx`. Workers
produce their files in a private temporary folder and hand back their bytes; only this process
writes into OUT, each file atomically and the motion last, so a run that is killed leaves
either a finished video (its .npz present) or nothing of it, and the next run redoes it. A
video whose .npz loads and whose asked-for exports exist is skipped (resumable).

Local workers are fresh processes, one per video (spawned: no state forked from the parent, and
a worker that crashes takes only its own video with it). On Ray (`ray=ADDRESS|"auto"`), the
cluster's workers must reach the input videos at the same path (shared storage) and have
meshcap installed; the outputs come back to this machine.
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from meshcap.errors import DependencyError, InputError, MeshcapError
from meshcap.fileio import publish, temp_beside

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FORMATS = ("bvh", "glb", "fbx")


@dataclass
class BatchResult:
    """What became of one video: status "done", "skipped" (finished by an earlier run) or
    "failed" (`error` says why: the capture's own message, or an internal error's type and
    text); people and frames of its Motion (None when failed); seconds spent on it; the files
    written (or found, when skipped)."""

    video: Path
    status: str
    people: int | None = None
    frames: int | None = None
    seconds: float = 0.0
    error: str | None = None
    internal: bool = False  # the failure is a bug or a crash, not bad input
    outputs: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the capture's warnings (no ground seen, ...)


def find_videos(folder: str | Path) -> list[Path]:
    """The videos directly in `folder` (by suffix, sorted by name). Raises InputError for a
    missing folder, an empty one, or two videos that would write the same outputs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise InputError(f"{folder}: no videos in it (looked for {', '.join(VIDEO_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for v in videos:
        if v.stem in stems:
            raise InputError(f"{stems[v.stem].name} and {v.name} would write the same outputs ({v.stem}.npz); "
                             "rename one")
        stems[v.stem] = v
    return videos


def finished(video: Path, out_dir: Path, formats: tuple[str, ...]) -> BatchResult | None:
    """A "skipped" result when an earlier run finished `video` (its motion loads and every
    asked-for format exists in out_dir), else None."""
    from meshcap.motion import Motion

    npz = out_dir / f"{video.stem}.npz"
    if not npz.is_file():
        return None
    try:
        m = Motion.load(npz)
    except Exception:  # unreadable or not a Motion: redo the video
        return None
    found = [npz]
    for fmt in formats:
        if fmt == "bvh":
            bvh = [p for p in [out_dir / f"{video.stem}.bvh", *out_dir.glob(f"{video.stem}_p*.bvh")] if p.is_file()]
            if not bvh:
                return None
            found += bvh
        elif (out_dir / f"{video.stem}.{fmt}").is_file():
            found.append(out_dir / f"{video.stem}.{fmt}")
        else:
            return None
    return BatchResult(video, "skipped", m.num_people, m.num_frames, outputs=found)


def capture_files(video: str, formats: tuple[str, ...], options: dict, threads: int = 0) -> dict:
    """Capture one video and export it, in a temporary folder: {"files": {name: bytes},
    "people", "frames", "seconds", "warnings"} or, when it fails, {"error": message,
    "internal": bool, "seconds", "warnings"}. Warnings are collected, not printed: the batch
    reports them beside their video. The unit of work of a local worker or a Ray task (it
    never raises)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    stem = Path(video).stem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _capture_files(video, stem, formats, options)
    out["seconds"] = time.perf_counter() - t0
    # meshcap's own (no ground, few feet): what the user should read; libraries' deprecations are not
    out["warnings"] = list(dict.fromkeys(str(w.message) for w in caught
                                         if issubclass(w.category, UserWarning) and "meshcap" in w.filename))
    return out


def _capture_files(video: str, stem: str, formats: tuple[str, ...], options: dict) -> dict:
    from meshcap.capture import capture

    try:
        with tempfile.TemporaryDirectory(prefix="meshcap-batch-") as tmp:
            motion = capture(video, **options)
            model = motion.load_body_model() if formats else None
            if "fbx" in formats:
                motion.to_fbx(Path(tmp) / f"{stem}.fbx", body_model=model)
            if "glb" in formats:
                motion.to_gltf(Path(tmp) / f"{stem}.glb", body_model=model)
            if "bvh" in formats:
                motion.to_bvh(Path(tmp) / f"{stem}.bvh", body_model=model)
            motion.save(Path(tmp) / f"{stem}.npz")
            files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir())}
        return {"files": files, "people": motion.num_people, "frames": motion.num_frames}
    except (MeshcapError, FileNotFoundError, ValueError) as e:
        return {"error": str(e), "internal": False}
    except Exception as e:  # a bug: keep its place for the report
        where = traceback.extract_tb(e.__traceback__)[-1]
        return {"error": f"internal error: {type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})",
                "internal": True}


def _publish_files(files: dict[str, bytes], out_dir: Path, stem: str) -> list[Path]:
    """Write a worker's files into out_dir, each atomically, the motion (the mark of a finished
    video) last; a failure removes what this call wrote."""
    written: list[Path] = []
    order = sorted(files, key=lambda n: n == f"{stem}.npz")
    try:
        for name in order:
            target = out_dir / name
            tmp = temp_beside(target)
            try:
                Path(tmp).write_bytes(files[name])
                written.append(publish(tmp, target))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def _local_worker(video: str, formats: tuple[str, ...], options: dict, threads: int, result_path: str) -> None:
    """A spawned process's entry: capture, and pickle the outcome to result_path."""
    out = capture_files(video, formats, options, threads)
    with open(result_path, "wb") as fh:
        pickle.dump(out, fh)


def _run_local(jobs: list[Path], formats, options, workers: int, done: Callable[[Path, dict], None]) -> None:
    """Each video in its own spawned process, `workers` at a time, torch threads shared out."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending = list(jobs)
    running: dict = {}
    with tempfile.TemporaryDirectory(prefix="meshcap-batch-") as tmp:
        try:
            while pending or running:
                while pending and len(running) < workers:
                    video = pending.pop(0)
                    result = os.path.join(tmp, f"{len(pending)}-{video.stem}.pkl")
                    proc = ctx.Process(target=_local_worker, args=(str(video.absolute()), formats, options, threads, result),
                                       daemon=True)
                    proc.start()
                    running[proc.sentinel] = (proc, video, result, time.perf_counter())
                for sentinel in wait(list(running)):
                    proc, video, result, t0 = running.pop(sentinel)
                    proc.join()
                    try:
                        with open(result, "rb") as fh:
                            out = pickle.load(fh)
                    except (OSError, EOFError, pickle.UnpicklingError):
                        out = {"error": f"internal error: the worker process died (exit code {proc.exitcode})",
                               "internal": True, "seconds": time.perf_counter() - t0}
                    done(video, out)
        finally:  # interrupted: no orphan workers left capturing
            for proc, *_ in running.values():
                proc.terminate()


def _check_ray_address(address: str) -> None:
    """Ray must be installed, and a HOST:PORT address must answer, before any work starts (Ray
    itself would keep retrying)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise DependencyError('--ray needs Ray, an optional extra: pip install "meshcap[ray]"')
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as e:
        raise InputError(f"the Ray cluster at {address} does not answer ({e.strerror or e}); "
                         "start it with `ray start --head` or check the address") from None


def _run_ray(jobs: list[Path], formats, options, address: str, done: Callable[[Path, dict], None]) -> None:
    """Each video as a Ray task (one CPU each, never retried: a crash is reported as such)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except ConnectionError as e:
            raise InputError(f"cannot join the Ray cluster at {address}: {e}") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(capture_files)
        t0 = time.perf_counter()
        refs = {task.remote(str(v.absolute()), formats, options, 1): v for v in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            video = refs.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except ray.exceptions.RayError as e:
                out = {"error": f"internal error: the Ray task failed: {type(e).__name__}", "internal": True,
                       "seconds": time.perf_counter() - t0}
            done(video, out)
    finally:
        if started_here:
            ray.shutdown()


def capture_batch(input_dir: str | Path, out_dir: str | Path, *, formats: tuple[str, ...] = (),
                  workers: int | None = None, ray: str | None = None,
                  progress: Callable[[int, int, BatchResult | None], None] | None = None,
                  **options) -> list[BatchResult]:
    """Capture every video in `input_dir` into `out_dir` (module docstring).

    formats: any of "bvh", "glb", "fbx", written beside each motion. workers: local worker
    processes at a time (default: one per 4 cores, at least 1). ray: a Ray cluster's address
    ("HOST:PORT" or "auto") to run on instead. progress(done, total, result) after each
    video, and progress(0, total, None) once the checks have passed. `options` go to `meshcap.capture.capture` (body_model, model_path, max_people,
    world, regressor, ...). Returns one BatchResult per video, in name order.

    Raises before any work: InputError for a missing or empty input folder, an output folder
    that cannot be written, an unknown format, a Ray address that does not answer;
    DependencyError for FBX without Blender or Ray without its extra."""
    videos = find_videos(input_dir)
    formats = tuple(dict.fromkeys(f.lower() for f in formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"unknown export format(s) {bad}; choose from {list(FORMATS)}")
    if "fbx" in formats:
        from meshcap.export.fbx import blender_available

        if not blender_available():
            raise DependencyError('FBX needs Blender\'s Python module, an optional extra: '
                                  'pip install "meshcap[fbx]" (bpy==5.0.1, Python 3.11)')
    if ray is not None:
        _check_ray_address(ray)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = temp_beside(out_dir / "probe")
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{out_dir}: the output folder cannot be written ({e.strerror or e})") from None
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    workers = workers or max(1, (os.cpu_count() or 1) // 4)
    options = {"cache": None, **options}  # no keypoint cache files beside the outputs

    results: dict[Path, BatchResult] = {}
    total = len(videos)

    def report(r: BatchResult) -> None:
        results[r.video] = r
        if progress is not None:
            progress(len(results), total, r)

    if progress is not None:
        progress(0, total, None)
    jobs = []
    for v in videos:
        earlier = finished(v, out_dir, formats)
        if earlier is None:
            jobs.append(v)
        else:
            report(earlier)

    def done(video: Path, out: dict) -> None:
        if "error" in out:
            report(BatchResult(video, "failed", seconds=out["seconds"], error=out["error"],
                               internal=out["internal"], warnings=out.get("warnings", [])))
            return
        try:
            written = _publish_files(out["files"], out_dir, video.stem)
        except OSError as e:
            report(BatchResult(video, "failed", seconds=out["seconds"], error=f"writing its outputs: {e}",
                               warnings=out["warnings"]))
            return
        report(BatchResult(video, "done", out["people"], out["frames"], out["seconds"], outputs=written,
                           warnings=out["warnings"]))

    if jobs:
        if ray is not None:
            _run_ray(jobs, formats, options, ray, done)
        else:
            _run_local(jobs, formats, options, workers, done)
    return [results[v] for v in videos]


__all__ = ["BatchResult", "capture_batch", "find_videos", "finished", "capture_files"]
