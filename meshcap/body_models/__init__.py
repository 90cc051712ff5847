"""Body models behind one interface: `load_body_model(name)` -> a `BodyModel`.

- ``anny`` (default): the free anny model, shipped fitting data, full mesh built once per machine.
- ``smpl``, ``smplh``, ``smplx``: through the `smplx` package, from model files the user has.
"""
from __future__ import annotations

from pathlib import Path

import torch

from meshcap.body_models.base import BodyModel, BodyModelOutput, Skeleton

__all__ = ["BodyModel", "BodyModelOutput", "Skeleton", "load_body_model", "MODEL_NAMES"]

MODEL_NAMES = ("anny", "smpl", "smplh", "smplx")



def load_body_model(
    name: str = "anny",
    model_path: str | Path | None = None,
    *,
    gender: str = "neutral",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> BodyModel:
    """Load a body model by name.

    Args:
        name: ``anny`` (default, needs no files), ``smpl``, ``smplh`` or ``smplx``.
        model_path: for the SMPL family, a model file (``.pkl``/``.npz``) or the folder that
            holds it (smplx's layout: ``FOLDER/smpl/SMPL_NEUTRAL.pkl`` or ``FOLDER/SMPL_NEUTRAL.pkl``).
        gender: ``neutral``, ``male`` or ``female`` (SMPL family).
    """
    name = name.lower()
    if name == "anny":
        if model_path is not None:
            raise ValueError("the anny model needs no --model-path; it ships with meshcap")
        from meshcap.body_models.anny_model import AnnyModel

        return AnnyModel(dtype=dtype).to(device)
    if name in ("smpl", "smplh", "smplx"):
        from meshcap.body_models.smpl_family import SMPLFamilyModel

        if model_path is None:
            raise ValueError(
                f"the {name} body model needs its model file: pass model_path (--model-path) "
                f"pointing to your licensed {name.upper()} file or its folder"
            )
        return SMPLFamilyModel(name, model_path, gender=gender, dtype=dtype).to(device)
    raise ValueError(f"unknown body model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
