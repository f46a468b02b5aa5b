"""Binary glTF: one node per object (its visual mesh, its rigid world pose as the node matrix).

glTF is Y-up, so the object nodes hang under a node ``z_up`` that turns the gravity-aligned
world of ``world.py`` (z up) into glTF's frame; viewers then show the scene upright. The support
plane is left out: the file is for looking at, not for physics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from scenemaker_ros.export.world import ExportWorld
from scenemaker_ros.files import atomic_path

GLB_FILE = "scene.glb"
ROOT_NODE = "z_up"
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])


def build_glb_scene(world: ExportWorld) -> trimesh.Scene:
    """The trimesh scene: ``world`` -> ``z_up`` -> one node per object, named as its model."""
    scene = trimesh.Scene()
    scene.graph.update(frame_from=scene.graph.base_frame, frame_to=ROOT_NODE, matrix=Z_UP_TO_Y_UP)
    for obj in world.objects:
        scene.add_geometry(obj.visual, node_name=obj.name, geom_name=obj.name,
                           parent_node_name=ROOT_NODE, transform=obj.pose)
    return scene


def export_glb(world: ExportWorld, out_dir: Path) -> Path:
    """Write ``out_dir/scene.glb``; returns the path."""
    path = out_dir / GLB_FILE
    with atomic_path(path) as tmp:
        tmp.write_bytes(build_glb_scene(world).export(file_type="glb"))
    return path
