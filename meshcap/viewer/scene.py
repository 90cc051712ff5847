"""Interactive playback of a Motion in the browser, on `viser`.

Why viser: it is a PyPI package whose web client (three.js, built) ships inside its wheel, so
the viewer works offline from what pip installs, with nothing of another project's code in
this repository; it serves a live viewer on localhost, and writes the same scene as one
self-contained HTML file that plays back with no server (its recording player: play/pause,
a timeline, speed, and a scene tree to show or hide each person). The alternative, a page
built on three.js from npm, would need npm on every user's machine or three.js copied into
meshcap.

What is drawn, per person: the body mesh (skinned, so a frame costs 20 bone poses, not a
mesh), semi-transparent so the skeleton shows through; the skeleton's joints and bones,
coloured per frame by the fit's uncertainty (the renderer's colour map); people who were not
fitted in a frame are hidden. The Motion's world is turned y-up (`Motion.y_up_rotation`).
"""
from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import numpy as np
import roma
import torch

from meshcap.errors import DependencyError, InputError
from meshcap.render.colors import DEFAULT_SIGMA_MAX, uncertainty_to_rgb
from meshcap.render.overlay import PERSON_COLORS

def _y_up_wxyz(motion) -> tuple[float, float, float, float]:
    """The Motion's world turned y up (`Motion.y_up_rotation`), as a wxyz quaternion (the
    floor's lift, `Motion.y_up_transform`, is the frame's position)."""
    x, y, z, w = roma.rotmat_to_unitquat(torch.as_tensor(motion.y_up_rotation())).tolist()
    return (w, x, y, z)


def _viser():
    try:
        import viser
    except ImportError:
        raise DependencyError("the viewer needs viser: pip install viser") from None
    return viser


