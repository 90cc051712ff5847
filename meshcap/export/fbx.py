"""FBX export of a Motion: the glTF export (skinned meshes, skeletons, animation) converted by
Blender's own FBX exporter, in a child process (`meshcap.export.blender`).

Blender (`bpy==5.0.1`, Python 3.11 wheels) is an optional extra: `pip install "meshcap[fbx]"`.
Units are metres with FBX's Y-up axes; every frame is a key (no key reduction), so the file
plays back exactly the fitted motion.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from meshcap.errors import DependencyError, InputError, MeshcapError
from meshcap.fileio import publish, temp_beside

BLENDER_SCRIPT = Path(__file__).with_name("blender.py")


def blender_available() -> bool:
    try:
        return importlib.util.find_spec("bpy") is not None
    except ValueError:  # sys.modules["bpy"] is None: blocked on purpose
        return False


def run_blender(*args: str, what: str) -> None:
    """Run `meshcap/export/blender.py` with `args` in a child Python that has bpy; failures
    raise MeshcapError with Blender's last words."""
    if not blender_available():
        raise DependencyError(f"{what} needs Blender's Python module, an optional extra: "
                              'pip install "meshcap[fbx]" (bpy==5.0.1, Python 3.11)')
    # Run by path, not `-m`: importing the meshcap package would load torch beside Blender.
    r = subprocess.run([sys.executable, str(BLENDER_SCRIPT), *args], capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
        raise MeshcapError(f"{what} failed in Blender:\n{tail}")


def write_fbx(motion, path: str | Path, body_model=None) -> Path:
    """Write `motion` as FBX at `path` (replaced only when complete). Returns the path."""
    from meshcap.export.gltf import write_gltf

    path = Path(path)
    if path.suffix.lower() != ".fbx":
        raise InputError(f"{path}: an FBX file must end in .fbx")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: the output folder does not exist")
    if not blender_available():
        run_blender(what="FBX export")  # raises the DependencyError, before any work
    with tempfile.TemporaryDirectory(prefix="meshcap-fbx-") as tmp:
        glb = write_gltf(motion, Path(tmp) / "motion.glb", body_model)
        out = temp_beside(path, suffix=".fbx")
        try:
            run_blender("fbx", str(glb), out, "--fps", repr(float(motion.fps)), what="FBX export")
            if Path(out).stat().st_size == 0:
                raise MeshcapError(f"{path}: Blender wrote an empty FBX file")
            return publish(out, path)
        except BaseException:
            Path(out).unlink(missing_ok=True)
            raise
