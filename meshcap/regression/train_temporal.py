"""Training the temporal lifter (`meshcap.regression.temporal`) on the CPU.

    OMP_NUM_THREADS=1 python -m meshcap.regression.train_temporal --out meshcap/regression/data/temporal.safetensors

reproduces the shipped weights (same seed and steps; see `MODEL_CARD.md`). Every batch is new:
windows of motion posed by the body model, each with its own body shape (one of
SHAPE_GROUPS per batch) and its own camera:

- real motion (`real_fraction`): the body model fitted to the training takes of
  `meshcap.regression.mocap` (`pose_sequences`; never the held-out takes), mirrored half the
  time and re-timed by a random speed (0.7-1.4x, rotations interpolated along the geodesic);
- synthetic motion (the rest): key poses from `meshcap.synthetic` (whole-body activities, a
  fifth independent per joint) every 0.3-1 s, eased from one to the next, an upright root
  turning and walking at random.

Cameras: any azimuth, the eye from below the hips to well above the head, aimed near the
person, still or following them; focal 0.6-1.6x the image diagonal on the image sizes of the
regressor's training; the person 25-85% of the image's short side. Detector-like input:
per-keypoint offsets fixed over a window (a detector's joints are not the body model's), noise
of 0-1.2% of the person's size, rare gross outliers, dropped keypoints, limbs and frames, short
gaps, and half the windows seen only through COCO-17 or its 12 body points.

Losses: root-relative joint error (metres, mean per joint), its frame-to-frame velocity error
(against jitter), and the Gaussian negative log-likelihood of each joint's (detached) error
under the predicted sigma.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.fitting.camera import default_focal, project
from meshcap.fitting.windows import blend_rotvecs
from meshcap.keypoints.layouts import get_layout
from meshcap.regression.model import INPUT_LAYOUT, normalise_keypoints
from meshcap.regression.temporal import TemporalConfig, TemporalLifter, frame_features
from meshcap.regression.train import IMAGE_SIZES, SPARSE_INPUTS
from meshcap.synthetic import limb_indices, sample_body_poses, sample_shapes, sample_structured_poses

SHAPE_GROUPS = 8


@dataclass
class WindowBatch:
    """features (B, W, 103) network input; joints (B, W, J, 3) root-relative targets, metres,
    camera-frame axes."""

    features: torch.Tensor
    joints: torch.Tensor


def _subtrees(model: BodyModel, prefixes: tuple[str, ...]) -> torch.Tensor:
    """(J,) bool: the joints at or below any joint whose name starts with one of `prefixes`."""
    names, parents = list(model.joint_names), list(model.parents)
    inside = [any(n.startswith(p) for p in prefixes) for n in names]
    for j in range(len(names)):  # parents come before their children
        if parents[j] >= 0 and inside[parents[j]]:
            inside[j] = True
    return torch.tensor(inside)


# Limbs that part mixing takes from another window: both arms (from the clavicles) or both legs.
MIX_PARTS = (("clavicle", "upperarm"), ("upperleg",))


def _real_windows(model: BodyModel, seqs: list[dict[str, torch.Tensor]], n: int, W: int,
                  g: torch.Generator, balance: float = 1.0,
                  mix: float = 0.0, stride: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(poses (n, W, J, 3), transl (n, W, 3)) windows of the real takes, re-timed and mirrored,
    one frame every `stride` of the takes' frames (the network's rate over the takes').

    balance: takes are drawn in proportion to their length to this power (1: every real frame
    equally likely; 0.5 gives the short, varied takes more of the batch than the long climbs).
    mix: the share of windows whose arms, or (half as often) legs, come from another window:
    new combinations of real limb motion over a real body, which the few takes lack.
    """
    from meshcap.regression.mocap import mirror_poses

    lengths = torch.tensor([len(s["poses"]) for s in seqs], dtype=torch.float32)
    take = torch.multinomial(lengths ** balance, n, replacement=True, generator=g)
    speed = 0.7 + 0.7 * torch.rand(n, generator=g)
    poses, transl = [], []
    for i in range(n):
        s = seqs[int(take[i])]
        T = len(s["poses"])
        span = speed[i] * (W - 1) * stride
        if span > T - 1:  # a take shorter than the window: slow down to fit, or hold its ends
            span = torch.tensor(float(T - 1))
        t0 = torch.rand((), generator=g) * (T - 1 - span)
        t = (t0 + torch.linspace(0, 1, W) * span).clamp(0, T - 1)
        lo = t.floor().long().clamp(max=T - 1)
        hi = (lo + 1).clamp(max=T - 1)
        w = t - lo
        p = blend_rotvecs(s["poses"][lo], s["poses"][hi], w[:, None].expand(W, s["poses"].shape[1]))
        tr = (1 - w[:, None]) * s["transl"][lo] + w[:, None] * s["transl"][hi]
        poses.append(p)
        transl.append(tr)
    poses, transl = torch.stack(poses), torch.stack(transl)
    mirror = torch.rand(n, generator=g) < 0.5
    poses[mirror] = mirror_poses(model, poses[mirror])
    transl[mirror, :, 0] = -transl[mirror, :, 0]
    if mix > 0 and n > 1:
        donor = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n  # never itself
        u = torch.rand(n, generator=g)
        for part, (lo_u, hi_u) in zip(MIX_PARTS, ((0.0, 2 * mix / 3), (2 * mix / 3, mix))):
            rows = (u >= lo_u) & (u < hi_u)
            joints = _subtrees(model, part)
            if rows.any() and joints.any():
                idx = rows.nonzero()[:, 0]
                poses[idx[:, None], :, joints.nonzero()[:, 0][None]] = \
                    poses[donor[idx][:, None], :, joints.nonzero()[:, 0][None]]
    return poses, transl


