"""`capture_multiview`: synchronised videos (or keypoint files) of one scene and their
calibration in, one `Motion` in the calibration's world frame out."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from meshcap.errors import InputError
from meshcap.fitting.smplify import FitOptions
from meshcap.motion import Motion
from meshcap.multiview.associate import associate_frame, link_people
from meshcap.multiview.calibration import Camera, check_cameras, read_calibration

KEYPOINT_SUFFIXES = (".npz", ".json")


def _tracks_for(source: Path, cache: Path | None, progress):
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.keypoints.readers import read_keypoints

    if source.suffix.lower() in KEYPOINT_SUFFIXES or (source.is_dir() and any(source.glob("*.json"))):
        return read_keypoints(source)
    return video_tracks(source, cache=cache, progress=progress)


def gather_people(per_frame: list[list[list]], cameras: list[Camera], offsets: list[int], T: int,
                  max_people: int | None, min_length: int, progress=None) -> list[tuple[int, np.ndarray]]:
    """People matched across views and over time: per person (first frame, keypoints
    (C, n, 33, 3) of its n frames in every view, zeros where a view did not see it), in order
    of first appearance. `per_frame[c][i]` lists camera c's (track id, keypoints) of frame i."""
    C = len(cameras)
    frames = []
    for t in range(T):
        cands = [[kp for _, kp in per_frame[c][t + offsets[c]]] for c in range(C)]
        frames.append(associate_frame(cands, cameras, max_people or 8))
        if progress:
            progress("matching views", t + 1, T)
    people = [p for p in link_people(frames) if max(p) - min(p) + 1 >= min_length]
    if not people:
        raise InputError("no person was seen consistently by two or more cameras")
    people.sort(key=len, reverse=True)
    people = people[:max_people] if max_people else people
    people.sort(key=min)
    out = []
    for ident in people:
        first, last = min(ident), max(ident)
        kp = np.zeros((C, last - first + 1, 33, 3))
        for t, i in ident.items():
            pick, _ = frames[t][i]
            for c, d in enumerate(pick):
                if d is not None:
                    kp[c, t - first] = per_frame[c][t + offsets[c]][d][1]
        out.append((first, kp))
    return out


def load_views(sources, cams, cache_dir=None, progress=None) -> list:
    """Each view's tracks (blazepose33), detected or read; checks sizes against the cameras."""
    views = []
    for c, (src, cam) in enumerate(zip(sources, cams)):
        src = Path(src)
        cache = Path(cache_dir) / f"{src.stem}.cam{c}.keypoints.npz" if cache_dir else None
        step = (lambda d, n, c=c: progress(f"detecting view {c + 1}", d, n)) if progress else None
        tr = _tracks_for(src, cache, step)
        w, h = tr.image_size
        if abs(w / cam.size[0] - 1) > 0.05 or abs(h / cam.size[1] - 1) > 0.05:
            raise InputError(f"{src}: frames are {w}x{h} but camera {cam.name} was calibrated at "
                             f"{cam.size[0]}x{cam.size[1]}; is the order of the videos the calibration's?")
        views.append(tr.convert("blazepose33") if tr.layout != "blazepose33" else tr)
    return views


def capture_multiview(sources: list[str | Path], calibration: str | Path | list[Camera],
                      offsets: list[int] | None = None, max_people: int | None = None,
                      min_length: int = 10, body_model: str = "anny", model_path: str | Path | None = None,
                      fit: FitOptions | None = None, cache_dir: str | Path | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> Motion:
    """Detect (or read) every view, match people across views and over time, fit each person
    to all views at once.

    Args:
        sources: one video or keypoint file/folder per camera, in the calibration's order.
        calibration: a calibration file (see `meshcap.multiview.calibration`) or cameras.
        offsets: per camera, the index of its frame that shows the scene's first moment
            (default 0 for all: already synchronised).
        max_people: keep the longest this many people; min_length: drop shorter ones (frames).
        cache_dir: keep each view's detections there (`<name>.keypoints.npz`) for re-runs.
        progress: called as progress(stage, done, total).
    Returns a Motion whose world is the calibration's, with every camera's K, R, t.
    """
    from meshcap.body_models import load_body_model
    from meshcap.fitting.multiview import MultiViewFitter

    cams = calibration if isinstance(calibration, list) else read_calibration(calibration)
    sources = [Path(s) for s in sources]
    check_cameras(cams, len(sources), str(calibration) if not isinstance(calibration, list) else "the cameras")
    for s in sources:
        if not s.exists():
            raise InputError(f"{s}: no such file or folder")
    offsets = list(offsets or [0] * len(sources))
    if len(offsets) != len(sources) or any(o < 0 for o in offsets):
        raise InputError(f"give one non-negative frame offset per camera ({len(sources)}), got {offsets}")

    views = load_views(sources, cams, cache_dir, progress)
    T = min(v.num_frames - o for v, o in zip(views, offsets))
    if T <= 0:
        raise InputError(f"the offsets {offsets} leave no frame seen by every camera")
    per_frame = [v.per_frame() for v in views]
    fps = float(views[0].fps)

    people = gather_people(per_frame, cams, offsets, T, max_people, min_length, progress)

    model = load_body_model(body_model, model_path) if body_model != "anny" else load_body_model("anny")
    fitter = MultiViewFitter(model, cams, "blazepose33", fit)
    C, K = len(cams), 33
    P, J = len(people), model.num_joints
    out = dict(poses=np.zeros((P, T, J, 3), np.float32), shape=np.zeros((P, model.shape_dim), np.float32),
               transl=np.zeros((P, T, 3), np.float32), joints3d=np.zeros((P, T, J, 3), np.float32),
               keypoints2d=np.zeros((P, T, K, 3), np.float32), uncertainty=np.zeros((P, T, J), np.float32))
    valid = np.zeros((P, T), bool)
    for p, (first, kp) in enumerate(people):
        last = first + kp.shape[1] - 1
        res = fitter.fit(kp, fps=fps)
        sl = slice(first, last + 1)
        out["poses"][p, sl] = res.poses.numpy()
        out["shape"][p] = res.shape[0].numpy()
        out["transl"][p, sl] = res.transl.numpy()
        out["joints3d"][p, sl] = res.joints.numpy()
        out["keypoints2d"][p, sl] = kp[0]
        out["uncertainty"][p, sl] = res.uncertainty.numpy()
        valid[p, sl] = True
        if progress:
            progress("fitting", p + 1, P)
    times = views[0].frame_times[offsets[0]: offsets[0] + T]
    return Motion(fps=fps, body_model=model.name, joint_names=list(model.joint_names),
                  parents=np.asarray(model.parents), valid=valid, keypoint_layout="blazepose33",
                  cam_K=np.stack([c.K for c in cams]), cam_R=np.stack([c.R for c in cams]),
                  cam_t=np.stack([c.t for c in cams]), image_size=np.array([c.size for c in cams]),
                  person_ids=np.arange(P), frame_times=times - times[0], **out,
                  body_model_settings={} if model.name == "anny" else {"model_path": str(model_path)})
