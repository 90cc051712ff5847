"""Saving and loading regressor weights (safetensors; the config and training record ride in
the file's metadata, so a weights file is self-describing)."""
from __future__ import annotations

import json
from pathlib import Path

from meshcap.errors import MeshcapError
from meshcap.fileio import publish, temp_beside
from meshcap.regression.model import KeypointRegressor, RegressorConfig

SHIPPED = Path(__file__).parent / "data" / "regressor.safetensors"


def save_weights(net: KeypointRegressor, path: str | Path, record: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    tmp = temp_beside(path, suffix=".safetensors")
    try:
        state = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()}
        save_file(state, tmp, metadata=dict(config=json.dumps(net.to_dict()), record=json.dumps(record or {})))
        return publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_regressor(path: str | Path | None = None) -> KeypointRegressor:
    """The regressor from a weights file (default: the shipped one), in eval mode."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else SHIPPED
    if not path.exists():
        raise MeshcapError(f"{path}: no regressor weights there")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        config = RegressorConfig(**json.loads(meta["config"]))
        net = KeypointRegressor(config)
        net.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise MeshcapError(f"{path}: not a meshcap regressor weights file ({e})") from None
    net.record = json.loads(meta.get("record", "{}"))
    return net.eval()
