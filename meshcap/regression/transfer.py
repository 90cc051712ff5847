"""The regression stage for body models it was not trained for (SMPL, SMPL-H, SMPL-X).

The shipped regressor and temporal lifter read keypoints into anny's skeleton. A track fitted
with another body model starts from anny's reading all the same: anny's stage and fit (as
`meshcap.capture` runs them) give the person's 3D limb points, the other model is fitted
straight to those points (`mocap.fit_points3d`), and that fit is its `FitInit`: the start of
its own fit to the keypoints, and the joints it is pulled toward.

    stage = TransferStage(load_stage(), load_body_model("anny"))
    init = stage.init_track(smpl, keypoints, "coco17", K, fps=30.0)

Only the limb points (shoulders to ankles) carry over: their joint centres mean the same in
every model, where face and foot points sit on each mesh's own vertices. The other joints of
the target are guessed by its pose prior, so they pull on its fit only weakly (`LOOSE_SIGMA`)
and follow the keypoints there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from meshcap.body_models.base import BodyModel
from meshcap.fitting.smplify import FitInit, FitOptions, SingleViewFitter
from meshcap.regression import RegressionStage
from meshcap.regression.mocap import BODY, carrier_joints, fit_points3d

# metres: the pull of the target's joints that no limb point carries (spine, neck, head,
# collars, hands, feet), weak beside the limb joints' sigma (centimetres)
LOOSE_SIGMA = 0.3


@dataclass
class TransferStage:
    """`RegressionStage.init_track` for a body model other than `source` (the model `stage`
    was trained for, anny): `source`'s fit of the track, its limb points fitted by the target
    model. `options`: the source fit's (as capture fits from a regression stage)."""

    stage: RegressionStage
    source: BodyModel
    options: FitOptions = field(default_factory=lambda: FitOptions(w_init=0.5))
    ik_iters: int = 300

    def init_track(self, model: BodyModel, keypoints: torch.Tensor, layout: str, K: torch.Tensor,
                   fps: float = 30.0) -> FitInit | None:
        """A `FitInit` of `model` for keypoints (T, K, 3) in `layout`, camera K (3, 3): poses
        (T, J, 3), shape, translation (camera frame), the joints (root-relative) and their
        sigma (T, J); None where the stage sees nobody."""
        if model.name == self.source.name:
            return self.stage.init_track(model, keypoints, layout, K, fps)
        init = self.stage.init_track(self.source, keypoints, layout, K, fps)
        if init is None:
            return None
        src = SingleViewFitter(self.source, layout, self.options).fit(keypoints, K, init, fps)
        kp_names = self.source.keypoint_names(layout)
        points = src.keypoints3d[:, [kp_names.index(n) for n in BODY]]  # (T, 12, 3) camera frame
        ik = fit_points3d(model, points.to(model.dtype), layout, BODY, iters=self.ik_iters)
        with torch.no_grad():
            joints = model(ik["poses"], ik["shape"], vertices=False).joints
        # each limb joint of the target takes the sigma of the source joint carrying the same point
        sigma = torch.full((len(joints), model.num_joints), LOOSE_SIGMA, dtype=model.dtype, device=model.device)
        for mine, theirs in zip(carrier_joints(model, layout), carrier_joints(self.source, layout)):
            sigma[:, mine] = torch.minimum(sigma[:, mine], src.uncertainty[:, theirs].to(model.dtype))
        return FitInit(poses=ik["poses"], shape=ik["shape"], transl=ik["transl"], sigma=sigma,
                       joints=joints - joints[:, :1])
