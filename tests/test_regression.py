"""The regressor: shipped weights load offline and beat the rest pose; training makes progress."""
import torch

from meshcap import load_body_model
from meshcap.fitting.metrics import pa_mpjpe
from meshcap.regression import SHIPPED, load_regressor, regress, regress_track
from meshcap.regression.train import _grouped, synthetic_batch, train
from meshcap.fitting.camera import project


def test_shipped_weights_beat_the_rest_pose():
    assert SHIPPED.exists() and SHIPPED.stat().st_size < 5_000_000
    model = load_body_model("anny")
    net = load_regressor()
    g = torch.Generator().manual_seed(99)
    b = synthetic_batch(model, 128, g)
    with torch.no_grad():
        pred = net(b.tokens)
        for v in pred.values():
            assert torch.isfinite(v).all()
        joints, _ = _grouped(model, pred["rotmats"], b.shape)
        rest, _ = _grouped(model, torch.eye(3).expand(128, model.num_joints, 3, 3).contiguous(), b.shape)
    pa_net = pa_mpjpe(joints - joints[:, :1], b.joints_rel).mean()
    pa_rest = pa_mpjpe(rest - rest[:, :1], b.joints_rel).mean()
    assert pa_net < 0.6 * pa_rest, (pa_net, pa_rest)
    assert (pred["sigma"] > 0).all()


def test_regress_gives_a_usable_initialisation():
    """Predicted bodies land where the keypoints are: their projection covers the person."""
    model = load_body_model("anny")
    net = load_regressor()
    g = torch.Generator().manual_seed(5)
    b = synthetic_batch(model, 16, g)
    kp_all = torch.cat([b.tokens[..., :2] * b.half[:, None, None] + b.center[:, None], b.tokens[..., 2:]], -1)
    errs = []
    for i in range(16):
        K, kp = b.K[i], kp_all[i:i + 1]
        r = regress(net, model, kp, "blazepose33", K)
        with torch.no_grad():
            out = model(r["poses"], r["shape"], r["transl"], layout="blazepose33", vertices=False)
        seen = kp[..., 2] > 0
        errs.append(((project(out.keypoints, K) - kp[..., :2]).norm(dim=-1)[seen] / (2 * b.half[i])).median())
    assert torch.stack(errs).median() < 0.15, errs
    track = kp_all[:1].repeat(3, 1, 1)
    init = regress_track(net, model, track, "blazepose33", b.K[0])
    assert init.poses.shape == (3, model.num_joints, 3) and init.shape.shape == (1, 6)
    # a frame with nobody in it borrows its neighbour's pose and says it knows nothing
    track[1, :, 2] = 0
    init2 = regress_track(net, model, track, "blazepose33", b.K[0])
    assert (init2.sigma[1] == 1.0).all() and torch.allclose(init2.poses[1], init2.poses[0])


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    _, history = train(steps=40, batch=32, lr=2e-3, log_every=10, log=lambda s: None)
    assert history[-1]["mpjpe_mm"] < 0.8 * history[0]["mpjpe_mm"], history
