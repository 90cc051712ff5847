"""Multi-view capture: calibrated cameras (`calibration`), robust triangulation
(`triangulate`), people matched across views and over time (`associate`), the cameras'
orientations refined from the people (`refine`), and the capture itself
(`capture_multiview`); the fitting lives in `meshcap.fitting.multiview`."""
from meshcap.multiview.calibration import Camera, read_calibration, write_calibration
from meshcap.multiview.refine import refine_orientations
from meshcap.multiview.triangulate import triangulate

__all__ = ["Camera", "read_calibration", "write_calibration", "refine_orientations", "triangulate"]
