"""Mesh overlays of a Motion on its video: per frame, per person, through the fit's camera.

`OverlayRenderer.frame(index, image)` draws one frame; `render_video` streams a whole video
to H.264 and `render_still` writes one frame as a PNG. Both replace their output only when
finished.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from meshcap.errors import InputError
from meshcap.render.colors import DEFAULT_SIGMA_MAX, legend_image, paste_rgba, uncertainty_to_rgb
from meshcap.render.gl import MeshRenderer

# Per-person colours when the mesh is not coloured by uncertainty (colour-blind-safe, Okabe-Ito).
PERSON_COLORS = np.array([
    [0.00, 0.45, 0.70], [0.90, 0.62, 0.00], [0.00, 0.62, 0.45], [0.80, 0.47, 0.65],
    [0.34, 0.71, 0.91], [0.84, 0.37, 0.00], [0.94, 0.89, 0.26],
])

# Limbs drawn between detected keypoints, by name (kept if both ends are in the layout).
_KEYPOINT_EDGES = [
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
    *[(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in (
        ("shoulder", "elbow"), ("elbow", "wrist"), ("shoulder", "hip"), ("hip", "knee"),
        ("knee", "ankle"), ("ankle", "heel"), ("heel", "foot_index"), ("ankle", "foot_index"),
        ("ear", "eye"), ("eye", "nose"))],
]


@dataclass
class OverlayOptions:
    """What to draw. color: "uncertainty" (per-vertex σ with a legend) or "person".
    opacity: of the mesh over the frame. side_view: a second panel seen from the body's side.
    keypoints: the detected 2D keypoints. skeleton: the fitted joints reprojected.
    sigma_max: metres of σ drawn darkest. antialias: 4x multisampling (about half the speed
    at 1080p on a CPU)."""

    color: str = "uncertainty"
    opacity: float = 0.85
    side_view: bool = False
    keypoints: bool = False
    skeleton: bool = False
    sigma_max: float = DEFAULT_SIGMA_MAX
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.color not in ("uncertainty", "person"):
            raise ValueError(f"color must be 'uncertainty' or 'person', got {self.color!r}")
        if not 0.0 < self.opacity <= 1.0:
            raise ValueError(f"opacity must be in (0, 1], got {self.opacity}")


class OverlayRenderer:
    """Draws a Motion's people over frames of camera `camera` (default 0).

    Args:
        motion: the result to draw.
        width, height: frame size; defaults to the motion's image size for that camera. A
            different size than the fit's scales the intrinsics.
        body_model: the motion's body model (loaded from the motion when None).
        options: an `OverlayOptions`.
        camera: which of the motion's cameras the frames come from.
        distortion: that camera's lens (OpenCV k1, k2, p1, p2, k3), from its calibration; a
            motion file keeps only the pinhole part.
    """

    def __init__(self, motion, width: int | None = None, height: int | None = None, body_model=None,
                 options: OverlayOptions | None = None, camera: int = 0, chunk: int = 32,
                 distortion: np.ndarray | None = None) -> None:
        self.motion = motion
        self.opt = options or OverlayOptions()
        fit_w, fit_h = (int(x) for x in motion.image_size[camera])
        if width is None or height is None:
            if fit_w <= 0 or fit_h <= 0:
                raise InputError("the motion has no image size; give the frame width and height")
            width, height = fit_w, fit_h
        self.width, self.height = int(width), int(height)
        self._scale = np.ones(2)
        if fit_w > 0 and fit_h > 0 and (fit_w, fit_h) != (self.width, self.height):
            self._scale = np.array([self.width / fit_w, self.height / fit_h])
        self.K = self._scaled(motion.cam_K[camera])
        self._panning = motion.frame_R is not None and camera == 0  # the camera turns: see `_view`
        self.R = motion.cam_R[camera].astype(np.float64)
        self.t = motion.cam_t[camera].astype(np.float64)
        self.camera = camera
        self.dist = None if distortion is None or not np.any(distortion) else np.asarray(distortion, np.float64)
        self.model = body_model if body_model is not None else motion.load_body_model()
        self.faces = self.model.faces.cpu().numpy()
        self.weights = self.model.joint_weights().detach().cpu().numpy()  # (V, J)
        self.renderer = MeshRenderer(self.width, self.height, samples=4 if self.opt.antialias else 0)
        self._chunk, self._cache_start, self._cache = chunk, None, None
        self._side = self._side_camera() if self.opt.side_view else None
        h = max(160, self.height // 4)
        self._legend = legend_image(self.opt.sigma_max, h, round(h * 0.45)) if self.opt.color == "uncertainty" else None

    # -- geometry ------------------------------------------------------------------------------

    def _scaled(self, K) -> np.ndarray:
        K = np.asarray(K, np.float64).copy()
        K[:2] *= self._scale[:, None]
        return K

    def _view(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, R, t) of the camera at frame `index`: a panning camera's turn and zoom there
        (`Motion.camera_at`), else the fixed camera."""
        if not self._panning:
            return self.K, self.R, self.t
        K, R, t = self.motion.camera_at(index, self.camera)
        return self._scaled(K), R, t

    def _camera_vertices(self, index: int) -> dict[int, np.ndarray]:
        """{person: (V, 3) vertices in the camera frame} of the people fitted in frame `index`,
        posed in chunks of frames (one body-model call per person and chunk)."""
        start = index - index % self._chunk
        if self._cache_start != start:
            m, stop = self.motion, min(start + self._chunk, self.motion.num_frames)
            self._cache, self._cache_start = {}, start
            with torch.no_grad():
                for p in range(m.num_people):
                    frames = np.flatnonzero(m.valid[p, start:stop]) + start
                    if not len(frames):
                        continue
                    out = self.model(torch.as_tensor(m.poses[p, frames]), torch.as_tensor(m.shape[p: p + 1]),
                                     torch.as_tensor(m.transl[p, frames]), bone_scale=m.bone_scale_of(p))
                    verts = out.vertices.cpu().numpy().astype(np.float64)
                    for f, vf in zip(frames, verts):
                        K, R, t = self._view(int(f))
                        self._cache.setdefault(int(f), {})[p] = self._lens(vf @ R.T + t, K)
        return self._cache.get(index, {})

    def _lens(self, X: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
        return X if self.dist is None else lens_to_pinhole(X, self.K if K is None else K, self.dist)

    def _colors(self, p: int, index: int) -> np.ndarray:
        if self.opt.color == "person":
            return PERSON_COLORS[self.motion.person_ids[p] % len(PERSON_COLORS)]
        sigma_v = self.weights @ self.motion.uncertainty[p, index].astype(np.float64)
        return uncertainty_to_rgb(sigma_v, self.opt.sigma_max)

    def _side_camera(self) -> tuple[np.ndarray, np.ndarray]:
        """(R (3, 3), t (3,)) a fixed camera looking at the people from their right, framing
        all fitted joints of the whole motion (camera-frame coordinates in, side view out)."""
        m = self.motion
        pts = m.joints3d[m.valid].reshape(-1, 3).astype(np.float64) @ self.R.T + self.t
        if not len(pts):
            return np.eye(3), np.zeros(3)
        center = 0.5 * (pts.min(0) + pts.max(0))
        # A quarter turn about the camera's vertical (y) axis: depth becomes width.
        Ry = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        q = (pts - center) @ Ry.T
        half = np.abs(q[:, :2]).max(0) + 0.3
        f = min(self.K[0, 0], self.K[1, 1])
        dist = max(half[0] * f / (0.45 * self.width), half[1] * f / (0.45 * self.height)) + np.abs(q[:, 2]).max()
        return Ry, -Ry @ center + np.array([0.0, 0.0, dist])

    # -- drawing -------------------------------------------------------------------------------

    def frame(self, index: int | None, image: np.ndarray) -> np.ndarray:
        """Draw motion frame `index` (None: nobody, the frame passes through with its panels)
        over `image` (H, W, 3) uint8; returns (H, W, 3), or (H, 2W, 3) with the side view."""
        if image.shape[:2] != (self.height, self.width):
            raise InputError(f"frame is {image.shape[1]}x{image.shape[0]}, the renderer is {self.width}x{self.height}")
        verts = self._camera_vertices(index) if index is not None else {}
        meshes = [(v, self.faces, self._colors(p, index)) for p, v in verts.items()]
        out = self._composite(image, meshes, K=self._view(index)[0] if index is not None else self.K)
        if index is not None and ((self.opt.keypoints and self.camera == 0) or self.opt.skeleton):
            out = self._draw_2d(out, index)
        if self._legend is not None:
            paste_rgba(out, self._legend, self.width - self._legend.shape[1] - 10, 10)
        if self._side is None:
            return out
        R, t = self._side
        bg = np.full_like(image, 60)
        if self._panning and index is not None:  # the side camera stands still while the camera turns
            turn = self.motion.frame_R[index].astype(np.float64)
            meshes = [(v @ turn, f, c) for v, f, c in meshes]
        side = self._composite(bg, [(v @ R.T + t, f, c) for v, f, c in meshes], opacity=1.0)
        return np.concatenate([out, side], axis=1)

    def _composite(self, image, meshes, opacity: float | None = None, K: np.ndarray | None = None) -> np.ndarray:
        out = image.copy()
        if not meshes:
            return out
        r = self.renderer.render(meshes, self.K if K is None else K)
        x0, y0, x1, y1 = r.box
        cover = r.coverage[..., None]
        op = self.opt.opacity if opacity is None else opacity
        # r.rgb is already multiplied by coverage (anti-aliased edges blend with the clear colour)
        blend = out[y0:y1, x0:x1].astype(np.float32) * (1.0 - op * cover) + r.rgb.astype(np.float32) * op
        out[y0:y1, x0:x1] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        return out

    def _draw_2d(self, image: np.ndarray, index: int) -> np.ndarray:
        from PIL import Image, ImageDraw

        from meshcap.keypoints.layouts import get_layout

        m = self.motion
        im = Image.fromarray(image)
        draw = ImageDraw.Draw(im)
        r = max(2, round(min(self.width, self.height) / 240))
        sx = self.width / m.image_size[0][0] if m.image_size[0][0] > 0 else 1.0
        sy = self.height / m.image_size[0][1] if m.image_size[0][1] > 0 else 1.0
        names = get_layout(m.keypoint_layout).names
        edges = [(names.index(a), names.index(b)) for a, b in _KEYPOINT_EDGES if a in names and b in names]
        for p in range(m.num_people):
            if not m.valid[p, index]:
                continue
            if self.opt.keypoints and self.camera == 0:  # the motion keeps camera 0's detections
                kp = m.keypoints2d[p, index].astype(np.float64)
                xy, ok = kp[:, :2] * (sx, sy), kp[:, 2] > 0.3
                for a, b in edges:
                    if ok[a] and ok[b]:
                        draw.line([tuple(xy[a]), tuple(xy[b])], fill=(255, 255, 255), width=max(1, r // 2))
                for (x, y), good in zip(xy, ok):
                    if good:
                        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0))
            if self.opt.skeleton:
                K, R, t = self._view(index)
                X = self._lens(m.joints3d[p, index].astype(np.float64) @ R.T + t, K)
                uv = (X / X[:, 2:3]) @ K.T
                colors = (uncertainty_to_rgb(m.uncertainty[p, index], self.opt.sigma_max) * 255).astype(int)
                for j, par in enumerate(m.parents):
                    if par >= 0:
                        draw.line([tuple(uv[par, :2]), tuple(uv[j, :2])], fill=(20, 220, 90), width=max(2, r))
                for (x, y, _), c in zip(uv, colors):
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(c), outline=(20, 220, 90))
        return np.asarray(im).copy()

    def release(self) -> None:
        self.renderer.release()


