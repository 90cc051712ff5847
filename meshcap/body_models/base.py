"""The one body-model interface that fitting, regression and export use."""
from __future__ import annotations

from dataclasses import dataclass

import roma
import torch

from meshcap.keypoints.layouts import get_layout

__all__ = ["BodyModel", "BodyModelOutput", "Skeleton", "descendants"]


def descendants(parents, dtype=torch.float32, device=None) -> torch.Tensor:
    """(J, J) desc[i, j] = 1 where joint j is joint i or below it."""
    J = len(parents)
    desc = torch.eye(J, dtype=dtype, device=device)
    for j in range(J):
        i = parents[j]
        while i >= 0:
            desc[i, j] = 1.0
            i = parents[i]
    return desc


@dataclass
class Skeleton:
    """A body model's fitted skeleton.

    joint_names: J names; parents: J parent indices (-1 for the root, parents before children);
    offsets: (B, J, 3) rest offset of each joint from its parent (the root's: its rest
    position), metres, canonical frame (y up, facing +z). Rotations of the model are local,
    about world-aligned axes of this rest pose, so these offsets are exactly what BVH needs.
    """

    joint_names: list[str]
    parents: list[int]
    offsets: torch.Tensor


@dataclass
class BodyModelOutput:
    """What a body model's forward returns (smplx-like).

    joints: (B, J, 3) posed skeleton joints. keypoints: (B, K, 3) the requested layout, or None.
    vertices: (B, V, 3) or None when the fast path was asked for. All in metres, canonical
    frame (y up, body facing +z at identity root rotation).
    """

    joints: torch.Tensor
    vertices: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    layout: str | None = None


