"""Per-joint uncertainty of a fit: a Laplace (Gauss-Newton) approximation at the optimum.

Each frame's parameters p (local rotations and root translation, D = 3J + 3) get a Gaussian
posterior whose precision is

    H = A^T W A + P + G^T S G

- A = d(projected keypoints)/dp, W = confidence / sigma_px^2 per keypoint coordinate, with
  sigma_px the track's 2D noise, estimated robustly from the fit's own residuals (never below
  `min_pixel_sigma` or half a percent of the person's height);
- P: the pose prior as a Gaussian, `pose_sigma` radians per body-joint axis, plus very weak
  priors on the root (so a frame with nothing seen has a large but finite uncertainty);
- G = d(root-relative joints)/dp and S = 1/sigma_init^2 when an initialisation with its own
  per-joint sigma took part (the regressor's, for instance).

A joint's reported sigma is the per-axis RMS of its position's covariance G' H^-1 G'^T, where
the position is taken with the root's depth held fixed: a monocular fit's overall distance
from the camera is a separate, global unknown and would otherwise swamp every joint equally.
What the approximation leaves out (a mirrored limb that reprojects the same, the temporal
terms that narrow the posterior) is discussed in docs/design.md; bench/fitting_accuracy.py
prints how well these sigmas match the real errors.
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.autograd.forward_ad as fwad

from meshcap.body_models.base import BodyModel
from meshcap.errors import MeshcapError
from meshcap.fitting.camera import project, projection_jacobian
from meshcap.fitting.jacobians import posed_jacobians

# PyTorch's forward-mode AD levels are process-wide: tracks fitted in parallel threads take
# turns here.
_DUAL_LEVEL = threading.Lock()


def _jacobians(model: BodyModel, layout: str, pose, shape, transl, K, chunk_bodies: int):
    """d(keypoints 2D)/dp (T, 2K, D) and d(joints, root depth fixed)/dp (T, 3J, D): analytic
    for a model with a linear keypoint basis (`meshcap.fitting.jacobians`), else forward mode
    with one tangent per parameter, D forward passes batched into one per chunk of frames."""
    T, J = pose.shape[:2]
    D = 3 * J + 3
    if hasattr(model, "keypoint_basis") and shape.shape[0] == 1:
        pj = posed_jacobians(model, layout, pose, transl, shape)
        A = (projection_jacobian(pj.kp, K) @ pj.Jkp).reshape(T, -1, D)
        G = pj.Jx.clone()
        G[:, :, 2] -= pj.Jx[:, :1, 2]  # the root's depth held fixed
        return A, G.reshape(T, 3 * J, D)
    p_all = torch.cat([pose.reshape(T, -1), transl], 1)
    eye = torch.eye(D, dtype=pose.dtype, device=pose.device)
    step = max(1, chunk_bodies // D)
    with _DUAL_LEVEL:
        return _jacobian_chunks(model, layout, p_all, shape, K, J, D, eye, step)


def _jacobian_chunks(model, layout, p_all, shape, K, J, D, eye, step):
    T = p_all.shape[0]
    A, G = [], []
    for s in range(0, T, step):
        p = p_all[s:s + step]
        n = p.shape[0]
        with fwad.dual_level():
            dp = fwad.make_dual(p.repeat_interleave(D, dim=0), eye.repeat(n, 1))
            out = model(dp[:, :3 * J].reshape(-1, J, 3), shape, dp[:, 3 * J:], layout=layout,
                        vertices=False)
            uv = project(out.keypoints, K)
            joints = out.joints - torch.stack([torch.zeros_like(out.joints[:, 0, 0])] * 2
                                              + [out.joints[:, 0, 2]], -1)[:, None]
            A.append(fwad.unpack_dual(uv).tangent.reshape(n, D, -1).transpose(1, 2))
            G.append(fwad.unpack_dual(joints).tangent.reshape(n, D, -1).transpose(1, 2))
    return torch.cat(A), torch.cat(G)


def pixel_sigma(residual_px: torch.Tensor, conf: torch.Tensor, person_px: float,
                min_pixel_sigma: float = 1.0) -> float:
    """Per-axis 2D noise (pixels) from residuals (T, K) of observed keypoints (conf > 0):
    for isotropic Gaussian noise |r|^2 / sigma^2 is chi-square with 2 dof, median 2 ln 2."""
    r = residual_px[(conf > 0) & torch.isfinite(residual_px)]
    floor = max(min_pixel_sigma, 0.005 * person_px)
    if r.numel() == 0:
        return floor
    return max(floor, math.sqrt(float(r.square().median()) / (2 * math.log(2))))


def joint_sigma(model: BodyModel, layout: str, pose: torch.Tensor, shape: torch.Tensor,
                transl: torch.Tensor, xy: torch.Tensor, conf: torch.Tensor, K: torch.Tensor,
                init_sigma: torch.Tensor | None = None, pose_sigma: float = 0.5,
                min_pixel_sigma: float = 1.0, chunk_bodies: int = 16384) -> torch.Tensor:
    """Per-joint 1-sigma (T, J), metres, of a fit.

    Args:
        pose (T, J, 3), shape (1, S), transl (T, 3): the fit. xy (T, K, 2) observed keypoints,
        pixels; conf (T, K) their confidences (0 = missing). K (3, 3) intrinsics.
        init_sigma: (T, J) sigma of an initialisation that the fit was pulled toward, or None.
        pose_sigma: the pose prior's spread per body-joint rotation axis, radians.
    """
    T, J = pose.shape[:2]
    D = 3 * J + 3
    with torch.no_grad():
        A, G = _jacobians(model, layout, pose.detach(), shape.detach(), transl.detach(), K, chunk_bodies)
        uv = project(model(pose, shape, transl, layout=layout, vertices=False).keypoints, K)
        res = (uv - xy).norm(dim=-1)
        seen = conf > 0
        height = (torch.where(seen, xy[..., 1], -math.inf).amax(-1)
                  - torch.where(seen, xy[..., 1], math.inf).amin(-1))
        height = height[torch.isfinite(height)]
        person_px = float(height.median()) if height.numel() else 100.0
        s_px = pixel_sigma(res, conf, person_px, min_pixel_sigma)
        w = (conf / s_px ** 2).repeat_interleave(2, dim=-1)  # (T, 2K) per coordinate
        H = A.transpose(1, 2) @ (w[..., None] * A)
        prior = torch.full((D,), pose_sigma ** -2, dtype=pose.dtype, device=pose.device)
        prior[:3] = math.pi ** -2  # root orientation: almost free
        prior[3 * J:3 * J + 2] = 1.0  # root x, y: within a metre
        prior[3 * J + 2] = 0.25  # root depth: within two metres
        H = H + torch.diag(prior)
        if init_sigma is not None:
            # the initialisation constrains root-relative joints; G's root row removes the root
            Grel = (G.reshape(T, J, 3, D) - G.reshape(T, J, 3, D)[:, :1]).reshape(T, 3 * J, D)
            s = init_sigma.detach().to(pose.dtype).repeat_interleave(3, dim=-1) ** -2
            H = H + Grel.transpose(1, 2) @ (s[..., None] * Grel)
        cov = torch.linalg.solve(H, G.transpose(1, 2))  # (T, D, 3J) = H^-1 G^T
        var = (G * cov.transpose(1, 2)).sum(-1)  # diag(G H^-1 G^T), (T, 3J)
        return var.clamp(min=0).reshape(T, J, 3).mean(-1).sqrt()


SIGMA_CALIBRATION = Path(__file__).parents[1] / "data" / "sigma_calibration.npz"
# the calibrated sigma's inputs, in the order of `SigmaCalibration.exponents`
CALIBRATION_FEATURES = ("init", "apart", "frame_apart", "frame_init")


class SigmaCalibration:
    """A fit's reported sigma when it was pulled toward an initialisation with its own sigma
    (the regression stage's): a power law in what says the fit may be wrong, fitted to the
    per-joint errors of real-motion fits (`python -m meshcap.regression.train_sigma`).

        sigma = hypot(laplace_share * laplace, scale * prod_k feature_k ** exponents_k)

    with the features, each (T, J) metres: the initialisation's sigma, the distance between the
    fit and the initialisation's joints (`apart`), and the geometric means of both over each
    frame's joints (a frame whose joints disagree is a hard frame for every joint). The
    Laplace sigma takes part only a little (`laplace_share`): on real motion it ranks the
    errors worse than the rest (Spearman 0.19 against 0.33) but it is what grows in a gap.

    exponents (4,) >= 0 in CALIBRATION_FEATURES order; scale, laplace_share: floats."""

    def __init__(self, exponents, scale: float, laplace_share: float) -> None:
        self.exponents = [float(e) for e in exponents]
        if len(self.exponents) != len(CALIBRATION_FEATURES) or min(self.exponents) < 0:
            raise ValueError(f"SigmaCalibration: {len(CALIBRATION_FEATURES)} non-negative exponents expected, "
                             f"got {exponents}")
        self.scale, self.laplace_share = float(scale), float(laplace_share)

    def __call__(self, laplace: torch.Tensor, init: torch.Tensor, apart: torch.Tensor) -> torch.Tensor:
        """(T, J) sigma, metres, from laplace, init, apart (T, J) metres (see the class)."""
        return self.from_features(laplace, calibration_features(init, apart))

    def from_features(self, laplace: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """(...) sigma, metres, from laplace (...) and `calibration_features`' list, each (...)
        metres (also samples gathered from many frames, as its training does)."""
        log_s = sum(e * f.log() for e, f in zip(self.exponents, features))
        return torch.hypot(self.laplace_share * laplace, self.scale * log_s.exp())


def calibration_features(init: torch.Tensor, apart: torch.Tensor, floor: float = 1e-3) -> list[torch.Tensor]:
    """[init, apart, frame_apart, frame_init], each (T, J) metres and at least `floor` (a
    fit that lands exactly on its initialisation is not exactly right)."""
    init, apart = init.clamp(min=floor), apart.clamp(min=floor)
    frame = lambda x: x.log().mean(-1, keepdim=True).exp().expand_as(x)  # noqa: E731
    return [init, apart, frame(apart), frame(init)]


@lru_cache(maxsize=4)
def load_sigma_calibration(path: str | Path | None = None) -> SigmaCalibration:
    """The calibration from a file (default: the shipped SIGMA_CALIBRATION)."""
    path = Path(path) if path is not None else SIGMA_CALIBRATION
    try:
        with np.load(path) as z:
            return SigmaCalibration(z["exponents"], float(z["scale"]), float(z["laplace_share"]))
    except (OSError, KeyError, ValueError) as e:
        raise MeshcapError(f"cannot read the sigma calibration {path}: {e}") from e