def _synthetic_windows(model: BodyModel, n: int, W: int, g: torch.Generator,
                       fps: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(poses (n, W, J, 3), transl (n, W, 3)) at `fps`: key poses eased into each other, an
    upright root that turns and moves."""
    key_s = 0.3 + 0.7 * torch.rand(n, generator=g)
    n_keys = int(math.ceil(W / fps / 0.3)) + 2
    k = n * n_keys
    structured = int(round(0.8 * k))
    keys = torch.cat([sample_structured_poses(model, structured, g), sample_body_poses(model, k - structured, g)])
    keys = keys[torch.randperm(k, generator=g)].reshape(n, n_keys, *keys.shape[1:]).float()
    t = torch.arange(W, dtype=torch.float32)[None] / fps / key_s[:, None] + torch.rand(n, 1, generator=g)
    lo = t.floor().long()
    u = t - lo
    u = u * u * (3 - 2 * u)  # eased: no jump in velocity at the keys
    rows = torch.arange(n)[:, None]
    poses = blend_rotvecs(keys[rows, lo], keys[rows, lo + 1], u[..., None].expand(n, W, keys.shape[2]))
    secs = torch.arange(W, dtype=torch.float32)[None] / fps
    yaw = (2 * torch.rand(n, 1, generator=g) - 1) * math.pi + torch.randn(n, 1, generator=g) * 0.8 * secs
    lean = torch.randn(n, 1, 2, generator=g) * 0.1
    z = torch.zeros(n, W)
    turn = roma.rotvec_to_rotmat(torch.stack([z, yaw.expand(n, W), z], -1))
    tilt = roma.rotvec_to_rotmat(torch.stack([lean[..., 0].expand(n, W), z, lean[..., 1].expand(n, W)], -1))
    poses[:, :, 0] = roma.rotmat_to_rotvec(turn @ tilt)
    speed = 1.5 * torch.rand(n, 1, generator=g) ** 2
    heading = yaw[:, :1] + torch.randn(n, 1, generator=g) * 0.5
    step = speed * secs
    transl = torch.stack([step * torch.sin(heading), torch.full_like(step, 0.0), step * torch.cos(heading)], -1)
    return poses, transl


def _cameras(center: torch.Tensor, g: torch.Generator,
             any_roll: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per window a camera looking at points near `center` (n, W, 3), world y up: (R (n, 3, 3)
    world -> camera (OpenCV), eye (n, W, 3), K (n, 3, 3), image sizes (n, 2)); the distance is
    set later from the person's extent. Cameras are level give or take a few degrees, except an
    `any_roll` share of them turned by any angle about their axis: the camera-frame pose of a body
    lying, upside down or cartwheeling is then also seen with upright bodies' poses, which the
    training motion has far more of (the targets are camera-frame, so this is no contradiction)."""
    n = center.shape[0]
    sizes = torch.tensor(IMAGE_SIZES, dtype=torch.float32)[torch.randint(len(IMAGE_SIZES), (n,), generator=g)]
    diag = torch.tensor([default_focal(int(w), int(h)) for w, h in sizes])
    f = diag * (0.6 + torch.rand(n, generator=g))
    K = torch.zeros(n, 3, 3)
    K[:, 0, 0] = K[:, 1, 1] = f
    K[:, :2, 2] = sizes / 2
    K[:, 2, 2] = 1
    az = torch.rand(n, generator=g) * 2 * math.pi
    # elevation of the line of sight: from slightly below to steeply above
    elev = -0.25 + 0.95 * torch.rand(n, generator=g) ** 1.5
    d = torch.stack([torch.cos(elev) * torch.sin(az), torch.sin(elev), torch.cos(elev) * torch.cos(az)], -1)
    z = -d  # forward, toward the person
    roll = torch.randn(n, generator=g) * 0.05
    if any_roll > 0:  # drawn only then: the default's batches stay those of the shipped weights
        wide = torch.rand(n, generator=g) < any_roll
        roll = torch.where(wide, (2 * torch.rand(n, generator=g) - 1) * math.pi, roll)
    down = torch.tensor([0.0, -1.0, 0.0]).expand(n, 3)
    x = torch.linalg.cross(down, z, dim=-1)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x, dim=-1)
    c, s = torch.cos(roll)[:, None], torch.sin(roll)[:, None]
    x, y = c * x + s * y, -s * x + c * y
    R = torch.stack([x, y, z], 1)
    return R, d, K, sizes


