"""Training the posture network (`meshcap.posture`: gravity's up from a body's 3D pose).

    python -m meshcap.regression.train_posture [--out meshcap/data/posture_up.npz]

reproduces the shipped weights (seed 0; under a minute on one core). Samples: every second
frame of the training takes of `meshcap.regression.mocap` that stand on a floor (climbing is
left out: hands and feet on a wall say nothing of the floor), their 12 COCO body joints
mirrored half the time, seen by `REPEATS` cameras each: any azimuth, pitch and roll up to
`MAX_TILT_DEG` (the world -> camera turn built as `mocap.static_view` builds it), and 3 cm of
noise per joint (a fit's joints are not a mocap skeleton's). Target: gravity's up in the
camera's frame; loss: 1 - cosine. The held-out takes are scored the same way (one camera per
frame) and the figures go into the file beside the weights.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from meshcap.posture import POSTURE_WEIGHTS, posture_features
from meshcap.regression import mocap

REPEATS = 6
MAX_TILT_DEG = 35.0
NOISE_M = 0.03
# left and right swapped, in `mocap.BODY` order (the same as `posture.POSTURE_JOINTS`)
MIRROR = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10]


def camera_turn(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) a world (y up) -> camera (x right, y down, z forward) rotation
    (`mocap.camera_rotation`): any azimuth, pitch and roll in +-MAX_TILT_DEG."""
    azimuth = rng.uniform(0, 2 * math.pi)
    pitch, roll = np.radians(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG, 2))
    return mocap.camera_rotation(azimuth, pitch, roll)


def samples(takes: list[mocap.Take], repeats: int, rng: np.random.Generator,
            step: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 36), up (N, 3)) from the takes' frames (every `step`-th), each seen by
    `repeats` random cameras."""
    feats, ups = [], []
    for take in takes:
        body = take.body[::step]
        for _ in range(repeats):
            b = body.copy()
            flip = rng.random(len(b)) < 0.5
            b[flip] = b[flip][:, MIRROR] * np.array([-1.0, 1.0, 1.0])
            R = np.stack([camera_turn(rng) for _ in range(len(b))])
            cam = np.einsum("nij,nkj->nki", R, b) + rng.normal(0, NOISE_M, b.shape)
            feats.append(posture_features(cam))
            ups.append(R[:, :, 1])
    return (torch.tensor(np.concatenate(feats), dtype=torch.float32),
            torch.tensor(np.concatenate(ups), dtype=torch.float32))


def angles(net: torch.nn.Module, x: torch.Tensor, up: torch.Tensor) -> np.ndarray:
    """(N,) degrees between the network's reading and the true up."""
    with torch.no_grad():
        p = torch.nn.functional.normalize(net(x), dim=-1)
    return torch.rad2deg(torch.acos((p * up).sum(-1).clamp(-1, 1))).numpy()


def train(steps: int = 3000, seed: int = 0, hidden: int = 128) -> tuple[torch.nn.Module, dict]:
    """The network and its record (figures on the training and held-out takes)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    on_floor = [t for t in mocap.load_takes() if not t.name.startswith("climb")]
    train_takes, held_out = mocap.split(on_floor)
    x, up = samples(train_takes, REPEATS, rng)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.GELU(), torch.nn.Linear(hidden, 3))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(x), (512,), generator=g)
        p = torch.nn.functional.normalize(net(x[i]), dim=-1)
        loss = (1 - (p * up[i]).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    xh, uh = samples(held_out, 1, rng)
    a_train, a_held = angles(net, x, up), angles(net, xh, uh)
    record = dict(steps=steps, seed=seed, hidden=hidden, repeats=REPEATS, max_tilt_deg=MAX_TILT_DEG, noise_m=NOISE_M,
                  train_takes=[t.name for t in train_takes], held_out_takes=[t.name for t in held_out],
                  per_frame_median_deg=dict(train=float(np.median(a_train)), held_out=float(np.median(a_held))))
    return net, record


def save(net: torch.nn.Module, path: str | Path, record: dict) -> Path:
    """The weights as `meshcap.posture.load_posture` reads them, with the record as JSON."""
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    arrays = {f"W{i}": m.weight.detach().numpy() for i, m in enumerate(linears)}
    arrays.update({f"b{i}": m.bias.detach().numpy() for i, m in enumerate(linears)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, num_layers=len(linears), record=json.dumps(record), **arrays)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description="train the posture network (gravity's up from a 3D pose)")
    ap.add_argument("--out", default=str(POSTURE_WEIGHTS))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    net, record = train(args.steps, args.seed)
    print(json.dumps(record["per_frame_median_deg"]))
    print(save(net, args.out, record))


if __name__ == "__main__":
    main()
