"""`capture_multiview`: synchronised videos (or keypoint files) of one scene and their
calibration in, one `Motion` in the calibration's world frame out."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from meshcap.contacts import floor_height, foot_contacts
from meshcap.errors import InputError
from meshcap.fitting.smplify import FitOptions
from meshcap.keypoints.layouts import get_layout
from meshcap.motion import Motion
from meshcap.multiview.associate import associate_tracks
from meshcap.multiview.calibration import Camera, check_camera_size, check_cameras, read_calibration
from meshcap.multiview.refine import refine_orientations
from meshcap.multiview.swaps import apply_swaps, find_swaps
from meshcap.multiview.triangulate import triangulate
from meshcap.world import calibration_up, place_in_world

KEYPOINT_SUFFIXES = (".npz", ".json")


def _tracks_for(source: Path, cache: Path | None, progress):
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.keypoints.readers import read_keypoints

    if source.suffix.lower() in KEYPOINT_SUFFIXES or (source.is_dir() and any(source.glob("*.json"))):
        return read_keypoints(source)
    return video_tracks(source, cache=cache, progress=progress)


def gather_people(views: list, cameras: list[Camera], offsets: list[int], T: int,
                  max_people: int | None, min_length: int, progress=None) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """People matched across views: per person (first frame, keypoints (C, n, 33, 3) of its n
    frames in every view, zeros where a view did not see it, swapped (C, n) bool: the view-frames
    whose left and right were relabelled, see `meshcap.multiview.swaps`), in order of first
    appearance. `views` are each camera's `Tracks` (see `associate_tracks`)."""
    C = len(cameras)
    groups = associate_tracks([v.tracks for v in views], cameras, offsets, T)
    if progress:
        progress("matching views", 1, 1)
    out = []
    for person in groups:
        kp = np.zeros((C, T, 33, 3))
        seen = np.zeros((C, T), bool)
        for c, pieces in person.items():
            for tid, frames in pieces:
                f, k = views[c].tracks[tid]
                _, rows, _ = np.intersect1d(np.asarray(f), frames, return_indices=True)
                g = np.asarray(f)[rows] - offsets[c]
                kp[c, g] = np.asarray(k)[rows]
                seen[c, g] = True
        swapped = find_swaps(kp, cameras)
        kp = apply_swaps(kp, swapped, get_layout("blazepose33").flip_permutation())
        _drop_inconsistent_views(kp, seen, cameras)
        frames = np.flatnonzero(seen.sum(0) >= 2)
        if len(frames) == 0 or frames[-1] - frames[0] + 1 < min_length:
            continue
        span = slice(frames[0], frames[-1] + 1)
        out.append((int(frames[0]), kp[:, span], swapped[:, span] & seen[:, span], len(frames)))
    if not out:
        raise InputError("no person was seen consistently by two or more cameras")
    out.sort(key=lambda x: x[3], reverse=True)
    out = out[:max_people] if max_people else out
    out.sort(key=lambda x: x[0])
    return [(first, kp, swapped) for first, kp, swapped, _ in out]


