"""Exporters: a Motion to the files animation tools read (BVH; glTF and FBX to follow)."""
from meshcap.export.bvh import write_bvh

__all__ = ["write_bvh"]
