"""Capture the two people of the Sports2D demo video (fetched from PyPI on first use) and
describe the result.

    python3 examples/capture_demo.py --out motion.npz
"""
import argparse

from meshcap.samples import sports2d_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="motion.npz")
    args = ap.parse_args()
    video = sports2d_demo()
    print(f"sample video: {video}")
    from meshcap.cli import main as cli

    raise SystemExit(cli([str(video), "--out", args.out]))


if __name__ == "__main__":
    main()
