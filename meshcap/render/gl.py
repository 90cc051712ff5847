"""Offscreen triangle-mesh rendering through OpenGL on EGL (`moderngl`), no display needed.

On a machine without a GPU, EGL runs on Mesa's software rasteriser (llvmpipe; Debian packages
`libegl1 libegl-mesa0 libgl1-mesa-dri`). `moderngl` was chosen over `pyrender`: pyrender pins
PyOpenGL 3.1.0, which breaks headless contexts and needs a second pip install outside the
resolver to fix, and moderngl draws the same frames about 8 times faster on the CPU. What
moderngl leaves to us is two small shaders: an OpenCV pinhole projection and a head light.

Cameras are OpenCV's: x right, y down, z forward, intrinsics K in pixels, image origin at the
top-left corner. Vertices are given in that camera's frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from meshcap.errors import DependencyError

_VERTEX_SHADER = """
#version 330
uniform vec4 intr;      // fx, fy, cx, cy (pixels)
uniform vec2 size;      // width, height (pixels)
uniform vec2 clip;      // near, far (metres)
in vec3 in_pos;         // camera frame, OpenCV axes
in vec3 in_normal;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
void main() {
    float z = in_pos.z;
    // Pixel coordinates u, v -> NDC, multiplied through by w = z. NDC y = -1 lands on the
    // first row read back, so images come out top row first with no flip.
    float u = intr.x * in_pos.x + intr.z * z;
    float v = intr.y * in_pos.y + intr.w * z;
    float n = clip.x, f = clip.y;
    gl_Position = vec4(2.0 * u / size.x - z, 2.0 * v / size.y - z,
                       (z * (f + n) - 2.0 * f * n) / (f - n), z);
    v_pos = in_pos;
    v_normal = in_normal;
    v_color = in_color;
}
"""

_FRAGMENT_SHADER = """
#version 330
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
out vec4 out_color;
void main() {
    vec3 n = normalize(v_normal);
    vec3 to_eye = normalize(-v_pos);
    float diffuse = abs(dot(n, to_eye));              // a head light; both faces lit
    vec3 h = normalize(to_eye + vec3(0.0, -0.5, 0.0)); // a touch of highlight from above
    float spec = pow(abs(dot(n, h)), 32.0);
    vec3 c = v_color * (0.30 + 0.70 * diffuse) + 0.08 * spec;
    out_color = vec4(clamp(c, 0.0, 1.0), 1.0);
}
"""


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(..., V, 3) unit area-weighted vertex normals of `vertices` (..., V, 3), faces (F, 3)."""
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    fn = torch.linalg.cross(v1 - v0, v2 - v0)  # length = 2 * area: area weighting for free
    vn = torch.zeros_like(vertices)
    for i in range(3):
        vn.index_add_(-2, faces[:, i], fn)
    return torch.nn.functional.normalize(vn, dim=-1)


@dataclass
class Rendering:
    """What `MeshRenderer.render` drew: only the box (x0, y0, x1, y1) of the image the meshes
    can reach is rendered (people rarely fill the frame; the rest costs nothing).

    rgb: (y1-y0, x1-x0, 3) uint8, already multiplied by coverage. coverage: (y1-y0, x1-x0)
    float32 in [0, 1], the fraction of each pixel the meshes cover (edges are anti-aliased).
    """

    rgb: np.ndarray
    coverage: np.ndarray
    box: tuple[int, int, int, int]
    size: tuple[int, int]  # full image width, height

    def full_coverage(self) -> np.ndarray:
        """(H, W) coverage over the whole image."""
        out = np.zeros(self.size[::-1], dtype=np.float32)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.coverage
        return out


