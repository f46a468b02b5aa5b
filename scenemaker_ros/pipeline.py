"""The scene pipeline: one RGB-D frame -> posed, scaled object meshes (a ``Scene``).

Stages are passed in (like diffusers' pipelines take their components) and built from the one
config by ``ScenePipeline.from_config``; the CLI, the benchmarks and the ROS node share it.
``run`` reads as its steps: segment, de-occlude, choose each object's geometry, pose, assemble.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenemaker_ros.config import SceneMakerConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import depth_to_points
from scenemaker_ros.pose.estimator import ObjectPoser, PoseEstimator
from scenemaker_ros.scene import CameraIntrinsics, Scene, SceneObject
from scenemaker_ros.stages import (
    Deoccluder,
    GeometryBackend,
    ObjectGeometry,
    Segmentation,
    Segmenter,
    build_deoccluder,
    build_geometry,
    build_segmenter,
)
from scenemaker_ros.stages.depth import BACKENDS as DEPTH_BACKENDS
from scenemaker_ros.stages.depth import DepthEstimator, build_depth_estimator, rgb_frame
from scenemaker_ros.stages.geometry import KNOWN_SOURCE
from scenemaker_ros.stages.segmentation import OBJECT_LABEL
from scenemaker_ros.timing import StageTimer

log = logging.getLogger(__name__)

Mesh = tuple[np.ndarray, np.ndarray]


@dataclass
class PipelineResult:
    """A frame's scene: objects in the camera optical frame, their meshes by object id (in each
    mesh's own frame and unit, as ``pose_matrix`` expects), the segmentation, per-stage times
    and warnings (an empty scene always says why)."""

    scene: Scene
    meshes: dict[int, Mesh]
    segmentation: Segmentation
    timer: StageTimer
    warnings: list[str] = field(default_factory=list)


class ScenePipeline:
    """Segmenter -> de-occluder -> geometry -> pose estimator."""

    def __init__(self, segmenter: Segmenter, deoccluder: Deoccluder, geometry: GeometryBackend,
                 poser: ObjectPoser, depth: DepthEstimator | None = None):
        self.segmenter, self.deoccluder = segmenter, deoccluder
        self.geometry, self.poser, self.depth = geometry, poser, depth

    @classmethod
    def from_config(cls, cfg: SceneMakerConfig, objects_dir: str | Path | None = None
                    ) -> ScenePipeline:
        """The configured backends; ``objects_dir`` turns on known-object mode."""
        stages = cfg.pipeline
        return cls(build_segmenter(stages.segmentation), build_deoccluder(stages.deocclusion),
                   build_geometry(stages.geometry, objects_dir),
                   PoseEstimator.from_config(cfg.pose), build_depth_estimator(stages.depth))

    def complete(self, rgb: np.ndarray, camera: CameraIntrinsics | None = None,
                 stamp: float | None = None) -> RGBDFrame:
        """An RGB-only input (H, W, 3) uint8 as an RGBDFrame: depth, and the intrinsics when
        camera is None, from the monocular depth backend (``stages/depth.py``)."""
        if self.depth is None:
            names = sorted(set(DEPTH_BACKENDS) - {"none"})
            raise SceneMakerError(f"RGB-only input needs a monocular depth backend: set "
                                  f"pipeline.depth.backend to one of {names}, or give a "
                                  "registered depth image (--depth)")
        return rgb_frame(self.depth, rgb, camera, stamp)

    def run(self, frame: RGBDFrame) -> PipelineResult:
        """Posed objects of one frame; SceneMakerError for an invalid frame."""
        frame.validate()
        timer, warnings = StageTimer(), []
        K = np.asarray(frame.camera.K, dtype=np.float64)
        # 1. instances on the depth
        with timer("segmentation"):
            segmentation = self.segmenter.segment(frame)
        scene = Scene(frame_id=frame.frame_id, camera=frame.camera, objects=[], stamp=frame.stamp)
        if len(segmentation) == 0:
            warnings.append("no object found in the frame: the scene is empty")
            return PipelineResult(scene, {}, segmentation, timer, warnings)
        # 2. who hides whom, amodal masks and completed crops
        with timer("deocclusion"):
            deoccluded = self.deoccluder.deocclude(frame, segmentation)
        # 3. a mesh for every object: known meshes first, else the shape library
        with timer("geometry"):
            points = [depth_to_points(frame.depth, K, mask) for mask in segmentation.masks]
            geometries = self.geometry.geometry(frame, points, segmentation.masks,
                                                crops=deoccluded, plane=segmentation.plane)
        kept = [k for k, g in enumerate(geometries) if g is not None]
        for k in sorted(set(range(len(geometries))) - set(kept)):
            warnings.append(f"object {k}: no geometry (too few depth points, or a fragment of "
                            "a known object), left out")
        # 4. poses: the model for canonical meshes (library, generated), refined together with
        #    the geometry's own fit; metric meshes (known, carved) keep theirs (no model run)
        modelled, posed = [k for k in kept if not geometries[k].metric], {}
        if modelled:
            with timer("pose"):
                result = self.poser.estimate(
                    frame.rgb, frame.depth, K, segmentation.masks[modelled],
                    [(geometries[k].vertices, geometries[k].faces) for k in modelled],
                    starts=[geometries[k].T_cam_obj for k in modelled])
            for stage, values in result.timer.durations.items():
                timer.durations[f"pose.{stage}"].extend(values)
            posed = {k: (result.poses[i], result.scores[i], result.skipped.get(i, "no pose"))
                     for i, k in enumerate(modelled)}
        # 5. the scene
        objects, scene_meshes, object_of = [], {}, {}
        for k in kept:
            g = geometries[k]
            pose, score, why = posed.get(k, (g.T_cam_obj, g.score, ""))
            if pose is None:
                warnings.append(f"object {k}: not posed ({why})")
                continue
            object_id = len(objects)
            objects.append(SceneObject(
                id=object_id, label=_label(g, segmentation.labels[k]),
                score=float(segmentation.scores[k]),
                mesh=f"meshes/object_{object_id:03d}.ply", pose_matrix=pose,
                attributes={"geometry": g.source, "metric_mesh": g.metric,
                            "fit_score_m": float(score),
                            "visible_pixels": int(segmentation.masks[k].sum())}))
            scene_meshes[object_id], object_of[k] = (g.vertices, g.faces), object_id
        for k, object_id in object_of.items():  # occluders as object ids
            objects[object_id].attributes["occluded_by"] = [
                object_of[j] for j in deoccluded[k].occluders if j in object_of]
        scene.objects = objects
        for warning in warnings:
            log.warning(warning)
        return PipelineResult(scene, scene_meshes, segmentation, timer, warnings)


def _label(geometry: ObjectGeometry, detected: str) -> str:
    """A known mesh's name, else the segmenter's class (open-vocabulary backends), else the
    geometry's own label (a library shape's family, "object")."""
    if geometry.source.startswith(KNOWN_SOURCE) or detected == OBJECT_LABEL:
        return geometry.label
    return detected
