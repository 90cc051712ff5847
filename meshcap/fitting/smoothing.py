"""Zero-phase Gaussian smoothing of a fitted track over time: rotations averaged on the
rotation group, translations averaged linearly.

Why a filter after the fit: the fit follows the detector's jitter (3 px of noise gives twice
the acceleration error of clean input on the real-motion benchmark), and a stronger
acceleration term inside the optimisation costs accuracy before Adam's 150 steps converge
(`w_accel` 1e-4: accel 28 -> 18 mm/frame^2 but PA-MPJPE +4.7 mm). A Gaussian of 1.5 frames at
30 fps takes the acceleration error from 28 to 15 mm/frame^2 and leaves PA-MPJPE as it was
(bench/real_motion.py; docs/design.md). No library smooths rotations on the group in a batch
(scipy's Rotation.mean is one weighted mean at a time), hence the few lines here.
"""
from __future__ import annotations

import roma
import torch


def _kernel(sigma: float, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    k = max(1, int(round(3 * sigma)))
    w = torch.exp(-0.5 * (torch.arange(-k, k + 1, dtype=dtype) / sigma) ** 2)
    return w / w.sum(), k


def smooth_linear(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(T, ...) samples smoothed over the first axis by a Gaussian of `sigma` samples (edges
    held: the first and last samples repeat)."""
    if sigma <= 0 or x.shape[0] < 3:
        return x
    w, k = _kernel(sigma, x.dtype)
    T = x.shape[0]
    idx = (torch.arange(T)[:, None] + torch.arange(-k, k + 1)[None]).clamp(0, T - 1)  # (T, 2k+1)
    shape = (T, 2 * k + 1) + (1,) * (x.ndim - 1)
    return (w.reshape(1, -1, *([1] * (x.ndim - 1))).expand(shape) * x[idx]).sum(1)


def smooth_rotvecs(rotvec: torch.Tensor, sigma: float) -> torch.Tensor:
    """(T, ..., 3) axis-angle rotations smoothed over the first axis by a Gaussian of `sigma`
    samples: each frame's rotation moved to the weighted mean of its neighbours' rotations
    relative to it (one step of the Karcher mean, exact for the small differences between
    neighbouring frames), so no averaging happens across the axis-angle wrap at pi."""
    if sigma <= 0 or rotvec.shape[0] < 3:
        return rotvec
    w, k = _kernel(sigma, rotvec.dtype)
    T = rotvec.shape[0]
    R = roma.rotvec_to_rotmat(rotvec)
    mean = torch.zeros_like(rotvec)
    for j, off in enumerate(range(-k, k + 1)):
        idx = (torch.arange(T) + off).clamp(0, T - 1)
        mean = mean + w[j] * roma.rotmat_to_rotvec(R.transpose(-1, -2) @ R[idx])
    return roma.rotmat_to_rotvec(R @ roma.rotvec_to_rotmat(mean))
