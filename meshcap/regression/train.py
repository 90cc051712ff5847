"""Training the regressor on synthetic people made by the body model, on the CPU.

    python -m meshcap.regression.train --out meshcap/regression/data/regressor.safetensors

reproduces the shipped weights (same seed, same steps; see `MODEL_CARD.md` beside them). Every
batch is new: poses from `meshcap.synthetic` (STRUCTURED_FRACTION of them whole-body activities
with correlated joints, the rest independent per joint for coverage, all within the joint
ranges of motion), varied shapes,
random perspective cameras (focal 0.6-1.6x the image diagonal, 2.5-10 m away, any heading,
camera tilt), projected to `blazepose33`, with detector-like noise (0.5-1.5% of the person's
size), random confidences, dropped keypoints and limbs, and truncation at the image border.

Losses: local rotations (Frobenius), root-relative 3D joints and keypoints (L1, metres; posed
with the true shape, so a step needs one rest skeleton per shape group, not per person), 2D
keypoints in box units through the weak-perspective camera (L1), shape, and the Gaussian
negative log-likelihood of each joint's 3D error under the predicted sigma (POCO), with the
error itself detached so that sigma learns to describe the error rather than shrink it.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass

import torch

from meshcap.body_models.base import BodyModel
from meshcap.fitting.camera import default_focal, project
from meshcap.keypoints.layouts import get_layout
from meshcap.regression.mocap import BODY
from meshcap.regression.model import INPUT_LAYOUT, KeypointRegressor, RegressorConfig, normalise_keypoints
from meshcap.synthetic import (camera_root_rotation, limb_indices, observe, sample_body_poses, sample_shapes,
                               sample_structured_poses)

IMAGE_SIZES = ((1280, 720), (1920, 1080), (720, 1280), (640, 480), (1080, 1080))


@dataclass
class Batch:
    """tokens (B, 33, 3), centre (B, 2), half (B,), K (B, 3, 3); targets: rotmats (B, J, 3, 3),
    shape (B, S), transl (B, 3), joints_rel (B, J, 3), kp_rel (B, 33, 3), clean_box (B, 33, 2)."""

    tokens: torch.Tensor
    center: torch.Tensor
    half: torch.Tensor
    K: torch.Tensor
    rotmats: torch.Tensor
    shape: torch.Tensor
    transl: torch.Tensor
    joints_rel: torch.Tensor
    kp_rel: torch.Tensor
    clean_box: torch.Tensor


STRUCTURED_FRACTION = 0.75  # the rest: each joint independent within its range (rare poses too)
SHAPE_GROUPS = 8  # distinct body shapes per batch: the body model's rest skeleton costs per shape


def _grouped(model: BodyModel, rotmats: torch.Tensor, shape: torch.Tensor, transl=None, layout=INPUT_LAYOUT):
    """The fast path run once per shape group (rows of a group share `shape`, in order)."""
    n = rotmats.shape[0]
    G = SHAPE_GROUPS if n % SHAPE_GROUPS == 0 else 1
    k = n // G
    outs = [model(rotmats=rotmats[i * k:(i + 1) * k], shape=shape[i * k:i * k + 1],
                  transl=None if transl is None else transl[i * k:(i + 1) * k], layout=layout, vertices=False)
            for i in range(G)]
    return torch.cat([o.joints for o in outs]), torch.cat([o.keypoints for o in outs])


def training_poses(model: BodyModel, n: int, g: torch.Generator) -> torch.Tensor:
    """(n, J, 3) the training mix of structured and per-joint poses, root rotation zero."""
    k = int(round(n * STRUCTURED_FRACTION))
    return torch.cat([sample_structured_poses(model, k, g), sample_body_poses(model, n - k, g)])


def synthetic_batch(model: BodyModel, n: int, g: torch.Generator, real: torch.Tensor | None = None,
                    real_fraction: float = 0.0, sparse_fraction: float = 0.0) -> Batch:
    """n synthetic people, each with its own camera, in SHAPE_GROUPS groups of one body shape
    (see the module docstring); `real_fraction` of them posed from `real` (N, J, 3), the
    body-model poses of real motion capture (`meshcap.regression.mocap.pose_bank`);
    `sparse_fraction` of them seen only through a sparser detector's keypoints (SPARSE_INPUTS)."""
    layout = get_layout(INPUT_LAYOUT)
    poses = training_poses(model, n, g)
    yaw = (2 * torch.rand(n, generator=g) - 1) * math.pi
    tilt = (2 * torch.rand(n, generator=g) - 1) * 0.35
    poses[:, 0] = camera_root_rotation(yaw, tilt)
    # some lean and roll of the whole body too
    lean = roma_small_rotation(n, 0.25, g)
    poses[:, 0] = roma_compose(lean, poses[:, 0])
    if real is not None and real_fraction > 0:
        # real motion: a random frame of the training takes (mirrored half the time), its root
        # kept as the take had it against gravity (lying, upside down) and seen from the camera
        k = int(round(n * real_fraction))
        rows = torch.randperm(n, generator=g)[:k]
        pick = real[torch.randint(len(real), (k,), generator=g)].to(poses.dtype)
        poses[rows, 1:] = pick[:, 1:]
        poses[rows, 0] = roma_compose(camera_root_rotation(yaw[rows], tilt[rows]), pick[:, 0])
    G = SHAPE_GROUPS if n % SHAPE_GROUPS == 0 else 1
    shape = sample_shapes(model, G, g).repeat_interleave(n // G, dim=0)
    sizes = torch.tensor(IMAGE_SIZES, dtype=torch.float32)[torch.randint(len(IMAGE_SIZES), (n,), generator=g)]
    diag = torch.tensor([default_focal(int(w), int(h)) for w, h in sizes])
    f = diag * (0.6 + torch.rand(n, generator=g))
    K = torch.zeros(n, 3, 3)
    K[:, 0, 0] = K[:, 1, 1] = f
    K[:, :2, 2] = sizes / 2
    K[:, 2, 2] = 1
    depth = 2.5 + 7.5 * torch.rand(n, generator=g) ** 1.5
    # anywhere in the image, a little beyond its edges (truncation)
    px = (torch.rand(n, 2, generator=g) * 1.1 - 0.05) * sizes
    transl = torch.cat([(px - K[:, :2, 2]) * depth[:, None] / f[:, None], depth[:, None]], 1)
    import roma

    rot = roma.rotvec_to_rotmat(poses)
    with torch.no_grad():
        joints, kp3 = _grouped(model, rot, shape, transl)
    clean2d = project(kp3, K)
    size = (clean2d.amax(1) - clean2d.amin(1)).amax(-1)
    noise = size * (0.005 + 0.01 * torch.rand(n, generator=g))
    obs = torch.empty(n, len(layout), 3)
    for i, (w, h) in enumerate(IMAGE_SIZES):  # observe() takes one image size at a time
        rows = (sizes[:, 0] == w) & (sizes[:, 1] == h)
        if rows.any():
            o, _ = observe(kp3[rows], K[rows], (w, h), noise[rows], drop=0.1, limb_drop=0.15, generator=g,
                           limbs=limb_indices(layout))
            obs[rows] = o
    if sparse_fraction > 0:
        obs = _sparse_inputs(obs, sparse_fraction, g)
    too_few = (obs[..., 2] > 0).sum(-1) < 6  # nearly all outside the image: keep them all seen
    obs[too_few, :, 2] = torch.where(obs[too_few, :, 2] > 0, obs[too_few, :, 2], 0.5)
    tokens, center, half = normalise_keypoints(obs)
    clean_box = (clean2d - center[:, None]) / half[:, None, None]
    root = joints[:, :1]
    return Batch(tokens, center, half, K, rot, shape, transl, joints - root, kp3 - root, clean_box)


# The keypoints that common detectors give, as a subset of the network's input layout: most
# keypoint files (COCO results, OpenPose body, ViTPose) carry COCO-17, and seen from behind
# (or from a body-only detector) only its 12 body points; a network that has only seen the
# full 33 points in training reads such an input poorly.
SPARSE_INPUTS = {"coco17": get_layout("coco17").names, "body12": BODY}


def _sparse_inputs(obs: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    """obs (B, 33, 3) with `fraction` of the rows reduced to one of SPARSE_INPUTS (equal shares):
    the other keypoints unseen (confidence 0), as `prepare_input` leaves them."""
    layout = get_layout(INPUT_LAYOUT)
    n = obs.shape[0]
    pick = torch.rand(n, generator=g) < fraction
    kind = torch.randint(len(SPARSE_INPUTS), (n,), generator=g)
    obs = obs.clone()
    for i, names in enumerate(SPARSE_INPUTS.values()):
        keep = torch.zeros(len(layout), dtype=torch.bool)
        keep[[layout.index(name) for name in names]] = True
        rows = pick & (kind == i)
        obs[rows[:, None] & ~keep[None], 2] = 0.0
    return obs


def roma_small_rotation(n: int, max_angle: float, g: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, 3, generator=g)
    v = v / v.norm(dim=-1, keepdim=True) * (torch.rand(n, 1, generator=g) * max_angle)
    return v


def roma_compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import roma

    return roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(a) @ roma.rotvec_to_rotmat(b))


def losses(net: KeypointRegressor, model: BodyModel, b: Batch,
           pred: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The training losses of `net` on `b` (`pred`: its outputs on b.tokens, if the caller
    already has them)."""
    pred = net(b.tokens) if pred is None else pred
    # the pose is judged on the true body shape (shape has its own loss): one rest skeleton
    # per shape group instead of one per person keeps a training step cheap
    joints, keypoints = _grouped(model, pred["rotmats"], b.shape)
    root = joints[:, :1]
    j_rel, kp_rel = joints - root, keypoints - root
    s, t = pred["cam"][:, :1, None], pred["cam"][:, None, 1:]
    uv = s * (kp_rel[..., :2] + t)
    err = (j_rel - b.joints_rel).norm(dim=-1)
    sigma = pred["sigma"]
    nll = (3 * sigma.log() + err.detach().square() / (2 * sigma.square())).mean()
    return dict(
        rot=(pred["rotmats"] - b.rotmats).square().sum((-1, -2)).mean(),
        joints=(j_rel - b.joints_rel).abs().sum(-1).mean(),
        keypoints=(kp_rel - b.kp_rel).abs().sum(-1).mean(),
        kp2d=(uv - b.clean_box).abs().sum(-1).mean(),
        shape=(pred["shape"] - b.shape).square().sum(-1).mean(),
        nll=nll,
        mpjpe=err.mean().detach(),
    )


WEIGHTS = dict(rot=0.5, joints=5.0, keypoints=5.0, kp2d=1.0, shape=0.2, nll=0.05)


def train(steps: int, batch: int = 256, lr: float = 1e-3, seed: int = 0, log_every: int = 200,
          config: RegressorConfig | None = None, model: BodyModel | None = None,
          log=print, real_fraction: float = 0.0, init: KeypointRegressor | None = None,
          sparse_fraction: float = 0.0) -> tuple[KeypointRegressor, list[dict]]:
    """Train from scratch (or go on from `init`); `real_fraction` of every batch is posed by
    real motion capture (the training takes of `meshcap.regression.mocap`), `sparse_fraction`
    seen through COCO-17 or its body points only. Returns the network (eval mode) and the
    logged metrics."""
    from meshcap.body_models import load_body_model

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = model or load_body_model("anny")
    net = init.train() if init is not None else KeypointRegressor(
        config or RegressorConfig(num_joints=model.num_joints, shape_dim=model.shape_dim, body_model=model.name))
    real = None
    if real_fraction > 0:
        from meshcap.regression.mocap import pose_bank

        real = pose_bank(model)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2), pct_start=0.05)
    history = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        b = synthetic_batch(model, batch, g, real, real_fraction, sparse_fraction)
        ls = losses(net, model, b)
        total = sum(WEIGHTS[k] * ls[k] for k in WEIGHTS)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            rec = dict(step=step, loss=float(total.detach()), mpjpe_mm=1000 * float(ls["mpjpe"]),
                       minutes=(time.perf_counter() - t0) / 60)
            history.append(rec)
            log(json.dumps(rec))
    return net.eval(), history


def main() -> None:
    ap = argparse.ArgumentParser(description="train the keypoint regressor on synthetic data")
    ap.add_argument("--out", required=True, help=".safetensors file to write")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-fraction", type=float, default=0.0,
                    help="share of each batch posed by real motion capture (the mocap training takes)")
    ap.add_argument("--sparse-fraction", type=float, default=0.0,
                    help="share of each batch seen only through COCO-17 keypoints or its 12 body points")
    ap.add_argument("--init", default=None, help="go on from these weights instead of starting afresh")
    args = ap.parse_args()
    from meshcap.regression.weights import load_regressor, save_weights

    init = load_regressor(args.init) if args.init else None
    net, history = train(args.steps, args.batch, args.lr, args.seed, real_fraction=args.real_fraction, init=init,
                         sparse_fraction=args.sparse_fraction)
    save_weights(net, args.out, dict(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                     real_fraction=args.real_fraction, init=args.init,
                                     sparse_fraction=args.sparse_fraction,
                                     final=history[-1] if history else {}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
