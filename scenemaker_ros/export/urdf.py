"""URDF: a ``world`` link, one link per object (visual and collision mesh, inertial) and a box
for the support plane, in the gravity-aligned world frame of ``world.py``.

URDF describes a tree, so each object hangs off ``world`` by a joint whose origin is the
object's pose: ``fixed`` for static exports (planners: MoveIt, RViz) and ``floating`` otherwise.
Many URDF readers (robot_state_publisher, PyBullet's loadURDF) treat a floating joint as fixed or
need its state published; use SDF or USD for objects a simulator should move. Mesh filenames
are relative to the URDF file (PyBullet, Isaac Sim's importer, yourdfpy); RViz needs absolute
ones (``export.absolute_uris``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from scenemaker_ros.export.world import (
    GROUND_THICKNESS_M,
    ExportObject,
    ExportWorld,
    inertia_entries,
    numbers,
    rpy,
    write_meshes,
)
from scenemaker_ros.files import write_text_atomic

URDF_FILE = "scene.urdf"
WORLD_LINK = "world"


def _origin(parent: ET.Element, T: np.ndarray) -> None:
    ET.SubElement(parent, "origin", xyz=numbers(T[:3, 3]), rpy=numbers(rpy(T[:3, :3])))


def _shape(link: ET.Element, tag: str, kind: str, **attrib: str) -> None:
    """``<tag><geometry><kind attrib/></geometry></tag>`` under ``link`` (tag: visual/collision)."""
    ET.SubElement(ET.SubElement(ET.SubElement(link, tag), "geometry"), kind, attrib)


def _joint(robot: ET.Element, child: str, kind: str, T: np.ndarray) -> None:
    joint = ET.SubElement(robot, "joint", name=f"{child}_joint", type=kind)
    ET.SubElement(joint, "parent", link=WORLD_LINK)
    ET.SubElement(joint, "child", link=child)
    _origin(joint, T)


def _object_link(robot: ET.Element, obj: ExportObject, uris: tuple[str, str]) -> None:
    link = ET.SubElement(robot, "link", name=obj.name)
    inertial = ET.SubElement(link, "inertial")
    ET.SubElement(inertial, "origin", xyz=numbers(obj.center_of_mass), rpy="0 0 0")
    ET.SubElement(inertial, "mass", value=numbers([obj.mass]))
    ET.SubElement(inertial, "inertia", {name: numbers([value])
                                        for name, value in inertia_entries(obj.inertia).items()})
    for tag, uri in zip(("visual", "collision"), uris):
        _shape(link, tag, "mesh", filename=uri)


def urdf_xml(world: ExportWorld, uris: dict[int, tuple[str, str]]) -> str:
    """The URDF document (see the module docstring)."""
    cfg = world.config
    robot = ET.Element("robot", name=cfg.world_name)
    ET.SubElement(robot, "link", name=WORLD_LINK)
    if cfg.ground_plane:
        ground = ET.SubElement(robot, "link", name="ground_plane")
        size = numbers([cfg.ground_size_m, cfg.ground_size_m, GROUND_THICKNESS_M])
        for tag in ("visual", "collision"):
            _shape(ground, tag, "box", size=size)
        offset = np.eye(4)
        offset[2, 3] = world.frame.ground_z - GROUND_THICKNESS_M / 2
        _joint(robot, "ground_plane", "fixed", offset)
    for obj in world.objects:
        _object_link(robot, obj, uris[obj.id])
        _joint(robot, obj.name, "fixed" if cfg.static else "floating", obj.pose)
    ET.indent(robot)
    return '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode") + "\n"


def export_urdf(world: ExportWorld, out_dir: Path) -> Path:
    """Write ``out_dir/scene.urdf`` and its STL meshes (``out_dir/meshes``); returns the path."""
    uris = write_meshes(world, out_dir, world.config.absolute_uris)
    path = out_dir / URDF_FILE
    write_text_atomic(path, urdf_xml(world, uris))
    return path
