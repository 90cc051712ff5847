"""The viewer in a real browser: Debian's Chromium, headless, plays the offline HTML page of a
real capture; the bodies are drawn where they project, and the picture changes over time."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from meshcap import Motion
from meshcap.viewer.scene import MotionScene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
W, H = 1200, 900
UI = [(slice(0, 200), slice(0, 330)), (slice(H - 45, H), slice(0, W))]  # notification, playback bar
# The live viewer's control panel: its height varies while the page settles (an empty block
# above the controls comes and goes), so the whole strip it can reach is left out.
PANEL = (slice(0, 600), slice(W - 345, W))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("MESHCAP_REQUIRE_BROWSER"),
    reason="no chromium on this machine (apt-get install chromium; .ci/run installs it)")


def _covers(live: bool) -> list[tuple[slice, slice]]:
    """The (rows, cols) regions the page's controls cover: the live viewer adds its panel."""
    return UI + [PANEL] if live else UI


def _visible(x: float, y: float, live: bool) -> bool:
    """Whether pixel (x, y) is on the canvas and not under the page's controls."""
    if not (4 <= x < W - 4 and 4 <= y < H - 4):
        return False
    return not any(r.start - 4 <= y < r.stop + 4 and c.start - 4 <= x < c.stop + 4 for r, c in _covers(live))


def _screenshot(url: str, out, user_data, virtual_ms: int) -> np.ndarray:
    assert CHROMIUM, "chromium is required here (MESHCAP_REQUIRE_BROWSER is set)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", f"--user-data-dir={user_data}", f"--window-size={W},{H}",
             f"--virtual-time-budget={virtual_ms}", f"--screenshot={out}"]
    r = subprocess.run([CHROMIUM, *flags, url], capture_output=True, text=True, timeout=180)
    assert out.exists(), r.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def _look_at_projection(motion):
    """Pixel positions (P, T, J, 2) of the motion's joints as the viewer's initial camera sees
    them (three.js: looks down -z, y up, vertical fov, canvas = window), in the y-up frame the
    viewer draws the motion's world in (a grounded world as it is, a camera frame turned)."""
    pts = motion.joints3d @ motion.y_up_rotation().T
    seen = pts[motion.valid].reshape(-1, 3)
    lo, hi = seen.min(0), seen.max(0)
    center = 0.5 * (lo + hi)
    half = 0.5 * max(hi[0] - lo[0], hi[1] - lo[1]) + 0.4
    d = np.array([0.0, 0.2, 1.0]) / np.linalg.norm([0.0, 0.2, 1.0])
    eye = center + d * (half / np.tan(MotionScene.FOV / 2) + 0.5 * (hi[2] - lo[2]))
    back = (eye - center) / np.linalg.norm(eye - center)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(back, right), back])
    X = (pts - eye) @ R.T
    f = H / 2 / np.tan(MotionScene.FOV / 2)
    return np.stack([W / 2 + f * X[..., 0] / -X[..., 2], H / 2 - f * X[..., 1] / -X[..., 2]], -1)


def _foreground(shot: np.ndarray, live: bool) -> np.ndarray:
    """Pixels that differ from the page's white background, the page's controls left out."""
    fg = np.abs(shot - 255).sum(-1) > 40
    for rows, cols in _covers(live):
        fg[rows, cols] = False
    return fg


def _drawn(shot: np.ndarray, m, uv, live: bool = False) -> np.ndarray:
    """The foreground mask of a screenshot, after checking that it shows the motion: drawn
    pixels lie where the people project, and some frame's pelvis, chest and head are drawn."""
    fg = _foreground(shot, live)
    ys, xs = np.nonzero(fg)
    assert len(xs) > 1500, "nothing drawn"
    # everything drawn lies where the people's joints project over the motion (+ a margin)
    box = uv[m.valid].reshape(-1, 2)
    inside = ((xs > box[:, 0].min() - 40) & (xs < box[:, 0].max() + 40)
              & (ys > box[:, 1].min() - 40) & (ys < box[:, 1].max() + 40))
    assert inside.mean() > 0.98, inside.mean()
    # some frame of the motion matches the picture: every person fitted there has drawn
    # pixels at their pelvis, chest and head
    parts = [m.joint_names.index(n) for n in ("root", "spine03", "head")]
    best = 0.0
    for t in range(m.num_frames):
        hits = [fg[int(round(y)) - 4: int(round(y)) + 5, int(round(x)) - 4: int(round(x)) + 5].any()
                for p in np.flatnonzero(m.valid[:, t]) for x, y in uv[p, t, parts] if _visible(x, y, live)]
        if hits:
            best = max(best, float(np.mean(hits)))
    assert best == 1.0, best
    return fg


def test_offline_page_plays_the_capture_in_chromium(clip_capture, tmp_path):
    _, motion_path, _ = clip_capture
    page = tmp_path / "view.html"
    r = subprocess.run([sys.executable, "-m", "meshcap.cli", "view", str(motion_path), "--html", str(page)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = Motion.load(motion_path)
    uv = _look_at_projection(m)
    shots = [_screenshot(page.as_uri(), tmp_path / f"t{ms}.png", tmp_path / f"profile{ms}", ms) for ms in (600, 1400)]
    masks = [_drawn(shot, m, uv) for shot in shots]
    changed = (masks[0] ^ masks[1]).sum()
    assert changed > 200, changed  # the two times show different poses


def test_live_viewer_serves_the_capture(clip_capture, tmp_path):
    import threading
    import urllib.request

    from meshcap.viewer import serve
    from meshcap.viewer.scene import _free_port

    m = Motion.load(clip_capture[1])
    port, stop = _free_port(), threading.Event()
    server = threading.Thread(target=serve, args=(m,), kwargs=dict(port=port, stop=stop), daemon=True)
    server.start()
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except OSError:
                threading.Event().wait(0.2)
        # The page shows the scene once the websocket has delivered it and the initial camera,
        # which can take a while on a busy machine: look again with a longer budget, and fail
        # only if the last look is wrong too.
        uv = _look_at_projection(m)
        for attempt, budget in enumerate((3000, 8000, 20000)):
            shot = _screenshot(f"http://127.0.0.1:{port}/", tmp_path / f"live{attempt}.png",
                               tmp_path / f"profile{attempt}", budget)
            try:
                _drawn(shot, m, uv, live=True)
                break
            except AssertionError:
                if attempt == 2:
                    raise
    finally:
        stop.set()
        server.join(timeout=10)
    assert not server.is_alive()
