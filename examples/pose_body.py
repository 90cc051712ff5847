"""Pose the free anny body, save the mesh as OBJ, print its COCO keypoints.

    python examples/pose_body.py --out body.obj
"""
import argparse

import numpy as np
import torch
import trimesh

import meshcap
from meshcap.keypoints.layouts import get_layout

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="body.obj")
args = ap.parse_args()

body = meshcap.load_body_model("anny")
pose = torch.zeros(1, body.num_joints, 3)
j = body.joint_names.index
pose[0, j("upperarm01.L")] = torch.tensor([0.0, 0.0, 1.2])    # raise the left arm (about +z)
pose[0, j("lowerarm01.L")] = torch.tensor([0.0, -1.2, 0.0])   # bend the left elbow
pose[0, j("upperleg01.R")] = torch.tensor([-0.6, 0.0, 0.0])   # step the right leg forward
pose[0, j("lowerleg01.R")] = torch.tensor([0.8, 0.0, 0.0])
shape = torch.tensor([[0.5, 0.5, 0.6, 0.5, 0.7, 0.5]])        # gender, age, muscle, weight, height, proportions

with torch.no_grad():
    out = body(pose, shape, layout="coco17")
trimesh.Trimesh(out.vertices[0].numpy(), body.faces.numpy(), process=False).export(args.out)
print(f"wrote {args.out}: {out.vertices.shape[1]} vertices, {len(body.faces)} triangles")
for name, p in zip(get_layout("coco17").names, out.keypoints[0].numpy()):
    print(f"  {name:15s} {np.round(p, 3)}")
