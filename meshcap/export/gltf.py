"""glTF 2.0 / GLB export of a Motion: every person as a skinned mesh with its skeleton and one
animation, written with `pygltflib`.

Conventions: metres; y up, right-handed (the Motion's camera frame turned half a turn about x,
as in BVH); one scene, one animation, the frame times of the Motion. Each person's joints are
nodes named like the body model's joints, in a rest pose whose frames are world-aligned, so a
joint's animated rotation is exactly the Motion's local rotation. Frames where a person was not
fitted hold the nearest fitted frame.

The mesh is the body model's mesh at the zero pose for the person's fitted shape, with skinning
weights folded onto the fitted joints (at most 4 per vertex, as glTF viewers expect). glTF's
linear blend skinning of that mesh matches meshcap's own mesh at the joints exactly and on the
surface closely; the tests measure how closely.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from meshcap.errors import InputError
from meshcap.export.bvh import _fill_invalid
from meshcap.fileio import publish, temp_beside


def skin_weights(model, max_influences: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex (V, 4) joint indices and weights of the fitted skeleton (the body model's
    `joint_weights`), the largest `max_influences` kept and renormalised. SMPL-family meshes
    skin with smplx's own weights; glTF has no pose-dependent correctives, so their posed
    meshes leave out SMPL's pose blend shapes (the joints are exact)."""
    w = model.joint_weights().detach().cpu().numpy().astype(np.float64)  # (V, J)
    idx = np.argsort(-w, axis=1)[:, :max_influences]
    top = np.take_along_axis(w, idx, axis=1)
    top = top / np.clip(top.sum(1, keepdims=True), 1e-12, None)
    idx[top == 0] = 0  # unused slots: joint 0 with weight 0, as the glTF spec asks
    return idx.astype(np.uint16), top.astype(np.float32)


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat().reshape(*R.shape[:-2], 4)


