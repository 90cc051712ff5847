"""2D keypoint detectors: the interface, the registry, and the default (MediaPipe BlazePose).

A detector turns one upright RGB frame into a list of `Detection`s, each a person's keypoints
in the detector's named layout. Other detectors (RTMPose, ViTPose, OpenPose, ...) plug in by
subclassing `Detector` and calling `register_detector`; or their output can be read from
files instead (`meshcap.keypoints.readers`).

The default runs MediaPipe's BlazePose "full" model from the `mediapipe==0.10.21` wheel, which
ships the model files. Its legacy `solutions.pose` API finds one person only, so meshcap runs the
Tasks `PoseLandmarker` (`num_poses` > 1) from a `.task` bundle it assembles once per machine
from the wheel's two `.tflite` files, with the input-normalisation metadata the Tasks API
needs written by MediaPipe's own metadata writer. BlazePose's person detector sees the frame at
224x224, so people small in a wide frame go unseen; on landscape frames meshcap therefore runs
it on overlapping square tiles and merges the people found twice (measured on the Sports2D
demo: both people found in 167 of 230 frames with two tiles, 53 with the whole frame).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meshcap.errors import MeshcapError


@dataclass
class Detection:
    """One person in one frame: keypoints (K, 3) pixels x, y and confidence in [0, 1] (0 where
    not seen), in `layout`; score: the detector's confidence that this is a person."""

    keypoints: np.ndarray
    score: float
    layout: str

    def box(self, min_confidence: float = 0.3) -> np.ndarray | None:
        """(4,) x0, y0, x1, y1 of the confident keypoints, or None if fewer than two."""
        ok = self.keypoints[:, 2] >= min_confidence
        if ok.sum() < 2:
            return None
        xy = self.keypoints[ok, :2]
        return np.concatenate([xy.min(0), xy.max(0)])


