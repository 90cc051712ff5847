"""Kinematic flips: the mirror solutions a single view cannot tell apart.

A limb segment seen by one camera can point toward or away from it with the same image: its
end can sit at either intersection of the viewing ray with the sphere around the segment's
start. Gradient descent stays in whichever it started near, so a fit from the rest pose often
ends with a limb mirrored in depth (Sminchisescu and Triggs, "Kinematic jump processes for
monocular 3D human tracking", CVPR 2003). `limb_flips` builds the four mirror variants of a
limb (upper segment flipped or not, lower segment flipped or not) that keep its elbow/knee and
wrist/ankle exactly where they project; the fitter scores them and keeps the best per limb.
"""
from __future__ import annotations

import roma
import torch

# (upper, lower, end) joints of each limb, per naming scheme.
LIMBS = {
    "anny": (("upperarm01.L", "lowerarm01.L", "wrist.L"), ("upperarm01.R", "lowerarm01.R", "wrist.R"),
             ("upperleg01.L", "lowerleg01.L", "foot.L"), ("upperleg01.R", "lowerleg01.R", "foot.R")),
    "smpl": (("left_shoulder", "left_elbow", "left_wrist"), ("right_shoulder", "right_elbow", "right_wrist"),
             ("left_hip", "left_knee", "left_ankle"), ("right_hip", "right_knee", "right_ankle")),
}
LIMBS["smplh"] = LIMBS["smplx"] = LIMBS["smpl"]


def global_rotations(rotmats: torch.Tensor, parents: list[int]) -> torch.Tensor:
    """(..., J, 3, 3) world rotations from local ones (parents before children)."""
    G = [rotmats[..., 0, :, :]]
    for j in range(1, len(parents)):
        G.append(G[parents[j]] @ rotmats[..., j, :, :])
    return torch.stack(G, -3)


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) the smallest rotation taking direction a (..., 3) to direction b."""
    a = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    b = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    axis = torch.cross(a, b, dim=-1)
    s = axis.norm(dim=-1, keepdim=True)
    angle = torch.atan2(s, (a * b).sum(-1, keepdim=True))
    return roma.rotvec_to_rotmat(axis / s.clamp(min=1e-9) * angle)


def _ray_sphere(point: torch.Tensor, center: torch.Tensor, radius: torch.Tensor):
    """Both intersections of the camera ray through `point` with a sphere: (near, far) points;
    where the ray misses, both are the ray's closest approach to the centre."""
    u = point / point.norm(dim=-1, keepdim=True)
    uc = (u * center).sum(-1, keepdim=True)
    disc = (uc.square() - center.square().sum(-1, keepdim=True) + radius.square()).clamp(min=0).sqrt()
    return (uc - disc) * u, (uc + disc) * u


def limb_flips(rotmats: torch.Tensor, joints: torch.Tensor, parents: list[int],
               limb: tuple[int, int, int]) -> torch.Tensor:
    """(3, N, J, 3, 3) local rotations of the three flipped variants of one limb.

    rotmats (N, J, 3, 3) local rotations, joints (N, J, 3) camera-frame positions of the
    current fit; limb = (upper, lower, end) joint indices. Variants: upper segment mirrored,
    lower segment mirrored, both. Each keeps the image of the lower and end joints.
    """
    a, b, c = limb
    G = global_rotations(rotmats, parents)
    A, B, C = joints[:, a], joints[:, b], joints[:, c]
    upper_len = (B - A).norm(dim=-1, keepdim=True)
    lower_len = (C - B).norm(dim=-1, keepdim=True)
    b_near, b_far = _ray_sphere(B, A, upper_len)
    # the elbow/knee's mirror: whichever intersection the current one is not
    B_flip = torch.where(((b_near - B).norm(dim=-1, keepdim=True) < (b_far - B).norm(dim=-1, keepdim=True)),
                         b_far, b_near)
    Ga_par = G[:, parents[a]]
    out = []
    for flip_upper, flip_lower in ((True, False), (False, True), (True, True)):
        R = rotmats.clone()
        Bn = B_flip if flip_upper else B
        R1 = _rotation_between(B - A, Bn - A)
        Ga = R1 @ G[:, a]
        R[:, a] = Ga_par.transpose(-1, -2) @ Ga
        # the end joint on its ray, at the lower segment's length from the (new) middle joint
        c1, c2 = _ray_sphere(C, Bn, lower_len)
        moved = Bn + (C - B)  # where the end goes if the lower segment keeps its direction
        keep = torch.where((c1 - moved).norm(dim=-1, keepdim=True) < (c2 - moved).norm(dim=-1, keepdim=True), c1, c2)
        other = torch.where((c1 - moved).norm(dim=-1, keepdim=True) < (c2 - moved).norm(dim=-1, keepdim=True), c2, c1)
        Cn = other if flip_lower else keep
        R2 = _rotation_between(C - B, Cn - Bn)
        Gb = R2 @ G[:, b]
        R[:, b] = Ga.transpose(-1, -2) @ Gb
        out.append(R)
    return torch.stack(out)
