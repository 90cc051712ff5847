"""Accuracy measures as the literature defines them (HMR, SPIN, VIBE), for any leading batch dims."""
from __future__ import annotations

import roma
import torch


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, root: int = 0) -> torch.Tensor:
    """(...,) mean per-joint position error after aligning the roots; joints (..., J, 3)."""
    return ((pred - pred[..., root:root + 1, :]) - (gt - gt[..., root:root + 1, :])).norm(dim=-1).mean(-1)


def pa_joint_errors(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(..., J) each joint's error after a similarity Procrustes alignment of each pose;
    joints (..., J, 3)."""
    lead = pred.shape[:-1]
    p, g = pred.reshape(-1, *pred.shape[-2:]), gt.reshape(-1, *gt.shape[-2:])
    R, t, s = roma.rigid_points_registration(p, g, compute_scaling=True)
    aligned = s[:, None, None] * (p @ R.transpose(-1, -2)) + t[:, None]
    return (aligned - g).norm(dim=-1).reshape(lead)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(...,) mean per-joint error after a similarity Procrustes alignment of each pose."""
    return pa_joint_errors(pred, gt).mean(-1)


def accel_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean over frames and joints of |second difference of pred - of gt|, in units per frame^2
    (mm/frame^2 for millimetres); sequences (T, J, 3) or (..., T, J, 3), T >= 3."""
    def acc(x):
        return x[..., 2:, :, :] - 2 * x[..., 1:-1, :, :] + x[..., :-2, :, :]
    return (acc(pred) - acc(gt)).norm(dim=-1).mean((-1, -2))
