"""meshcap: 3D human meshes and motion from ordinary video.

Public API (small on purpose):
    capture(video_or_keypoints, **options) -> Motion   (the whole pipeline)
    capture_multiview(sources, calibration, **options) -> Motion   (calibrated cameras)
    capture_batch(input_dir, out_dir, formats=(), workers=None, ray=None, **options)
        -> list[BatchResult]   (every video in a folder, resumable; locally or on Ray)
    load_body_model(name, model_path=None) -> BodyModel
    Motion, Motion.load(path)
    get_layout(name), convert_keypoints(kp, src, dst)
"""
from meshcap.body_models import BodyModel, BodyModelOutput, load_body_model
from meshcap.errors import InputError, MeshcapError, MotionFileError
from meshcap.keypoints.layouts import convert_keypoints, get_layout
from meshcap.motion import Motion

# Imported now, not on first use: the first import of the submodule `meshcap.capture` would
# otherwise rebind this package's `capture` from the function to the module.
from meshcap.capture import capture  # noqa: E402

__version__ = "0.1.0"


def capture_multiview(sources, calibration, **options) -> Motion:
    """Capture people seen by several calibrated, synchronised cameras; see
    `meshcap.multiview.capture.capture_multiview`."""
    from meshcap.multiview.capture import capture_multiview as _capture_multiview

    return _capture_multiview(sources, calibration, **options)


def capture_batch(input_dir, out_dir, **options):
    """Capture every video in a folder into another (resumable; local workers or a Ray
    cluster); see `meshcap.batch.capture_batch`."""
    from meshcap.batch import capture_batch as _capture_batch

    return _capture_batch(input_dir, out_dir, **options)


__all__ = [
    "capture", "capture_multiview", "capture_batch", "BodyModel", "BodyModelOutput", "load_body_model", "Motion", "get_layout",
    "convert_keypoints", "MeshcapError", "InputError", "MotionFileError",
]
