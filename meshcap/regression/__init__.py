"""The regression stage: 2D keypoints -> body pose, shape, camera and per-joint sigma, used to
initialise fitting (`meshcap.fitting.FitInit`).

    net = load_regressor()                      # the shipped weights, offline
    init = regress_track(net, model, keypoints, "blazepose33", K)
"""
from __future__ import annotations

import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.regression.model import KeypointRegressor, RegressorConfig, prepare_input, translation
from meshcap.regression.weights import SHIPPED, load_regressor, save_weights

__all__ = ["KeypointRegressor", "RegressorConfig", "load_regressor", "save_weights", "regress",
           "regress_track", "SHIPPED"]

UNSEEN_SIGMA = 1.0  # metres: what a frame with too few keypoints says about its joints


@torch.no_grad()
def regress(net: KeypointRegressor, model: BodyModel, keypoints: torch.Tensor, layout: str,
            K: torch.Tensor, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Per-person predictions for keypoints (N, K, 3) pixels + confidence in `layout`, camera
    K (3, 3). Returns poses (N, J, 3) axis-angle, shape (N, S), transl (N, 3) (the body
    model's `transl`, camera frame), sigma (N, J) metres, seen (N,) bool: enough keypoints."""
    if net.config.num_joints != model.num_joints or net.config.body_model != model.name:
        raise ValueError(f"these regressor weights are for {net.config.body_model} "
                         f"({net.config.num_joints} joints), not {model.name}")
    kp = torch.as_tensor(keypoints, dtype=torch.float32)
    tokens, center, half = prepare_input(kp, layout)
    outs = [net(tokens[i:i + batch_size]) for i in range(0, len(tokens), batch_size)]
    pred = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    Kf = torch.as_tensor(K, dtype=torch.float32)
    root_rel = translation(pred["cam"], center, half, Kf)
    rest_root = model.rest_joints(pred["shape"].to(model.dtype))[:, 0].float()
    seen = (tokens[..., 2] > 0).sum(-1) >= 6
    sigma = torch.where(seen[:, None], pred["sigma"], torch.full_like(pred["sigma"], UNSEEN_SIGMA))
    return dict(poses=roma.rotmat_to_rotvec(pred["rotmats"]), shape=pred["shape"],
                transl=root_rel - rest_root, sigma=sigma, seen=seen)


def regress_track(net: KeypointRegressor, model: BodyModel, keypoints: torch.Tensor, layout: str,
                  K: torch.Tensor):
    """A `FitInit` for one track (T, K, 3): per-frame pose and sigma; one shape
    (the confidence-weighted mean over the frames seen); frames with too few keypoints take
    the nearest seen frame's pose with a sigma of `UNSEEN_SIGMA`."""
    from meshcap.fitting.smplify import FitInit

    r = regress(net, model, keypoints, layout, K)
    seen = r["seen"]
    if not seen.any():
        return None
    idx = torch.arange(len(seen))
    seen_idx = idx[seen]
    nearest = seen_idx[(idx[:, None] - seen_idx[None]).abs().argmin(1)]
    w = (1.0 / r["sigma"][seen].mean(-1))[:, None]
    shape = (r["shape"][seen] * w).sum(0, keepdim=True) / w.sum()
    dt = model.dtype
    # No translation: the fit places the body from its torso's 2D size and its own shape,
    # which keeps real footage on its keypoints (the Sports2D demo's second person reprojects
    # 3.2 px from there, 8.4 px from the regressor's weak-perspective depth; see MODEL_CARD.md).
    return FitInit(poses=r["poses"][nearest].to(dt), shape=shape.to(dt), transl=None, sigma=r["sigma"].to(dt))
