"""A scene in a gravity-aligned world frame with simulator-ready meshes, for every export format.

World frame: z up (against gravity), metres. It is the scene's ``camera.camera_to_world`` when
present (the support plane is then put at the lowest object point). Otherwise it is built from a
support plane, taken from ``metadata.support_plane`` ([a, b, c, d] in the scene's camera frame,
a x + b y + c z + d = 0, normal (a, b, c) pointing up) or estimated as the convex-hull facet of
all posed meshes that faces most nearly down (see ``estimate_up``); the plane is z = 0, the origin
lies under the objects' centroid and x is the camera's viewing direction along the plane.

Each object becomes a rigid link: its frame is the canonical mesh frame (rotation and translation
of ``pose_matrix``), its meshes carry the per-axis scale, so every format uses plain rigid poses.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.transform import Rotation

from scenemaker_ros.config import ExportConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path
from scenemaker_ros.geometry import compose_pose, decompose_pose, transform_points, triangle_areas
from scenemaker_ros.scene import Scene, SceneObject, load_mesh, load_scene

GROUND_THICKNESS_M = 0.02  # box-shaped ground (URDF, USD): its top face is the support plane
MESH_FOLDER = "meshes"
# Gravity in the camera frame lies between the camera's down (+y) and forward (+z) axes for a
# camera pitched 0-90 deg below the horizon; the estimate accepts facets within 60 deg of that.
_DOWN_PRIOR = np.array([0.0, 1.0, 1.0]) / np.sqrt(2.0)
_DOWN_PRIOR_MIN_COS = 0.5
_COPLANAR_COS = np.cos(np.deg2rad(5.0))


@dataclass(frozen=True)
class WorldFrame:
    """``camera_to_world`` (4, 4) rigid: the scene's frame -> world (z up, m); ``ground_z``: the
    support plane's height in the world (m); ``source``: camera_to_world, metadata or estimated."""

    camera_to_world: np.ndarray
    ground_z: float
    source: str


@dataclass
class ExportObject:
    """One object as a rigid link; meshes and mass properties are in the link frame, SI units."""

    id: int
    name: str  # unique, [A-Za-z0-9_], starts with a letter: valid in SDF, URDF and USD
    label: str
    pose: np.ndarray  # (4, 4) rigid, link frame -> world
    visual: trimesh.Trimesh  # scaled canonical mesh, repaired where possible
    collision: trimesh.Trimesh  # convex hull of visual (or visual itself: collision="mesh")
    mass: float  # kg
    center_of_mass: np.ndarray  # (3,) link frame, m
    inertia: np.ndarray  # (3, 3) about the centre of mass, link-frame axes, kg m^2
    watertight: bool  # the visual mesh is closed (after repair)
    mass_from: str  # "mesh" (watertight) or "convex_hull"


@dataclass
class ExportWorld:
    """Everything a format writer needs: the frame, the prepared objects, the settings."""

    frame: WorldFrame
    objects: list[ExportObject]
    config: ExportConfig


# -----------------------------------------------------------------------------
# gravity-aligned frame


def gravity_frame(scene: Scene, posed: list[tuple[np.ndarray, np.ndarray]]) -> WorldFrame:
    """The world frame for ``scene`` whose posed meshes are ``posed`` [(V, 3) camera frame, F]."""
    points = np.concatenate([vertices for vertices, _ in posed])
    if scene.camera.camera_to_world is not None:
        T = _rigid(scene.camera.camera_to_world)
        return WorldFrame(T, float(transform_points(T, points)[:, 2].min()), "camera_to_world")
    plane = scene.metadata.get("support_plane")
    if plane is not None:
        up, height = _parse_plane(plane)
        return WorldFrame(_frame_from_plane(up, height, points), 0.0, "metadata")
    up = estimate_up(points)
    return WorldFrame(_frame_from_plane(up, float((points @ up).min()), points), 0.0, "estimated")


def _rigid(T: np.ndarray) -> np.ndarray:
    try:
        R, t, s = decompose_pose(T)
    except ValueError as err:
        raise SceneMakerError(f"camera_to_world is not a rigid transform: {err}") from None
    if not np.allclose(s, 1.0, atol=1e-4):
        raise SceneMakerError(f"camera_to_world has a scale {s.round(4).tolist()}, expected 1")
    return compose_pose(R, t, 1.0)


