"""The temporal lifter: a window of frames of 2D keypoints -> each frame's root-relative 3D
joints and their per-joint sigma (a 2D-to-3D lifting network, as VideoPose3D and PoseFormer
are, with POCO-style uncertainty).

One token per frame: that frame's keypoints (any layout, converted by name to `blazepose33`;
missing ones have confidence 0) normalised to the person's box, plus where that box lies in
the camera (offset from the principal point and size, in units of the focal length: the
perspective cue CLIFF adds to a crop). A transformer over the frames of a window (learned
position embedding; frames nothing was seen in are masked out of attention, and filled from
their neighbours) reads out, per frame, the body model's skeleton joints relative to its root
(camera-frame axes, metres) and log sigma per joint.

The per-frame regressor (`meshcap.regression.model`) gives the fit its starting rotations and
shape; this network gives the joints the fit is pulled toward, with sigma as the weights: a
window of motion says which way a body faces and where a limb points in depth far better than
one frame does (measured on the real-motion benchmark; MODEL_CARD.md).

The network works at `FPS` frames per second: a track at another rate is read at the nearest
whole-number stride of that (60 fps: every other frame, in two interleaved passes).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from meshcap.errors import MeshcapError
from meshcap.regression.model import prepare_input

FPS = 30.0
SHIPPED_TEMPORAL = Path(__file__).parent / "data" / "temporal.safetensors"


@dataclass
class TemporalConfig:
    num_joints: int = 20
    num_keypoints: int = 33
    window: int = 27
    dim: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.1
    body_model: str = "anny"
    # the rate the network reads its windows at: a track is read at stride round(fps / this)
    fps: float = FPS


def frame_features(tokens: torch.Tensor, center: torch.Tensor, half: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(..., 33 * 3 + 4) one frame token's input: box-normalised keypoints (..., 33, 3) as
    `normalise_keypoints` gives them, the box centre (..., 2) minus the principal point and its
    half-size (...,), both over the focal length (K (..., 3, 3) or (3, 3)), and whether anything
    was seen."""
    f = (K[..., 0, 0] + K[..., 1, 1]) / 2
    c = K[..., :2, 2]
    seen = (tokens[..., 2] > 0).any(-1)
    rel = (center - c) / f[..., None]
    size = half / f
    box = torch.cat([rel, size[..., None]], -1)
    box = torch.where(seen[..., None], box, torch.zeros_like(box))
    return torch.cat([tokens.flatten(-2), box, seen[..., None].to(tokens.dtype)], -1)