def window_batch(model: BodyModel, n: int, W: int, g: torch.Generator, seqs: list[dict[str, torch.Tensor]] | None,
                 real_fraction: float = 0.7, sparse_fraction: float = 0.5, balance: float = 1.0,
                 mix: float = 0.0, roll: float = 0.0, fps: float = 30.0) -> WindowBatch:
    """n windows of W frames at `fps` (module docstring); n a multiple of SHAPE_GROUPS;
    `balance` and `mix` as in `_real_windows`; `roll` is `_cameras`' `any_roll`."""
    from meshcap.regression.mocap import FPS as TAKES_FPS

    layout = get_layout(INPUT_LAYOUT)
    k = int(round(n * real_fraction)) if seqs else 0
    parts = []
    if k:
        parts.append(_real_windows(model, seqs, k, W, g, balance, mix, TAKES_FPS / fps))
    if n - k:
        parts.append(_synthetic_windows(model, n - k, W, g, fps))
    poses = torch.cat([p for p, _ in parts])
    transl = torch.cat([t for _, t in parts])
    order = torch.randperm(n, generator=g)
    poses, transl = poses[order], transl[order]
    G = SHAPE_GROUPS if n % SHAPE_GROUPS == 0 else 1
    shapes = sample_shapes(model, G, g).float()
    rot = roma.rotvec_to_rotmat(poses.reshape(n * W, -1, 3))
    per = n // G * W
    joints, kp3 = [], []
    with torch.no_grad():
        for i in range(G):
            o = model(rotmats=rot[i * per:(i + 1) * per], shape=shapes[i:i + 1], transl=transl.reshape(n * W, 3)[i * per:(i + 1) * per],
                      layout=INPUT_LAYOUT, vertices=False)
            joints.append(o.joints)
            kp3.append(o.keypoints)
    joints = torch.cat(joints).reshape(n, W, -1, 3).float()
    kp3 = torch.cat(kp3).reshape(n, W, -1, 3).float()
    # a detector's points are not the body model's: offsets fixed over the window
    kp3 = kp3 + torch.randn(n, 1, kp3.shape[2], 3, generator=g) * 0.02

    R, d, K, sizes = _cameras(joints[:, :, 0], g, roll)
    root = joints[:, :, :1]
    extent = (kp3 - root).norm(dim=-1).amax((1, 2))  # (n,) metres
    fill = 0.25 + 0.6 * torch.rand(n, generator=g)  # the person's share of the short side
    f = K[:, 0, 0]
    dist = (f * 2 * extent / (fill * sizes.min(-1).values)).clamp(min=2.0)
    follow = torch.rand(n, generator=g) < 0.4
    aim = torch.where(follow[:, None, None], joints[:, :, 0], joints[:, :, 0].mean(1, keepdim=True).expand(-1, W, -1))
    # aimed near the person, not always at their centre
    aim = aim + torch.randn(n, 1, 3, generator=g) * 0.15 * extent[:, None, None]
    eye = aim + dist[:, None, None] * d[:, None]
    cam = torch.einsum("nij,nwkj->nwki", R, kp3 - eye[:, :, None])
    target = torch.einsum("nij,nwkj->nwki", R, joints - root)

    # projection and detector-like observation
    Kw = K[:, None].expand(n, W, 3, 3)
    uv = project(cam, Kw)
    size = (uv.amax(2) - uv.amin(2)).amax(-1)  # (n, W) pixels
    noise = (0.012 * torch.rand(n, 1, 1, 1, generator=g)) * size[..., None, None]
    uv = uv + torch.randn(uv.shape, generator=g) * noise
    Kp = uv.shape[2]
    gross = torch.rand(n, W, Kp, generator=g) < 0.01
    uv = uv + gross[..., None] * torch.randn(uv.shape, generator=g) * 0.15 * size[..., None, None]
    conf = 0.5 + 0.5 * torch.rand(n, W, Kp, generator=g)
    conf = torch.where(gross, 0.2 + 0.4 * torch.rand(n, W, Kp, generator=g), conf)
    drop = torch.rand(n, 1, 1, generator=g) * 0.15
    keep = torch.rand(n, W, Kp, generator=g) >= drop
    limbs = limb_indices(layout)
    hit = torch.rand(n, W, generator=g) < 0.05
    which = torch.randint(len(limbs), (n, W), generator=g)
    for i, limb in enumerate(limbs):
        m = (hit & (which == i))[..., None] & torch.isin(torch.arange(Kp), torch.as_tensor(limb))
        keep &= ~m
    # whole frames lost, and now and then a short gap
    keep &= ~(torch.rand(n, W, 1, generator=g) < 0.03)
    gap = torch.rand(n, generator=g) < 0.1
    g0 = torch.randint(W, (n,), generator=g)
    glen = torch.randint(2, 9, (n,), generator=g)
    fr = torch.arange(W)[None]
    keep &= ~(gap[:, None] & (fr >= g0[:, None]) & (fr < (g0 + glen)[:, None]))[..., None]
    w, h = sizes[:, 0, None, None], sizes[:, 1, None, None]
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (cam[..., 2] > 0.1)
    conf = torch.where(keep & inside, conf, torch.zeros_like(conf))
    obs = torch.cat([uv, conf[..., None]], -1).reshape(n * W, Kp, 3)
    if sparse_fraction > 0:  # the same subset over a window: a detector does not change
        pick = torch.rand(n, generator=g) < sparse_fraction
        kind = torch.randint(len(SPARSE_INPUTS), (n,), generator=g)
        obs = obs.reshape(n, W, Kp, 3)
        for i, names in enumerate(SPARSE_INPUTS.values()):
            keepk = torch.zeros(Kp, dtype=torch.bool)
            keepk[[layout.index(nm) for nm in names]] = True
            rows = pick & (kind == i)
            obs[(rows[:, None, None] & ~keepk[None, None]).expand(n, W, Kp), 2] = 0.0
        obs = obs.reshape(n * W, Kp, 3)
    tokens, center, half = normalise_keypoints(obs)
    feats = frame_features(tokens, center, half, Kw.reshape(n * W, 3, 3)).reshape(n, W, -1)
    return WindowBatch(feats, target)


