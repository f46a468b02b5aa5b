"""The scene folder contract: ``scene.json`` plus mesh files, used by everything downstream.

``pose_matrix @ [v, 1]`` gives a canonical mesh vertex ``v`` in the camera optical frame
(REP 103: x right, y down, z forward) in metres, scale included. The same pose is stored split as
``pose_matrix = [rotation @ diag(scale) | translation]``. The JSON Schema ships in
``scenemaker_ros/schema/scene.schema.json``; ``load_scene`` validates against it and checks what
a schema cannot (pose consistency, proper rotations, mesh files present).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import trimesh

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path, write_json_atomic
from scenemaker_ros.geometry import compose_pose, transform_points

SCENE_FILE = "scene.json"
MESH_SUFFIXES = (".glb", ".ply", ".obj")
POSE_TOLERANCE = 1e-4


@dataclass
class CameraIntrinsics:
    """Pinhole camera: ``K`` (3, 3) in pixels; ``camera_to_world`` (4, 4) optional, world z up."""

    width: int
    height: int
    K: np.ndarray
    camera_to_world: np.ndarray | None = None


@dataclass
class SceneObject:
    """One posed object. ``pose_matrix`` (4, 4): canonical mesh -> camera frame, metres."""

    id: int
    label: str
    score: float
    mesh: str
    pose_matrix: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def rotation(self) -> np.ndarray:
        return self.pose_matrix[:3, :3] / self.scale

    @property
    def translation(self) -> np.ndarray:
        return self.pose_matrix[:3, 3].copy()

    @property
    def scale(self) -> np.ndarray:
        return np.linalg.norm(self.pose_matrix[:3, :3], axis=0)


@dataclass
class Scene:
    frame_id: str
    camera: CameraIntrinsics
    objects: list[SceneObject]
    stamp: float | None = None
    relations: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        camera: dict[str, Any] = {"width": self.camera.width, "height": self.camera.height,
                                  "K": self.camera.K.tolist()}
        if self.camera.camera_to_world is not None:
            camera["camera_to_world"] = self.camera.camera_to_world.tolist()
        data: dict[str, Any] = {"version": 1, "frame_id": self.frame_id, "camera": camera,
                                "objects": [_object_to_dict(obj) for obj in self.objects]}
        if self.stamp is not None:
            data["stamp"] = self.stamp
        if self.relations:
            data["relations"] = self.relations
        if self.metadata:
            data["metadata"] = self.metadata
        return data


def _object_to_dict(obj: SceneObject) -> dict[str, Any]:
    data = {"id": obj.id, "label": obj.label, "score": float(obj.score), "mesh": obj.mesh,
            "pose_matrix": obj.pose_matrix.tolist(), "rotation": obj.rotation.tolist(),
            "translation": obj.translation.tolist(), "scale": obj.scale.tolist()}
    if obj.attributes:
        data["attributes"] = obj.attributes
    return data


@lru_cache(maxsize=1)
def scene_schema() -> dict[str, Any]:
    text = resources.files("scenemaker_ros").joinpath("schema/scene.schema.json").read_text()
    return json.loads(text)


def scene_from_dict(data: Any, source: str = SCENE_FILE) -> Scene:
    """Validate a parsed ``scene.json`` and build a Scene; SceneMakerError names the problem."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(scene_schema()).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        raise SceneMakerError(f"{source}: invalid scene at '{where}': {error.message}")
    camera = data["camera"]
    objects = []
    for i, item in enumerate(data["objects"]):
        pose = np.asarray(item["pose_matrix"], dtype=np.float64)
        rotation = np.asarray(item["rotation"], dtype=np.float64)
        _check_pose(pose, rotation, item, f"{source}: objects[{i}]")
        objects.append(SceneObject(id=item["id"], label=item["label"], score=item["score"],
                                   mesh=item["mesh"], pose_matrix=pose,
                                   attributes=item.get("attributes", {})))
    ids = [obj.id for obj in objects]
    if len(set(ids)) != len(ids):
        raise SceneMakerError(f"{source}: object ids are not unique: {ids}")
    _check_relations(data.get("relations", []), set(ids), source)
    to_world = camera.get("camera_to_world")
    intrinsics = CameraIntrinsics(
        width=camera["width"], height=camera["height"], K=np.asarray(camera["K"], dtype=np.float64),
        camera_to_world=None if to_world is None else np.asarray(to_world, dtype=np.float64))
    if intrinsics.K[0, 0] <= 0 or intrinsics.K[1, 1] <= 0:
        raise SceneMakerError(f"{source}: camera K has a non-positive focal length")
    return Scene(frame_id=data["frame_id"], camera=intrinsics, objects=objects,
                 stamp=data.get("stamp"), relations=data.get("relations", []),
                 metadata=data.get("metadata", {}))


