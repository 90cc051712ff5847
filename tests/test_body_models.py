"""Body models: kinematics, the fast path, gradients, batching, anny parity, SMPL files."""
import numpy as np
import pytest
import roma
import torch

from meshcap import load_body_model
from meshcap.body_models import anny_data
from meshcap.keypoints.layouts import get_layout


def _rand_params(B, J, seed=0, scale=0.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(B, J, 3, generator=g, dtype=dtype) * scale
    shape = torch.rand(B, 6, generator=g, dtype=dtype)
    transl = torch.randn(B, 3, generator=g, dtype=dtype)
    return pose, shape, transl


# -- anny ----------------------------------------------------------------------------------------

def test_anny_skeleton_is_documented_and_sane(anny_model):
    m = anny_model
    assert m.joint_names == list(anny_data.FITTED_BONES)
    assert m.parents[0] == -1 and all(0 <= p < j for j, p in enumerate(m.parents) if j)
    sk = m.skeleton()
    rest = m.rest_joints(m.default_shape())[0]
    name = m.joint_names.index
    # canonical frame: y up, left on +x, head above pelvis above knees above ankles
    assert rest[name("head"), 1] > rest[name("root"), 1] > rest[name("lowerleg01.L"), 1] > rest[name("foot.L"), 1]
    assert rest[name("wrist.L"), 0] > 0.3 and rest[name("wrist.R"), 0] < -0.3
    # rebuilding positions from the offsets gives the rest joints back
    pos = torch.zeros_like(sk.offsets)
    for j, p in enumerate(sk.parents):
        pos[:, j] = sk.offsets[:, j] + (pos[:, p] if p >= 0 else 0)
    torch.testing.assert_close(pos[0], rest)
    height = rest[name("head"), 1] - rest[name("foot.L"), 1]
    assert 1.2 < height < 1.8


def test_anny_shape_changes_the_skeleton(anny_model):
    m = anny_model
    tall = torch.tensor([[0.5, 0.5, 0.5, 0.5, 1.0, 0.5]], dtype=torch.float64)
    short = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.0, 0.5]], dtype=torch.float64)
    h = lambda s: (lambda r: r[0, m.joint_names.index("head"), 1] - r[0, m.joint_names.index("foot.L"), 1])(m.rest_joints(s))  # noqa: E731
    assert h(tall) > h(short) + 0.1


def test_fk_on_known_rotations(anny_model):
    m = anny_model
    J = m.num_joints
    shape = m.default_shape()
    rest = m(torch.zeros(1, J, 3, dtype=torch.float64), shape, vertices=False).joints[0]
    e, w, s = (m.joint_names.index(n) for n in ("lowerarm01.L", "wrist.L", "upperarm01.L"))
    pose = torch.zeros(1, J, 3, dtype=torch.float64)
    pose[0, e] = torch.tensor([0.0, 0.0, np.pi / 2])  # elbow: 90 degrees about world z
    out = m(pose, shape, vertices=False).joints[0]
    Rz = roma.rotvec_to_rotmat(pose[0, e])
    torch.testing.assert_close(out[w], rest[e] + Rz @ (rest[w] - rest[e]))
    untouched = [j for j in range(J) if j not in (w,)]
    torch.testing.assert_close(out[untouched], rest[untouched])
    # a root rotation turns the whole body about the root joint, then transl moves it
    pose = torch.zeros(1, J, 3, dtype=torch.float64)
    pose[0, 0] = torch.tensor([0.0, np.pi, 0.0])
    t = torch.tensor([[0.1, 0.2, 3.0]], dtype=torch.float64)
    out = m(pose, shape, t, vertices=False).joints[0]
    Ry = roma.rotvec_to_rotmat(pose[0, 0])
    torch.testing.assert_close(out, (rest - rest[0]) @ Ry.T + rest[0] + t[0])
    # turned 180 degrees about y, the body faces -z and its left hand is on -x
    assert out[m.joint_names.index("wrist.L"), 0] < rest[0, 0] + t[0, 0]
    # children of a rotated joint follow it: shoulder rotation moves elbow and wrist
    pose = torch.zeros(1, J, 3, dtype=torch.float64)
    pose[0, s] = torch.tensor([np.pi / 3, 0.0, 0.0])
    out = m(pose, shape, vertices=False).joints[0]
    Rx = roma.rotvec_to_rotmat(pose[0, s])
    for j in (e, w):
        torch.testing.assert_close(out[j], rest[s] + Rx @ (rest[j] - rest[s]))


