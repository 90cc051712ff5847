"""SMPL, SMPL-H and SMPL-X through the `smplx` package, from model files the user already has.

The files are licensed by their authors: meshcap never ships or downloads them. The original
SMPL `.pkl` files contain `chumpy` objects, and chumpy does not import on current Python, so
they are read with an unpickler that turns chumpy arrays into numpy arrays.
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from meshcap.body_models.base import BodyModel, BodyModelOutput
from meshcap.keypoints.layouts import MIDPOINTS, get_layout

_SMPL_BODY_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
_HANDS = tuple(f"{s}_{f}{k}" for s in ("left", "right") for f in _FINGERS for k in (1, 2, 3))

JOINT_NAMES = {
    "smpl": _SMPL_BODY_JOINTS + ("left_hand", "right_hand"),
    "smplh": _SMPL_BODY_JOINTS + _HANDS,
    "smplx": _SMPL_BODY_JOINTS + ("jaw", "left_eye_smplhf", "right_eye_smplhf") + _HANDS,
}

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

# Surface vertices of named points (the ids the smplx package uses for its extra joints).
_VERTEX_IDS = {
    "smpl": dict(nose=332, left_eye=2800, right_eye=6260, left_ear=583, right_ear=4071,
                 left_big_toe=3216, left_small_toe=3226, left_heel=3387, right_big_toe=6617,
                 right_small_toe=6624, right_heel=6787, left_index_tip=2319, right_index_tip=5782,
                 left_pinky_tip=2673, right_pinky_tip=6133, left_thumb_tip=2746, right_thumb_tip=6191),
    "smplx": dict(nose=9120, left_eye=9448, right_eye=9929, left_ear=6, right_ear=616,
                  left_big_toe=5770, left_small_toe=5780, left_heel=8846, right_big_toe=8463,
                  right_small_toe=8474, right_heel=8635),
}
_VERTEX_IDS["smplh"] = _VERTEX_IDS["smpl"]


def _keypoint_definitions(kind: str) -> dict[str, dict[str, float]]:
    """Each named keypoint as an affine combination of skeleton joints and named vertices.

    Limb keypoints are skeleton joints. Face corners, which have no agreed SMPL vertices, are
    placed from the eyes and nose (documented approximations: eye corners a quarter of the
    interocular distance in/out of the eye centre; mouth corners below the nose).
    """
    d: dict[str, dict[str, float]] = {}
    for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear",
              "left_big_toe", "left_small_toe", "left_heel",
              "right_big_toe", "right_small_toe", "right_heel"):
        d[n] = {f"v:{n}": 1.0}
    for n in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        for s in ("left", "right"):
            d[f"{s}_{n}"] = {f"j:{s}_{n}": 1.0}
    for n, (a, b) in MIDPOINTS.items():  # neck, mid_hip: as the layouts define them
        d[n] = {s: 0.5 * w for s, w in d[a].items()}
        for s, w in d[b].items():
            d[n][s] = d[n].get(s, 0.0) + 0.5 * w
    for s, o in (("left", "right"), ("right", "left")):
        d[f"{s}_eye_inner"] = {f"v:{s}_eye": 0.75, f"v:{o}_eye": 0.25}
        d[f"{s}_eye_outer"] = {f"v:{s}_eye": 1.25, f"v:{o}_eye": -0.25}
        d[f"mouth_{s}"] = {"v:nose": 1.9, f"v:{s}_eye": -0.1, f"v:{o}_eye": -0.8}
        d[f"{s}_foot_index"] = {f"v:{s}_big_toe": 0.5, f"v:{s}_small_toe": 0.5}
        for f_mp, f_smpl, k in (("pinky", "pinky", 1), ("index", "index", 1), ("thumb", "thumb", 2)):
            if kind == "smpl":  # no finger joints: the knuckle is about halfway to the tip
                d[f"{s}_{f_mp}"] = {f"j:{s}_wrist": 0.5, f"v:{s}_{f_smpl}_tip": 0.5}
            else:
                d[f"{s}_{f_mp}"] = {f"j:{s}_{f_smpl}{k}": 1.0}
    return d


class _ChumpyArray:
    """Stands in for chumpy's `Ch` while unpickling; its state holds the value as `x`."""

    def __init__(self, *args, **kwargs):
        self.x = None

    def __setstate__(self, state):
        self.x = state.get("x") if isinstance(state, dict) else None