def gltf_document(motion, body_model=None):
    """A `pygltflib.GLTF2` holding every person of `motion` (binary data in one buffer)."""
    import pygltflib as g
    import torch

    model = body_model or motion.load_body_model()
    if not motion.valid.any():
        raise InputError("the motion has no fitted frame to export")
    faces = model.faces.cpu().numpy().astype(np.uint32)
    joints_idx, joints_w = skin_weights(model)
    C, lift = motion.y_up_transform()
    times = (motion.frame_times - motion.frame_times[0]).astype(np.float32)
    if len(times) == 1:
        times = np.zeros(1, np.float32)

    blob = bytearray()
    doc = g.GLTF2(asset=g.Asset(generator="meshcap", version="2.0"), scene=0)
    doc.scenes = [g.Scene(nodes=[])]
    anim = g.Animation(name="motion", channels=[], samplers=[])

    def add(array: np.ndarray, component: int, kind: str, target: int | None = None,
            minmax: bool = False) -> int:
        nonlocal blob
        while len(blob) % 4:
            blob += b"\x00"
        data = np.ascontiguousarray(array).tobytes()
        view = g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target)
        blob += data
        doc.bufferViews.append(view)
        acc = g.Accessor(bufferView=len(doc.bufferViews) - 1, componentType=component,
                         count=len(array), type=kind)
        if minmax:
            flat = array.reshape(len(array), -1)
            acc.min = flat.min(0).astype(float).tolist()
            acc.max = flat.max(0).astype(float).tolist()
        doc.accessors.append(acc)
        return len(doc.accessors) - 1

    time_acc = add(times, g.FLOAT, g.SCALAR, minmax=True)
    for p in range(motion.num_people):
        valid = motion.valid[p]
        if not valid.any():
            continue
        shape = torch.as_tensor(motion.shape[p:p + 1], dtype=model.dtype)
        with torch.no_grad():
            J = model.num_joints
            scale = motion.bone_scale_of(p)  # the bind pose is the scaled body's
            zero = model(torch.zeros(1, J, 3, dtype=model.dtype), shape, vertices=True, bone_scale=scale)
            verts = zero.vertices[0].cpu().numpy().astype(np.float32)
            sk = model.skeleton(shape, scale)
            rest = model.rest_joints(shape, scale)[0].cpu().numpy().astype(np.float64)
        offsets = sk.offsets[0].cpu().numpy().astype(np.float64)
        parents = list(sk.parents)
        poses = _fill_invalid(motion.poses[p].astype(np.float64), valid)
        transl = _fill_invalid(motion.transl[p].astype(np.float64), valid)
        R = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(len(poses), J, 3, 3)
        R[:, 0] = C @ R[:, 0]
        root_pos = (transl + rest[0]) @ C.T + lift

        # nodes: the joints, then the mesh
        first = len(doc.nodes)
        for j in range(J):
            t = root_pos[0] if parents[j] < 0 else offsets[j]
            doc.nodes.append(g.Node(name=f"p{motion.person_ids[p]}_{sk.joint_names[j]}",
                                    translation=[float(v) for v in t],
                                    rotation=[float(v) for v in _quat_xyzw(R[0, j])], children=[]))
        for j in range(J):
            if parents[j] >= 0:
                doc.nodes[first + parents[j]].children.append(first + j)
        for n in doc.nodes[first:first + J]:
            if not n.children:
                n.children = None
        ibm = np.tile(np.eye(4, dtype=np.float32), (J, 1, 1))
        ibm[:, :3, 3] = -rest  # bind pose: the zero pose, joints at their rest positions
        ibm_acc = add(ibm.transpose(0, 2, 1).reshape(J, 16), g.FLOAT, g.MAT4)  # column-major
        doc.skins.append(g.Skin(name=f"person {motion.person_ids[p]}", joints=list(range(first, first + J)),
                                skeleton=first, inverseBindMatrices=ibm_acc))
        prim = g.Primitive(
            attributes=g.Attributes(
                POSITION=add(verts, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True),
                JOINTS_0=add(joints_idx, g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER),
                WEIGHTS_0=add(joints_w, g.FLOAT, g.VEC4, g.ARRAY_BUFFER)),
            indices=add(faces.reshape(-1), g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER, minmax=True))
        doc.meshes.append(g.Mesh(name=f"person {motion.person_ids[p]}", primitives=[prim]))
        doc.nodes.append(g.Node(name=f"p{motion.person_ids[p]}_mesh", mesh=len(doc.meshes) - 1,
                                skin=len(doc.skins) - 1))
        # A parent node per skeleton, so importers (Blender's) make one armature per person;
        # the skinned mesh stays at the root, as the spec advises.
        doc.nodes.append(g.Node(name=f"person {motion.person_ids[p]}", children=[first]))
        doc.scenes[0].nodes += [len(doc.nodes) - 1, len(doc.nodes) - 2]

        # animation: every joint's rotation, the root's translation
        def channel(node: int, path: str, values: np.ndarray, kind: str) -> None:
            out = add(values.astype(np.float32), g.FLOAT, kind)
            anim.samplers.append(g.AnimationSampler(input=time_acc, output=out, interpolation="LINEAR"))
            anim.channels.append(g.AnimationChannel(sampler=len(anim.samplers) - 1,
                                                    target=g.AnimationChannelTarget(node=node, path=path)))

        q = _quat_xyzw(R)  # (T, J, 4)
        # neighbouring quaternions on the same hemisphere, so LINEAR interpolation takes the short way
        for t in range(1, len(q)):
            flip = (q[t] * q[t - 1]).sum(-1) < 0
            q[t, flip] *= -1
        for j in range(J):
            channel(first + j, "rotation", q[:, j], g.VEC4)
        channel(first, "translation", root_pos, g.VEC3)

    doc.animations = [anim]
    doc.buffers = [g.Buffer(byteLength=len(blob))]
    doc.set_binary_blob(bytes(blob))
    return doc


def write_gltf(motion, path: str | Path, body_model=None) -> Path:
    """Write `.glb` (binary, one file) or `.gltf` (JSON with the buffer embedded), atomically."""
    path = Path(path)
    if path.suffix.lower() not in (".glb", ".gltf"):
        raise InputError(f"{path}: glTF files end in .glb or .gltf")
    doc = gltf_document(motion, body_model)
    tmp = temp_beside(path, suffix=path.suffix)
    try:
        if path.suffix.lower() == ".glb":
            doc.save_binary(tmp)
        else:
            doc.convert_buffers(__import__("pygltflib").BufferFormat.DATAURI)
            doc.save_json(tmp)
        return publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