@pytest.mark.parametrize("layout", ["coco17", "blazepose33", "openpose25"])
def test_fast_path_equals_full_forward(anny_full, layout):
    m = anny_full
    pose, shape, transl = _rand_params(6, m.num_joints, seed=1)
    full = m(pose, shape, transl, layout=layout)
    fast = m(pose, shape, transl, layout=layout, vertices=False)
    assert fast.vertices is None and full.vertices.shape == (6, 13718, 3)
    assert (fast.joints - full.joints).abs().max() < 1e-5
    assert (fast.keypoints - full.keypoints).abs().max() < 1e-5
    # also in float32, the shipped precision
    m32 = load_body_model("anny")
    f32 = m32(pose.float(), shape.float(), transl.float(), layout=layout, vertices=False)
    assert (f32.keypoints.double() - full.keypoints).abs().max() < 1e-5


def test_full_forward_matches_anny_itself(anny_full, anny_reference):
    """meshcap's anny equals anny.Anny's posed mesh, parameters converted between frames."""
    m, ref = anny_full, anny_reference
    C = torch.as_tensor(anny_data.CANONICAL_FROM_ANNY)
    B = 3
    pose, shape, transl = _rand_params(B, m.num_joints, seed=2)
    R = roma.rotvec_to_rotmat(pose)
    labels = list(ref.bone_labels)
    delta = torch.eye(4, dtype=torch.float64).repeat(B, len(labels), 1, 1)
    for j, b in enumerate(m.joint_names):
        delta[:, labels.index(b), :3, :3] = C.T @ R[:, j] @ C
    # anny's root delta is the root's world pose: W0 = [U0^T D0 U0 | U0^T d0]
    U0 = ref.reference_bone_orientations[0]
    delta[:, 0, :3, :3] = U0 @ C.T @ R[:, 0] @ C
    root = m.rest_joints(shape)[:, 0] + transl
    delta[:, 0, :3, 3] = (U0 @ (root @ C)[..., None])[..., 0]
    with torch.no_grad():
        expected = ref(pose_parameters=delta, phenotype_kwargs=shape)["vertices"] @ C.T
        got = m(pose, shape, transl).vertices
    assert (got - expected).abs().max() < 1e-5
    torch.testing.assert_close(m.faces, torch.as_tensor(ref.faces))


def test_anny_keypoints_land_on_the_body(anny_model):
    m = anny_model
    kp = m(torch.zeros(1, m.num_joints, 3, dtype=torch.float64), layout="blazepose33", vertices=False).keypoints[0]
    L = get_layout("blazepose33")
    y = lambda n: kp[L.index(n), 1]  # noqa: E731
    for s in ("left", "right"):
        assert y(f"{s}_hip") > y(f"{s}_knee") > y(f"{s}_ankle") > y(f"{s}_heel")
        assert y(f"{s}_shoulder") > y(f"{s}_hip")
        assert y(f"{s}_eye") > y(f"mouth_{s}")
        assert kp[L.index(f"{s}_foot_index"), 2] > kp[L.index(f"{s}_heel"), 2]  # toes in front
    assert y("nose") > y("left_shoulder")
    assert kp[L.index("left_wrist"), 0] > 0 > kp[L.index("right_wrist"), 0]
    for s, sign in (("left", 1), ("right", -1)):  # eye corners: inner nearer the midline
        assert sign * kp[L.index(f"{s}_eye_inner"), 0] < sign * kp[L.index(f"{s}_eye"), 0] < sign * kp[L.index(f"{s}_eye_outer"), 0]


def test_gradients_flow_to_pose_shape_and_translation(anny_model):
    m = anny_model
    pose, shape, transl = _rand_params(3, m.num_joints, seed=3)
    pose.requires_grad_(True)
    shape = (shape * 0.8 + 0.1).requires_grad_(True)  # inside (0, 1): anny clamps outside
    transl.requires_grad_(True)
    out = m(pose, shape, transl, layout="coco17", vertices=False)
    (out.keypoints.square().sum() + out.joints.square().sum()).backward()
    for t in (pose, shape, transl):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().max() > 0
    assert (pose.grad.abs().sum(-1) > 0).sum() >= m.num_joints - 2  # every joint but leaves


