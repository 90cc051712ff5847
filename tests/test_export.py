"""Exports read back by independent readers: BVH by bvhio, glTF by pygltflib and the Khronos
validator (npm gltf-validator, installed into the test-data cache on first use), and all of
BVH, glTF and FBX by Blender's importers."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import torch
from scipy.spatial.transform import Rotation

from blender_check import assert_blender_matches, needs_blender
from data import cache
from meshcap import Motion, load_body_model
from meshcap.motion import CAMERA_TO_Y_UP
from meshcap.synthetic import camera_root_rotation, sample_body_poses, sample_shapes


@pytest.fixture(scope="module")
def motion():
    """Two people in random poses, as the body model places them, 8 frames, a gap for one; the
    second with bone scales (shins shorter, forearms and neck longer), which every export must
    carry into its skeleton and mesh."""
    model = load_body_model("anny")
    g = torch.Generator().manual_seed(11)
    T, P, J = 8, 2, model.num_joints
    poses = torch.stack([sample_body_poses(model, T, g) for _ in range(P)])
    poses[:, :, 0] = camera_root_rotation(torch.linspace(-1, 1, T).expand(P, T), torch.zeros(P, T))
    shape = sample_shapes(model, P, g)
    transl = torch.tensor([[-0.6, 0.1, 4.0], [0.7, 0.2, 5.0]])[:, None].expand(P, T, 3).clone()
    transl[:, :, 0] += torch.linspace(0, 0.5, T)
    scale = torch.ones(P, J)
    for n, v in (("lowerleg01.L", 0.9), ("lowerleg01.R", 0.9), ("lowerarm01.L", 1.15), ("lowerarm01.R", 1.15),
                 ("neck01", 1.2)):
        scale[1, model.joint_names.index(n)] = v
    with torch.no_grad():
        joints = torch.stack([model(poses[p], shape[p:p + 1], transl[p], vertices=False, bone_scale=scale[p:p + 1]).joints
                              for p in range(P)])
    valid = np.ones((P, T), bool)
    valid[1, :2] = False
    return Motion(fps=25.0, body_model="anny", joint_names=model.joint_names, parents=np.array(model.parents),
                  poses=poses.numpy(), shape=shape.numpy(), transl=transl.numpy(), joints3d=joints.numpy(),
                  valid=valid, keypoints2d=np.zeros((P, T, 33, 3), np.float32), keypoint_layout="blazepose33",
                  uncertainty=np.full((P, T, J), 0.05, np.float32), cam_K=np.eye(3, dtype=np.float32)[None],
                  person_ids=np.array([3, 5]), bone_scale=scale.numpy())


def test_bvh_reads_back_in_bvhio(motion, tmp_path):
    import bvhio

    paths = motion.to_bvh(tmp_path / "m.bvh")
    assert [p.name for p in paths] == ["m_p3.bvh", "m_p5.bvh"]
    for p, path in enumerate(paths):
        root = bvhio.readAsHierarchy(str(path))
        for t in np.flatnonzero(motion.valid[p]):
            root.loadPose(int(t))
            got = {j.Name: np.array(j.PositionWorld) for j, _, _ in root.layout()}
            want = motion.joints3d[p, t] @ CAMERA_TO_Y_UP.T
            for k, name in enumerate(motion.joint_names):
                assert np.linalg.norm(got[name] - want[k]) < 1e-3, (p, t, name)
    assert "Frame Time: 0.04000000" in paths[0].read_text()


def _local(node, sampler_values, t):
    """A node's local matrix at keyframe t: animated values where channels exist."""
    T = np.eye(4)
    trs = dict(translation=node.translation or [0, 0, 0], rotation=node.rotation or [0, 0, 0, 1])
    trs.update({k: v[t] for k, v in sampler_values.items()})
    T[:3, :3] = Rotation.from_quat(trs["rotation"]).as_matrix()
    T[:3, 3] = trs["translation"]
    return T


