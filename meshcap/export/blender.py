"""Work done inside Blender's Python module (`bpy`, the optional extra `meshcap[fbx]`), always
in a child process: bpy is a 400 MB module with process-wide state, slow to load, and keeping
it out of meshcap's own process means a Blender failure cannot take the caller down with it.

    python meshcap/export/blender.py fbx IN.glb OUT.fbx --fps 30
    python meshcap/export/blender.py joints FILE(.bvh|.glb|.gltf|.fbx) OUT.npz --frames N --fps 30

(run by path: it imports nothing of meshcap, so torch never loads beside Blender)

`fbx` converts meshcap's glTF to FBX (Blender's exporter, every frame baked, no key
reduction). `joints` imports an animation file as Blender would for a user and writes the world
position of every bone head on every frame (Blender's frame: Z up), for checks against
`Motion.joints3d`.
"""
from __future__ import annotations

import argparse
import sys


def _reset(fps: float) -> None:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    # Importers place keys at time * scene fps: match the motion's rate, fractional ones too.
    scene.render.fps = max(1, round(fps))
    scene.render.fps_base = scene.render.fps / fps


def _import(path: str) -> None:
    import bpy

    low = path.lower()
    if low.endswith(".bvh"):
        bpy.ops.import_anim.bvh(filepath=path, axis_forward="-Z", axis_up="Y", global_scale=1.0,
                                frame_start=0, use_fps_scale=False, update_scene_fps=False,
                                update_scene_duration=True, rotate_mode="NATIVE")
    elif low.endswith((".glb", ".gltf")):
        bpy.ops.import_scene.gltf(filepath=path)
    elif low.endswith(".fbx"):
        bpy.ops.import_scene.fbx(filepath=path, ignore_leaf_bones=False, automatic_bone_orientation=False)
    else:
        raise SystemExit(f"{path}: not a .bvh, .glb, .gltf or .fbx file")


def to_fbx(src: str, dst: str, fps: float) -> None:
    import bpy

    _reset(fps)
    _import(src)
    armatures = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    if not armatures:
        raise SystemExit(f"{src}: Blender found no skeleton in it")
    # The glTF importer adds a helper sphere for drawing bones; it is no part of the body.
    for o in list(bpy.data.objects):
        if o.type == "MESH" and not any(m.type == "ARMATURE" for m in o.modifiers):
            bpy.data.objects.remove(o)
    last = max(int(round(a.frame_range[1])) for a in bpy.data.actions) if bpy.data.actions else 0
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 0, last
    bpy.ops.export_scene.fbx(
        filepath=dst, use_selection=False, object_types={"ARMATURE", "MESH"},
        axis_forward="-Z", axis_up="Y", apply_unit_scale=True, apply_scale_options="FBX_SCALE_NONE",
        add_leaf_bones=False, bake_anim=True, bake_anim_use_all_bones=True,
        bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
        bake_anim_force_startend_keying=True, bake_anim_step=1.0, bake_anim_simplify_factor=0.0,
        use_armature_deform_only=False, path_mode="AUTO")


def joint_tracks(src: str, out: str, frames: int, fps: float) -> None:
    """Write {"<armature>/<bone>": (frames, 3)} world bone-head positions, from each
    armature's first keyed frame on."""
    import bpy
    import numpy as np

    _reset(fps)
    _import(src)
    scene = bpy.context.scene
    arrays = {}
    for obj in bpy.data.objects:
        if obj.type != "ARMATURE":
            continue
        action = obj.animation_data.action if obj.animation_data else None
        first = int(round(action.frame_range[0])) if action else 0
        heads = np.zeros((len(obj.pose.bones), frames, 3))
        for i in range(frames):
            scene.frame_set(first + i)
            for b, bone in enumerate(obj.pose.bones):
                heads[b, i] = tuple(obj.matrix_world @ bone.head)
        for b, bone in enumerate(obj.pose.bones):
            arrays[f"{obj.name}/{bone.name}"] = heads[b]
    np.savez(out, **arrays)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="blender.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fbx")
    f.add_argument("src")
    f.add_argument("dst")
    f.add_argument("--fps", type=float, required=True)
    j = sub.add_parser("joints")
    j.add_argument("src")
    j.add_argument("out")
    j.add_argument("--frames", type=int, required=True)
    j.add_argument("--fps", type=float, required=True)
    args = ap.parse_args(argv)
    if args.command == "fbx":
        to_fbx(args.src, args.dst, args.fps)
    else:
        joint_tracks(args.src, args.out, args.frames, args.fps)


if __name__ == "__main__":
    main(sys.argv[1:])