def _drop_inconsistent_views(kp: np.ndarray, seen: np.ndarray, cameras: list[Camera],
                             max_relative_error: float = 0.05) -> None:
    """In place: a view whose detection in some frame lies far from where the other views put
    the person (median reprojection error over 5% of its size after robust triangulation) is
    taken out of that frame: a track that joined the group by mistake for a while."""
    C, T, K, _ = kp.shape
    _, _, res = triangulate(kp.reshape(C, T * K, 3), cameras)
    res = res.reshape(C, T, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(res, axis=-1)  # (C, T)
    ys = np.where(kp[..., 2] > 0.3, kp[..., 1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        size = np.nanmax(ys, -1) - np.nanmin(ys, -1)
    bad = seen & np.isfinite(med) & (med > max_relative_error * np.maximum(np.nan_to_num(size, nan=1.0), 1.0))
    kp[bad] = 0.0
    seen[bad] = False


def load_views(sources, cams, cache_dir=None, progress=None) -> list:
    """Each view's tracks (blazepose33), detected or read; checks sizes against the cameras."""
    views = []
    for c, (src, cam) in enumerate(zip(sources, cams)):
        src = Path(src)
        cache = Path(cache_dir) / f"{src.stem}.cam{c}.keypoints.npz" if cache_dir else None
        step = (lambda d, n, c=c: progress(f"detecting view {c + 1}", d, n)) if progress else None
        tr = _tracks_for(src, cache, step)
        check_camera_size(cam, tr.image_size, f"{src}: frames are", "; is the order of the videos the calibration's?")
        views.append(tr.convert("blazepose33") if tr.layout != "blazepose33" else tr)
    return views


def capture_multiview(sources: list[str | Path], calibration: str | Path | list[Camera],
                      offsets: list[int] | None = None, max_people: int | None = None,
                      min_length: int = 10, body_model: str = "anny", model_path: str | Path | None = None,
                      fit: FitOptions | None = None, cache_dir: str | Path | None = None,
                      world: str | None = None, bone_scales: bool = True, refine_cameras: bool = True,
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
        world: None (default): the calibration's world, marked "z-up"/"y-up" when its cameras
            stand upright in it, with the height of the floor under the feet along its up
            (`Motion.floor`; exports put that floor on the tool's) and foot contact labels;
            else the ground
            estimated from the feet as for one camera; "camera": the calibration's world as it
            is, without a known up; "ground": the estimated ground in any case.
        bone_scales: fit each person's proportions beyond the body model's shape space (one
            scale per body part, `meshcap.fitting.multiview`); False keeps the shape's own.
        refine_cameras: turn each camera's orientation and scale its focal length to agree
            with what the rig sees (`meshcap.multiview.refine`; three cameras or more), before
            fitting; False keeps the calibration as it is.
        progress: called as progress(stage, done, total).
    Returns a Motion with every camera's K, R, t (refined, with how far each was turned in
    `calibration_turn` and its focal length's factor in `calibration_focal`).
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
    fps = float(views[0].fps)

    people = gather_people(views, cams, offsets, T, max_people, min_length, progress)
    turn = focal = None
    if refine_cameras:
        refined = refine_orientations(np.concatenate([kp.reshape(len(cams), -1, 3) for _, kp, _ in people], 1), cams)
        if refined.kept is None:
            cams, turn = refined.cameras, refined.turned_deg.astype(np.float32)
            focal = refined.focal_scale.astype(np.float32)
        if progress:
            progress("refining camera orientations", 1, 1)

    model = load_body_model(body_model, model_path) if body_model != "anny" else load_body_model("anny")
    fitter = MultiViewFitter(model, cams, "blazepose33", fit, **({} if bone_scales else {"scale_sd": 0.0}))
    K = 33
    P, J = len(people), model.num_joints
    out = dict(poses=np.zeros((P, T, J, 3), np.float32), shape=np.zeros((P, model.shape_dim), np.float32),
               transl=np.zeros((P, T, 3), np.float32), joints3d=np.zeros((P, T, J, 3), np.float32),
               keypoints2d=np.zeros((P, T, K, 3), np.float32), uncertainty=np.zeros((P, T, J), np.float32))
    if fitter.scale_sd > 0:
        out["bone_scale"] = np.ones((P, J), np.float32)
    valid = np.zeros((P, T), bool)
    view_swaps = np.zeros((P, T, len(cams)), bool)
    for p, (first, kp, swapped) in enumerate(people):
        last = first + kp.shape[1] - 1
        res = fitter.fit_windowed(kp, fps=fps)  # long tracks window by window: memory stays flat
        sl = slice(first, last + 1)
        out["poses"][p, sl] = res.poses.numpy()
        out["shape"][p] = res.shape[0].numpy()
        out["transl"][p, sl] = res.transl.numpy()
        out["joints3d"][p, sl] = res.joints.numpy()
        out["keypoints2d"][p, sl] = kp[0]
        out["uncertainty"][p, sl] = res.uncertainty.numpy()
        if "bone_scale" in out:
            out["bone_scale"][p] = res.bone_scale[0].numpy()
        view_swaps[p, sl] = swapped.T
        valid[p, sl] = True
        if progress:
            progress("fitting", p + 1, P)
    times = views[0].frame_times[offsets[0]: offsets[0] + T]
    motion = Motion(fps=fps, body_model=model.name, joint_names=list(model.joint_names),
                  parents=np.asarray(model.parents), valid=valid, keypoint_layout="blazepose33",
                  cam_K=np.stack([c.K for c in cams]), cam_R=np.stack([c.R for c in cams]),
                  cam_t=np.stack([c.t for c in cams]), image_size=np.array([c.size for c in cams]),
                  person_ids=np.arange(P), frame_times=times - times[0], view_swaps=view_swaps,
                  calibration_turn=turn, calibration_focal=focal, **out,
                  body_model_settings={} if model.name == "anny" else {"model_path": str(model_path)})
    motion = place_in_world(motion, model, world, None if world == "ground" else cams)
    if world is None and calibration_up(cams) is not None:
        # the calibration's world is kept, but its origin need not lie on the floor people
        # stand on (Pose2Sim's single-person demo: the planted soles are 10 cm above z = 0):
        # exports put the floor under the feet on the tool's floor
        motion.floor = floor_height(motion, model)
        motion.contact, motion.contact_prob = foot_contacts(motion, model)
    return motion
