"""The regressor: a transformer over keypoint tokens that predicts body pose, shape, camera and
its own per-joint uncertainty (TokenHMR/PostoMETRO-style tokens, POCO-style sigma).

Input: one person's 2D keypoints in any layout, converted by name to `blazepose33` (keypoints
that layout lacks are masked). Each keypoint becomes a token: its position normalised to the
person's box (centre 0, half-size 1), its confidence, and a learned embedding of its type;
missing keypoints (confidence 0) are masked out of attention. Query tokens, one per fitted joint
plus one for shape and one for the camera, read out:

- per joint: a 6D rotation (local, root = orientation in the camera frame) and log sigma,
  the 1-sigma uncertainty of that joint's root-relative position in metres;
- shape: the body model's shape parameters (anny: phenotypes in [0, 1], through a sigmoid);
- camera: weak perspective in box units (scale s, offset tx, ty), turned into a full
  perspective translation from the box and the focal length as CLIFF does (`translation`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import roma
import torch
from torch import nn

from meshcap.keypoints.layouts import convert_keypoints, get_layout

INPUT_LAYOUT = "blazepose33"


@dataclass
class RegressorConfig:
    num_joints: int = 20
    shape_dim: int = 6
    num_keypoints: int = 33
    dim: int = 96
    depth: int = 3
    heads: int = 4
    body_model: str = "anny"


def keypoint_box(kp: torch.Tensor, min_confidence: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (..., 2) and half-size (...,) of the square box around the keypoints seen, with a
    10% margin; keypoints (..., K, 3) pixels + confidence."""
    seen = (kp[..., 2] > min_confidence)[..., None]
    xy = kp[..., :2]
    big = torch.finfo(kp.dtype).max
    lo = torch.where(seen, xy, torch.full_like(xy, big)).amin(-2)
    hi = torch.where(seen, xy, torch.full_like(xy, -big)).amax(-2)
    any_seen = seen.any(-2)
    lo = torch.where(any_seen, lo, torch.zeros_like(lo))
    hi = torch.where(any_seen, hi, torch.ones_like(hi))
    center = (lo + hi) / 2
    half = ((hi - lo).amax(-1) / 2 * 1.1).clamp(min=1.0)
    return center, half


def normalise_keypoints(kp: torch.Tensor, min_confidence: float = 0.1):
    """(tokens (..., K, 3) box coordinates + confidence, centre, half-size)."""
    center, half = keypoint_box(kp, min_confidence)
    xy = (kp[..., :2] - center[..., None, :]) / half[..., None, None]
    conf = torch.where(kp[..., 2] > min_confidence, kp[..., 2], torch.zeros_like(kp[..., 2]))
    xy = torch.where(conf[..., None] > 0, torch.nan_to_num(xy), torch.zeros_like(xy))
    return torch.cat([xy, conf[..., None]], -1), center, half


class KeypointRegressor(nn.Module):
    """keypoints (B, 33, 3) box-normalised tokens -> dict(rotmats (B, J, 3, 3), shape (B, S),
    cam (B, 3) = (s, tx, ty), sigma (B, J) metres)."""

    def __init__(self, config: RegressorConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or RegressorConfig()
        self.embed = nn.Linear(3, c.dim)
        self.kp_type = nn.Parameter(torch.randn(c.num_keypoints, c.dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(c.num_joints + 2, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 2 * c.dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.pose_head = nn.Linear(c.dim, 7)  # 6D rotation + log sigma
        self.shape_head = nn.Linear(c.dim, c.shape_dim)
        self.cam_head = nn.Linear(c.dim, 3)
        with torch.no_grad():  # start at the rest pose, the average body, a box-filling scale
            self.pose_head.weight.mul_(0.01)
            self.pose_head.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0, math.log(0.1)]))
            self.cam_head.weight.mul_(0.01)
            self.cam_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        B = tokens.shape[0]
        x = self.embed(tokens) + self.kp_type
        q = self.queries.expand(B, -1, -1)
        missing = tokens[..., 2] <= 0
        mask = torch.cat([missing, torch.zeros(B, q.shape[1], dtype=torch.bool, device=tokens.device)], 1)
        h = self.norm(self.encoder(torch.cat([x, q], 1), src_key_padding_mask=mask))[:, c.num_keypoints:]
        pose = self.pose_head(h[:, :c.num_joints])
        rot = roma.special_gramschmidt(pose[..., :6].reshape(B, c.num_joints, 3, 2))
        shape = self.shape_head(h[:, c.num_joints])
        if c.body_model == "anny":
            shape = torch.sigmoid(shape)
        cam = self.cam_head(h[:, c.num_joints + 1])
        scale = torch.nn.functional.softplus(cam[:, :1] + 0.5)  # box units per metre, positive
        return dict(rotmats=rot, shape=shape, cam=torch.cat([scale, cam[:, 1:]], -1),
                    sigma=pose[..., 6].clamp(-7, 2).exp())

    def to_dict(self) -> dict:
        return asdict(self.config)


def translation(cam: torch.Tensor, center: torch.Tensor, half: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Full-perspective root translation (..., 3) from the weak-perspective camera (..., 3) in
    box units (CLIFF): depth from the box size and focal length, x/y from the box's offset
    from the principal point. The weak-perspective model maps root-relative camera-frame
    points X to box coordinates s * (X_xy + t)."""
    s, t = cam[..., 0], cam[..., 1:]
    f = (K[..., 0, 0] + K[..., 1, 1]) / 2
    c = K[..., :2, 2]
    depth = f / (s * half)
    xy = (center - c) / (s * half)[..., None] + t
    return torch.cat([xy, depth[..., None]], -1)


def prepare_input(keypoints: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keypoints (..., K, 3) in any layout -> (tokens, box centre, box half-size)."""
    if get_layout(layout).name != INPUT_LAYOUT:
        keypoints = torch.as_tensor(convert_keypoints(keypoints, layout, INPUT_LAYOUT), dtype=keypoints.dtype)
    return normalise_keypoints(keypoints)