class BodyModel(torch.nn.Module):
    """Base class. Subclasses set `name`, `joint_names`, `parents`, `shape_dim` and implement
    `_forward(rotmats, shape, transl, layout, vertices)` and `rest_joints(shape)`.

    Pose is one local rotation per skeleton joint (the root's is the global orientation,
    about the root joint), as axis-angle `pose` (B, J, 3) or matrices `rotmats` (B, J, 3, 3),
    plus a root translation `transl` (B, 3). Shape is (B, S) or (1, S) broadcast to B.
    """

    name: str = "base"
    joint_names: list[str]
    parents: list[int]
    shape_dim: int
    # whether `bone_scale` is available (see `forward`): proportions beyond the shape space
    supports_bone_scale: bool = False

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.buffers())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.buffers())).device

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        """(batch_size, S) the mean / neutral shape."""
        return torch.zeros(batch_size, self.shape_dim, dtype=self.dtype, device=self.device)

    def mirror_permutation(self) -> list[int]:
        """(J,) joint index map that swaps left and right ("foot.L"/"foot.R" as anny names
        them, "left_foot"/"right_foot" as SMPL does): joint i of a mirror image is joint perm[i]."""
        def other(n: str) -> str:
            for a, b in ((".L", ".R"), (".R", ".L")):
                if n.endswith(a):
                    return n[:-2] + b
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if n.startswith(a):
                    return b + n[len(a):]
            return n

        names = list(self.joint_names)
        return [names.index(m) if (m := other(n)) in names else i for i, n in enumerate(names)]

    def keypoint_names(self, layout: str) -> tuple[str, ...]:
        return get_layout(layout).names

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 triangle indices of the full mesh."""
        raise NotImplementedError

    def joint_weights(self) -> torch.Tensor:
        """(V, J) skinning weight of each mesh vertex on each fitted joint (rows sum to 1):
        how a per-joint quantity (an uncertainty, a colour) spreads over the surface."""
        raise NotImplementedError

    def skeleton(self, shape: torch.Tensor | None = None, bone_scale: torch.Tensor | None = None) -> Skeleton:
        """Joint names, parents and the rest offsets (B, J, 3) for `shape` (B, S) and
        `bone_scale` (B or 1, J) (see `forward`)."""
        if shape is None:
            shape = self.default_shape()
        rest = self.rest_joints(shape) if bone_scale is None else self.rest_joints(shape, bone_scale)
        parents = torch.as_tensor(self.parents[1:], device=rest.device)
        offsets = torch.cat([rest[:, :1], rest[:, 1:] - rest[:, parents]], dim=1)
        return Skeleton(list(self.joint_names), list(self.parents), offsets)

    def rest_joints(self, shape: torch.Tensor, bone_scale: torch.Tensor | None = None) -> torch.Tensor:
        """(B, J, 3) joint positions at identity pose for `shape` (B, S) and `bone_scale`
        (B or 1, J) (see `forward`)."""
        raise NotImplementedError

    def check_bone_scale(self, bone_scale, batch_size: int | None = None) -> torch.Tensor | None:
        """`bone_scale` as a (B or 1, J) tensor of this model's dtype and device, or None when it
        is None or all ones; ValueError for a wrong shape, a non-positive or non-finite value, or
        a model without bone scales."""
        if bone_scale is None:
            return None
        s = torch.as_tensor(bone_scale, dtype=self.dtype, device=self.device)
        J = self.num_joints
        if s.ndim == 1:
            s = s[None]
        if s.ndim != 2 or s.shape[1] != J or (batch_size is not None and s.shape[0] not in (1, batch_size)):
            want = f"({batch_size} or 1, {J})" if batch_size is not None else f"(B, {J})"
            raise ValueError(f"{self.name}: bone_scale must have shape {want}, got {tuple(s.shape)}")
        if not (torch.isfinite(s).all() and (s > 0).all()):
            raise ValueError(f"{self.name}: bone_scale must be finite and positive")
        if not s.requires_grad and bool((s == 1).all()):
            return None
        if not self.supports_bone_scale:
            raise ValueError(f"{self.name}: per-bone scales are not available for this body model")
        return s

    def _check_inputs(self, pose, rotmats, shape, transl):
        if (pose is None) == (rotmats is None):
            if pose is None:
                raise ValueError("give the pose as `pose` (B, J, 3) axis-angle or `rotmats` (B, J, 3, 3)")
            raise ValueError("give either `pose` or `rotmats`, not both")
        J = self.num_joints
        if pose is not None:
            pose = torch.as_tensor(pose, dtype=self.dtype, device=self.device)
            if pose.ndim != 3 or pose.shape[1:] != (J, 3):
                raise ValueError(
                    f"{self.name}: pose must have shape (B, {J}, 3) axis-angle, got {tuple(pose.shape)}"
                )
            rotmats = roma.rotvec_to_rotmat(pose)
        else:
            rotmats = torch.as_tensor(rotmats, dtype=self.dtype, device=self.device)
            if rotmats.ndim != 4 or rotmats.shape[1:] != (J, 3, 3):
                raise ValueError(
                    f"{self.name}: rotmats must have shape (B, {J}, 3, 3), got {tuple(rotmats.shape)}"
                )
        B = rotmats.shape[0]
        if shape is None:
            shape = self.default_shape()
        shape = torch.as_tensor(shape, dtype=self.dtype, device=self.device)
        if shape.ndim != 2 or shape.shape[1] != self.shape_dim or shape.shape[0] not in (1, B):
            raise ValueError(
                f"{self.name}: shape must have shape ({B} or 1, {self.shape_dim}), got {tuple(shape.shape)}"
            )
        if transl is None:
            transl = torch.zeros(B, 3, dtype=self.dtype, device=self.device)
        transl = torch.as_tensor(transl, dtype=self.dtype, device=self.device)
        if transl.shape not in ((B, 3), (1, 3)):
            raise ValueError(f"{self.name}: transl must have shape ({B}, 3), got {tuple(transl.shape)}")
        for n, t in (("pose", rotmats), ("shape", shape), ("transl", transl)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{self.name}: {n} contains NaN or infinite values")
        return rotmats, shape, transl.expand(B, 3)

    def forward(
        self,
        pose: torch.Tensor | None = None,
        shape: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        *,
        rotmats: torch.Tensor | None = None,
        layout: str | None = None,
        vertices: bool = True,
        bone_scale: torch.Tensor | None = None,
    ) -> BodyModelOutput:
        """Pose the body.

        Args:
            pose: (B, J, 3) axis-angle local rotations (root first), or give `rotmats`.
            shape: (B, S) or (1, S); None for the default shape.
            transl: (B, 3) root translation, metres.
            rotmats: (B, J, 3, 3) rotation matrices instead of `pose`.
            layout: name of a keypoint layout (`coco17`, `blazepose33`, ...) to return.
            vertices: False takes the fast path: skeleton and keypoints only, the full mesh
                is never skinned.
            bone_scale: (B or 1, J) proportions beyond the shape space: joint j's body part
                (its mesh, keypoints and the rest offsets of its child joints) is scaled by
                bone_scale[:, j] about the joint; None or ones: the shape's own proportions.
                Rotations keep their meaning (local, about world-aligned rest axes).
        Returns:
            BodyModelOutput with joints (B, J, 3), keypoints (B, K, 3) and vertices (B, V, 3).
        """
        rotmats, shape, transl = self._check_inputs(pose, rotmats, shape, transl)
        if layout is not None:
            get_layout(layout)
        scale = self.check_bone_scale(bone_scale, rotmats.shape[0])
        if scale is None:
            return self._forward(rotmats, shape, transl, layout, vertices)
        return self._forward(rotmats, shape, transl, layout, vertices, bone_scale=scale)

    def _forward(self, rotmats, shape, transl, layout, vertices) -> BodyModelOutput:
        raise NotImplementedError
