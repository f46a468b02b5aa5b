"""Held-out open-set objects: pybullet_data's ``random_urdfs`` as canonical ``Shape`` objects.

Data policy: only ``random_urdfs/000`` .. ``499`` may be read, and only for the open-set
benchmark, never for training; no other pybullet_data mesh is read (the loader also skips the
OBJ's material file). ``load_random_urdf_shape`` refuses any other index.

What these meshes are: each OBJ is a convex decomposition, 1 to 123 closed convex pieces (median
6; one ``o`` block each) of 90 to 2552 triangles in all (median 366). Every piece is watertight
and outward wound as shipped, with no degenerate or duplicate face; the pieces touch or overlap,
so like the procedural composites (see ``shapes.COMPOSITE_FAMILIES``) all 499 usable meshes are
watertight edge-wise but only the 12 single-piece ones are one 2-manifold solid. Vertices are
therefore merged within each piece only: merging across pieces joins coincident corners of
neighbouring pieces into non-manifold edges (14 meshes would lose watertightness). Index 168 has
only NaN vertices and is refused (``BROKEN_RANDOM_URDFS``).

Canonical frame: the URDF's visual ``scale`` and ``origin`` (xyz, rpy) applied, then centred on
the axis-aligned bbox with longest side 1, as in ``shapes.make_shape``. The objects have no
natural up, so +z is simply the URDF's z; they get no symmetry annotation.
"""

import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pybullet_data
import trimesh
from scipy.spatial.transform import Rotation

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.synth.shapes import Shape, _canonicalize, _read_only

ALLOWED_RANDOM_URDFS = range(500)
"""The only random_urdfs indices the data policy allows (open-set benchmark, never training)."""

BROKEN_RANDOM_URDFS = frozenset({168})
"""Allowed indices whose mesh is unusable (all vertices NaN); loading them raises."""

USABLE_RANDOM_URDFS = tuple(i for i in ALLOWED_RANDOM_URDFS if i not in BROKEN_RANDOM_URDFS)
"""The 499 indices of the open-set benchmark."""


def _checked_index(index: int) -> int:
    """``index`` as an int; SceneMakerError unless it is an integer the data policy allows."""
    if isinstance(index, bool) or not isinstance(index, int | np.integer) \
            or int(index) not in ALLOWED_RANDOM_URDFS:
        raise SceneMakerError(
            f"random_urdfs index {index!r} is not allowed: the data policy permits only "
            "pybullet_data random_urdfs 000-499, for the open-set benchmark (never for training)")
    return int(index)


def random_urdf_path(index: int) -> Path:
    """Path of ``random_urdfs/NNN/NNN.urdf``; SceneMakerError for an index the policy forbids."""
    name = f"{_checked_index(index):03d}"
    return Path(pybullet_data.getDataPath()) / "random_urdfs" / name / f"{name}.urdf"


def _visual_mesh(urdf: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The single visual mesh of a URDF: (OBJ path, scale (3,), link-from-mesh transform (4, 4)).

    The transform holds the visual origin: rotation R = Rz(yaw) Ry(pitch) Rx(roll), then xyz.
    """
    visuals = ET.parse(urdf).getroot().findall("./link/visual")
    meshes = [v.find("./geometry/mesh") for v in visuals]
    if len(visuals) != 1 or meshes[0] is None:
        raise SceneMakerError(f"{urdf}: expected exactly one visual mesh, found {len(visuals)}")
    mesh_path = (urdf.parent / meshes[0].get("filename")).resolve()
    if mesh_path.parent != urdf.parent.resolve():
        raise SceneMakerError(f"{urdf}: visual mesh {mesh_path} is outside the object's folder")
    scale = np.array(meshes[0].get("scale", "1 1 1").split(), dtype=np.float64)
    origin = visuals[0].find("./origin")
    xyz = origin.get("xyz", "0 0 0") if origin is not None else "0 0 0"
    rpy = origin.get("rpy", "0 0 0") if origin is not None else "0 0 0"
    transform = np.eye(4)
    transform[:3, :3] = Rotation.from_euler("xyz", np.array(rpy.split(), float)).as_matrix()
    transform[:3, 3] = np.array(xyz.split(), dtype=np.float64)
    return mesh_path, scale, transform


def _pieces(obj: Path) -> list[trimesh.Trimesh]:
    """The OBJ's ``o`` blocks as unprocessed meshes (materials not read)."""
    loaded = trimesh.load(obj, split_objects=True, group_material=False, skip_materials=True,
                          process=False)
    return list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]


def _clean(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """One piece with vertices merged, degenerate and duplicate faces removed, unreferenced
    vertices dropped, and faces wound consistently outward."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    trimesh.repair.fix_normals(mesh)
    return mesh


def _load_mesh(urdf: Path) -> tuple[np.ndarray, np.ndarray]:
    """The URDF's visual mesh in the link frame: vertices (V, 3) float64, faces (F, 3) int64."""
    obj, scale, transform = _visual_mesh(urdf)
    pieces = _pieces(obj)
    if not all(np.isfinite(p.vertices).all() for p in pieces):
        raise SceneMakerError(f"{obj}: the mesh has non-finite vertices (unusable object)")
    cleaned = [_clean((p.vertices * scale) @ transform[:3, :3].T + transform[:3, 3], p.faces)
               for p in pieces]
    cleaned = [m for m in cleaned if len(m.faces)]
    if not cleaned:
        raise SceneMakerError(f"{obj}: the mesh has no non-degenerate face")
    merged = trimesh.util.concatenate(cleaned)
    return merged.vertices, merged.faces


def load_random_urdf_shape(index: int) -> Shape:
    """``random_urdfs/NNN`` as a Shape: canonical frame, ``family="urdf_NNN"``, ``seed=index``,
    no symmetry. Cached per process (the Shape's arrays are read-only).

    Raises SceneMakerError for an index outside 0..499 (data policy) or a broken mesh.
    """
    return _cached_shape(_checked_index(index))


@functools.cache
def _cached_shape(index: int) -> Shape:
    vertices, faces = _load_mesh(random_urdf_path(index))
    return Shape(
        family=f"urdf_{index:03d}",
        seed=index,
        vertices=_read_only(_canonicalize(vertices), np.float64),
        faces=_read_only(faces, np.int64),
        symmetry="none",
        symmetry_rotations=_read_only(np.eye(3)[None], np.float64),
    )


def random_urdf_shapes(indices: Iterable[int]) -> list[Shape]:
    """``load_random_urdf_shape`` for each index, in order."""
    return [load_random_urdf_shape(i) for i in indices]
