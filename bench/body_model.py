"""Body-model throughput: full mesh vs fast keypoint path, forward and forward+backward.

    python bench/body_model.py [--sizes 1 64 256] [--threads N]

Prints bodies/s for each batch size and path, and the fast/full ratio (same process, same
inputs). The forward+backward case is one fitting step's model cost: keypoints (blazepose33)
from pose (B, 20, 3), one shared shape and translations, gradients to all three.
"""
from __future__ import annotations

import argparse
import time

import torch

from meshcap import load_body_model


def bodies_per_second(fn, batch: int, min_time: float = 1.0, max_iter: int = 50) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < max_iter and (time.perf_counter() - t0 < min_time or n < 2):
        fn()
        n += 1
    return batch * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 256])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_body_model("anny")
    model._ensure_full()
    J = model.num_joints
    print(f"anny, {J} fitted joints, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'B':>5} {'path':>5} {'fwd bodies/s':>14} {'fwd+bwd bodies/s':>18}")
    ratios = {}
    for B in args.sizes:
        g = torch.Generator().manual_seed(B)
        pose = (torch.randn(B, J, 3, generator=g) * 0.3).requires_grad_(True)
        shape = torch.full((1, 6), 0.5).requires_grad_(True)
        transl = torch.randn(B, 3, generator=g).requires_grad_(True)
        res = {}
        for path, verts in (("full", True), ("fast", False)):
            def fwd():
                with torch.no_grad():
                    model(pose, shape, transl, layout="blazepose33", vertices=verts)

            def fwd_bwd():
                out = model(pose, shape, transl, layout="blazepose33", vertices=verts)
                out.keypoints.square().sum().backward()

            res[path] = (bodies_per_second(fwd, B), bodies_per_second(fwd_bwd, B))
            print(f"{B:>5} {path:>5} {res[path][0]:>14.1f} {res[path][1]:>18.1f}", flush=True)
        ratios[B] = (res["fast"][0] / res["full"][0], res["fast"][1] / res["full"][1])
    print("\nfast / full throughput ratio")
    for B, (f, fb) in ratios.items():
        print(f"  B={B:<4} forward {f:6.1f}x   forward+backward {fb:6.1f}x")


if __name__ == "__main__":
    main()
