"""Video and image input, streamed one frame at a time, and H.264 output (PyAV).

`VideoReader` opens a video file, a single image, or a folder of images, and yields `Frame`s
(index, timestamp, RGB image) without ever holding the whole video. Rotation metadata (phone
videos) is applied, so images come upright; timestamps come from the stream, so variable
frame rates keep their real timing. `start`/`end` (seconds) and `stride` pick a range.

`VideoWriter` encodes RGB frames to H.264 (yuv420p, playable everywhere) and only replaces
the target file once the video is complete.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from meshcap.errors import InputError
from meshcap.fileio import publish, temp_beside

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Frame:
    """One decoded frame: `index` in the source (0-based, before any stride), `time` in
    seconds, `image` (H, W, 3) uint8 RGB, upright."""

    index: int
    time: float
    image: np.ndarray


# _probe_video's results by (resolved path, size, modification time, inode)
_PROBED: dict[tuple, "VideoInfo"] = {}
_PROBED_LOCK = threading.Lock()


@dataclass
class VideoInfo:
    """What is known before decoding: upright size, nominal fps, frame count (estimated from
    the container for videos; exact for images), duration (s), rotation applied (degrees
    counter-clockwise) and the kind of source ("video", "image" or "folder")."""

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    rotation: int
    kind: str


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    k = int(round(rotation / 90.0)) % 4  # the display matrix rotates counter-clockwise
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # phone photos carry their orientation in EXIF
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


class VideoReader:
    """Frames of a video file, an image, or a folder of images.

    Args:
        path: the source.
        start, end: the time range to read, seconds (None: from the start / to the end).
        stride: keep every `stride`-th frame of the range.
        fps: frame rate given to image folders (a single image or a folder has none), default 30.
    Raises InputError naming the file for a missing, unreadable or empty source.
    """

    def __init__(self, path: str | os.PathLike, start: float | None = None, end: float | None = None,
                 stride: int = 1, fps: float | None = None) -> None:
        self.path = Path(path)
        if stride < 1:
            raise InputError(f"stride must be at least 1, got {stride}")
        if start is not None and end is not None and end <= start:
            raise InputError(f"end ({end}) must come after start ({start})")
        if start is not None and start < 0:
            raise InputError(f"start must not be negative, got {start}")
        self.start, self.end, self.stride = start, end, stride
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self._images = sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not self._images:
                raise InputError(f"{self.path}: the folder holds no images")
            bad = [p.name for p in self._images if p.suffix.lower() not in IMAGE_SUFFIXES]
            if bad:
                raise InputError(f"{self.path}: not an image folder; it holds {', '.join(bad[:3])}"
                                 f"{' ...' if len(bad) > 3 else ''} (images: {', '.join(IMAGE_SUFFIXES)})")
            kind = "folder"
        elif self.path.suffix.lower() in IMAGE_SUFFIXES:
            self._images = [self.path]
            kind = "image"
        else:
            self._images = None
            kind = "video"
        if self._images is not None:
            first = _read_image(self._images[0])
            f = float(fps or 30.0)
            n = len(self._images)
            self.info = VideoInfo(self.path, first.shape[1], first.shape[0], f, n, n / f, 0, kind)
        else:
            self.info = self._probe_video()

    def _open(self):
        import av

        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError) as e:
            raise InputError(f"{self.path}: not a readable video ({e})") from None
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return container, stream

    def _probe_video(self) -> VideoInfo:
        """The video's info, probed once per file version: probing opens the container and
        decodes the first frame (about 80 ms for the Sports2D demo), and one capture reads a
        video's info three or four times (the input checks, detection, the capture's own)."""
        st = self.path.stat()
        key = (str(self.path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        with _PROBED_LOCK:
            known = _PROBED.get(key)
        if known is not None:
            return replace(known, path=self.path)
        info = self._probe_container()
        with _PROBED_LOCK:
            if len(_PROBED) >= 64:
                _PROBED.clear()
            _PROBED[key] = info
        return info

    def _probe_container(self) -> VideoInfo:
        container, stream = self._open()
        try:
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 30.0
            duration = (float(stream.duration * stream.time_base) if stream.duration
                        else (container.duration or 0) / 1e6)
            n = stream.frames or int(round(duration * fps))
            # the rotation lives on the frames; look at the first one
            try:
                first = next(container.decode(stream))
            except StopIteration:
                raise InputError(f"{self.path}: the video has no frames") from None
            except Exception as e:  # av.error.FFmpegError and friends
                raise InputError(f"{self.path}: the video could not be decoded ({e})") from None
            rot = int(getattr(first, "rotation", 0) or 0)
            w, h = (first.height, first.width) if rot % 180 else (first.width, first.height)
        finally:
            container.close()
        return VideoInfo(self.path, w, h, fps, n, duration, rot, "video")

    def __len__(self) -> int:
        """Frames this reader will yield (estimated from the container for videos)."""
        i = self.info
        a = 0 if self.start is None else int(math.ceil(self.start * i.fps - 1e-6))
        b = i.num_frames if self.end is None else min(i.num_frames, int(math.ceil(self.end * i.fps - 1e-6)))
        return max(0, (b - a + self.stride - 1) // self.stride)

    def _in_range(self, t: float) -> bool:
        return (self.start is None or t >= self.start - 1e-6) and (self.end is None or t < self.end - 1e-6)

    def __iter__(self) -> Iterator[Frame]:
        if self._images is not None:
            kept = 0
            for i, p in enumerate(self._images):
                t = i / self.info.fps
                if not self._in_range(t):
                    continue
                if kept % self.stride == 0:
                    yield Frame(i, t, _read_image(p))
                kept += 1
            return
        import av

        container, stream = self._open()
        rot = self.info.rotation
        try:
            kept, index = 0, -1
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    raise InputError(f"{self.path}: decoding failed after frame {index} ({e})") from None
                index += 1
                t = float(frame.time) if frame.time is not None else index / self.info.fps
                if self.end is not None and t >= self.end - 1e-6:
                    break
                if not self._in_range(t):
                    continue
                if kept % self.stride == 0:
                    yield Frame(index, t, _upright(frame.to_ndarray(format="rgb24"), rot))
                kept += 1
        finally:
            container.close()


def prefetched(items: Iterable, depth: int = 4) -> Iterator:
    """The items of `items` (e.g. a `VideoReader`'s frames), produced by a background thread up
    to `depth` ahead of the consumer. Decoding and converting a frame (PyAV releases the GIL
    in FFmpeg's calls) then overlaps whatever the consumer does with the previous one: a
    detector that keeps one and a half of two cores busy got 1.1x the frames/s (the Sports2D
    demo). The items come in the same order, exactly as without it; an exception raised while
    producing comes out here at its place; a consumer that stops early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the consumer, raised there
            put((end, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's own cleanup (the container), in the thread that ran it

    thread = threading.Thread(target=produce, name="meshcap-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class VideoWriter:
    """Writes RGB frames (H, W, 3) uint8 to an H.264 .mp4, atomically: the target appears (or
    is replaced) only when `close()` finishes; an exception inside `with` leaves it untouched.

    Args:
        path: output file (.mp4 or .mkv). fps: frame rate. crf: quality (lower is better).
    Odd sizes are padded by one pixel (yuv420p needs even sizes).
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 20) -> None:
        self.path = Path(path)
        if not fps > 0:
            raise InputError(f"fps must be positive, got {fps}")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self._container = None
        self._stream = None
        self._tmp = temp_beside(self.path, suffix=self.path.suffix or ".mp4")

    def write(self, image: np.ndarray) -> None:
        import av

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"frames must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if self._container is None:
            self._container = av.open(self._tmp, mode="w")
            s = self._container.add_stream("libx264", rate=self.fps)
            s.width, s.height = image.shape[1] + image.shape[1] % 2, image.shape[0] + image.shape[0] % 2
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(self.crf), "preset": "veryfast"}
            self._stream = s
        s = self._stream
        if (image.shape[1] + image.shape[1] % 2, image.shape[0] + image.shape[0] % 2) != (s.width, s.height):
            raise InputError(f"frame size changed from {s.width}x{s.height} to {image.shape[1]}x{image.shape[0]}")
        if image.shape[0] % 2 or image.shape[1] % 2:
            image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in s.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        if self._container is None:
            self.abort()
            raise InputError(f"{self.path}: no frames were written")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return publish(self._tmp, self.path)

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

