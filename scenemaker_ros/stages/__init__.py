"""The scene pipeline's stages: each a one-method protocol with named backends (``BACKENDS``).

Numpy crosses every stage boundary. ``scoring`` rates the stages against synthetic ground truth.
"""

from scenemaker_ros.stages.deocclusion import DeoccludedObject, Deoccluder, build_deoccluder
from scenemaker_ros.stages.geometry import GeometryBackend, ObjectGeometry, build_geometry
from scenemaker_ros.stages.segmentation import (
    Segmentation,
    Segmenter,
    SupportPlane,
    build_segmenter,
)

__all__ = ["DeoccludedObject", "Deoccluder", "GeometryBackend", "ObjectGeometry", "Segmentation",
           "Segmenter", "SupportPlane", "build_deoccluder", "build_geometry", "build_segmenter"]
