"""Gazebo (gz-sim) SDF 1.9: one model per object (visual and collision mesh, inertial) plus the
support plane, in the gravity-aligned world frame of ``world.py``.

``export_sdf`` writes a ``<world>`` file (``gz sim world.sdf``). ``sdf_string`` returns the same
content as text for a ROS topic read by ``ros_gz_sim create -topic``: gz-sim's create service
spawns only the first top-level ``<model>``, so by default it wraps every object in one model
(nested models), with absolute ``file://`` mesh URIs since a string has no folder of its own.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from scenemaker_ros.config import ExportConfig
from scenemaker_ros.export.world import (
    ExportObject,
    ExportWorld,
    WorldFrame,
    inertia_entries,
    numbers,
    prepare_world,
    rpy,
    write_meshes,
)
from scenemaker_ros.files import write_text_atomic

SDF_VERSION = "1.9"
SDF_FILE = "world.sdf"
GRAVITY = (0.0, 0.0, -9.81)


def _element(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrib)
    if text is not None:
        child.text = text
    return child


def _pose(T: np.ndarray) -> str:
    """SDF pose text 'x y z roll pitch yaw' of a rigid (4, 4) transform."""
    return numbers(np.concatenate([T[:3, 3], rpy(T[:3, :3])]))


def _geometry(parent: ET.Element, tag: str, name: str, uri: str) -> None:
    mesh = _element(_element(_element(parent, tag, name=name), "geometry"), "mesh")
    _element(mesh, "uri", uri)


def _object_model(obj: ExportObject, uris: tuple[str, str], static: bool) -> ET.Element:
    model = ET.Element("model", name=obj.name)
    _element(model, "static", str(static).lower())
    _element(model, "pose", _pose(obj.pose))
    link = _element(model, "link", name="link")
    inertial = _element(link, "inertial")
    _element(inertial, "pose", numbers(np.concatenate([obj.center_of_mass, np.zeros(3)])))
    _element(inertial, "mass", numbers([obj.mass]))
    inertia = _element(inertial, "inertia")
    for name, value in inertia_entries(obj.inertia).items():
        _element(inertia, name, numbers([value]))
    _geometry(link, "visual", "visual", uris[0])
    _geometry(link, "collision", "collision", uris[1])
    return model


def _ground_model(frame: WorldFrame, size: float) -> ET.Element:
    """A static plane at the support plane's height, ``size`` m square."""
    model = ET.Element("model", name="ground_plane")
    _element(model, "static", "true")
    _element(model, "pose", numbers([0, 0, frame.ground_z, 0, 0, 0]))
    link = _element(model, "link", name="link")
    for tag in ("collision", "visual"):
        plane = _element(_element(_element(link, tag, name=tag), "geometry"), "plane")
        _element(plane, "normal", "0 0 1")
        _element(plane, "size", numbers([size, size]))
    return model


def _sun(parent: ET.Element) -> None:
    light = _element(parent, "light", type="directional", name="sun")
    _element(light, "cast_shadows", "true")
    _element(light, "pose", "0 0 10 0 0 0")
    _element(light, "diffuse", "0.8 0.8 0.8 1")
    _element(light, "specular", "0.2 0.2 0.2 1")
    _element(light, "direction", "-0.5 0.1 -0.9")


def sdf_xml(world: ExportWorld, uris: dict[int, tuple[str, str]], spawnable: bool) -> str:
    """The SDF document: a ``<world>`` (gravity, sun, ground, objects) or, with ``spawnable``,
    one top-level ``<model>`` nesting the ground and object models."""
    cfg = world.config
    root = ET.Element("sdf", version=SDF_VERSION)
    if spawnable:
        container = _element(root, "model", name=cfg.world_name)
    else:
        container = _element(root, "world", name=cfg.world_name)
        _element(container, "gravity", numbers(GRAVITY))
        _sun(container)
    if cfg.ground_plane:
        container.append(_ground_model(world.frame, cfg.ground_size_m))
    for obj in world.objects:
        container.append(_object_model(obj, uris[obj.id], cfg.static))
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def export_sdf(world: ExportWorld, out_dir: Path) -> Path:
    """Write ``out_dir/world.sdf`` and its STL meshes (``out_dir/meshes``); returns the path."""
    uris = write_meshes(world, out_dir, world.config.absolute_uris)
    path = out_dir / SDF_FILE
    write_text_atomic(path, sdf_xml(world, uris, spawnable=False))
    return path


def sdf_string(scene_dir: str | Path, out_dir: str | Path, cfg: ExportConfig | None = None,
               spawnable: bool = True) -> str:
    """The scene as SDF text with absolute mesh URIs; the meshes are written to ``out_dir``.

    ``spawnable``: one top-level model for ``ros_gz_sim create`` (see the module docstring);
    otherwise a ``<world>`` as in ``world.sdf``.
    """
    world = prepare_world(scene_dir, cfg or ExportConfig())
    return sdf_xml(world, write_meshes(world, Path(out_dir), absolute=True), spawnable)
