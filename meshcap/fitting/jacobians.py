"""Analytic derivatives of a posed body's keypoints and joints along its pose, for body models
with a linear keypoint basis (anny's fast path, `AnnyModel.keypoint_basis`).

Turning joint i by w (world frame) moves any point p carried by its subtree by w x (p - x_i),
and the fast path's keypoints are linear in the joints' world rotations and positions, so one
forward pass gives every derivative. Both the Gauss-Newton solver (`gauss_newton`) and the
Laplace uncertainty (`uncertainty`) use them: forward-mode autodiff of the same quantities
takes one batched pass per parameter (63 of them), about six times longer here.
"""
from __future__ import annotations

from dataclasses import dataclass

import roma
import torch

from meshcap.body_models.base import descendants


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) the cross-product matrix [v]x (so [v]x u = v x u)."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def rotvec_to_right_jacobian(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3) the right Jacobian Jr of SO(3)'s exponential:
    exp(v + dv) = exp(v) exp(Jr(v) dv) to first order (roma has the maps, not their Jacobians)."""
    a2 = rotvec.square().sum(-1)[..., None, None]
    a = a2.sqrt()
    small = a < 1e-4
    safe = torch.where(small, torch.ones_like(a), a)
    c1 = torch.where(small, 0.5 - a2 / 24, (1 - torch.cos(safe)) / safe.square())
    c2 = torch.where(small, 1 / 6 - a2 / 120, (safe - torch.sin(safe)) / safe ** 3)
    K = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye - c1 * K + c2 * (K @ K)


def turn_jacobian(a: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(..., 3, I, 3): -[a_i]x B_i, laid out (row, i, column), for offsets a (..., I, 3) and
    turns B (..., I, 3, 3) (broadcast): how points at offsets a_i from joints i move per unit
    change of the joints' rotation vectors. Written out as cross products: batched 3x3
    matmuls after `skew` took about four times as long, for the same numbers."""
    Bt = B.transpose(-1, -2)  # (..., I, column, 3)
    ax, ay, az = a[..., 0, None], a[..., 1, None], a[..., 2, None]
    bx, by, bz = Bt[..., 0], Bt[..., 1], Bt[..., 2]
    # row d of -[a]x b is (b x a)_d
    return torch.stack([by * az - bz * ay, bz * ax - bx * az, bx * ay - by * ax], -3)


def posed_keypoints(G: torch.Tensor, x: torch.Tensor, C: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) keypoints from world rotations G (B, J, 3, 3), positions x (B, J, 3) and a
    keypoint basis C (K, J, 3), W (K, J) (`AnnyModel.keypoint_basis`)."""
    return torch.einsum("tjde,kje->tkd", G, C) + torch.einsum("kj,tjd->tkd", W, x)


@dataclass
class PosedJacobians:
    """A posed track and its derivatives along p = (the J rotation vectors, the translation),
    P = 3J + 3 values per frame: R (T, J, 3, 3) local and G (T, J, 3, 3) world rotations,
    x (T, J, 3) joints, kp (T, K, 3) keypoints, Jr (T, J, 3, 3) right Jacobians of the
    rotation vectors, C (K, J, 3) and W (K, J) the keypoint basis, Jkp (T, K, 3, P) and
    Jx (T, J, 3, P) (or None) the keypoints' and joints' derivatives."""

    R: torch.Tensor
    G: torch.Tensor
    x: torch.Tensor
    kp: torch.Tensor
    Jr: torch.Tensor
    C: torch.Tensor
    W: torch.Tensor
    Jkp: torch.Tensor
    Jx: torch.Tensor | None


def point_jacobians(G: torch.Tensor, x: torch.Tensor, B: torch.Tensor, C: torch.Tensor, W: torch.Tensor,
                    desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kp (T, K, 3), Jkp (T, K, 3, P)): points of a keypoint basis C (K, J, 3), W (K, J) posed
    by world rotations G (T, J, 3, 3) and joints x (T, J, 3), and their derivatives along the
    rotation vectors and translation; B (T, J, 3, 3) the world turn per unit rotation-vector
    change (G @ Jr), desc the model's `descendants`."""
    T, J = x.shape[:2]
    kp = posed_keypoints(G, x, C, W)
    Kn = kp.shape[1]
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    # keypoints: turning joint i by w moves keypoint k by w x a[k, i]
    parts = torch.einsum("tjde,kje->tkjd", G, C) + W[None, :, :, None] * x[:, None]
    a = torch.einsum("ij,tkjd->tkid", desc, parts) - \
        torch.einsum("ij,kj->ki", desc, W)[None, :, :, None] * x[:, None]
    Jkp = torch.cat([turn_jacobian(a, B[:, None]).reshape(T, Kn, 3, 3 * J),
                     W.sum(1)[None, :, None, None] * eye.expand(T, Kn, 3, 3)], -1)
    return kp, Jkp


def posed_jacobians(model, layout: str, pose: torch.Tensor, transl: torch.Tensor, shape: torch.Tensor,
                    desc: torch.Tensor | None = None, basis: tuple | None = None,
                    joints: bool = True) -> PosedJacobians:
    """`PosedJacobians` of pose (T, J, 3) rotation vectors, transl (T, 3), shape (1, S), in
    `layout`; `desc` the model's `descendants` (computed when None); `basis` (C, W, q) in
    place of the shape's keypoint basis and rest bone heads (a scaled skeleton's, keypoints
    moved by offsets); `joints` False leaves the joints' derivatives out (Jx None)."""
    T, J = pose.shape[:2]
    if desc is None:
        desc = descendants(model.parents, pose.dtype, pose.device)
    R = roma.rotvec_to_rotmat(pose)
    if basis is None:
        C, W = model.keypoint_basis(shape, layout)
        q = model._rest(shape)["q"]
    else:
        C, W, q = basis
    G, x = model._fk(R, transl, q)
    Jr = rotvec_to_right_jacobian(pose)
    B = G @ Jr  # world turn per unit rotation-vector change
    kp, Jkp = point_jacobians(G, x, B, C, W, desc)
    if not joints:
        return PosedJacobians(R, G, x, kp, Jr, C, W, Jkp, None)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    # joints: joint d moves by w x (x_d - x_i) for i above it
    anc = desc.transpose(0, 1)  # anc[d, i]: i is d or above it
    dx = x[:, :, None] - x[:, None]  # (T, d, i, 3)
    Jx_rot = turn_jacobian(dx, B[:, None]) * anc[None, :, None, :, None]  # (T, d, 3, i, 3)
    Jx = torch.cat([Jx_rot.reshape(T, J, 3, 3 * J), eye.expand(T, J, 3, 3)], -1)
    return PosedJacobians(R, G, x, kp, Jr, C, W, Jkp, Jx)