def _world_rotations(poses: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(T, J, 3, 3) world rotations of every joint from local axis-angle poses (T, J, 3)."""
    local = roma.rotvec_to_rotmat(torch.as_tensor(poses, dtype=torch.float64)).numpy()
    world = np.empty_like(local)
    for j, p in enumerate(parents):
        world[:, j] = local[:, j] if p < 0 else world[:, p] @ local[:, j]
    return world


class MotionScene:
    """A Motion's people as viser scene nodes, posed with `show(frame)`.

    Args:
        server: a `viser.ViserServer`.
        motion: the result to show; body_model: its body model (loaded when None).
        mesh_opacity: of the body meshes; sigma_max: metres of σ drawn darkest.
    """

    def __init__(self, server, motion, body_model=None, mesh_opacity: float = 0.55,
                 sigma_max: float = DEFAULT_SIGMA_MAX) -> None:
        if not motion.valid.any():
            raise InputError("the motion has no fitted frame to show")
        self.server, self.motion, self.sigma_max = server, motion, sigma_max
        model = body_model if body_model is not None else motion.load_body_model()
        faces = model.faces.cpu().numpy().astype(np.uint32)
        weights = model.joint_weights().detach().cpu().numpy()
        J = len(motion.joint_names)
        self._bones = [(j, p) for j, p in enumerate(motion.parents) if p >= 0]
        server.scene.set_up_direction("+y")
        server.scene.add_frame("/motion", wxyz=_y_up_wxyz(motion), position=tuple(motion.y_up_transform()[1]),
                               show_axes=False)
        self._world_rot = []
        self.meshes, self.joints, self.bones = [], [], []
        for p in range(motion.num_people):
            pid = int(motion.person_ids[p])
            shape = torch.as_tensor(motion.shape[p: p + 1], dtype=model.dtype)
            with torch.no_grad():
                scale = motion.bone_scale_of(p)  # skinned from the scaled body's rest pose
                rest = model(torch.zeros(1, J, 3, dtype=model.dtype), shape, bone_scale=scale).vertices[0].cpu().numpy()
                rest_joints = model.rest_joints(shape, scale)[0].cpu().numpy()
            color = tuple(int(c * 255) for c in PERSON_COLORS[pid % len(PERSON_COLORS)])
            base = f"/motion/person_{pid}"
            self.meshes.append(server.scene.add_mesh_skinned(
                f"{base}/mesh", rest.astype(np.float32), faces,
                bone_wxyzs=np.tile([1.0, 0.0, 0.0, 0.0], (J, 1)), bone_positions=rest_joints,
                skin_weights=weights, color=color, opacity=mesh_opacity, cast_shadow=False,
                receive_shadow=False))
            self.joints.append(server.scene.add_point_cloud(
                f"{base}/joints", np.zeros((J, 3), np.float32), np.zeros((J, 3), np.uint8),
                point_size=0.05, point_shape="circle", precision="float32"))
            self.bones.append(server.scene.add_line_segments(
                f"{base}/bones", np.zeros((len(self._bones), 2, 3), np.float32),
                np.zeros((len(self._bones), 2, 3), np.uint8), thickness=3.0, thickness_units="screen"))
            self._world_rot.append(roma.rotmat_to_unitquat(
                torch.as_tensor(_world_rotations(motion.poses[p], motion.parents))).numpy())  # xyzw
        self._center_camera()

    FOV = np.radians(50.0)  # vertical

    def _center_camera(self) -> None:
        """Look at the people from where the video's camera stood, a little higher, far enough
        back to keep everyone's whole path in view."""
        m = self.motion
        R, lift = m.y_up_transform()
        pts = m.joints3d[m.valid].reshape(-1, 3) @ R.T + lift  # y up, as drawn
        lo, hi = pts.min(0), pts.max(0)
        center = 0.5 * (lo + hi)
        half = 0.5 * max(hi[0] - lo[0], hi[1] - lo[1]) + 0.4
        direction = np.array([0.0, 0.2, 1.0]) / np.linalg.norm([0.0, 0.2, 1.0])
        dist = half / np.tan(self.FOV / 2) + 0.5 * (hi[2] - lo[2])
        cam = self.server.initial_camera
        cam.fov = float(self.FOV)
        cam.look_at = tuple(center)
        cam.position = tuple(center + direction * dist)

    def show(self, frame: int, people: list[int] | None = None, mesh: bool = True,
             skeleton: bool = True) -> None:
        """Pose everyone at `frame`; only `people` (indices; None: all) are shown."""
        m = self.motion
        for p in range(m.num_people):
            on = bool(m.valid[p, frame]) and (people is None or p in people)
            self.meshes[p].visible = on and mesh
            self.joints[p].visible = self.bones[p].visible = on and skeleton
            if not on:
                continue
            x = m.joints3d[p, frame]
            q = self._world_rot[p][frame]
            with self.server.atomic():
                for j, bone in enumerate(self.meshes[p].bones):
                    bone.wxyz = (q[j, 3], q[j, 0], q[j, 1], q[j, 2])
                    bone.position = x[j]
                colors = (uncertainty_to_rgb(m.uncertainty[p, frame], self.sigma_max) * 255).astype(np.uint8)
                self.joints[p].points = x.astype(np.float32)
                self.joints[p].colors = colors
                idx = np.array(self._bones)
                self.bones[p].points = x[idx].astype(np.float32)  # (n, 2, 3): child, parent
                self.bones[p].colors = colors[idx]


def write_html(motion, path: str | Path, body_model=None, port: int = 0) -> Path:
    """Write a self-contained HTML page that plays `motion` back in any browser, offline: the
    viewer (viser's client) and the recorded scene are both inside the one file."""
    from meshcap.fileio import write_text_atomic

    viser = _viser()
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: the output folder does not exist")
    server = _quiet_server(viser, "127.0.0.1", port or _free_port())
    try:
        scene = MotionScene(server, motion, body_model)
        scene.show(int(np.flatnonzero(motion.valid.any(0))[0]))
        rec = server.get_scene_serializer()
        dt = 1.0 / motion.fps
        for t in range(motion.num_frames):
            scene.show(t)
            rec.insert_sleep(dt)
        html = rec.as_html()
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            server.stop()
    return write_text_atomic(path, html)


def serve(motion, body_model=None, host: str = "127.0.0.1", port: int = 8080,
          stop: threading.Event | None = None) -> None:
    """Serve an interactive viewer of `motion` at http://host:port until `stop` is set (or
    Ctrl-C): timeline slider, play/pause, speed, person selection, mesh and skeleton toggles."""
    viser = _viser()
    server = _quiet_server(viser, host, port)
    scene = MotionScene(server, motion, body_model)
    m = motion
    gui = server.gui
    gui.add_markdown(f"**meshcap** · {m.num_people} people, {m.num_frames} frames at {m.fps:g} fps")
    frame = gui.add_slider("frame", min=0, max=max(m.num_frames - 1, 1), step=1, initial_value=0)
    playing = gui.add_checkbox("playing", initial_value=True)
    speed = gui.add_dropdown("speed", ("0.25x", "0.5x", "1x", "2x"), initial_value="1x")
    choices = ("everyone",) + tuple(f"person {int(i)}" for i in m.person_ids)
    person = gui.add_dropdown("people", choices, initial_value="everyone")
    show_mesh = gui.add_checkbox("mesh", initial_value=True)
    show_skeleton = gui.add_checkbox("skeleton (coloured by σ)", initial_value=True)
    gui.add_markdown(f"Joint colours: σ from 0 cm (pale blue) through yellow to "
                     f"{scene.sigma_max * 100:.0f}+ cm (dark red).")

    def redraw(_=None) -> None:
        people = None if person.value == "everyone" else [choices.index(person.value) - 1]
        scene.show(int(frame.value), people, show_mesh.value, show_skeleton.value)

    for control in (frame, person, show_mesh, show_skeleton):
        control.on_update(redraw)
    redraw()
    print(f"meshcap viewer on http://{host}:{server.get_port()} (Ctrl-C to stop)")
    stop = stop or threading.Event()
    try:
        while not stop.is_set():
            if playing.value:
                frame.value = (int(frame.value) + 1) % m.num_frames  # on_update redraws
            time.sleep(1.0 / (m.fps * float(speed.value[:-1])))
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _quiet_server(viser, host: str, port: int):
    """A viser server without its start-up banner (meshcap prints its own address)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return viser.ViserServer(host=host, port=port, verbose=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
