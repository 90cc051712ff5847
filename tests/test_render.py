"""The offscreen renderer and the overlay video: silhouettes where the mesh projects, colours
that order uncertainty, and overlays with the input's frames and rate."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from command import run_main
from meshcap import Motion
from meshcap.render import MeshRenderer, legend_image, luminance, uncertainty_to_rgb
from meshcap.synthetic import camera_root_rotation, sample_body_poses
from meshcap.video import VideoReader


def _run(*args):
    return subprocess.run([sys.executable, "-m", "meshcap.cli", *args], capture_output=True, text=True)


def _projected_silhouette(vertices, faces, K, width, height):
    """The mesh's silhouette by an independent route: every triangle projected, and the pixel
    centres (integer coordinates, OpenCV's convention) inside it marked."""
    uv = vertices[:, :2] / vertices[:, 2:] @ np.diag([K[0, 0], K[1, 1]]) + K[:2, 2]
    mask = np.zeros((height, width), bool)
    for a, b, c in uv[faces]:
        x0, y0 = np.maximum(np.ceil(np.minimum(np.minimum(a, b), c)), 0).astype(int)
        x1, y1 = np.minimum(np.floor(np.maximum(np.maximum(a, b), c)), (width - 1, height - 1)).astype(int)
        if x1 < x0 or y1 < y0:
            continue
        X, Y = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
        d = [(q[0] - p[0]) * (Y - p[1]) - (q[1] - p[1]) * (X - p[0]) for p, q in ((a, b), (b, c), (c, a))]
        inside = ((d[0] >= 0) & (d[1] >= 0) & (d[2] >= 0)) | ((d[0] <= 0) & (d[1] <= 0) & (d[2] <= 0))
        mask[y0: y1 + 1, x0: x1 + 1] |= inside
    return mask


@pytest.mark.parametrize("samples", [0, 4])
def test_silhouette_matches_the_mesh_projection(anny_full, samples):
    model = anny_full
    g = torch.Generator().manual_seed(3)
    pose = sample_body_poses(model, 2, g)
    pose[:, 0] = camera_root_rotation(torch.tensor([0.6, -2.0]), torch.tensor([0.1, -0.15]))
    transl = torch.tensor([[-0.5, 0.1, 4.0], [0.6, -0.2, 5.5]], dtype=pose.dtype)
    shape = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.9, 0.3, 0.7, 0.8, 0.4]], dtype=pose.dtype)
    with torch.no_grad():
        verts = model(pose, shape, transl).vertices.numpy()
    faces = model.faces.numpy()
    W, H = 480, 360
    K = np.array([[420.0, 0, 250], [0, 420.0, 170], [0, 0, 1]])
    with MeshRenderer(W, H, samples=samples) as r:
        out = r.render([(v, faces, (0.7, 0.7, 0.7)) for v in verts], K)
    got = out.full_coverage() > 0.5
    want = np.zeros((H, W), bool)
    for v in verts:
        want |= _projected_silhouette(v, faces, K, W, H)
    iou = (got & want).sum() / (got | want).sum()
    assert want.sum() > 5000  # both bodies are in view
    assert iou >= 0.95, iou
    # shading: lit surfaces, no pixels outside the box the renderer reported
    assert out.rgb[out.coverage > 0.99].mean() > 60


def test_uncertainty_colours_are_ordered():
    sigma = np.linspace(0.0, 0.2, 201)
    lum = luminance(uncertainty_to_rgb(sigma, sigma_max=0.15))
    assert (np.diff(lum[:151]) < 0).all()  # darker with every step up to sigma_max
    assert np.allclose(lum[150:], lum[150])  # saturated beyond
    assert np.allclose(uncertainty_to_rgb(np.nan), uncertainty_to_rgb(1.0))  # unknown reads as unsure
    legend = legend_image(0.15, 200, 90)
    assert legend.shape == (200, 90, 4)
    bar = legend[25:-12, 12, :3].astype(float) / 255  # the bar's column, top (unsure) to bottom
    assert luminance(bar[0]) < luminance(bar[-1])
    with pytest.raises(ValueError, match="sigma_max"):
        uncertainty_to_rgb(0.1, sigma_max=0)


