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
The tiles run on two threads (MediaPipe releases the GIL): 1.8 times the frames/s of one
(`bench/keypoints.py`), the same detections. `follow=True` detects people in crops around
where they were and searches the tiles only every few frames.
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
    not seen), in `layout`; score: the detector's confidence that this is a person;
    appearance: what they look like (`meshcap.keypoints.appearance`), or None."""

    keypoints: np.ndarray
    score: float
    layout: str
    appearance: np.ndarray | None = None

    def box(self, min_confidence: float = 0.3) -> np.ndarray | None:
        """(4,) x0, y0, x1, y1 of the confident keypoints, or None if fewer than two."""
        return keypoint_box(self.keypoints, min_confidence)


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


# whether a landmarker of this process has found someone yet (see `_run_jobs`)
_FOUND_ONCE = [False]

_REGISTRY: dict[str, type] = {}


def register_detector(name: str, cls: type) -> None:
    """Make a Detector subclass available by name (e.g. to `meshcap detect --detector`)."""
    _REGISTRY[name] = cls


def detector_layout(name: str = "blazepose") -> str:
    """The keypoint layout detector `name` gives, without building it."""
    if name not in _REGISTRY:
        raise MeshcapError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].layout


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


def _same_person(a: np.ndarray, b: np.ndarray, min_confidence: float = 0.3) -> bool:
    """Whether two detections (K, 3) are one person: their keypoints seen in both lie within
    15% of the person's size of each other. Box overlap alone cannot tell, because two people
    who cross overlap as much as two finds of one person."""
    both = (a[:, 2] >= min_confidence) & (b[:, 2] >= min_confidence)
    if both.sum() < 3:
        return False
    size = max(float(np.ptp(a[both, :2], axis=0).max()), 1.0)
    return float(np.median(np.linalg.norm(a[both, :2] - b[both, :2], axis=1))) < 0.15 * size


def keypoint_box(kp: np.ndarray, min_confidence: float = 0.3) -> np.ndarray | None:
    """(4,) x0, y0, x1, y1 of the keypoints (K, 3) seen with at least `min_confidence`, or None
    if fewer than two."""
    ok = kp[:, 2] >= min_confidence
    if ok.sum() < 2:
        return None
    xy = kp[ok, :2]
    return np.concatenate([xy.min(0), xy.max(0)])


def is_part_of(a: np.ndarray, b: np.ndarray, min_confidence: float = 0.3) -> bool:
    """Whether detection a (K, 3) is a part of the person b (K, 3) found a second time: a
    smaller box (under 70% of b's area) inside b's (at least 80% of it, b's box widened by 10%
    of its size, since b's least sure limbs fall outside it), and a's keypoints on b's (median
    distance to the nearest of b's under 10% of b's size, whatever their names). MediaPipe's
    multi-person landmarker often finds such a second "person" in someone's legs, for dozens
    of frames. A bystander behind someone lies inside their box too, but not on their joints."""
    box_a, box_b = keypoint_box(a, min_confidence), keypoint_box(b, min_confidence)
    if box_a is None or box_b is None:
        return False
    size_b = float(max(box_b[2:] - box_b[:2]))
    area_a, area_b = np.prod(box_a[2:] - box_a[:2]), np.prod(box_b[2:] - box_b[:2])
    if area_a >= 0.7 * area_b:
        return False
    wide = box_b + 0.1 * size_b * np.array([-1, -1, 1, 1])
    inter = np.prod(np.clip(np.minimum(box_a[2:], wide[2:]) - np.maximum(box_a[:2], wide[:2]), 0, None))
    if inter < 0.8 * area_a:
        return False
    pa = a[a[:, 2] >= min_confidence, :2]
    pb = b[b[:, 2] >= min_confidence, :2]
    nearest = np.linalg.norm(pa[:, None] - pb[None], axis=-1).min(1)
    return float(np.median(nearest)) < 0.1 * max(size_b, 1.0)


def _duplicate(a: Detection, b: Detection) -> bool:
    """Whether `a` is a second find of the person `b`: the same keypoints, nearly the same
    box, or a part of them (`is_part_of`). (Not any overlap: a bystander passing behind someone
    lies inside their box.)"""
    return (_same_person(a.keypoints, b.keypoints) or _box_iou(a.box(), b.box()) > 0.7
            or is_part_of(a.keypoints, b.keypoints))


@dataclass
class _Followed:
    """A person found in the previous frame, detected next in a square crop around them by a
    landmarker of their own (MediaPipe's video mode then follows them from frame to frame
    without running its person detector)."""

    landmarker: object
    points: np.ndarray  # (K, 2) every landmark of the last find, frame pixels
    crop: tuple[int, int, int, int] | None = None

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): a square 1.6 times the person's extent around their last centre,
        inside the frame, so the person stays near its middle as they move. Its side only
        changes when their size has changed by a quarter, because the landmarker's own
        tracking is kept in crop coordinates."""
        lo, hi = self.points.min(0), self.points.max(0)
        target = 1.6 * float((hi - lo).max())
        if self.crop is None or not 0.8 < target / (self.crop[2] - self.crop[0]) < 1.25:
            side = int(round(min(max(target, 128.0), width, height)))
        else:
            side = self.crop[2] - self.crop[0]
        cx, cy = (lo + hi) / 2
        x0 = int(np.clip(round(cx - side / 2), 0, width - side))
        y0 = int(np.clip(round(cy - side / 2), 0, height - side))
        self.crop = (x0, y0, x0 + side, y0 + side)
        return self.crop


@dataclass
class BlazePoseDetector(Detector):
    """MediaPipe BlazePose (full), several people per frame, 33 landmarks (`blazepose33`).

    Args:
        num_poses: the most people per tile.
        min_detection_confidence, min_presence_confidence, min_tracking_confidence: MediaPipe's
            thresholds (lower finds more people, and more false ones).
        tiles: "auto" (overlapping squares on frames wider than 4:3) or "none".
        follow: detect the people found in the previous frame in crops around them, and search
            the whole frame (the tiles) only every `search_every` frames or after someone was
            lost (the default). On the Sports2D demo 2.1 times the frames/s of the tiles on
            one thread (1.3 times the tiles on two) with the same two tracks, and as long or
            longer tracks on every sample video (docs/design.md). False: every frame searched.
        search_every: frames between whole-frame searches when following (someone who walks
            in is found at most this many frames late).
        threads: landmarkers run at once (tiles and crops are independent); 0: up to 2, as
            many as there are cores.
    Confidence per landmark is MediaPipe's visibility; landmarks outside the frame get 0.
    """

    num_poses: int = 4
    min_detection_confidence: float = 0.3
    min_presence_confidence: float = 0.3
    min_tracking_confidence: float = 0.3
    tiles: str = "auto"
    follow: bool = True
    search_every: int = 10
    threads: int = 0
    name: str = field(default="blazepose", init=False)
    layout: str = field(default="blazepose33", init=False)

    def __post_init__(self) -> None:
        if self.tiles not in ("auto", "none"):
            raise MeshcapError(f"tiles must be 'auto' or 'none', got {self.tiles!r}")
        if int(self.search_every) < 1:
            raise MeshcapError(f"search_every must be at least 1 frame, got {self.search_every!r}")
        if int(self.threads) < 0:
            raise MeshcapError(f"threads must be 0 (automatic) or more, got {self.threads!r}")
        self._landmarkers: dict[tuple, object] = {}
        self._followed: list[_Followed] = []
        self._spare: list = []
        self._warm: set = set()  # landmarkers that have run once
        self._since_search = 0
        self._counts: list[int] = []
        self._pool = None
        self._last_ms = -1

    def settings(self) -> dict:
        s = dict(model="pose_landmarker_full", num_poses=self.num_poses, tiles=self.tiles,
                 min_detection_confidence=self.min_detection_confidence,
                 min_presence_confidence=self.min_presence_confidence,
                 min_tracking_confidence=self.min_tracking_confidence)
        if self.follow:
            s.update(follow=True, search_every=int(self.search_every))
        return s

    def _new_landmarker(self, num_poses: int):
        from mediapipe.tasks import python as mp_tasks
        from mediapipe.tasks.python import vision

        opts = vision.PoseLandmarkerOptions(
            base_options=mp_tasks.BaseOptions(model_asset_path=str(blazepose_task_file())),
            running_mode=vision.RunningMode.VIDEO,
            num_poses=num_poses, min_pose_detection_confidence=self.min_detection_confidence,
            min_pose_presence_confidence=self.min_presence_confidence,
            min_tracking_confidence=self.min_tracking_confidence)
        with _native_stderr_silenced():
            return vision.PoseLandmarker.create_from_options(opts)

    def _tile_landmarker(self, key):
        if key not in self._landmarkers:
            # video mode also for the searches a few frames apart: its tracking still holds, and
            # it keeps people in poses its person detector misses (a cartwheel, a dive)
            self._landmarkers[key] = self._new_landmarker(self.num_poses)
        return self._landmarkers[key]

    def _map(self, fn, jobs: list) -> list:
        if len(jobs) < 2:
            return [fn(j) for j in jobs]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            n = int(self.threads) or min(2, os.cpu_count() or 1)
            if n < 2:
                return [fn(j) for j in jobs]
            # MediaPipe's graphs release the GIL while they run
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="meshcap-blazepose")
        return list(self._pool.map(fn, jobs))

    def _run_jobs(self, jobs: list, image: np.ndarray, ms: int) -> list:
        """Each (landmarker, region) job's finds, in order. A landmarker's first
        run logs MediaPipe's start-up chatter to file descriptor 2, and so does the process's
        first find (a warning about the crop's projection, once per process): those run one at
        a time with it silenced (redirecting a descriptor from several threads at once is a
        race), the rest at once."""
        out: list = [None] * len(jobs)
        cold = [i for i, (lm, _) in enumerate(jobs) if lm not in self._warm or not _FOUND_ONCE[0]]
        if cold:
            with _native_stderr_silenced():
                for i in cold:
                    out[i] = self._run(*jobs[i], image, ms)
            self._warm.update(jobs[i][0] for i in cold)
            _FOUND_ONCE[0] = _FOUND_ONCE[0] or any(out[i] for i in cold)
        rest = [i for i in range(len(jobs)) if out[i] is None]
        for i, r in zip(rest, self._map(lambda i: self._run(*jobs[i], image, ms), rest)):
            out[i] = r
        return out

    def _run(self, landmarker, region, image: np.ndarray, ms: int) -> list[tuple[Detection, np.ndarray]]:
        """The people one landmarker finds in `region` of the frame: (Detection, all (K, 2)
        landmark positions in frame pixels)."""
        import mediapipe as mp

        h, w = image.shape[:2]
        x0, y0, x1, y1 = region
        crop = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image[y0:y1, x0:x1]))
        res = landmarker.detect_for_video(crop, ms)
        out = []
        for lms in res.pose_landmarks:
            a = np.array([[p.x, p.y, p.visibility if p.visibility is not None else 1.0] for p in lms],
                         dtype=np.float32)
            kp = np.empty_like(a)
            kp[:, 0] = a[:, 0] * (x1 - x0) + x0
            kp[:, 1] = a[:, 1] * (y1 - y0) + y0
            inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
            kp[:, 2] = np.where(inside, np.clip(a[:, 2], 0, 1), 0)
            det = Detection(kp, float(kp[:, 2].mean()), self.layout)
            if det.box() is not None:
                out.append((det, kp[:, :2].copy()))
        return out

    def _search(self, finds_per_tile: list, tiles: list, w: int, h: int) -> list[tuple[Detection, np.ndarray]]:
        """Merge the tiles' finds: the same person found in two tiles is kept where they sit
        farther from a tile's inner edge (a person cut by an edge is seen better next door)."""
        found = []
        for (x0, y0, x1, y1), finds in zip(tiles, finds_per_tile):
            for det, points in finds:
                box = det.box()
                margin = min(box[0] - x0 if x0 > 0 else np.inf, x1 - box[2] if x1 < w else np.inf,
                             box[1] - y0 if y0 > 0 else np.inf, y1 - box[3] if y1 < h else np.inf)
                found.append((det, points, margin))
        found.sort(key=lambda f: -f[2])
        kept: list[tuple[Detection, np.ndarray]] = []
        for det, points, _ in found:
            if all(_box_iou(det.box(), k.box()) < 0.4 for k, _ in kept):
                kept.append((det, points))
        return kept

    def detect(self, image: np.ndarray, time: float) -> list[Detection]:
        h, w = image.shape[:2]
        # MediaPipe's video mode wants strictly increasing integer milliseconds
        ms = max(int(round(time * 1000)), self._last_ms + 1)
        self._last_ms = ms
        tiles = square_tiles(w, h) if self.tiles == "auto" else [(0, 0, w, h)]
        if not self.follow:
            jobs = [(self._tile_landmarker((tile, w, h)), tile) for tile in tiles]
            finds = self._run_jobs(jobs, image, ms)
            return [det for det, _ in self._search(finds, tiles, w, h)]

        search = not self._followed or self._since_search >= int(self.search_every) - 1
        jobs = [(f.landmarker, f.region(w, h)) for f in self._followed]
        if search:
            jobs += [(self._tile_landmarker((tile, w, h)), tile) for tile in tiles]
        finds = self._run_jobs(jobs, image, ms)
        n = len(self._followed)
        kept: list[Detection] = []
        followed: list[_Followed] = []
        lost = False
        # each followed person's find, the largest first (a crop that drifted onto a part of
        # someone, their legs, loses to them), then the most confident; someone found twice
        # (two crops that drifted onto one person) keeps one follower
        order = sorted(range(n), key=lambda i: (-np.prod(np.ptp(finds[i][0][1], axis=0)) if finds[i] else 0.0,
                                                -max((d.score for d, _ in finds[i]), default=-1.0)))
        for i in order:
            f = self._followed[i]
            if finds[i] and all(not _duplicate(finds[i][0][0], k) for k in kept):
                det, f.points = finds[i][0]
                kept.append(det)
                followed.append(f)
            elif not finds[i]:  # left, or hidden; its landmarker holds no state: reused
                lost = True
                self._spare.append(f.landmarker)
            else:  # drifted onto someone followed already; it would carry them on
                lost = True
                self._warm.discard(f.landmarker)
                f.landmarker.close()
        if search:
            for det, points in self._search(finds[n:], tiles, w, h):
                if all(not _duplicate(det, k) for k in kept):
                    kept.append(det)
                    # a new landmarker takes most of a second to build
                    lm = self._spare.pop() if self._spare else self._new_landmarker(1)
                    followed.append(_Followed(lm, points))
            self._since_search = 0
        else:
            self._since_search += 1
        self._followed = followed
        self._counts.append(len(kept))
        del self._counts[:-int(self.search_every)]
        # someone left or hid: search the whole frame in every frame until as many people are
        # found as lately (or, if they left for good, for `search_every` frames)
        if lost or len(kept) < max(self._counts):
            self._since_search = int(self.search_every)
        return kept

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        for lm in self._landmarkers.values():
            lm.close()
        for lm in [f.landmarker for f in self._followed] + self._spare:
            lm.close()
        self._landmarkers = {}
        self._followed = []
        self._spare = []
        self._warm = set()
        self._since_search = 0
        self._counts = []
        self._last_ms = -1
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


register_detector("blazepose", BlazePoseDetector)