def losses(net: TemporalLifter, b: WindowBatch) -> dict[str, torch.Tensor]:
    pred = net(b.features)
    err = (pred["joints"] - b.joints).norm(dim=-1)[..., 1:]  # the root is exact by construction
    vel = ((pred["joints"][:, 1:] - pred["joints"][:, :-1]) - (b.joints[:, 1:] - b.joints[:, :-1])).norm(dim=-1)
    sigma = pred["sigma"][..., 1:]
    nll = (3 * sigma.log() + err.detach().square() / (2 * sigma.square())).mean()
    return dict(mpjpe=err.mean(), vel=vel.mean(), nll=nll)


WEIGHTS = dict(mpjpe=1.0, vel=2.0, nll=0.01)


def train(steps: int, batch: int = 64, lr: float = 1e-3, seed: int = 0, log_every: int = 100,
          config: TemporalConfig | None = None, model: BodyModel | None = None, log=print,
          real_fraction: float = 0.7, sparse_fraction: float = 0.5,
          init: str | Path | None = None, balance: float = 1.0, mix: float = 0.0,
          roll: float = 0.0, fps: float | None = None) -> tuple[TemporalLifter, list[dict]]:
    """Train the lifter for `steps` steps (one-cycle rate up to `lr`); `init`: a weights file to
    go on from (its config is kept, but for the rate when `fps` is given; use another `seed` so
    that it sees new batches)."""
    from meshcap.body_models import load_body_model
    from meshcap.regression.mocap import pose_sequences

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = model or load_body_model("anny")
    if init is not None:
        from meshcap.regression.temporal import load_temporal

        net = load_temporal(init).train()
        config = net.config
        if fps is not None:
            config.fps = fps
    else:
        config = config or TemporalConfig(num_joints=model.num_joints, body_model=model.name)
        net = TemporalLifter(config)
    seqs = list(pose_sequences(model).values()) if real_fraction > 0 else None
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2), pct_start=0.05)
    history = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        b = window_batch(model, batch, config.window, g, seqs, real_fraction, sparse_fraction, balance, mix, roll,
                         config.fps)
        ls = losses(net, b)
        total = sum(WEIGHTS[k] * ls[k] for k in WEIGHTS)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            rec = dict(step=step, loss=float(total.detach()), mpjpe_mm=1000 * float(ls["mpjpe"].detach()),
                       vel_mm=1000 * float(ls["vel"].detach()), minutes=(time.perf_counter() - t0) / 60)
            history.append(rec)
            log(json.dumps(rec))
    return net.eval(), history