class MeshRenderer:
    """Renders coloured triangle meshes seen by a pinhole camera into RGB images.

    Args:
        width, height: image size in pixels.
        samples: multisample anti-aliasing (0 or 1 to turn it off).
    Raises DependencyError with what to install when no EGL context can be made.
    """

    _TILE = 128  # buffer sizes are rounded up to this, so a few buffers serve a whole video

    def __init__(self, width: int, height: int, samples: int = 4) -> None:
        import moderngl

        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as e:  # the message of a missing libEGL is cryptic; say what helps
            raise DependencyError(
                f"cannot create an offscreen OpenGL context through EGL ({e}); on Debian/Ubuntu "
                "install: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri") from None
        self.width, self.height = int(width), int(height)
        self.samples = samples if samples > 1 else 0
        self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self._buffers: dict[tuple[int, int], tuple] = {}

    def _framebuffers(self, w: int, h: int):
        """(draw, read) framebuffers of at least w x h, cached by rounded size."""
        key = (-(-w // self._TILE) * self._TILE, -(-h // self._TILE) * self._TILE)
        if key not in self._buffers:
            ctx, s = self.ctx, self.samples
            draw = ctx.framebuffer(color_attachments=[ctx.renderbuffer(key, 4, samples=s)],
                                   depth_attachment=ctx.depth_renderbuffer(key, samples=s))
            # Multisampled buffers cannot be read: they are resolved into a plain one first.
            read = ctx.framebuffer(color_attachments=[ctx.renderbuffer(key, 4)]) if s else draw
            self._buffers[key] = (draw, read)
        return self._buffers[key]

    def _box(self, meshes, K, near) -> tuple[int, int, int, int] | None:
        """Pixel box the meshes can cover (the whole image if any vertex is behind the camera
        plane, where projection says nothing)."""
        lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
        for vertices, _, _ in meshes:
            v = np.asarray(vertices, dtype=np.float64)
            if (v[:, 2] <= near).any():
                return 0, 0, self.width, self.height
            uv = v[:, :2] / v[:, 2:] * (K[0, 0], K[1, 1]) + (K[0, 2], K[1, 2])
            lo, hi = np.minimum(lo, uv.min(0)), np.maximum(hi, uv.max(0))
        if not np.isfinite(lo).all():
            return None
        x0, y0 = np.clip(np.floor(lo) - 2, 0, (self.width, self.height)).astype(int)
        x1, y1 = np.clip(np.ceil(hi) + 2, 0, (self.width, self.height)).astype(int)
        return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None

    def render(self, meshes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], K: np.ndarray,
               near: float = 0.05, far: float = 200.0) -> Rendering:
        """Draw meshes, each `(vertices (V, 3) in the camera frame, faces (F, 3), colours (V, 3)
        in [0, 1] or (3,))`, through intrinsics K (3, 3). Returns a `Rendering`."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be (3, 3), got {K.shape}")
        box = self._box(meshes, K, near)
        if box is None:
            return Rendering(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.float32), (0, 0, 0, 0),
                             (self.width, self.height))
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        draw, read = self._framebuffers(w, h)
        bw, bh = draw.size
        ctx = self.ctx
        # The box's corner becomes the buffer's origin: shift the principal point. The half pixel:
        # OpenCV puts pixel centres at integer coordinates, OpenGL at half-integers.
        self.prog["intr"].value = (K[0, 0], K[1, 1], K[0, 2] - x0 + 0.5, K[1, 2] - y0 + 0.5)
        self.prog["size"].value = (float(bw), float(bh))
        self.prog["clip"].value = (near, far)
        draw.use()
        ctx.clear(0.0, 0.0, 0.0, 0.0)
        ctx.enable(ctx.DEPTH_TEST)
        for vertices, faces, colors in meshes:
            v = torch.as_tensor(np.asarray(vertices, dtype=np.float32))
            f = torch.as_tensor(np.asarray(faces, dtype=np.int64))
            if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
                raise ValueError(f"a mesh needs vertices (V, 3) and faces (F, 3), got {tuple(v.shape)}, {tuple(f.shape)}")
            c = np.broadcast_to(np.asarray(colors, dtype=np.float32), v.shape)
            n = vertex_normals(v, f).numpy()
            data = np.concatenate([v.numpy(), n, c], axis=1).astype("f4")
            vbo = ctx.buffer(data.tobytes())
            ibo = ctx.buffer(f.numpy().astype("i4").tobytes())
            vao = ctx.vertex_array(self.prog, [(vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")],
                                   index_buffer=ibo)
            vao.render()
            for obj in (vao, vbo, ibo):
                obj.release()
        if read is not draw:
            ctx.copy_framebuffer(read, draw)
        rgba = np.frombuffer(read.read(viewport=(0, 0, w, h), components=4), dtype=np.uint8).reshape(h, w, 4)
        return Rendering(rgba[..., :3], rgba[..., 3].astype(np.float32) / 255.0, box, (self.width, self.height))

    def release(self) -> None:
        self.ctx.release()

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
