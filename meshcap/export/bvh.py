"""BVH export of a Motion: one file per person.

Hand-written: BVH is a small text format, and the Python BVH packages on PyPI read it (bvhio,
used by the tests, is one) but none writes a skeleton with per-frame Euler channels from
arrays. Conventions written into the file:

- units: metres; axes: y up, right-handed: the Motion's world turned y-up
  (`Motion.y_up_transform`): a grounded capture as it is (the ground at y = 0), a z-up
  calibration turned z -> y with the floor under the feet (`Motion.floor`) on y = 0, and a
  world without gravity (the camera frame) half a turn about x, the camera's image up as y;
- hierarchy: the body model's fitted skeleton; offsets are the rest offsets of the person's
  fitted shape, in a rest pose whose joint frames are world-aligned (so a joint's channels are
  its local rotation, exactly the Motion's `poses`);
- the root has zero offset and six channels: its world position, then rotations; every other
  joint has three rotation channels, order Z X Y (intrinsic), in degrees;
- frames where the person was not fitted hold the nearest fitted frame (BVH has no gaps);
  the person's `valid` mask stays in the motion.npz.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from meshcap.errors import InputError
from meshcap.fileio import write_text_atomic


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows of x (T, ...) with each invalid frame replaced by its nearest valid one (the later
    one when two are equally near)."""
    idx = np.flatnonzero(valid)
    t = np.arange(len(valid))[:, None]
    nearest = idx[(np.abs(t - idx[None]) - 0.5 * (idx[None] > t)).argmin(1)]
    return x[nearest]


def bvh_text(motion, person: int = 0, body_model=None) -> str:
    """The BVH file of one person of `motion` as text (see the module for conventions)."""
    import torch

    if not 0 <= person < motion.num_people:
        raise InputError(f"person {person} is not in this motion (it has {motion.num_people})")
    valid = motion.valid[person]
    if not valid.any():
        raise InputError(f"person {person} has no fitted frame")
    model = body_model or motion.load_body_model()
    shape = torch.as_tensor(motion.shape[person:person + 1], dtype=model.dtype)
    with torch.no_grad():
        sk = model.skeleton(shape, motion.bone_scale_of(person))  # offsets of the scaled bones
        rest_root = model.rest_joints(shape)[0, 0].cpu().numpy().astype(np.float64)
    offsets = sk.offsets[0].cpu().numpy().astype(np.float64)
    names, parents = list(sk.joint_names), list(sk.parents)
    J = len(names)
    # the world as it stands (or camera 0's view when it knows no gravity), its floor at y = 0
    C, lift = motion.y_up_transform()
    poses = _fill_invalid(motion.poses[person].astype(np.float64), valid)
    transl = _fill_invalid(motion.transl[person].astype(np.float64), valid)
    R = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(len(poses), J, 3, 3)
    R[:, 0] = C @ R[:, 0]
    root_pos = (transl + rest_root) @ C.T + lift
    euler = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_euler("ZXY", degrees=True).reshape(len(poses), J, 3)

    children: dict[int, list[int]] = {j: [] for j in range(J)}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    lines = ["HIERARCHY"]
    order: list[int] = []

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        order.append(j)
        if parents[j] < 0:
            lines.append(f"{pad}ROOT {names[j]}")
            lines.append(f"{pad}{{")
            lines.append(f"{pad}  OFFSET 0.000000 0.000000 0.000000")
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            o = offsets[j]
            lines.append(f"{pad}JOINT {names[j]}")
            lines.append(f"{pad}{{")
            lines.append(f"{pad}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}")
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:  # a short bone tip along the incoming bone, so viewers draw the end
            d = offsets[j] if parents[j] >= 0 else np.array([0.0, 0.1, 0.0])
            e = 0.08 * d / max(np.linalg.norm(d), 1e-9)
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    roots = [j for j in range(J) if parents[j] < 0]
    if len(roots) != 1:
        raise InputError(f"the skeleton must have one root, it has {len(roots)}")
    emit(roots[0], 0)
    lines.append("MOTION")
    lines.append(f"Frames: {len(poses)}")
    lines.append(f"Frame Time: {1.0 / motion.fps:.8f}")
    for t in range(len(poses)):
        vals = list(root_pos[t]) + [v for j in order for v in euler[t, j]]
        lines.append(" ".join(f"{v:.6f}" for v in vals))
    return "\n".join(lines) + "\n"


def write_bvh(motion, path: str | Path, person: int = 0, body_model=None) -> Path:
    """Write one person of `motion` as BVH (atomically)."""
    return write_text_atomic(path, bvh_text(motion, person, body_model))


def per_person_paths(path: str | Path, person_ids) -> list[Path]:
    """`path` for one person; `name_p{id}.ext` for each of several."""
    path = Path(path)
    ids = list(person_ids)
    if len(ids) == 1:
        return [path]
    return [path.with_name(f"{path.stem}_p{i}{path.suffix}") for i in ids]