def test_lens_distortion_is_drawn_where_the_lens_puts_points():
    """Multi-view overlays: a point moved by `lens_to_pinhole` projects through the plain
    pinhole onto the distorted pixel (barrel lens, points out to the image corners)."""
    from meshcap.multiview.calibration import distort_project
    from meshcap.render.overlay import lens_to_pinhole

    K = np.array([[1400.0, 0, 540], [0, 1400, 960], [0, 0, 1]])
    dist = np.array([-0.25, 0.08, 0.001, -0.0005, 0.0])
    g = np.random.default_rng(0)
    X = np.c_[g.uniform(-1.5, 1.5, (200, 2)), g.uniform(2.0, 6.0, 200)]
    Y = lens_to_pinhole(X, K, dist)
    want = distort_project(torch.as_tensor(X), torch.as_tensor(K), torch.as_tensor(dist)).numpy()
    got = (Y / Y[:, 2:]) @ K.T
    assert np.allclose(Y[:, 2], X[:, 2]) and np.abs(got[:, :2] - want).max() < 1e-6
    assert np.abs(want - (X / X[:, 2:]) @ K.T[:, :2]).max() > 20  # the lens does move them


def test_capture_renders_an_overlay_of_the_input(clip_capture):
    clip, out, overlay = clip_capture
    tmp_path = out.parent
    src, drawn = VideoReader(clip), VideoReader(overlay)
    assert (drawn.info.width, drawn.info.height) == (src.info.width, src.info.height)
    assert drawn.info.fps == pytest.approx(src.info.fps)
    frames_in = [f.image for f in src]
    frames_out = [f.image for f in drawn]
    assert len(frames_out) == len(frames_in) == 45
    # the bodies are drawn where the fitted joints project, and the rest of the frame is the video
    m = Motion.load(out)
    t = int(np.flatnonzero(m.valid.any(0))[len(m.valid[0]) // 2])
    diff = np.abs(frames_out[t].astype(int) - frames_in[t].astype(int)).sum(-1)
    K = m.cam_K[0]
    for p in np.flatnonzero(m.valid[:, t]):
        jc = m.joints3d[p, t] @ m.cam_R[0].T + m.cam_t[0]  # the camera's frame
        uv = jc[:, :2] / jc[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
        x, y = np.round(uv[m.joint_names.index("spine03")]).astype(int)
        assert diff[y - 3: y + 4, x - 3: x + 4].mean() > 30, p  # the torso is painted over
    assert np.median(diff[:, : diff.shape[1] // 8]) < 12  # far left strip: nobody, codec noise only

    # a still with the side view, and the detected keypoints
    png = tmp_path / "still.png"
    r = _run("render", str(out), "--video", str(clip), "--frame", str(t), "--png", str(png), "--side-view",
             "--draw-keypoints", "--draw-skeleton")
    assert r.returncode == 0, r.stderr
    still = np.asarray(Image.open(png))
    assert still.shape == (src.info.height, 2 * src.info.width, 3)
    side = still[:, src.info.width:]
    assert (np.abs(side.astype(int) - 60).sum(-1) > 30).mean() > 0.002  # bodies on the side panel


def test_render_bad_input(clip_capture, tmp_path):
    clip = clip_capture[0]
    missing = tmp_path / "none.npz"
    r = run_main("render", str(missing), "--video", str(clip), "--out", str(tmp_path / "o.mp4"))
    assert r.returncode == 2 and "no such motion file" in r.stderr
    assert not (tmp_path / "o.mp4").exists()
    r = run_main(str(clip), "--out", str(tmp_path / "m.npz"), "--render", str(tmp_path / "nowhere" / "o.mp4"))
    assert r.returncode == 2 and "output folder does not exist" in r.stderr
    assert not (tmp_path / "m.npz").exists()
    r = run_main("render", "--help")
    assert r.returncode == 0 and "Exit codes" in r.stdout


def test_example_drives_a_mesh_from_the_capture(clip_capture, tmp_path):
    """examples/drive_mesh.py: the meshes it writes are the fitted bodies (their joints inside)."""
    from pathlib import Path

    import trimesh

    _, motion_path, _ = clip_capture
    script = Path(__file__).parents[1] / "examples" / "drive_mesh.py"
    m = Motion.load(motion_path)
    t = int(np.flatnonzero(m.valid[0])[5])
    r = subprocess.run([sys.executable, str(script), str(motion_path), "--frame", str(t), "--out",
                        str(tmp_path / "f.ply")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mesh = trimesh.load(tmp_path / "f.ply", process=False)
    for p in np.flatnonzero(m.valid[:, t]):
        pelvis = m.joints3d[p, t, 0]
        assert np.linalg.norm(mesh.vertices - pelvis, axis=1).min() < 0.25  # the surface is around the joints
    lo, hi = m.joints3d[m.valid[:, t], t].min((0, 1)), m.joints3d[m.valid[:, t], t].max((0, 1))
    assert (mesh.vertices.min(0) > lo - 0.4).all() and (mesh.vertices.max(0) < hi + 0.4).all()


def test_overlays_draw_the_scaled_body(anny_full):
    """A Motion with bone scales (shins and thighs 0.8) is drawn as the scaled body: its overlay
    covers that body's projected silhouette, which ends well above the unscaled body's feet."""
    from meshcap.render.overlay import OverlayOptions, OverlayRenderer

    model = anny_full
    J, W, H = model.num_joints, 480, 360
    pose = torch.zeros(1, J, 3)
    pose[:, 0] = camera_root_rotation(torch.tensor([0.3]), torch.tensor([0.0]))
    transl = torch.tensor([[0.0, -0.1, 3.5]])
    shape = model.default_shape(1).float()
    scale = torch.ones(1, J)
    for n in ("upperleg01.L", "upperleg01.R", "lowerleg01.L", "lowerleg01.R"):
        scale[0, model.joint_names.index(n)] = 0.8
    with torch.no_grad():
        joints = model(pose, shape, transl, vertices=False, bone_scale=scale).joints
        verts = {s: model(pose, shape, transl, bone_scale=b).vertices[0].numpy() for s, b in (("scaled", scale), ("plain", None))}
    K = np.array([[420.0, 0, 240], [0, 420.0, 180], [0, 0, 1]], np.float32)
    motion = Motion(fps=30.0, body_model="anny", joint_names=model.joint_names, parents=np.array(model.parents),
                    poses=pose[None].numpy(), shape=shape.numpy(), transl=transl[None].numpy(),
                    joints3d=joints[None].numpy(), valid=np.ones((1, 1), bool),
                    keypoints2d=np.zeros((1, 1, 33, 3), np.float32), keypoint_layout="blazepose33",
                    uncertainty=np.full((1, 1, J), 0.02, np.float32), cam_K=K[None], image_size=np.array([[W, H]]),
                    bone_scale=scale.numpy())
    r = OverlayRenderer(motion, body_model=model, options=OverlayOptions(color="person", opacity=1.0, antialias=False))
    try:
        drawn = (r.frame(0, np.zeros((H, W, 3), np.uint8)) > 0).any(-1)
    finally:
        r.release()
    faces = model.faces.numpy()
    want = {k: _projected_silhouette(v, faces, K, W, H) for k, v in verts.items()}
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(drawn, want["scaled"]) > 0.95 and iou(drawn, want["plain"]) < 0.85
    lowest = lambda m: np.flatnonzero(m.any(1)).max()  # noqa: E731
    assert lowest(drawn) < lowest(want["plain"]) - 15  # the legs 16 cm shorter: 19 px at 3.5 m