def _parse_plane(plane) -> tuple[np.ndarray, float]:
    """metadata.support_plane [a, b, c, d] -> (unit up normal (3,), plane height along it, m)."""
    values = np.asarray(plane, dtype=np.float64) if isinstance(plane, list) else np.zeros(0)
    if values.shape != (4,) or not np.all(np.isfinite(values)) or not values[:3].any():
        raise SceneMakerError(f"metadata.support_plane must be [a, b, c, d] with a non-zero "
                              f"normal, got {plane!r}")
    norm = np.linalg.norm(values[:3])
    return values[:3] / norm, float(-values[3] / norm)


def estimate_up(points: np.ndarray) -> np.ndarray:
    """Up direction (3,) in the camera frame from posed object points (N, 3).

    Every object lies above the support plane, so the plane supports the convex hull of all
    points. Each hull facet facing within 60 deg of the gravity prior (between camera down +y
    and forward +z) is scored by the area of the hull facets coplanar with it (5 deg) times
    cos^4 of its angle to the prior; the best facet's area-weighted normal, flipped, is up.
    Falls back to the camera's up (-y) when no facet qualifies (e.g. coplanar points).
    """
    try:
        hull = ConvexHull(points)
    except QhullError:
        return np.array([0.0, -1.0, 0.0])
    normals = hull.equations[:, :3]  # (T, 3) outward unit normals
    areas = triangle_areas(points, hull.simplices)
    alignment = normals @ _DOWN_PRIOR
    candidates = np.flatnonzero(alignment > _DOWN_PRIOR_MIN_COS)
    if len(candidates) == 0:
        return np.array([0.0, -1.0, 0.0])
    coplanar = normals[candidates] @ normals.T > _COPLANAR_COS  # (C, T)
    scores = (coplanar * areas).sum(axis=1) * alignment[candidates] ** 4
    members = coplanar[np.argmax(scores)]
    down = (normals[members] * areas[members, None]).sum(axis=0)
    return -down / np.linalg.norm(down)


def _frame_from_plane(up: np.ndarray, height: float, points: np.ndarray) -> np.ndarray:
    """Camera -> world (4, 4): z = up, origin on the plane under the points' centroid, x along
    the camera's viewing direction projected on the plane (its image-up direction if it looks
    straight down)."""
    forward = np.array([0.0, 0.0, 1.0]) - up[2] * up
    if np.linalg.norm(forward) < 1e-6:
        forward = np.array([0.0, -1.0, 0.0]) + up[1] * up
    x = forward / np.linalg.norm(forward)
    R = np.stack([x, np.cross(up, x), up])  # rows: world axes in camera coordinates
    centroid = points.mean(axis=0)
    origin = centroid - (centroid @ up - height) * up
    return compose_pose(R, -R @ origin, 1.0)


# -----------------------------------------------------------------------------
# meshes and mass


