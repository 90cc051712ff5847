"""A structurally valid SMPL model file, made up for tests (real SMPL files are licensed and
never shipped): SMPL's topology sizes, its kinematic tree, a rough body (a cluster of vertices
around each joint, and the vertices smplx names for the face, feet and fingertips where a body
has them), and chumpy objects in the pickle, as in the original files."""
from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from meshcap.body_models.smpl_family import _VERTEX_IDS

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# Rest joint positions of a ~1.7 m person, y up, facing +z, left on +x.
SMPL_REST_JOINTS = np.array([
    [0.0, 0.0, 0.0], [0.08, -0.09, 0.0], [-0.08, -0.09, 0.0], [0.0, 0.11, -0.02],
    [0.11, -0.47, 0.0], [-0.11, -0.47, 0.0], [0.0, 0.24, 0.0], [0.1, -0.87, -0.04],
    [-0.1, -0.87, -0.04], [0.0, 0.29, 0.02], [0.12, -0.93, 0.08], [-0.12, -0.93, 0.08],
    [0.0, 0.5, -0.01], [0.08, 0.41, 0.0], [-0.08, 0.41, 0.0], [0.0, 0.56, 0.04],
    [0.18, 0.43, -0.02], [-0.18, 0.43, -0.02], [0.44, 0.42, -0.03], [-0.44, 0.42, -0.03],
    [0.69, 0.42, -0.03], [-0.69, 0.42, -0.03], [0.78, 0.41, -0.03], [-0.78, 0.41, -0.03],
])


VERTEX_IDS = _VERTEX_IDS["smpl"]
# name: (joint, offset from it in the rest pose, metres; y up, facing +z, left on +x)
_LANDMARKS = {"nose": (15, (0.0, 0.0, 0.10)), "left_eye": (15, (0.03, 0.03, 0.08)),
              "right_eye": (15, (-0.03, 0.03, 0.08)), "left_ear": (15, (0.075, 0.01, -0.01)),
              "right_ear": (15, (-0.075, 0.01, -0.01)), "left_heel": (7, (0.0, -0.09, -0.05)),
              "right_heel": (8, (0.0, -0.09, -0.05)), "left_big_toe": (10, (-0.02, -0.03, 0.09)),
              "right_big_toe": (11, (0.02, -0.03, 0.09)), "left_small_toe": (10, (0.03, -0.03, 0.07)),
              "right_small_toe": (11, (-0.03, -0.03, 0.07)), "left_index_tip": (22, (0.09, 0.0, 0.02)),
              "right_index_tip": (23, (-0.09, 0.0, 0.02)), "left_pinky_tip": (22, (0.07, 0.0, -0.03)),
              "right_pinky_tip": (23, (-0.07, 0.0, -0.03)), "left_thumb_tip": (22, (0.04, 0.0, 0.05)),
              "right_thumb_tip": (23, (-0.04, 0.0, 0.05))}


class _Ch:
    """Pickles like chumpy's Ch: a class from module `chumpy.ch` with the value in `x`."""

    def __init__(self, x):
        self.x = x


def write_synthetic_smpl(path: str | Path, seed: int = 0, chumpy: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    V, J = 6890, 24
    owner = np.arange(V) % J
    offsets = rng.normal(0, 0.03, (V, 3))
    # the vertices smplx names (nose, eyes, ears, toes, heels, fingertips) where a body has
    # them, on the joint that carries them, and left out of the joint regressor
    landmarks = {VERTEX_IDS[n]: (j, off) for n, (j, off) in _LANDMARKS.items()}
    plain = np.ones(V, bool)
    plain[list(landmarks)] = False
    for j in range(J):  # each cluster's offsets average to zero: the regressor finds the joint
        offsets[(owner == j) & plain] -= offsets[(owner == j) & plain].mean(0)
    for v, (j, off) in landmarks.items():
        owner[v], offsets[v] = j, off
    v_template = SMPL_REST_JOINTS[owner] + offsets
    J_regressor = np.zeros((J, V))
    J_regressor[owner[plain], np.arange(V)[plain]] = 1.0
    J_regressor /= J_regressor.sum(1, keepdims=True)
    weights = np.zeros((V, J))
    weights[np.arange(V), owner] = 1.0
    shapedirs = rng.normal(0, 0.005, (V, 3, 10))
    posedirs = rng.normal(0, 1e-4, (V, 3, 207))
    i = np.resize(np.arange(V), 13776)
    faces = np.stack([i, i + J, i + 2 * J], axis=1)[:13776] % V  # triangles within one cluster
    kintree = np.array([[4294967295] + SMPL_PARENTS[1:], list(range(J))], dtype=np.int64)
    data = dict(
        v_template=v_template, shapedirs=shapedirs, posedirs=posedirs,
        J_regressor=scipy.sparse.csc_matrix(J_regressor), weights=weights,
        kintree_table=kintree, f=faces.astype(np.uint32), bs_type="lrotmin", bs_style="lbs",
    )
    path = Path(path)
    if chumpy:
        mod = types.ModuleType("chumpy.ch")
        _Ch.__module__, _Ch.__qualname__ = "chumpy.ch", "Ch"
        mod.Ch = _Ch
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), mod
        try:
            for k in ("v_template", "shapedirs", "posedirs", "weights"):
                data[k] = _Ch(data[k])
            with open(path, "wb") as fh:
                pickle.dump(data, fh, protocol=2)
        finally:
            del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    else:
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    return path