def _check_relations(relations: list[dict], ids: set[int], source: str) -> None:
    """Relations name objects of the scene; a relation's object may be -1, the support plane."""
    for i, relation in enumerate(relations):
        if relation["subject"] not in ids or relation["object"] not in ids | {-1}:
            raise SceneMakerError(f"{source}: relations[{i}] names an object id that is not in "
                                  f"the scene: {relation['subject']} -> {relation['object']}")


def _check_pose(pose: np.ndarray, rotation: np.ndarray, item: dict, where: str) -> None:
    if not np.all(np.isfinite(pose)):
        raise SceneMakerError(f"{where}: pose_matrix has non-finite values")
    if not np.allclose(pose[3], [0, 0, 0, 1]):
        raise SceneMakerError(f"{where}: pose_matrix last row must be [0, 0, 0, 1]")
    if (not np.allclose(rotation.T @ rotation, np.eye(3), atol=POSE_TOLERANCE)
            or np.linalg.det(rotation) < 0):
        raise SceneMakerError(f"{where}: rotation is not a proper rotation matrix")
    expected = compose_pose(rotation, np.asarray(item["translation"]), np.asarray(item["scale"]))
    if not np.allclose(pose, expected, atol=POSE_TOLERANCE):
        raise SceneMakerError(
            f"{where}: pose_matrix disagrees with rotation/translation/scale")


def load_scene(scene_dir: str | Path) -> Scene:
    """Read and validate ``scene_dir/scene.json``; every referenced mesh file must exist."""
    scene_dir = Path(scene_dir)
    path = scene_dir / SCENE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneMakerError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SceneMakerError(f"{path}: not valid JSON ({err})") from None
    scene = scene_from_dict(data, str(path))
    for obj in scene.objects:
        if not (scene_dir / obj.mesh).is_file():
            raise SceneMakerError(f"{path}: object {obj.id} mesh '{obj.mesh}' not found")
    return scene


def save_scene(scene: Scene, scene_dir: str | Path,
               meshes: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """Write ``scene.json`` (validated) and, if given, the meshes by object id (V, 3)/(F, 3).

    Every file is written atomically; the scene file goes last, so a reader that finds it also
    finds its meshes.
    """
    scene_dir = Path(scene_dir)
    data = scene.to_dict()
    scene_from_dict(json.loads(json.dumps(data)), str(scene_dir / SCENE_FILE))
    for obj in scene.objects:
        if meshes is not None and obj.id in meshes:
            vertices, faces = meshes[obj.id]
            save_mesh(scene_dir / obj.mesh, vertices, faces)
    write_json_atomic(scene_dir / SCENE_FILE, data)
    return scene_dir


def save_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh (format from the suffix: .ply, .obj or .glb) atomically."""
    path = Path(path)
    if path.suffix not in MESH_SUFFIXES:
        raise SceneMakerError(f"{path}: mesh format must be one of {MESH_SUFFIXES}")
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp)


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file (GLB, PLY, OBJ, STL; multi-part files are merged) -> (V, 3), (F, 3)."""
    path = Path(path)
    if not path.is_file():
        raise SceneMakerError(f"{path}: mesh file not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        raise SceneMakerError(f"{path}: cannot read mesh ({type(err).__name__}: {err})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise SceneMakerError(f"{path}: file holds no triangles")
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def posed_vertices(scene_dir: str | Path, scene: Scene) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each object's mesh with its pose applied: [(vertices in camera frame (V, 3) m, faces)]."""
    result = []
    for obj in scene.objects:
        vertices, faces = load_mesh(Path(scene_dir) / obj.mesh)
        result.append((transform_points(obj.pose_matrix, vertices), faces))
    return result
