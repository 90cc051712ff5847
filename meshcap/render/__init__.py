"""Offscreen rendering: mesh overlays on video, coloured by uncertainty (`meshcap render`)."""
from meshcap.render.colors import legend_image, luminance, uncertainty_to_rgb
from meshcap.render.gl import MeshRenderer, vertex_normals
from meshcap.render.overlay import OverlayOptions, OverlayRenderer, frame_map, render_still, render_video

__all__ = [
    "MeshRenderer", "OverlayOptions", "OverlayRenderer", "render_video", "render_still",
    "uncertainty_to_rgb", "legend_image", "luminance", "vertex_normals", "frame_map",
]
