"""Load a capture and drive the body mesh with it in trimesh: every person's mesh, frame by
frame, in the motion's world (metres; a capture stands on its ground, y up: see `motion.world`).

    python examples/drive_mesh.py motion.npz --frame 40 --out frame40.ply
    python examples/drive_mesh.py motion.npz --every 10 --out frames/   # one .ply per 10th frame
"""
import argparse
from pathlib import Path

import numpy as np
import torch
import trimesh

import meshcap


def people_mesh(motion: meshcap.Motion, body: meshcap.BodyModel, frame: int) -> trimesh.Trimesh | None:
    """Everyone fitted at `frame` as one mesh (None if nobody was)."""
    parts = []
    for p in np.flatnonzero(motion.valid[:, frame]):
        with torch.no_grad():
            out = body(torch.as_tensor(motion.poses[p, frame:frame + 1]),    # (1, J, 3) axis-angle
                       torch.as_tensor(motion.shape[p:p + 1]),               # (1, S)
                       torch.as_tensor(motion.transl[p, frame:frame + 1]))   # (1, 3) metres
        parts.append(trimesh.Trimesh(out.vertices[0].numpy(), body.faces.numpy(), process=False))
    return trimesh.util.concatenate(parts) if parts else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("motion")
    ap.add_argument("--frame", type=int, default=None, help="one frame (default: the first fitted)")
    ap.add_argument("--every", type=int, default=None, help="every N-th frame into the --out folder")
    ap.add_argument("--out", required=True, help="a .ply/.obj/.glb file, or a folder with --every")
    args = ap.parse_args()
    motion = meshcap.Motion.load(args.motion)
    body = motion.load_body_model()
    if args.every:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for t in range(0, motion.num_frames, args.every):
            mesh = people_mesh(motion, body, t)
            if mesh is not None:
                mesh.export(out / f"frame{t:05d}.ply")
        print(f"wrote meshes of every {args.every}th frame to {out}")
        return
    frame = args.frame if args.frame is not None else int(np.flatnonzero(motion.valid.any(0))[0])
    mesh = people_mesh(motion, body, frame)
    if mesh is None:
        raise SystemExit(f"nobody was fitted in frame {frame}")
    mesh.export(args.out)
    print(f"wrote {args.out}: frame {frame}, {len(mesh.vertices)} vertices, height span "
          f"{np.ptp(mesh.vertices[:, 1]):.2f} m")


if __name__ == "__main__":
    main()