def main() -> None:
    ap = argparse.ArgumentParser(description="train the temporal lifter")
    ap.add_argument("--out", required=True, help=".safetensors file to write")
    ap.add_argument("--steps", type=int, default=9000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=27)
    ap.add_argument("--real-fraction", type=float, default=0.7)
    ap.add_argument("--sparse-fraction", type=float, default=0.5)
    ap.add_argument("--init", help="a weights file to go on training from (its window is kept)")
    ap.add_argument("--balance", type=float, default=1.0,
                    help="draw real takes in proportion to length**BALANCE (1: every frame alike)")
    ap.add_argument("--mix", type=float, default=0.0,
                    help="share of real windows whose arms or legs come from another window")
    ap.add_argument("--fps", type=float, default=None,
                    help="the rate the network reads windows at (default 30; a track at 30 fps is read at "
                         "stride 30 / FPS, so a window spans more time)")
    ap.add_argument("--roll", type=float, default=0.0,
                    help="share of windows whose camera is turned by any angle about its axis")
    args = ap.parse_args()
    from meshcap.body_models import load_body_model
    from meshcap.regression.temporal import save_temporal

    model = load_body_model("anny")
    config = TemporalConfig(num_joints=model.num_joints, body_model=model.name, window=args.window,
                            **({} if args.fps is None else dict(fps=args.fps)))
    net, history = train(args.steps, args.batch, args.lr, args.seed, config=config, model=model,
                         real_fraction=args.real_fraction, sparse_fraction=args.sparse_fraction, init=args.init,
                         balance=args.balance, mix=args.mix, roll=args.roll, fps=args.fps)
    save_temporal(net, args.out, dict(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                      window=net.config.window, real_fraction=args.real_fraction,
                                      sparse_fraction=args.sparse_fraction, init=args.init,
                                      balance=args.balance, mix=args.mix, roll=args.roll, fps=net.config.fps, final=history[-1] if history else {}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