def repaired_mesh(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """A cleaned copy of a triangle mesh: duplicate vertices merged, degenerate and duplicate
    faces dropped, holes filled where trimesh can, winding made consistent and outward."""
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if not mesh.is_watertight:
        trimesh.repair.fill_holes(mesh)
    trimesh.repair.fix_normals(mesh)
    return mesh


def solid_hull(mesh: trimesh.Trimesh, min_thickness: float) -> trimesh.Trimesh:
    """Convex hull of ``mesh`` (same frame); a hull thinner than ``min_thickness`` (m) in any
    direction is replaced by its oriented bounding box thickened to that size."""
    with np.errstate(invalid="ignore", divide="ignore"):  # trimesh divides by a flat volume
        box = mesh.bounding_box_oriented.primitive
    if box.extents.min() >= min_thickness:
        hull = mesh.convex_hull
        if hull.is_volume and hull.volume > 0:
            return hull
    return trimesh.creation.box(extents=np.maximum(box.extents, min_thickness),
                                transform=box.transform)


def mass_properties(solid: trimesh.Trimesh, density: float
                    ) -> tuple[float, np.ndarray, np.ndarray]:
    """(mass kg, centre of mass (3,) m, inertia (3, 3) about it, kg m^2) of a closed mesh."""
    props = trimesh.triangles.mass_properties(solid.triangles, density=density)
    return float(props.mass), np.asarray(props.center_mass), np.asarray(props.inertia)


def object_name(obj: SceneObject) -> str:
    """``object_<id>_<label>`` with anything but [A-Za-z0-9_] replaced by '_'."""
    return f"object_{obj.id:03d}_{re.sub(r'[^A-Za-z0-9_]', '_', obj.label)}"


def prepare_object(obj: SceneObject, vertices: np.ndarray, faces: np.ndarray, frame: WorldFrame,
                   cfg: ExportConfig) -> ExportObject:
    """Link pose, repaired scaled mesh, collision mesh and mass properties of one object;
    ``vertices`` (V, 3) / ``faces`` (F, 3) is its canonical mesh."""
    R, t, scale = decompose_pose(obj.pose_matrix)
    visual = repaired_mesh(vertices * scale, faces)
    hull = solid_hull(visual, cfg.min_thickness_m)
    watertight = bool(visual.is_watertight and visual.is_volume and visual.volume > 0)
    mass, com, inertia = mass_properties(visual if watertight else hull, cfg.density_kg_m3)
    return ExportObject(
        id=obj.id, name=object_name(obj), label=obj.label,
        pose=frame.camera_to_world @ compose_pose(R, t, 1.0), visual=visual,
        collision=hull if cfg.collision == "convex_hull" else visual, mass=mass,
        center_of_mass=com, inertia=inertia, watertight=watertight,
        mass_from="mesh" if watertight else "convex_hull")


def prepare_world(scene_dir: str | Path, cfg: ExportConfig) -> ExportWorld:
    """Load and validate a scene folder and make every object ready for export."""
    scene_dir = Path(scene_dir)
    scene = load_scene(scene_dir)
    if not scene.objects:
        raise SceneMakerError(f"{scene_dir}: the scene has no objects to export")
    meshes = [load_mesh(scene_dir / obj.mesh) for obj in scene.objects]
    pairs = list(zip(scene.objects, meshes))
    posed = [(transform_points(obj.pose_matrix, v), f) for obj, (v, f) in pairs]
    frame = gravity_frame(scene, posed)
    objects = [prepare_object(obj, v, f, frame, cfg) for obj, (v, f) in pairs]
    return ExportWorld(frame=frame, objects=objects, config=cfg)


def write_meshes(world: ExportWorld, out_dir: Path, absolute: bool) -> dict[int, tuple[str, str]]:
    """Write each object's visual and collision mesh as binary STL under ``out_dir/meshes``
    (atomically); returns {object id: (visual uri, collision uri)}, paths relative to
    ``out_dir`` or ``file://`` URIs when ``absolute``."""
    uris = {}
    for obj in world.objects:
        names = [f"{obj.name}_visual.stl"]
        if obj.collision is not obj.visual:
            names.append(f"{obj.name}_collision.stl")
        for name, mesh in zip(names, (obj.visual, obj.collision)):
            with atomic_path(out_dir / MESH_FOLDER / name) as tmp:
                mesh.export(tmp)
        paths = [out_dir.resolve() / MESH_FOLDER / n if absolute else Path(MESH_FOLDER) / n
                 for n in names]
        uri = [p.as_uri() if absolute else p.as_posix() for p in paths]
        uris[obj.id] = (uri[0], uri[-1])
    return uris


# -----------------------------------------------------------------------------
# numbers and rotations as the formats write them


def numbers(values) -> str:
    """Space-separated numbers with 9 significant digits, as SDF and URDF write vectors."""
    return " ".join(f"{float(v):.9g}" for v in np.ravel(values))


def rpy(R: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (3,) rad of a rotation (3, 3), R = Rz(yaw) Ry(pitch) Rx(roll): the
    SDF / URDF convention. At pitch +-90 deg yaw is set to 0 and roll takes the rest (exact)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Gimbal lock", UserWarning)
        return Rotation.from_matrix(R).as_euler("xyz")


def inertia_entries(inertia: np.ndarray) -> dict[str, float]:
    """The six entries of a symmetric inertia tensor (3, 3) by their SDF / URDF names."""
    index = {"ixx": (0, 0), "ixy": (0, 1), "ixz": (0, 2), "iyy": (1, 1), "iyz": (1, 2),
             "izz": (2, 2)}
    return {name: float(inertia[i, j]) for name, (i, j) in index.items()}


def quaternion_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation (3, 3)."""
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z])
