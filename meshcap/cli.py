"""The `meshcap` command: argument parsing and messages only; the work lives in the library.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input or usage (the message says
which file and what is wrong).
"""
from __future__ import annotations

import argparse
import sys

from meshcap.errors import MeshcapError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2

_SUBCOMMANDS = ("info", "prepare")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshcap",
        description="3D human meshes and motion from video.\n\n"
        "  meshcap VIDEO --out motion.npz      capture (video pipeline: coming with the detector and fitting stages)\n"
        "  meshcap info motion.npz             describe a result\n"
        "  meshcap prepare                     build the body model's mesh cache once for this machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 success, 1 internal error, 2 bad input (the message names the file).",
    )
    sub = p.add_subparsers(dest="command")
    info = sub.add_parser("info", help="describe a motion.npz")
    info.add_argument("motion", help="a motion.npz written by meshcap")
    sub.add_parser("prepare", help="build the anny mesh cache once for this machine (about a minute)")
    return p


def _capture_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshcap", description="capture motion from a video")
    p.add_argument("video")
    p.add_argument("--out", required=True, help="motion.npz to write")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] not in _SUBCOMMANDS and not argv[0].startswith("-"):
            args = _capture_parser().parse_args(argv)
            raise MeshcapError(
                f"{args.video}: capture from video is not available in meshcap {_version()} yet; "
                "this release provides the body models and the motion format"
            )
        args = _parser().parse_args(argv)
        if args.command == "info":
            from meshcap.motion import Motion

            m = Motion.load(args.motion)
            print(f"{args.motion}: {m.summary()}")
        elif args.command == "prepare":
            from meshcap.body_models import anny_data

            path = anny_data.build_full_cache()
            print(f"anny mesh cache ready: {path}")
        else:
            _parser().print_help()
        return EXIT_OK
    except MeshcapError as e:
        print(f"meshcap: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except (FileNotFoundError, ValueError) as e:
        print(f"meshcap: error: {e}", file=sys.stderr)
        return EXIT_INPUT


def _version() -> str:
    from meshcap import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