def test_remembered_rest_poses_keep_values_and_gradients(anny_model):
    # the rest pose is remembered per shape value for fits that hold their shape; a shape that
    # is being fitted (or changed in place) must never get a stale or gradient-less one
    m = anny_model
    pose, shape, transl = _rand_params(2, m.num_joints, seed=5)
    shape = shape * 0.8 + 0.1
    with torch.no_grad():
        first = m(pose, shape, transl, vertices=False).joints
        again = m(pose, shape.clone(), transl, vertices=False).joints  # same value: remembered
        shape[0, 4] = 0.9  # the same tensor, another value
        moved = m(pose, shape, transl, vertices=False).joints
    assert torch.equal(first, again)
    assert (moved - first).abs().max() > 1e-3
    s = shape.clone().requires_grad_(True)
    m(pose, s, transl, vertices=False).joints.square().sum().backward()
    assert s.grad is not None and s.grad.abs().max() > 0


def test_gradients_through_rotmats(anny_model):
    m = anny_model
    rot6d = torch.randn(2, m.num_joints, 3, 2, dtype=torch.float64, requires_grad=True)
    out = m(rotmats=roma.special_gramschmidt(rot6d), layout="coco17", vertices=False)
    out.keypoints.sum().backward()
    assert torch.isfinite(rot6d.grad).all() and rot6d.grad.abs().max() > 0


def test_batch_equals_one_by_one(anny_full):
    m = anny_full
    pose, shape, transl = _rand_params(4, m.num_joints, seed=4)
    batch = m(pose, shape, transl, layout="coco17")
    for i in range(4):
        one = m(pose[i:i + 1], shape[i:i + 1], transl[i:i + 1], layout="coco17")
        torch.testing.assert_close(one.vertices[0], batch.vertices[i])
        torch.testing.assert_close(one.keypoints[0], batch.keypoints[i])
    # a single shape broadcasts over the batch
    shared = m(pose, shape[:1], transl, vertices=False)
    one = m(pose[2:3], shape[:1], transl[2:3], vertices=False)
    torch.testing.assert_close(one.joints[0], shared.joints[2])


def test_to_moves_the_model(anny_model):
    m = load_body_model("anny").to(torch.float64)
    assert m.dtype == torch.float64 and all(b.dtype in (torch.float64, torch.int64) for b in m.buffers())
    out = m(torch.zeros(1, m.num_joints, 3), layout="coco17", vertices=False)
    assert out.keypoints.dtype == torch.float64


def test_anny_bad_input_is_named(anny_model):
    m = anny_model
    with pytest.raises(ValueError, match=r"pose must have shape \(B, 20, 3\)"):
        m(torch.zeros(2, 24, 3))
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((1, 20, 3), float("nan")))
    with pytest.raises(ValueError, match="shape must have shape"):
        m(torch.zeros(2, 20, 3), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="unknown keypoint layout"):
        m(torch.zeros(1, 20, 3), layout="nope")
    with pytest.raises(ValueError, match="not defined for anny"):
        m(torch.zeros(1, 20, 3), layout="smpl24")
    with pytest.raises(ValueError, match="unknown body model"):
        load_body_model("mano")
    with pytest.raises(ValueError, match="needs no --model-path"):
        load_body_model("anny", "/tmp")


