"""Scene folder -> simulator and planner formats: GLB, Gazebo SDF, USD (Isaac Sim), URDF.

All formats share ``world.py``: a gravity-aligned world frame (z up, metres), repaired meshes,
convex-hull collision meshes and mass properties from volume and density. Every file is written
atomically (temp name in the same folder, then ``os.replace``), meshes before the file naming
them, so a simulator watching the folder never reads a half-written or dangling file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scenemaker_ros.config import ExportConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.export.glb import export_glb
from scenemaker_ros.export.sdf import export_sdf, sdf_string
from scenemaker_ros.export.urdf import export_urdf
from scenemaker_ros.export.usd import export_usd
from scenemaker_ros.export.world import ExportWorld, prepare_world

EXPORTERS: dict[str, Callable[[ExportWorld, Path], Path]] = {
    "glb": export_glb, "sdf": export_sdf, "urdf": export_urdf, "usd": export_usd}
FORMATS = tuple(EXPORTERS)

__all__ = ["EXPORTERS", "FORMATS", "export_scene", "sdf_string"]


def export_scene(scene_dir: str | Path, fmt: str, out_dir: str | Path,
                 options: ExportConfig | None = None) -> Path:
    """Export the scene folder ``scene_dir`` as ``fmt`` into ``out_dir``; returns the main file.

    Raises SceneMakerError (one line) for an unknown format, an invalid scene or a bad mesh.
    """
    if fmt not in EXPORTERS:
        raise SceneMakerError(f"export: unknown format '{fmt}' (one of {', '.join(FORMATS)})")
    world = prepare_world(scene_dir, options or ExportConfig())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return EXPORTERS[fmt](world, out_dir)