class _NoChumpyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("chumpy"):
            return _ChumpyArray
        return super().find_class(module, name)


def _plain(value, key: str, path: Path):
    if isinstance(value, _ChumpyArray):
        if value.x is None:
            raise ValueError(f"{path}: {key!r} is a chumpy expression meshcap cannot read")
        return np.asarray(value.x)
    if hasattr(value, "toarray"):  # scipy.sparse (J_regressor)
        return np.asarray(value.toarray())
    return value


def read_model_file(path: str | Path) -> dict:
    """Read a SMPL-family model file (.pkl, chumpy or not, or .npz) into plain arrays."""
    path = Path(path)
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as fh:
                data = _NoChumpyUnpickler(fh, encoding="latin1").load()
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=True) as f:
                data = {k: f[k] for k in f.files}
        else:
            raise ValueError(f"{path}: expected a .pkl or .npz model file")
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, AttributeError, ImportError) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable body model file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a body model file (holds a {type(data).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: not a SMPL-family model file, missing {', '.join(missing)}")
    return {k: _plain(v, k, path) for k, v in data.items()}


def resolve_model_file(kind: str, model_path: str | Path, gender: str) -> Path:
    """The model file for `kind`/`gender` given a file or a folder (smplx's folder layout)."""
    p = Path(model_path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{kind} model path {p} does not exist")
    if p.is_file():
        return p
    stem = f"{kind.upper()}_{gender.upper()}"
    for folder in (p / kind, p):
        for ext in (".pkl", ".npz"):
            if (folder / (stem + ext)).is_file():
                return folder / (stem + ext)
    raise FileNotFoundError(
        f"no {stem}.pkl or {stem}.npz in {p} or {p / kind}; pass the model file itself or its folder"
    )


class SMPLFamilyModel(BodyModel):
    """SMPL (24 joints), SMPL-H (52) or SMPL-X (55) behind meshcap's BodyModel interface.

    Forward: pose (B, J, 3) / rotmats (B, J, 3, 3) in the smplx joint order (root first),
    shape (B or 1, 10) betas, transl (B, 3) -> joints (B, J, 3), keypoints (B, K, 3),
    vertices (B, V, 3). The hands of SMPL-H/X are posed per joint (no PCA); SMPL-X's expression
    stays neutral. `bone_scale` is supported.
    """

    supports_bone_scale = True

    def __init__(self, kind: str, model_path: str | Path, gender: str = "neutral",
                 num_betas: int = 10, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        import smplx

        if gender not in ("neutral", "male", "female"):
            raise ValueError(f"gender must be neutral, male or female, got {gender!r}")
        self.name = kind
        self.model_file = resolve_model_file(kind, model_path, gender)
        data = read_model_file(self.model_file)
        n_joints = np.asarray(data["kintree_table"]).shape[1]
        self.joint_names = list(JOINT_NAMES[kind])
        if n_joints != len(self.joint_names):
            raise ValueError(
                f"{self.model_file}: has {n_joints} joints, a {kind.upper()} model has "
                f"{len(self.joint_names)} (wrong --body-model for this file?)"
            )
        self.shape_dim = min(num_betas, np.asarray(data["shapedirs"]).shape[-1])
        common = dict(num_betas=self.shape_dim, dtype=dtype, create_global_orient=False,
                      create_body_pose=False, create_betas=False, create_transl=False)
        hands = dict(use_pca=False, flat_hand_mean=True, create_left_hand_pose=False,
                     create_right_hand_pose=False)
        from smplx.utils import Struct

        if kind == "smpl":
            self.layer = smplx.SMPL(str(self.model_file.parent), data_struct=Struct(**data), **common)
        elif kind == "smplh":
            self.layer = smplx.SMPLH(str(self.model_file.parent), data_struct=Struct(**data), **common, **hands)
        else:
            # smplx.SMPLX takes no data_struct: hand it the cleaned arrays as an .npz.
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "model.npz"
                np.savez(f, **{k: np.asarray(v) for k, v in data.items()})
                self.layer = smplx.SMPLX(str(f), ext="npz", num_expression_coeffs=10,
                                         create_expression=False, create_jaw_pose=False,
                                         create_leye_pose=False, create_reye_pose=False,
                                         **common, **hands)
        self.parents = [-1] + [int(p) for p in self.layer.parents[1:].tolist()]
        vids = _VERTEX_IDS[kind]
        n_verts = np.asarray(data["v_template"]).shape[0]
        if max(vids.values()) >= n_verts:
            raise ValueError(f"{self.model_file}: {n_verts} vertices, fewer than a {kind.upper()} mesh has")
        defs = _keypoint_definitions(kind)
        self.kp_names = list(defs)
        self._vertex_names = list(vids)
        source_names = [f"j:{n}" for n in self.joint_names] + [f"v:{n}" for n in self._vertex_names]
        table = np.zeros((len(defs), len(source_names)))
        for k, (n, combo) in enumerate(defs.items()):
            for s, w in combo.items():
                table[k, source_names.index(s)] = w
        self.register_buffer("kp_table", torch.as_tensor(table, dtype=dtype), persistent=False)
        self.register_buffer("kp_vertex_ids", torch.as_tensor(list(vids.values())), persistent=False)
        self._keypoint_buffers()

    def _keypoint_buffers(self) -> None:
        """What a forward without the mesh needs (`_keypoint_lbs`), from the smplx layer: the
        rest joints as linear functions of the betas, and the template, blend shapes, pose
        correctives and skinning weights of the few keypoint vertices only. smplx's layer
        always poses every vertex (6,890 for SMPL, 10,475 for SMPL-X), which made fitting's
        per-frame Jacobians (one forward per parameter) take gigabytes per frame."""
        L, ids, dtype = self.layer, self.kp_vertex_ids, self.kp_table.dtype
        buffers = dict(
            _j_template=L.J_regressor @ L.v_template,  # (J, 3)
            _j_dirs=torch.einsum("jv,vds->jds", L.J_regressor, L.shapedirs),  # (J, 3, S)
            _kv_template=L.v_template[ids],  # (N, 3)
            _kv_dirs=L.shapedirs[ids],  # (N, 3, S)
            _kv_posedirs=L.posedirs.reshape(L.posedirs.shape[0], -1, 3)[:, ids].reshape(L.posedirs.shape[0], -1),
            _kv_weights=L.lbs_weights[ids])  # (N, J)
        for name, value in buffers.items():
            self.register_buffer(name, value.to(dtype), persistent=False)

    @property
    def faces(self) -> torch.Tensor:
        return torch.as_tensor(self.layer.faces.astype(np.int64), device=self.device)

    def joint_weights(self) -> torch.Tensor:
        """(V, J) the model's own linear-blend-skinning weights."""
        return self.layer.lbs_weights.to(self.dtype)

    @property
    def num_vertices(self) -> int:
        return self.layer.v_template.shape[0]

    def _shaped(self, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rest vertices (B, V, 3), rest joints (B, J, 3)) of betas (B, S), expression neutral."""
        from smplx.lbs import blend_shapes, vertices2joints

        v = self.layer.v_template + blend_shapes(shape, self.layer.shapedirs)
        return v, vertices2joints(self.layer.J_regressor, v)

    def _scaled_rest(self, v: torch.Tensor, J: torch.Tensor, scale: torch.Tensor,
                     W: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest mesh (B, V, 3) and joints (B, J, 3) with each joint's part scaled about the
        joint by scale (B or 1, J), as anny's `bone_scale` does: child offsets by the parent's
        scale, each vertex by its skinning weights' blend of its joints' moves. v may be some
        vertices only, W (N, J) their skinning weights (default: the whole mesh's)."""
        Js = self._scaled_joints(J, scale)
        W = (self.layer.lbs_weights if W is None else W).to(v.dtype)  # (V, J)
        # v' = sum_j w_vj (J'_j + s_j (v - J_j))
        vs = W @ Js + (scale @ W.T)[..., None] * v - torch.einsum("vj,bj,bjd->bvd", W, scale.expand(J.shape[0], -1), J)
        return vs, Js

    def _scaled_joints(self, J: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Rest joints J (B, J, 3) with each child's offset scaled by its parent's scale (B or 1, J)."""
        Js = [J[:, 0]]
        for j in range(1, J.shape[1]):
            p = self.parents[j]
            Js.append(Js[p] + scale[:, p, None] * (J[:, j] - J[:, p]))
        return torch.stack(Js, 1)

    def rest_joints(self, shape: torch.Tensor, bone_scale: torch.Tensor | None = None) -> torch.Tensor:
        # the joints are linear in the betas (`_j_template`, `_j_dirs`): no mesh to shape
        shape = torch.as_tensor(shape, dtype=self.dtype, device=self.device)
        J = self._j_template + torch.einsum("jds,bs->bjd", self._j_dirs, shape)
        scale = self.check_bone_scale(bone_scale)
        return J if scale is None else self._scaled_joints(J, scale)

    def _forward(self, rotmats, shape, transl, layout, vertices, bone_scale=None) -> BodyModelOutput:
        B = rotmats.shape[0]
        if vertices:
            joints, verts = self._mesh_lbs(rotmats, shape.expand(B, -1), transl, bone_scale)
            return self._output(joints, verts[:, self.kp_vertex_ids], layout, verts)
        joints, kp_verts = self._keypoint_lbs(rotmats, shape.expand(B, -1), transl, bone_scale)
        return self._output(joints, kp_verts, layout)

    def _output(self, joints, kp_verts, layout, verts=None) -> BodyModelOutput:
        """joints (B, J, 3), the keypoint vertices kp_verts (B, N, 3), and the mesh verts
        (B, V, 3) where it was posed."""
        kp = None
        if layout is not None:
            kp = torch.einsum("kn,bnd->bkd", self._layout_table(layout), torch.cat([joints, kp_verts], dim=1))
        return BodyModelOutput(joints=joints, vertices=verts, keypoints=kp, layout=layout)

    def _keypoint_lbs(self, rotmats, betas, transl, scale=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(joints (B, J, 3), keypoint vertices (B, N, 3)): smplx's linear blend skinning (pose
        correctives included, `smplx.lbs.lbs`) of the skeleton and the keypoint vertices alone,
        the same values as the whole mesh's (a neutral expression for SMPL-X); bone scales
        `scale` (B or 1, J) as `_mesh_lbs` applies them."""
        J = self._j_template + torch.einsum("jds,bs->bjd", self._j_dirs, betas)
        v = self._kv_template + torch.einsum("nds,bs->bnd", self._kv_dirs, betas)
        if scale is not None:
            v, J = self._scaled_rest(v, J, scale, self._kv_weights)
        return self._skin(rotmats, v, J, self._kv_weights, self._kv_posedirs, transl)

    def _mesh_lbs(self, rotmats, betas, transl, scale=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(joints (B, J, 3), vertices (B, V, 3)): smplx's linear blend skinning (`smplx.lbs.lbs`,
        pose correctives included) of the whole mesh, from the rest pose scaled by bone scales
        `scale` (B or 1, J) if given. Written out rather than calling the smplx layer: smplx
        computes the rest joints inside (it cannot be handed scaled ones), and its SMPL-H and
        SMPL-X forwards take axis-angle only (handed rotation matrices, they fail adding the
        mean hand pose)."""
        v, J = self._shaped(betas)
        if scale is not None:
            v, J = self._scaled_rest(v, J, scale)
        return self._skin(rotmats, v, J, self.layer.lbs_weights, self.layer.posedirs, transl)

    def _skin(self, rotmats, v, J, weights, posedirs, transl) -> tuple[torch.Tensor, torch.Tensor]:
        """(posed joints (B, J, 3), posed vertices (B, N, 3)) as `smplx.lbs.lbs` poses them: rest
        vertices v (B, N, 3) plus their pose correctives (posedirs (P, N * 3)), moved by the
        skeleton's transforms from rest joints J (B, J, 3) blended by `weights` (N, J)."""
        from smplx.lbs import batch_rigid_transform

        B = rotmats.shape[0]
        eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
        v = v + ((rotmats[:, 1:] - eye).reshape(B, -1) @ posedirs).reshape(B, -1, 3)
        posed_joints, A = batch_rigid_transform(rotmats, J, self.layer.parents, dtype=rotmats.dtype)
        T = torch.einsum("nj,bjik->bnik", weights.to(rotmats.dtype), A)
        verts = (T[..., :3, :3] @ v[..., None])[..., 0] + T[..., :3, 3]
        return posed_joints + transl[:, None], verts + transl[:, None]

    def _layout_table(self, layout: str) -> torch.Tensor:
        names = get_layout(layout).names
        rows = []
        for n in names:
            if n not in self.kp_names:
                raise ValueError(f"layout {layout!r}: keypoint {n!r} is not defined for {self.name}")
            rows.append(self.kp_names.index(n))
        return self.kp_table[rows]
