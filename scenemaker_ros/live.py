"""A scene kept up to date frame after frame: what the ROS node serves, with no ROS in it.

``LiveScene.update(frame)`` runs the pipeline and gives objects oriented boxes and ids that stay
stable while the scene does not change (``SceneTracker``); ``relate`` adds scene-graph
relations; ``write_live`` rewrites the scene folder ``<export_root>/live`` and its simulator
files (each file atomically; a simulator watching the folder never reads half a file).
``export`` writes the current scene anywhere under the export root and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from scenemaker_ros.config import SceneMakerConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.export import export_scene, sdf_string
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import compose_pose, transform_points
from scenemaker_ros.pipeline import PipelineResult, ScenePipeline
from scenemaker_ros.relations import Relation, compute_relations
from scenemaker_ros.scene import Scene, SceneObject, save_scene
from scenemaker_ros.timing import StageTimer

log = logging.getLogger(__name__)

Mesh = tuple[np.ndarray, np.ndarray]
LIVE_DIR = "live"
_LABEL_MISMATCH_COST = 0.5  # fraction of the gate added when a detection's label changed


# -----------------------------------------------------------------------------
# stable ids


@dataclass
class _Track:
    label: str
    center: np.ndarray  # (3,) camera frame, metres


class SceneTracker:
    """Keeps object ids across frames: each new object takes the id of the previous object whose
    box centre is nearest (Hungarian assignment; a changed label costs half the gate), if within
    ``max_distance_m``; the others get fresh ids, never reused."""

    def __init__(self, max_distance_m: float):
        self.max_distance_m = max_distance_m
        self.tracks: dict[int, _Track] = {}
        self.next_id = 0

    def reset(self) -> None:
        self.tracks, self.next_id = {}, 0

    def assign(self, labels: list[str], centers: np.ndarray) -> tuple[list[int], list[int]]:
        """Ids for the objects (labels, centres (N, 3)) of a new frame, and the ids that
        vanished since the previous frame."""
        old_ids = list(self.tracks)
        ids: list[int | None] = [None] * len(labels)
        if old_ids and len(labels):
            old_centers = np.stack([self.tracks[i].center for i in old_ids])
            distance = np.linalg.norm(centers[:, None] - old_centers[None], axis=2)  # (N, M)
            mismatch = np.array([[label != self.tracks[i].label for i in old_ids]
                                 for label in labels])
            cost = distance + _LABEL_MISMATCH_COST * self.max_distance_m * mismatch
            for row, col in zip(*linear_sum_assignment(cost)):
                if distance[row, col] <= self.max_distance_m:
                    ids[row] = old_ids[col]
        for k, object_id in enumerate(ids):
            if object_id is None:
                ids[k], self.next_id = self.next_id, self.next_id + 1
        vanished = sorted(set(old_ids) - set(ids))
        self.tracks = {i: _Track(label, center) for i, label, center in zip(ids, labels, centers)}
        return ids, vanished


# -----------------------------------------------------------------------------
# one scene


@dataclass
class ObjectBox:
    """Oriented bounding box of a posed object: ``pose`` (4, 4) rigid, box frame -> camera
    (axes = the object's axes), ``size`` (3,) full edge lengths in metres."""

    pose: np.ndarray
    size: np.ndarray


def object_box(obj: SceneObject, vertices: np.ndarray) -> ObjectBox:
    """The box of the mesh's canonical vertices (V, 3), posed and scaled like ``obj``."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    center = transform_points(obj.pose_matrix, ((low + high) / 2)[None])[0]
    return ObjectBox(compose_pose(obj.rotation, center, 1.0), (high - low) * obj.scale)


@dataclass
class SceneUpdate:
    """The scene after one frame: objects with stable ids (camera optical frame), their meshes
    and boxes by id, relations, the ids that vanished, per-stage times and warnings;
    ``scene_dir``: the live scene folder when it was written."""

    scene: Scene
    meshes: dict[int, Mesh]
    boxes: dict[int, ObjectBox]
    relations: list[Relation]
    removed: list[int]
    timer: StageTimer
    warnings: list[str] = field(default_factory=list)
    scene_dir: Path | None = None
    sdf: str | None = None


class LiveScene:
    """Pipeline + stable ids + relations + live files, for a stream of frames."""

    def __init__(self, pipeline: ScenePipeline, cfg: SceneMakerConfig):
        self.pipeline, self.cfg = pipeline, cfg
        self.tracker = SceneTracker(cfg.node.track_max_distance_m)
        self.export_root = Path(cfg.node.export_root).expanduser().resolve()
        self.current: SceneUpdate | None = None

    @classmethod
    def from_config(cls, cfg: SceneMakerConfig) -> LiveScene:
        return cls(ScenePipeline.from_config(cfg, cfg.node.objects_dir or None), cfg)

    def reset(self) -> list[int]:
        """Forget the scene; returns the ids that were in it."""
        removed = sorted(self.tracker.tracks)
        self.tracker.reset()
        self.current = None
        return removed

    def update(self, frame: RGBDFrame) -> SceneUpdate:
        """Run the pipeline on a frame (SceneMakerError for an invalid one) and update the
        scene's objects; ``relate`` adds the relations (the node publishes objects first)."""
        result = self.pipeline.run(frame)
        timer = result.timer
        with timer("tracking"):
            scene, meshes, boxes, removed = self._with_stable_ids(result)
        self.current = SceneUpdate(scene, meshes, boxes, [], removed, timer, result.warnings)
        return self.current

    def relate(self, update: SceneUpdate) -> None:
        """The scene-graph relations of an update, into ``update.relations`` and its scene."""
        scene, meshes = update.scene, update.meshes
        with update.timer("relations"):
            posed = [(transform_points(o.pose_matrix, meshes[o.id][0]), meshes[o.id][1])
                     for o in scene.objects]
            update.relations = compute_relations(scene, posed, self.cfg.relations)
            scene.relations = [r.to_dict() for r in update.relations]

    def _with_stable_ids(self, result: PipelineResult
                         ) -> tuple[Scene, dict[int, Mesh], dict[int, ObjectBox], list[int]]:
        """The result's scene, meshes and boxes under the tracker's ids; the vanished ids."""
        scene = result.scene
        boxes = [object_box(o, result.meshes[o.id][0]) for o in scene.objects]
        centers = np.array([box.pose[:3, 3] for box in boxes]).reshape(-1, 3)
        ids, removed = self.tracker.assign([o.label for o in scene.objects], centers)
        new_id = {obj.id: i for obj, i in zip(scene.objects, ids)}
        meshes = {new_id[o.id]: result.meshes[o.id] for o in scene.objects}
        boxes_by_id = dict(zip(ids, boxes))
        for obj in scene.objects:
            obj.attributes["occluded_by"] = [new_id[i] for i in obj.attributes.get("occluded_by",
                                                                                   [])]
            obj.id = new_id[obj.id]
            obj.mesh = f"meshes/object_{obj.id:03d}.ply"
        scene.objects.sort(key=lambda o: o.id)
        if result.segmentation.plane is not None:
            plane = result.segmentation.plane
            scene.metadata["support_plane"] = [*plane.normal.tolist(), float(plane.offset)]
        return scene, meshes, boxes_by_id, removed

    def write_live(self, update: SceneUpdate) -> None:
        """Rewrite ``export_root/live`` (scene.json, meshes) and the ``node.stream_formats``
        files in ``live/<format>/``; ``node.publish_sdf``: the SDF text into ``update.sdf``."""
        live = self.export_root / LIVE_DIR
        with update.timer("live_files"):
            update.scene_dir = save_scene(update.scene, live, update.meshes)
            if not update.scene.objects:
                return
            for fmt in self.cfg.node.stream_formats:
                export_scene(live, fmt, live / fmt, self.cfg.export)
            if self.cfg.node.publish_sdf:
                update.sdf = sdf_string(live, live / "sdf_spawn", self.cfg.export)

    def export(self, path: str, formats: list[str]) -> Path:
        """Write the current scene as a scene folder (scene.json, meshes, scene.glb) plus
        ``formats`` at ``export_root/path`` (a fresh stamped folder when empty); refuses paths
        outside the export root."""
        if self.current is None or not self.current.scene.objects:
            raise SceneMakerError("export: there is no scene yet (no frame processed, or it was "
                                  "empty)")
        out = resolve_under(self.export_root, path or _stamp_name(self.current.scene.stamp))
        if out == self.export_root / LIVE_DIR:
            raise SceneMakerError(f"export: {LIVE_DIR}/ is the live scene folder; choose another")
        save_scene(self.current.scene, out, self.current.meshes)
        for fmt in ["glb", *formats]:
            export_scene(out, fmt, out, self.cfg.export)
        return out


def resolve_under(root: Path, path: str) -> Path:
    """``root / path`` when it stays inside ``root``; SceneMakerError otherwise."""
    if Path(path).is_absolute():
        raise SceneMakerError(f"export: '{path}' is absolute; give a path relative to the export "
                              f"root {root}")
    out = (root / path).resolve()
    if out == root or root not in out.parents:
        raise SceneMakerError(f"export: '{path}' leaves the export root {root}")
    return out


def _stamp_name(stamp: float | None) -> str:
    return "scene" if stamp is None else f"scene_{stamp:.3f}".replace(".", "_")