class Detector:
    """Interface: `layout` (a layout name), `name`, `settings()` (what makes its output
    different, for the keypoint cache), `detect(image, time)` and `close()`."""

    name = "detector"
    layout = "coco17"

    def settings(self) -> dict:
        return {}

    def detect(self, image: np.ndarray, time: float) -> list[Detection]:
        """People in one upright RGB frame (H, W, 3) uint8 taken at `time` seconds (strictly
        increasing from call to call within a video)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any state carried between frames (before a new video)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ core logs start-up chatter (no GPU, feedback tensors) straight to file
    descriptor 2, past Python and its log-level settings; hide it while models load and run
    their first frame."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    sys.stderr.flush()
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


_REGISTRY: dict[str, type] = {}


def register_detector(name: str, cls: type) -> None:
    """Make a Detector subclass available by name (e.g. to `meshcap detect --detector`)."""
    _REGISTRY[name] = cls


def get_detector(name: str = "blazepose", **kwargs) -> Detector:
    if name not in _REGISTRY:
        raise MeshcapError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


# -- MediaPipe BlazePose -----------------------------------------------------------------------

def _task_bundle_path() -> Path:
    import mediapipe

    from meshcap.fileio import cache_dir

    return cache_dir() / f"pose_landmarker_full-mediapipe-{mediapipe.__version__}.task"


def blazepose_task_file() -> Path:
    """The PoseLandmarker `.task` bundle, assembled once per machine from the wheel's models."""
    import mediapipe
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer as mw
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils as bundle

    from meshcap.fileio import publish, temp_beside

    path = _task_bundle_path()
    if path.exists():
        return path
    root = Path(mediapipe.__file__).parent / "modules"
    sources = {  # bundle member -> (wheel file, input normalisation mean/std, number of outputs)
        "pose_detector.tflite": (root / "pose_detection" / "pose_detection.tflite", 127.5, 127.5, 2),
        "pose_landmarks_detector.tflite": (root / "pose_landmark" / "pose_landmark_full.tflite", 0.0, 255.0, 5),
    }
    files = {}
    for member, (src, mean, std, n_out) in sources.items():
        if not src.exists():
            raise MeshcapError(f"mediapipe {mediapipe.__version__} does not ship {src.name}; "
                               "meshcap needs mediapipe==0.10.21")
        w = mw.MetadataWriter.create(bytearray(src.read_bytes()))
        w.add_general_info(src.stem)
        w.add_image_input(norm_mean=[mean] * 3, norm_std=[std] * 3)
        for i in range(n_out):
            w.add_feature_output(name=f"output_{i}")
        files[member] = bytes(w.populate()[0])
    tmp = temp_beside(path, suffix=".task")
    try:
        bundle.create_model_asset_bundle(files, tmp)
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def square_tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x0, y0, x1, y1) covering a frame along its long side; the
    whole frame when it is within 4:3 of square."""
    long, short = max(width, height), min(width, height)
    if long <= short * 4 / 3:
        return [(0, 0, width, height)]
    n = math.ceil(long / short)
    starts = np.linspace(0, long - short, n).round().astype(int)
    if width >= height:
        return [(int(s), 0, int(s) + short, height) for s in starts]
    return [(0, int(s), width, int(s) + short) for s in starts]


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(hi - lo, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class BlazePoseDetector(Detector):
    """MediaPipe BlazePose (full), several people per frame, 33 landmarks (`blazepose33`).

    Args:
        num_poses: the most people per tile.
        min_detection_confidence, min_presence_confidence, min_tracking_confidence: MediaPipe's
            thresholds (lower finds more people, and more false ones).
        tiles: "auto" (overlapping squares on frames wider than 4:3) or "none".
    Confidence per landmark is MediaPipe's visibility; landmarks outside the frame get 0.
    """

    num_poses: int = 4
    min_detection_confidence: float = 0.3
    min_presence_confidence: float = 0.3
    min_tracking_confidence: float = 0.3
    tiles: str = "auto"
    name: str = field(default="blazepose", init=False)
    layout: str = field(default="blazepose33", init=False)

    def __post_init__(self) -> None:
        if self.tiles not in ("auto", "none"):
            raise MeshcapError(f"tiles must be 'auto' or 'none', got {self.tiles!r}")
        self._landmarkers: dict[tuple, object] = {}
        self._last_ms = -1

    def settings(self) -> dict:
        return dict(model="pose_landmarker_full", num_poses=self.num_poses, tiles=self.tiles,
                    min_detection_confidence=self.min_detection_confidence,
                    min_presence_confidence=self.min_presence_confidence,
                    min_tracking_confidence=self.min_tracking_confidence)

    def _landmarker(self, tile):
        if tile not in self._landmarkers:
            from mediapipe.tasks import python as mp_tasks
            from mediapipe.tasks.python import vision

            opts = vision.PoseLandmarkerOptions(
                base_options=mp_tasks.BaseOptions(model_asset_path=str(blazepose_task_file())),
                running_mode=vision.RunningMode.VIDEO, num_poses=self.num_poses,
                min_pose_detection_confidence=self.min_detection_confidence,
                min_pose_presence_confidence=self.min_presence_confidence,
                min_tracking_confidence=self.min_tracking_confidence)
            with _native_stderr_silenced():
                self._landmarkers[tile] = vision.PoseLandmarker.create_from_options(opts)
        return self._landmarkers[tile]

    def detect(self, image: np.ndarray, time: float) -> list[Detection]:
        import mediapipe as mp

        h, w = image.shape[:2]
        # MediaPipe's video mode wants strictly increasing integer milliseconds
        ms = max(int(round(time * 1000)), self._last_ms + 1)
        self._last_ms = ms
        tiles = square_tiles(w, h) if self.tiles == "auto" else [(0, 0, w, h)]
        found: list[tuple[Detection, float]] = []
        for tile in tiles:
            x0, y0, x1, y1 = tile
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            key = (tile, w, h)
            first = key not in self._landmarkers
            with _native_stderr_silenced() if first else contextlib.nullcontext():
                res = self._landmarker(key).detect_for_video(
                    mp.Image(image_format=mp.ImageFormat.SRGB, data=crop), ms)
            for lms in res.pose_landmarks:
                a = np.array([[p.x, p.y, p.visibility if p.visibility is not None else 1.0] for p in lms],
                             dtype=np.float32)
                kp = np.empty_like(a)
                kp[:, 0] = a[:, 0] * (x1 - x0) + x0
                kp[:, 1] = a[:, 1] * (y1 - y0) + y0
                inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
                kp[:, 2] = np.where(inside, np.clip(a[:, 2], 0, 1), 0)
                det = Detection(kp, float(kp[:, 2].mean()), self.layout)
                # how far the person sits from the tile's inner edges: a person cut by a tile
                # edge is seen better in the neighbouring tile
                box = det.box()
                if box is None:
                    continue
                margin = min(box[0] - x0 if x0 > 0 else np.inf, x1 - box[2] if x1 < w else np.inf,
                             box[1] - y0 if y0 > 0 else np.inf, y1 - box[3] if y1 < h else np.inf)
                found.append((det, margin))
        # the same person found in two tiles: keep the one farther from a cut
        found.sort(key=lambda dm: -dm[1])
        kept: list[Detection] = []
        for det, _ in found:
            if all(_box_iou(det.box(), k.box()) < 0.4 for k in kept):
                kept.append(det)
        return kept

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        for lm in self._landmarkers.values():
            lm.close()
        self._landmarkers = {}
        self._last_ms = -1


register_detector("blazepose", BlazePoseDetector)
