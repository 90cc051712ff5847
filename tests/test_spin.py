"""The SPIN loop: pseudo-labels only from fits the fit is sure of, and fine-tuning that learns
from them without losing the synthetic skills."""
import numpy as np
import pytest
import torch

from meshcap import InputError, load_body_model
from meshcap.fitting.camera import intrinsics
from meshcap.fitting.metrics import pa_mpjpe
from meshcap.keypoints.tracks import Tracks
from meshcap.regression import load_regressor
from meshcap.regression.spin import SpinOptions, _pseudo_losses, fine_tune, fit_tracks_with, pseudo_batch
from meshcap.synthetic import camera_root_rotation, observe, smooth_motion, sample_shapes


@pytest.fixture(scope="module")
def walk():
    """A synthetic person moving smoothly in front of a 1280x720 camera for 2 s, seen with
    detector-like noise, as `Tracks`; and the true poses."""
    model = load_body_model("anny")
    g = torch.Generator().manual_seed(5)
    T, fps = 60, 30.0
    poses = smooth_motion(model, T, fps, g)
    poses[:, 0] = camera_root_rotation(torch.linspace(-0.5, 0.5, T), torch.full((T,), 0.1))
    shape = sample_shapes(model, 1, g)
    transl = torch.tensor([0.2, 0.3, 4.5]).expand(T, 3)
    K = intrinsics(1280, 720)
    with torch.no_grad():
        out = model(poses, shape, transl, layout="blazepose33", vertices=False)
    obs, _ = observe(out.keypoints, K, (1280, 720), 3.0, drop=0.05, limb_drop=0.0, generator=g)
    tracks = Tracks("blazepose33", fps, np.arange(T) / fps, (1280, 720), {0: (np.arange(T), obs.numpy())})
    return model, tracks, out.joints


def test_pseudo_labels_are_the_sure_and_accurate_frames(walk):
    model, tracks, truth = walk
    net = load_regressor()
    opts = SpinOptions(keep_fraction=0.5, max_sigma=0.08)
    labels, fits = fit_tracks_with(net, model, [tracks], opts)
    assert fits[0].frames == 60 and 0 < fits[0].kept == len(labels) <= 30
    assert (labels.sigma <= 0.08).all()
    assert fits[0].median_px < 6.0  # the fits reproject onto the observations
    # the kept fits are close to the truth: pseudo-labels worth learning from
    with torch.no_grad():
        j = model(labels.poses, labels.shape[:1], labels.transl, vertices=False).joints
    kept_truth = torch.stack([truth[int(np.flatnonzero((tracks.tracks[0][1] == k.numpy()).all((1, 2)))[0])]
                              for k in labels.keypoints])
    assert float(pa_mpjpe(j, kept_truth).mean()) < 0.06
    # a stricter bar keeps fewer frames
    strict, _ = fit_tracks_with(net, model, [tracks], SpinOptions(keep_fraction=0.5, max_sigma=1e-4))
    assert len(strict) == 0
    with pytest.raises(InputError, match="nothing to fine-tune"):
        fine_tune(net, model, strict, SpinOptions(steps=1))


def test_fine_tuning_moves_the_regressor_toward_the_fits(walk):
    model, tracks, _ = walk
    net = load_regressor()
    labels, _ = fit_tracks_with(net, model, [tracks], SpinOptions(max_sigma=0.08))
    batch = pseudo_batch(model, labels, torch.arange(len(labels)))
    with torch.no_grad():
        before = {k: float(v) for k, v in _pseudo_losses(net, model, batch).items()}
    tuned = fine_tune(net, model, labels, SpinOptions(steps=30, batch=32, lr=3e-4))
    with torch.no_grad():
        after = {k: float(v) for k, v in _pseudo_losses(tuned, model, batch).items()}
    assert after["joints"] < before["joints"] and after["rot"] < before["rot"], (before, after)
    assert not tuned.training and tuned.record["spin"]["labels"] == len(labels)
    # the original is untouched
    with torch.no_grad():
        again = {k: float(v) for k, v in _pseudo_losses(net, model, batch).items()}
    assert again == before
    # mixing back toward the original (the gate's fallback) lands between the two
    from meshcap.regression.spin import interpolate

    with torch.no_grad():
        half = {k: float(v) for k, v in _pseudo_losses(interpolate(net, tuned, 0.5), model, batch).items()}
        none = {k: float(v) for k, v in _pseudo_losses(interpolate(net, tuned, 0.0), model, batch).items()}
    assert after["joints"] < half["joints"] < before["joints"]
    assert none == pytest.approx(before, rel=1e-5) and interpolate(net, tuned, 0.5).record["spin"]["mix"] == 0.5