def test_bone_scales_lengthen_the_parts_they_carry(anny_full):
    """bone_scale[j] scales joint j's body part about the joint: its children's rest offsets,
    its keypoints and its mesh; the fast path agrees with the full mesh; ones change nothing;
    scaling every part alike scales the whole body about the root."""
    m = anny_full
    J = m.num_joints
    pose, shape, transl = _rand_params(3, J, seed=5)
    g = torch.Generator().manual_seed(6)
    scale = 1 + 0.15 * torch.randn(1, J, generator=g, dtype=torch.float64)
    full = m(pose, shape, transl, layout="blazepose33", bone_scale=scale)
    fast = m(pose, shape, transl, layout="blazepose33", vertices=False, bone_scale=scale)
    torch.testing.assert_close(fast.keypoints, full.keypoints)
    torch.testing.assert_close(fast.joints, full.joints)
    plain = m(pose, shape, transl, layout="blazepose33")
    ones = m(pose, shape, transl, layout="blazepose33", bone_scale=torch.ones(1, J, dtype=torch.float64))
    torch.testing.assert_close(ones.vertices, plain.vertices)
    # the skeleton: each offset is its parent's scale times the unscaled one
    sk0, sk1 = m.skeleton(shape[:1]), m.skeleton(shape[:1], scale)
    parents = torch.tensor(m.parents[1:])
    torch.testing.assert_close(sk1.offsets[0, 1:], sk0.offsets[0, 1:] * scale[0, parents, None])
    torch.testing.assert_close(sk1.offsets[0, 0], sk0.offsets[0, 0])
    # the forearm part carries the wrist: a longer forearm moves the wrist keypoint away from the elbow
    names = m.joint_names
    elbow = names.index("lowerarm01.L")
    longer = torch.ones(1, J, dtype=torch.float64)
    longer[0, elbow] = 1.2
    kp = get_layout("blazepose33").names
    rest = lambda s: m(torch.zeros(1, J, 3, dtype=torch.float64), shape[:1], layout="blazepose33",  # noqa: E731
                       vertices=False, bone_scale=s)
    a, b = rest(None), rest(longer)
    wrist = names.index("wrist.L")
    torch.testing.assert_close(b.joints[0, wrist] - b.joints[0, elbow], 1.2 * (a.joints[0, wrist] - a.joints[0, elbow]))
    # the wrist keypoint is skinned partly to the hand, whose own scale is 1
    reach = lambda o: (o.keypoints[0, kp.index("left_wrist")] - o.joints[0, elbow]).norm()  # noqa: E731
    assert 1.15 * reach(a) < reach(b) < 1.2 * reach(a)
    torch.testing.assert_close(b.keypoints[0, kp.index("right_wrist")], a.keypoints[0, kp.index("right_wrist")])
    # every part 1.1x: the body 1.1x about its root
    zero = torch.zeros(1, J, 3, dtype=torch.float64)
    big = m(zero, shape[:1], bone_scale=torch.full((1, J), 1.1, dtype=torch.float64))
    base = m(zero, shape[:1])
    root = m.rest_joints(shape[:1])[0, 0]
    torch.testing.assert_close(big.vertices[0] - root, 1.1 * (base.vertices[0] - root))
    # gradients reach the scales
    s = torch.ones(1, J, dtype=torch.float64, requires_grad=True)
    m(pose, shape, transl, layout="coco17", vertices=False, bone_scale=s).keypoints.square().sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().max() > 0
    with pytest.raises(ValueError, match=r"bone_scale must have shape \(3 or 1, 20\)"):
        m(pose, shape, transl, bone_scale=torch.ones(2, J))
    with pytest.raises(ValueError, match="bone_scale must be finite and positive"):
        m(pose, shape, transl, bone_scale=-torch.ones(1, J))


# -- SMPL family ---------------------------------------------------------------------------------

def test_synthetic_smpl_file_loads_without_chumpy_and_poses(smpl_file):
    import sys

    from synthetic_smpl import SMPL_REST_JOINTS

    assert "chumpy" not in sys.modules
    m = load_body_model("smpl", smpl_file)
    assert m.num_joints == 24 and m.shape_dim == 10 and m.joint_names[18] == "left_elbow"
    zero = torch.zeros(1, 24, 3)
    rest = m(zero).joints[0]
    np.testing.assert_allclose(rest.numpy(), SMPL_REST_JOINTS, atol=1e-5)
    pose = zero.clone()
    pose[0, 18] = torch.tensor([0.0, np.pi / 2, 0.0])  # left elbow
    out = m(pose, transl=torch.tensor([[0.0, 1.0, 2.0]]), layout="coco17")
    R = roma.rotvec_to_rotmat(pose[0, 18])
    t = torch.tensor([0.0, 1.0, 2.0])
    torch.testing.assert_close(out.joints[0, 20], rest[18] + R @ (rest[20] - rest[18]) + t, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints[0, :18], rest[:18] + t, atol=1e-5, rtol=0)
    assert out.vertices.shape == (1, 6890, 3) and m.faces.shape == (13776, 3)
    kp = out.keypoints[0]
    torch.testing.assert_close(kp[get_layout("coco17").index("left_wrist")], out.joints[0, 20])
    assert m(zero, layout="blazepose33").keypoints.shape == (1, 33, 3)
    op = m(zero, layout="openpose25").keypoints[0]
    torch.testing.assert_close(op[get_layout("openpose25").index("mid_hip")], (rest[1] + rest[2]) / 2)
    sk = m.skeleton(torch.zeros(1, 10))
    assert sk.offsets.shape == (1, 24, 3) and sk.parents[:4] == [-1, 0, 0, 0]


