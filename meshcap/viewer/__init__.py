"""Interactive viewer of a Motion in the browser (`meshcap view`): live on localhost, or one
self-contained HTML file that plays offline."""
from meshcap.viewer.scene import MotionScene, serve, write_html

__all__ = ["MotionScene", "serve", "write_html"]