def lens_to_pinhole(X: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points X (..., 3) moved, at their depth, to where the pinhole K
    projects them onto the pixel where the lens (OpenCV k1, k2, p1, p2, k3) puts them. The
    rasteriser's projection is linear; a body's triangles are small enough for their straight
    edges to follow the lens' curve."""
    from meshcap.multiview.calibration import distort_project

    uv = distort_project(torch.as_tensor(X), torch.as_tensor(K), torch.as_tensor(dist)).numpy()
    xy = (uv - K[:2, 2]) / np.diag(K)[:2]
    return np.concatenate([xy * X[..., 2:3], X[..., 2:3]], -1)


def frame_map(motion_times: np.ndarray, fps: float, video_times: np.ndarray) -> np.ndarray:
    """(N,) index of the motion frame shown at each video time (N,), or -1 where the motion has
    no frame within half a motion frame interval."""
    motion_times = np.asarray(motion_times, dtype=np.float64)
    if not len(motion_times):
        return np.full(len(video_times), -1)
    j = np.clip(np.searchsorted(motion_times, video_times), 1, len(motion_times) - 1) if len(motion_times) > 1 \
        else np.zeros(len(video_times), dtype=int)
    if len(motion_times) > 1:
        j = np.where(np.abs(motion_times[j - 1] - video_times) <= np.abs(motion_times[j] - video_times), j - 1, j)
    ok = np.abs(motion_times[j] - video_times) <= 0.5 / fps + 1e-6
    return np.where(ok, j, -1)


def render_video(motion, video: str | Path, out: str | Path, options: OverlayOptions | None = None,
                 body_model=None, progress: Callable[[int, int], None] | None = None,
                 camera: int = 0, distortion: np.ndarray | None = None, time_offset: float = 0.0) -> Path:
    """Stream `video`, draw `motion` over every frame, and write H.264 `out` at the video's
    frame rate and frame count (frames with no fitted person pass through). Returns `out`.

    camera, distortion: which of the motion's cameras filmed `video`, and its lens (see
    `OverlayRenderer`). time_offset: the video's time, seconds, at the motion's time 0 (a
    multi-view camera's frame offset over its rate)."""
    from meshcap.video import VideoReader, VideoWriter

    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: the output folder does not exist")
    reader = VideoReader(video)
    info = reader.info
    overlay = OverlayRenderer(motion, info.width, info.height, body_model, options, camera=camera,
                              distortion=distortion)
    total = len(reader)
    try:
        with VideoWriter(out, info.fps) as writer:
            for n, frame in enumerate(reader):
                j = int(frame_map(motion.frame_times, motion.fps, np.array([frame.time - time_offset]))[0])
                writer.write(overlay.frame(j if j >= 0 else None, frame.image))
                if progress is not None:
                    progress(n + 1, max(total, n + 1))
    finally:
        overlay.release()
    return out


def render_still(motion, video: str | Path, frame: int, out: str | Path,
                 options: OverlayOptions | None = None, body_model=None) -> Path:
    """Draw motion frame `frame` over the matching video frame and write the PNG `out`."""
    from PIL import Image

    from meshcap.fileio import publish, temp_beside
    from meshcap.video import VideoReader

    out = Path(out)
    if not 0 <= frame < motion.num_frames:
        raise InputError(f"frame {frame} is outside the motion's {motion.num_frames} frames")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: the output folder does not exist")
    t = float(motion.frame_times[frame])
    reader = VideoReader(video, start=max(0.0, t - 0.5 / motion.fps))
    image = None
    for f in reader:
        if abs(f.time - t) <= 0.5 / motion.fps + 1e-6:
            image = f.image
            break
        if f.time > t:
            break
    if image is None:
        raise InputError(f"{video}: has no frame at {t:.3f} s (motion frame {frame})")
    overlay = OverlayRenderer(motion, image.shape[1], image.shape[0], body_model, options)
    try:
        drawn = overlay.frame(frame, image)
    finally:
        overlay.release()
    tmp = temp_beside(out, suffix=".png")
    try:
        Image.fromarray(drawn).save(tmp, format="PNG")
        return publish(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