def test_smpl_folder_layout_and_gradients(smpl_file):
    m = load_body_model("smpl", smpl_file.parent)  # smplx's folder convention
    pose = torch.zeros(2, 24, 3, requires_grad=True)
    betas = torch.zeros(2, 10, requires_grad=True)
    m(pose, betas, layout="coco17").keypoints.sum().backward()
    assert betas.grad.abs().max() > 0 and torch.isfinite(pose.grad).all()
    # bone scales: meshcap's own skinning of the scaled rest pose is smplx's at scale 1, and
    # scales every part about its joint as anny's do
    import roma

    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        pose, betas = 0.3 * torch.randn(2, 24, 3, generator=g), torch.randn(2, 10, generator=g)
        R, transl = roma.rotvec_to_rotmat(pose), torch.randn(2, 3, generator=g)
        ours = m._forward(R, betas, transl, "coco17", True, bone_scale=torch.ones(1, 24))
        theirs = m.layer(betas=betas, global_orient=R[:, :1], body_pose=R[:, 1:], transl=transl, pose2rot=False)
        torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.joints, theirs.joints[:, :24], atol=1e-5, rtol=0)
        scale = 1 + 0.1 * torch.randn(1, 24, generator=g)
        zero = m(torch.zeros(1, 24, 3), betas[:1], bone_scale=scale)
        torch.testing.assert_close(zero.joints[0], m.rest_joints(betas[:1], scale)[0])
        sk0, sk1 = m.skeleton(betas[:1]), m.skeleton(betas[:1], scale)
        torch.testing.assert_close(sk1.offsets[0, 1:], sk0.offsets[0, 1:] * scale[0, m.parents[1:], None])
        big = m(torch.zeros(1, 24, 3), betas[:1], bone_scale=torch.full((1, 24), 1.1)).vertices[0]
        root = m.rest_joints(betas[:1])[0, 0]
        torch.testing.assert_close(big - root, 1.1 * (m(torch.zeros(1, 24, 3), betas[:1]).vertices[0] - root))


def test_smpl_keypoints_without_the_mesh_are_the_meshs(smpl_file):
    """Without vertices asked for, SMPL poses only its skeleton and keypoint vertices; joints
    and keypoints (face and feet points are vertices) equal smplx's whole-mesh forward, pose
    correctives and blend shapes included (made large here: the synthetic file's are small)."""
    m = load_body_model("smpl", smpl_file)
    g = torch.Generator().manual_seed(5)
    L = m.layer
    L.posedirs.copy_(0.02 * torch.randn(L.posedirs.shape, generator=g))
    L.shapedirs.copy_(0.03 * torch.randn(L.shapedirs.shape, generator=g))
    m._keypoint_buffers()
    pose, betas = 0.5 * torch.randn(6, 24, 3, generator=g), torch.randn(1, 10, generator=g)
    transl = torch.randn(6, 3, generator=g)
    whole = m(pose, betas, transl, layout="blazepose33", vertices=True)
    sparse = m(pose, betas, transl, layout="blazepose33", vertices=False)
    assert sparse.vertices is None
    corrective = ((roma.rotvec_to_rotmat(pose[:, 1:]) - torch.eye(3)).reshape(6, -1) @ L.posedirs).abs().max()
    assert corrective > 0.05  # metres: the correctives move the keypoint vertices visibly
    torch.testing.assert_close(sparse.joints, whole.joints, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.keypoints, whole.keypoints, atol=1e-5, rtol=0)
    # and with bone scales (the multi-view fit's proportions)
    scale = 1 + 0.15 * torch.randn(1, 24, generator=g)
    whole = m(pose, betas, transl, layout="blazepose33", vertices=True, bone_scale=scale)
    sparse = m(pose, betas, transl, layout="blazepose33", vertices=False, bone_scale=scale)
    torch.testing.assert_close(sparse.joints, whole.joints, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.keypoints, whole.keypoints, atol=1e-5, rtol=0)
    # gradients flow the same way
    p = pose.clone().requires_grad_(True)
    m(p, betas, transl, layout="coco17").keypoints.square().sum().backward()
    q = pose.clone().requires_grad_(True)
    m(q, betas, transl, layout="coco17", vertices=True).keypoints.square().sum().backward()
    torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["smplh", "smplx"])