class TemporalLifter(nn.Module):
    """features (B, W, 103) as `frame_features` gives them -> dict(joints (B, W, J, 3) root-relative
    metres, camera-frame axes; sigma (B, W, J) metres). Frames with nothing seen (the last
    feature 0) are masked out of attention."""

    def __init__(self, config: TemporalConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or TemporalConfig()
        n_in = c.num_keypoints * 3 + 4
        self.embed = nn.Sequential(nn.Linear(n_in, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        self.pos = nn.Parameter(torch.randn(c.window, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 2 * c.dim, dropout=c.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_joints * 4)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias[c.num_joints * 3:] = math.log(0.1)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        B, W = features.shape[:2]
        if W > c.window:
            raise ValueError(f"window of {W} frames, the network reads at most {c.window}")
        missing = features[..., -1] <= 0
        # a window with nothing seen at all attends to everything (all-masked attention is NaN)
        missing = missing & ~missing.all(-1, keepdim=True)
        h = self.embed(features) + self.pos[:W]
        h = self.norm(self.encoder(h, src_key_padding_mask=missing))
        out = self.head(h)
        J = c.num_joints
        joints = out[..., :J * 3].reshape(B, W, J, 3)
        joints = joints - joints[..., :1, :]  # the root is the origin
        return dict(joints=joints, sigma=out[..., J * 3:].clamp(-7, 2).exp())

    def to_dict(self) -> dict:
        return asdict(self.config)


def track_features(keypoints: torch.Tensor, layout: str, K: torch.Tensor) -> torch.Tensor:
    """(T, 103) frame features of a track (T, K, 3) pixels + confidence in `layout`."""
    kp = torch.as_tensor(keypoints, dtype=torch.float32)
    tokens, center, half = prepare_input(kp, layout)
    return frame_features(tokens, center, half, torch.as_tensor(K, dtype=torch.float32))


@torch.no_grad()
def lift_features(net: TemporalLifter, features: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-frame predictions for a sequence of frame features (T, F) at the network's rate:
    windows of the network's length every third of a window, each frame the average of the
    windows that hold it, weighted toward their centres (a window's edge frames see only one
    side of their motion). Shorter sequences are one window. Returns joints (T, J, 3), sigma (T, J)."""
    T = features.shape[0]
    W = net.config.window
    if T <= W:
        starts = [0]
        W = T
    else:
        step = max(1, W // 3)
        starts = list(range(0, T - W + 1, step))
        if starts[-1] != T - W:
            starts.append(T - W)
    windows = torch.stack([features[s:s + W] for s in starts])
    outs = [net(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size)]
    joints = torch.cat([o["joints"] for o in outs])
    sigma = torch.cat([o["sigma"] for o in outs])
    # tent weights, never zero (a sequence's first and last frames have one window each)
    pos = torch.arange(W, dtype=torch.float32)
    weight = 1.0 - (pos - (W - 1) / 2).abs() / (W / 2 + 1)
    J = joints.shape[2]
    acc_j = torch.zeros(T, J, 3)
    acc_v = torch.zeros(T, J)  # variance, averaged like the means
    acc_w = torch.zeros(T)
    for i, s in enumerate(starts):
        acc_j[s:s + W] += weight[:, None, None] * joints[i]
        acc_v[s:s + W] += weight[:, None] * sigma[i].square()
        acc_w[s:s + W] += weight
    return dict(joints=acc_j / acc_w[:, None, None], sigma=(acc_v / acc_w[:, None]).sqrt())


def mirror_keypoints(keypoints: torch.Tensor, layout: str, K: torch.Tensor) -> torch.Tensor:
    """(T, K, 3) the keypoints a camera K (3, 3) would see of the track's mirror image: x
    reflected about the principal point, left and right swapped (`Layout.flip_permutation`).
    A pinhole image reflected about its principal point is exactly the view of the scene
    reflected through the camera's y-z plane (x -> -x)."""
    from meshcap.keypoints.layouts import get_layout

    out = torch.as_tensor(keypoints, dtype=torch.float32)[:, get_layout(layout).flip_permutation()].clone()
    out[..., 0] = 2 * float(K[0, 2]) - out[..., 0]
    return out


def _lift_strided(net: TemporalLifter, feats: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = feats.shape[0]
    J = net.config.num_joints
    joints = torch.empty(T, J, 3)
    sigma = torch.empty(T, J)
    for k in range(min(stride, T)):
        r = lift_features(net, feats[k::stride])
        joints[k::stride], sigma[k::stride] = r["joints"], r["sigma"]
    return joints, sigma


def lift_track(net: TemporalLifter, keypoints: torch.Tensor, layout: str, K: torch.Tensor,
               fps: float = FPS, mirror: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Root-relative joints (T, J, 3) and sigma (T, J) of a track (T, K, 3) pixels + confidence
    in `layout`, frames consecutive at `fps`: read at stride round(fps / net.config.fps) (the
    network's own rate, `FPS` for the shipped one), each of the interleaved sub-tracks on its
    own.

    `mirror` (J,), the body model's `mirror_permutation()`: the track's mirror image is read as
    well (`mirror_keypoints`), its joints reflected back and averaged with the direct reading
    (test-time flip augmentation, as 2D-to-3D lifters use; the network was trained on mirrored
    takes, so both readings are equally good and their errors partly cancel: held-out PA-MPJPE
    of the lifter alone 88.7 -> 88.0 mm). The variances are averaged."""
    stride = max(1, int(round(fps / net.config.fps)))
    joints, sigma = _lift_strided(net, track_features(keypoints, layout, K), stride)
    if mirror is not None:
        if len(mirror) != joints.shape[1]:
            raise ValueError(f"mirror permutation of {len(mirror)} joints for a lifter of {joints.shape[1]}")
        mj, ms = _lift_strided(net, track_features(mirror_keypoints(keypoints, layout, K), layout, K), stride)
        mj, ms = mj[:, mirror], ms[:, mirror]
        mj[..., 0] = -mj[..., 0]
        joints = (joints + mj) / 2
        sigma = ((sigma.square() + ms.square()) / 2).sqrt()
    return dict(joints=joints, sigma=sigma)


def save_temporal(net: TemporalLifter, path: str | Path, record: dict | None = None) -> Path:
    from safetensors.torch import save_file

    from meshcap.fileio import publish, temp_beside

    path = Path(path)
    tmp = temp_beside(path, suffix=".safetensors")
    try:
        state = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()}
        save_file(state, tmp, metadata=dict(kind="temporal", config=json.dumps(net.to_dict()),
                                            record=json.dumps(record or {})))
        return publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_temporal(path: str | Path | None = None) -> TemporalLifter:
    """The temporal lifter from a weights file (default: the shipped one), in eval mode."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else SHIPPED_TEMPORAL
    if not path.exists():
        raise MeshcapError(f"{path}: no temporal lifter weights there")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("kind") != "temporal":
            raise ValueError("not a temporal lifter")
        net = TemporalLifter(TemporalConfig(**json.loads(meta["config"])))
        net.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise MeshcapError(f"{path}: not a meshcap temporal lifter weights file ({e})") from None
    net.record = json.loads(meta.get("record", "{}"))
    return net.eval()
