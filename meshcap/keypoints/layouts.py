"""Named keypoint layouts and conversion between them by name.

A layout is an ordered tuple of keypoint names. Every other part of meshcap refers to keypoints
by layout name and keypoint name, never by bare index lists, so a detector's output, a body
model's keypoints and a file on disk meet through these names.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Layout", "get_layout", "layout_names", "convert_keypoints", "LAYOUTS", "MIDPOINTS"]


@dataclass(frozen=True)
class Layout:
    """An ordered set of named keypoints, with left/right pairs for mirroring."""

    name: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"keypoint {name!r} is not in layout {self.name!r}") from None

    def flip_permutation(self) -> list[int]:
        """Index map that swaps left and right keypoints (for mirrored images)."""
        out = []
        for n in self.names:
            if n.startswith("left_"):
                m = "right_" + n[5:]
            elif n.startswith("right_"):
                m = "left_" + n[6:]
            else:
                m = n
            out.append(self.names.index(m) if m in self.names else self.names.index(n))
        return out


_COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# MediaPipe BlazePose landmark order (pose_landmarker / mp.solutions.pose).
_BLAZEPOSE33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer",
    "right_eye_inner", "right_eye", "right_eye_outer", "left_ear", "right_ear",
    "mouth_left", "mouth_right", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)

# OpenPose BODY_25 order.
_OPENPOSE25 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist", "mid_hip",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel",
    "right_big_toe", "right_small_toe", "right_heel",
)

# OpenPose COCO-18 order.
_OPENPOSE18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

# SMPL's 24 skeleton joints (smplx naming).
_SMPL24 = (
    "pelvis", "left_hip_joint", "right_hip_joint", "spine1", "left_knee_joint",
    "right_knee_joint", "spine2", "left_ankle_joint", "right_ankle_joint", "spine3",
    "left_foot", "right_foot", "neck_joint", "left_collar", "right_collar", "head",
    "left_shoulder_joint", "right_shoulder_joint", "left_elbow_joint", "right_elbow_joint",
    "left_wrist_joint", "right_wrist_joint", "left_hand", "right_hand",
)

LAYOUTS: dict[str, Layout] = {
    "coco17": Layout("coco17", _COCO17),
    "blazepose33": Layout("blazepose33", _BLAZEPOSE33),
    "openpose25": Layout("openpose25", _OPENPOSE25),
    "openpose18": Layout("openpose18", _OPENPOSE18),
    "smpl24": Layout("smpl24", _SMPL24),
}

# Keypoints that a layout may lack but that are well defined from others (midpoints); body
# models define them the same way.
MIDPOINTS: dict[str, tuple[str, str]] = {
    "neck": ("left_shoulder", "right_shoulder"),
    "mid_hip": ("left_hip", "right_hip"),
}


def layout_names() -> list[str]:
    return sorted(LAYOUTS)


def get_layout(layout: str | Layout) -> Layout:
    """The layout of that name; raises a ValueError listing the known ones."""
    if isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(
            f"unknown keypoint layout {layout!r}; known layouts: {', '.join(layout_names())}"
        ) from None


def convert_keypoints(keypoints, src: str | Layout, dst: str | Layout, confidence: bool = True):
    """Re-order keypoints from one layout into another, by name.

    Args:
        keypoints: (..., K_src, C) array or tensor.
        src, dst: layout names.
        confidence: whether the last channel is a confidence (2D keypoints `(x, y, c)`);
            pass False for 3D positions.
    Returns:
        (..., K_dst, C), same type. Keypoints of `dst` that `src` lacks are derived where a
        midpoint rule exists (`neck`, `mid_hip`, confidence = the smaller one) and otherwise
        missing: confidence 0 and NaN coordinates.
    """
    src_l, dst_l = get_layout(src), get_layout(dst)
    if keypoints.shape[-2] != len(src_l):
        raise ValueError(
            f"keypoints have {keypoints.shape[-2]} points but layout {src_l.name!r} has "
            f"{len(src_l)}"
        )
    is_torch = isinstance(keypoints, torch.Tensor)
    xp = torch if is_torch else np
    shape = tuple(keypoints.shape[:-2]) + (len(dst_l), keypoints.shape[-1])
    if is_torch:
        out = torch.full(shape, float("nan"), dtype=keypoints.dtype, device=keypoints.device)
    else:
        out = np.full(shape, np.nan, dtype=np.result_type(keypoints.dtype, np.float32))
    has_conf = confidence and keypoints.shape[-1] >= 3
    n_coord = keypoints.shape[-1] - 1 if has_conf else keypoints.shape[-1]
    for j, name in enumerate(dst_l.names):
        if name in src_l.names:
            out[..., j, :] = keypoints[..., src_l.index(name), :]
        elif name in MIDPOINTS and all(n in src_l.names for n in MIDPOINTS[name]):
            a = keypoints[..., src_l.index(MIDPOINTS[name][0]), :]
            b = keypoints[..., src_l.index(MIDPOINTS[name][1]), :]
            out[..., j, :n_coord] = (a[..., :n_coord] + b[..., :n_coord]) / 2
            if has_conf:
                out[..., j, -1] = xp.minimum(a[..., -1], b[..., -1])
        elif has_conf:
            out[..., j, -1] = 0.0
    return out