def _gltf_world(doc, t):
    """World matrices of all nodes at keyframe t, computed from the file alone."""
    blob = doc.binary_blob()

    def read(acc_i):
        acc = doc.accessors[acc_i]
        view = doc.bufferViews[acc.bufferView]
        n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
        dt = {pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_SHORT: np.uint16, pygltflib.UNSIGNED_INT: np.uint32}[acc.componentType]
        return np.frombuffer(blob, dtype=dt, count=acc.count * n, offset=view.byteOffset + (acc.byteOffset or 0)).reshape(acc.count, n)

    anim = {}
    for ch in doc.animations[0].channels:
        anim.setdefault(ch.target.node, {})[ch.target.path] = read(doc.animations[0].samplers[ch.sampler].output)
    world = {}

    def visit(i, parent):
        world[i] = parent @ _local(doc.nodes[i], anim.get(i, {}), t)
        for c in doc.nodes[i].children or []:
            visit(c, world[i])

    for i in doc.scenes[0].nodes:
        visit(i, np.eye(4))
    return world, read


def test_glb_is_valid_and_animates_the_joints(motion, tmp_path):
    path = motion.to_gltf(tmp_path / "m.glb")
    doc = pygltflib.GLTF2().load(str(path))
    assert len(doc.skins) == 2 and len(doc.meshes) == 2
    times = None
    model = load_body_model("anny")
    for t in range(motion.num_frames):
        world, read = _gltf_world(doc, t)
        if times is None:
            times = read(doc.animations[0].samplers[0].input)[:, 0]
        for p, skin in enumerate(doc.skins):
            if not motion.valid[p, t]:
                continue
            got = np.stack([world[j][:3, 3] for j in skin.joints])
            want = motion.joints3d[p, t] @ CAMERA_TO_Y_UP.T
            assert np.abs(got - want).max() < 1e-3, (p, t)
    np.testing.assert_allclose(times, np.arange(motion.num_frames) / 25.0, atol=1e-6)
    # linear blend skinning of the file's mesh, against meshcap's own full mesh at frame 5
    # (person 1: the bone scales are in the bind pose)
    world, read = _gltf_world(doc, 5)
    for p in range(2):
        skin, mesh = doc.skins[p], doc.meshes[p].primitives[0]
        ibm = read(skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
        M = np.stack([world[j] @ ibm[k] for k, j in enumerate(skin.joints)])
        v = read(mesh.attributes.POSITION).astype(np.float64)
        ji, w = read(mesh.attributes.JOINTS_0), read(mesh.attributes.WEIGHTS_0)
        vh = np.concatenate([v, np.ones((len(v), 1))], 1)
        skinned = np.einsum("vk,vkij,vj->vi", w, M[ji], vh)[:, :3]
        with torch.no_grad():
            ours = model(torch.as_tensor(motion.poses[p, 5:6]), torch.as_tensor(motion.shape[p:p + 1]),
                         torch.as_tensor(motion.transl[p, 5:6]),
                         bone_scale=motion.bone_scale_of(p)).vertices[0].numpy() @ CAMERA_TO_Y_UP.T
        dev = np.linalg.norm(skinned - ours, axis=1)
        assert np.median(dev) < 0.005 and np.percentile(dev, 99) < 0.03, (p, np.median(dev), dev.max())


def _validator() -> Path:
    """node_modules holding npm's gltf-validator, installed into the test-data cache once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("the glTF checks need Node.js and npm (Debian: nodejs npm)")
    d = cache() / "node"
    if not (d / "node_modules" / "gltf-validator").exists():
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(d), "gltf-validator@2.0.0-dev.3.10"],
                       check=True, capture_output=True)
    return d / "node_modules"


def test_khronos_validator_finds_no_issue(motion, tmp_path):
    modules = _validator()
    script = Path(__file__).parent / "node" / "validate_gltf.mjs"
    for name in ("m.glb", "m.gltf"):
        path = motion.to_gltf(tmp_path / name)
        r = subprocess.run(["node", str(script), str(path), str(modules)], capture_output=True, text=True, check=True)
        issues = json.loads(r.stdout)["issues"]
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:5]


@needs_blender
def test_blender_imports_bvh_gltf_and_fbx_with_the_motions_joints(motion, tmp_path):
    for p, path in enumerate(motion.to_bvh(tmp_path / "m.bvh")):
        assert_blender_matches(motion, path, person=p)
    assert_blender_matches(motion, motion.to_gltf(tmp_path / "m.glb"))
    fbx = motion.to_fbx(tmp_path / "m.fbx")
    assert fbx.read_bytes()[:18] == b"Kaydara FBX Binary"
    assert_blender_matches(motion, fbx)


@pytest.fixture
def smpl_motion(smpl_file):
    """One person posed by the tests' made-up SMPL file, 6 frames, with bone scales (as a
    multi-view capture gives them)."""
    model = load_body_model("smpl", smpl_file)
    g = torch.Generator().manual_seed(4)
    T, J = 6, model.num_joints
    poses = 0.3 * torch.randn(1, T, J, 3, generator=g)
    poses[0, :, 0] = camera_root_rotation(torch.linspace(-1, 1, T), torch.zeros(T))
    shape = torch.randn(1, 10, generator=g)
    transl = torch.tensor([0.2, 0.1, 4.0]).expand(1, T, 3).clone()
    scale = 1 + 0.1 * torch.randn(1, J, generator=g)
    with torch.no_grad():
        joints = model(poses[0], shape, transl[0], vertices=False, bone_scale=scale).joints[None]
    return Motion(fps=30.0, body_model="smpl", body_model_settings={"model_path": str(smpl_file)},
                  joint_names=model.joint_names, parents=np.array(model.parents), poses=poses.numpy(),
                  shape=shape.numpy(), transl=transl.numpy(), joints3d=joints.numpy(), valid=np.ones((1, T), bool),
                  keypoints2d=np.zeros((1, T, 17, 3), np.float32), keypoint_layout="coco17",
                  uncertainty=np.full((1, T, J), 0.05, np.float32), cam_K=np.eye(3, dtype=np.float32)[None],
                  person_ids=np.array([0]), bone_scale=scale.numpy())


def test_smpl_family_motions_export_to_gltf_and_fbx(smpl_motion, tmp_path):
    """glTF (and so FBX) took anny only; an SMPL-family motion exports its skeleton exactly
    and its mesh skinned by smplx's weights (glTF has no pose correctives)."""
    path = smpl_motion.to_gltf(tmp_path / "s.glb")
    doc = pygltflib.GLTF2().load(str(path))
    assert len(doc.skins) == 1 and len(doc.skins[0].joints) == 24
    for t in range(smpl_motion.num_frames):
        world, _ = _gltf_world(doc, t)
        got = np.stack([world[j][:3, 3] for j in doc.skins[0].joints])
        assert np.abs(got - smpl_motion.joints3d[0, t] @ CAMERA_TO_Y_UP.T).max() < 1e-3, t
    modules = _validator()
    r = subprocess.run(["node", str(Path(__file__).parent / "node" / "validate_gltf.mjs"), str(path), str(modules)],
                       capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["issues"]["numErrors"] == 0


@needs_blender
def test_blender_imports_an_smpl_familys_gltf_and_fbx(smpl_motion, tmp_path):
    assert_blender_matches(smpl_motion, smpl_motion.to_gltf(tmp_path / "s.glb"))
    assert_blender_matches(smpl_motion, smpl_motion.to_fbx(tmp_path / "s.fbx"))


def test_fbx_without_blender_says_what_to_install(motion, tmp_path):
    motion.save(tmp_path / "m.npz")
    code = ("import sys; sys.modules['bpy'] = None; from meshcap.cli import main; "
            f"sys.exit(main(['export', {str(tmp_path / 'm.npz')!r}, '--fbx', {str(tmp_path / 'm.fbx')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert 'pip install "meshcap[fbx]"' in r.stderr
    assert not (tmp_path / "m.fbx").exists()
