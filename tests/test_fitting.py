"""Single-view fitting (work in progress toward the fitting issue): convergence and bad input."""
import math

import numpy as np
import pytest
import roma
import torch

from meshcap import InputError, load_body_model
from meshcap.fitting.camera import intrinsics, project
from meshcap.fitting.smplify import SingleViewFitter


def pa_mpjpe(a, b):
    """Per-frame similarity-Procrustes-aligned mean joint error (T,)."""
    R, t, s = roma.rigid_points_registration(a, b, compute_scaling=True)
    return (s[:, None, None] * (a @ R.transpose(-1, -2)) + t[:, None] - b).norm(dim=-1).mean(-1)


@pytest.fixture(scope="module")
def model():
    return load_body_model("anny")


def test_fit_recovers_pose_from_clean_projection(model):
    g = torch.Generator().manual_seed(2)
    T, J = 6, model.num_joints
    pose = torch.randn(T, J, 3, generator=g) * 0.15
    pose[:, 0] = torch.tensor([math.pi, 0.0, 0.0]) + torch.randn(T, 3, generator=g) * 0.2
    transl = torch.tensor([0.1, -0.1, 3.5]).expand(T, 3)
    K = intrinsics(640, 480)
    with torch.no_grad():
        gt = model(pose, None, transl, layout="blazepose33", vertices=False)
    kp = torch.cat([project(gt.keypoints, K), torch.ones(T, 33, 1)], -1)
    kp[1, 5:9, 2] = 0.0  # some keypoints missing
    kp[2, 20, :2] = float("nan")
    res = SingleViewFitter(model).fit(kp, K)
    assert np.nanmedian(res.reprojection_px.numpy()) < 2.0
    assert torch.isnan(res.reprojection_px[1, 5:9]).all()
    err = pa_mpjpe(res.joints, gt.joints)
    assert err.median() < 0.03, err
    # the body stands where it was: root depth within 10%
    assert (res.joints[:, 0, 2] - gt.joints[:, 0, 2]).abs().max() < 0.35


def test_fit_bad_input_is_clear(model):
    f = SingleViewFitter(model)
    K = intrinsics(640, 480)
    with pytest.raises(InputError, match="empty"):
        f.fit(torch.zeros(0, 33, 3), K)
    with pytest.raises(InputError, match="no usable keypoints"):
        f.fit(torch.full((4, 33, 3), float("nan")), K)
    with pytest.raises(InputError, match=r"\(T, 33, 3\)"):
        f.fit(torch.zeros(4, 17, 3), K)