def _hands_body(rng, V: int, parents: list[int]) -> dict:
    """A made-up body for SMPL-H/X: SMPL's 22 body joints at rest, the other joints a few
    centimetres from their parents, a vertex cluster around each joint with soft skinning
    weights over all joints, and the hand PCA arrays smplx reads (identity, no mean)."""
    J = len(parents)
    rest = np.zeros((J, 3))
    rest[:22] = SMPL_REST_JOINTS[:22]
    for j in range(22, J):
        rest[j] = rest[parents[j]] + rng.normal(0, 0.03, 3)
    owner = np.arange(V) % J
    J_regressor = np.zeros((J, V))
    J_regressor[owner, np.arange(V)] = 1.0
    J_regressor /= J_regressor.sum(1, keepdims=True)
    weights = rng.random((V, J)) ** 8
    weights[np.arange(V), owner] += 1.0
    weights /= weights.sum(1, keepdims=True)
    return dict(v_template=rest[owner] + rng.normal(0, 0.02, (V, 3)), J_regressor=J_regressor, weights=weights,
                posedirs=rng.normal(0, 0.005, (V, 3, (J - 1) * 9)),
                kintree_table=np.array([[4294967295] + parents[1:], list(range(J))], dtype=np.int64),
                hands_componentsl=np.eye(45), hands_componentsr=np.eye(45), hands_meanl=np.zeros(45),
                hands_meanr=np.zeros(45))


def _fingers(wrist: int, first: int) -> list[int]:
    """Parents of a hand's 15 joints numbered from `first`: five three-joint chains from `wrist`."""
    return [wrist if k % 3 == 0 else first + k - 1 for k in range(15)]


def write_synthetic_smplh(path: str | Path, seed: int = 0) -> Path:
    """A structurally valid SMPL-H file, made up likewise: SMPL's 22 body joints and three-joint
    fingers under each wrist (52 joints), soft skinning weights over all of them, pose
    correctives and blend shapes large enough to matter, and the hand PCA arrays smplx reads."""
    rng = np.random.default_rng(seed)
    V = 6890
    data = _hands_body(rng, V, SMPL_PARENTS[:22] + _fingers(20, 22) + _fingers(21, 37))
    data.update(shapedirs=rng.normal(0, 0.02, (V, 3, 10)), J_regressor=scipy.sparse.csc_matrix(data["J_regressor"]),
                f=(np.arange(13776 * 3) % V).reshape(-1, 3).astype(np.uint32))
    path = Path(path)
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    return path


def write_synthetic_smplx(path: str | Path, seed: int = 0) -> Path:
    """A structurally valid SMPL-X file, made up likewise: SMPL-X's 10,475 vertices and 55
    joints (the 22 body joints, jaw and eyes under the head, three-joint fingers under each
    wrist), 10 betas and 10 expression directions, and the face landmark arrays smplx reads."""
    rng = np.random.default_rng(seed)
    V, F = 10475, 20908
    data = _hands_body(rng, V, SMPL_PARENTS[:22] + [15, 15, 15] + _fingers(20, 25) + _fingers(21, 40))
    data.update(shapedirs=rng.normal(0, 0.02, (V, 3, 20)), f=(np.arange(F * 3) % V).reshape(-1, 3).astype(np.uint32),
                lmk_faces_idx=rng.integers(0, F, 51), lmk_bary_coords=np.full((51, 3), 1 / 3),
                dynamic_lmk_faces_idx=rng.integers(0, F, (79, 17)), dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3))
    path = Path(path)
    np.savez(path, **data)
    return path