def test_smplh_and_smplx_pose_like_smplx_and_their_mesh_exists(tmp_path, kind):
    """SMPL-H and SMPL-X through smplx's own forward failed whenever the mesh was asked for
    (rotation matrices meet the mean hand pose's axis-angle); meshcap skins the mesh itself.
    Made-up files against smplx's forward from axis-angle: the mesh, the joints, and the
    keypoint-only path."""
    import synthetic_smpl

    if kind == "smplh":
        m = load_body_model(kind, synthetic_smpl.write_synthetic_smplh(tmp_path / "SMPLH_NEUTRAL.pkl"))
    else:
        m = load_body_model(kind, synthetic_smpl.write_synthetic_smplx(tmp_path / "SMPLX_NEUTRAL.npz"))
    J, B = m.num_joints, 3
    assert J == {"smplh": 52, "smplx": 55}[kind]
    g = torch.Generator().manual_seed(2)
    pose, betas, transl = 0.4 * torch.randn(B, J, 3, generator=g), torch.randn(B, 10, generator=g), torch.randn(B, 3, generator=g)
    hands = 22 if kind == "smplh" else 25
    kw = dict(betas=betas, global_orient=pose[:, 0], body_pose=pose[:, 1:22].reshape(B, -1), transl=transl,
              left_hand_pose=pose[:, hands:hands + 15].reshape(B, -1),
              right_hand_pose=pose[:, hands + 15:hands + 30].reshape(B, -1))
    if kind == "smplx":
        kw.update(jaw_pose=pose[:, 22], leye_pose=pose[:, 23], reye_pose=pose[:, 24], expression=torch.zeros(B, 10))
    with torch.no_grad():
        ref = m.layer(**kw)
        mesh = m(pose, betas, transl, layout="blazepose33", vertices=True)
        sparse = m(pose, betas, transl, layout="blazepose33", vertices=False)
    torch.testing.assert_close(mesh.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(mesh.joints, ref.joints[:, :J], atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.joints, mesh.joints, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.keypoints, mesh.keypoints, atol=1e-5, rtol=0)


def test_smpl_path_errors_are_clear(tmp_path, smpl_file):
    with pytest.raises(ValueError, match="needs its model file"):
        load_body_model("smpl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_body_model("smpl", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no SMPL_MALE.pkl or SMPL_MALE.npz"):
        load_body_model("smpl", tmp_path, gender="male")
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(smpl_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pkl: not a readable body model file"):
        load_body_model("smpl", bad)
    with pytest.raises(ValueError, match="has 24 joints, a SMPLH model has 52"):
        load_body_model("smplh", smpl_file)


def test_full_mesh_blendshape_signs_follow_the_shipped_data(anny_full):
    """anny derives some shape blendshapes with a thread-dependent sign (with one OpenMP
    thread, three of them come out negated); the full-mesh cache is turned to agree with the
    shipped fit data, so the fast path and the full mesh describe the same body."""
    from meshcap.body_models import anny_data

    arrays = anny_data.load_full_arrays()
    good = arrays["vertex_bs"].copy()
    arrays["vertex_bs"][[26, 57, 75]] *= -1
    assert anny_data.align_to_shipped(arrays)
    assert np.array_equal(arrays["vertex_bs"], good)
    arrays["vertex_bs"][3] *= 1.5  # a cache that is wrong otherwise is not accepted
    assert not anny_data.align_to_shipped(arrays)
