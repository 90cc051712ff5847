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


class MeshRenderer:
    """Renders coloured triangle meshes seen by a pinhole camera into RGB images.

    Args:
        width, height: image size in pixels.
        samples: multisample anti-aliasing (0 or 1 to turn it off).
    Raises DependencyError with what to install when no EGL context can be made.
    """

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
        self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.prog["size"].value = (float(width), float(height))
        size = (self.width, self.height)
        samples = samples if samples > 1 else 0
        self._fbo = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer(size, 4, samples=samples)],
            depth_attachment=self.ctx.depth_renderbuffer(size, samples=samples))
        # Multisampled buffers cannot be read: resolve into a plain one first.
        self._resolve = self.ctx.framebuffer(color_attachments=[self.ctx.renderbuffer(size, 4)]) if samples else None

    def render(self, meshes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], K: np.ndarray,
               near: float = 0.05, far: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
        """Draw meshes, each `(vertices (V, 3) in the camera frame, faces (F, 3), colours (V, 3)
        in [0, 1])`, through intrinsics K (3, 3).

        Returns (rgb (H, W, 3) uint8, coverage (H, W) float32 in [0, 1]): coverage is the
        fraction of each pixel covered by a mesh (anti-aliased edges are fractional).
        """
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be (3, 3), got {K.shape}")
        ctx = self.ctx
        self.prog["intr"].value = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        self.prog["clip"].value = (near, far)
        self._fbo.use()
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
        src = self._fbo
        if self._resolve is not None:
            ctx.copy_framebuffer(self._resolve, self._fbo)
            src = self._resolve
        rgba = np.frombuffer(src.read(components=4), dtype=np.uint8).reshape(self.height, self.width, 4)
        return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0

    def release(self) -> None:
        self.ctx.release()

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
