"""Pose estimation at inference: one RGB-D frame + object masks + meshes -> posed, scaled meshes.

``PoseEstimator.estimate`` reads as its steps: observe the objects, put each mesh in the model's
canonical frame, sample the flow (several hypotheses), keep per object the hypothesis that best
explains its depth (``refine.fit_score``), optionally refine (scale-aware and per-axis-scale ICP,
also from a fitted pose the caller gives, e.g. the geometry stage's, or else from the observed
principal axes at the model's position and size when ``geometric_starts``), and express the
poses for the meshes as given. ``ClassicalPoser``
(``pose/classical.py``) shares every step but the model.

Documented behaviour on hard input:
  no objects                      an empty result, the model is not run;
  < min_object_points points      the object is not posed (pose None) and ``skipped`` says why;
  more than 16 objects            objects are posed in groups of at most 16 (the model's limit),
                                  grouped left to right in the image;
  NaN / inf / negative depth      such pixels are invalid, as 0 is;
  a bad or missing checkpoint     ``SceneMakerError`` naming the file and the problem.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from scenemaker_ros.config import PoseConfig, PoseInputConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.geometry import sample_surface
from scenemaker_ros.pose.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from scenemaker_ros.pose.flow import sample
from scenemaker_ros.pose.inputs import (
    Observation,
    collate,
    make_example,
    observe,
    poses_to_camera,
    random_subset,
)
from scenemaker_ros.pose.model import PoseModel
from scenemaker_ros.pose.refine import (
    DepthView,
    fit_score,
    principal_axes_starts,
    refine_starts,
)
from scenemaker_ros.timing import StageTimer

Mesh = tuple[np.ndarray, np.ndarray]  # (V, 3) float vertices, (F, 3) int faces


@dataclass
class PoseResult:
    """Per object, in input order: T_cam_obj (4, 4) mapping the mesh as given into the camera
    optical frame (None if not posed), the pose before refinement, and its fit score (m)."""

    poses: list[np.ndarray | None]
    raw_poses: list[np.ndarray | None]
    scores: list[float]
    skipped: dict[int, str] = field(default_factory=dict)
    timer: StageTimer = field(default_factory=StageTimer)


def canonical_frame(vertices: np.ndarray) -> np.ndarray:
    """(4, 4) map from a mesh's own frame to the model's canonical frame: bounding-box centred,
    longest side 1. Raises SceneMakerError for an empty or flat-to-a-point mesh."""
    if len(vertices) == 0:
        raise SceneMakerError("pose: a mesh has no vertices")
    lo, hi = vertices.min(0), vertices.max(0)
    size = float((hi - lo).max())
    if not size > 0:
        raise SceneMakerError("pose: a mesh has zero size")
    T = np.eye(4)
    T[:3, :3] /= size
    T[:3, 3] = -(lo + hi) / 2 / size
    return T


class ObjectPoser(abc.ABC):
    """Shared steps of every pose estimator; subclasses pose one group of objects at a time."""

    max_group = 1 << 30  # objects posed together

    def __init__(self, inputs: PoseInputConfig, cfg: PoseConfig):
        self.inputs, self.cfg = inputs, cfg

    def estimate(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, masks: np.ndarray,
                 meshes: list[Mesh], starts: list[np.ndarray | None] | None = None
                 ) -> PoseResult:
        """rgb (H, W, 3) uint8, depth (H, W) float32 metres (0 / NaN = invalid), K (3, 3),
        masks (N, H, W) bool visible masks, N meshes in any frame and unit -> PoseResult.
        starts: per object None or a fitted pose T_cam_obj (4, 4) of its mesh as given (e.g.
        the geometry stage's), refined alongside the model's instead of the principal axes."""
        if len(masks) != len(meshes):
            raise SceneMakerError(f"pose: {len(masks)} masks but {len(meshes)} meshes")
        timer = StageTimer()
        rng = np.random.default_rng(self.cfg.seed)
        with timer("observe"):
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
            obs = observe(rgb, depth, K, np.asarray(masks, bool), self.inputs, rng)
        return self.estimate_observation(obs, meshes, DepthView(depth, K), rng, timer, starts)

    def estimate_observation(self, obs: Observation, meshes: list[Mesh], view: DepthView,
                             rng: np.random.Generator, timer: StageTimer | None = None,
                             starts: list[np.ndarray | None] | None = None) -> PoseResult:
        """The part of ``estimate`` after ``observe`` (benchmarks feed their own observation)."""
        timer = timer or StageTimer()
        n = len(meshes)
        result = PoseResult([None] * n, [None] * n, [np.inf] * n, timer=timer)
        obs = dataclasses.replace(obs, object_points=[
            random_subset(p, self.cfg.fit_points, rng) for p in obs.object_points])
        for k, points in enumerate(obs.object_points):
            if len(points) < self.inputs.min_object_points:
                result.skipped[k] = (f"{len(points)} valid depth points, fewer than "
                                     f"{self.inputs.min_object_points}")
        posed = [k for k in range(n) if k not in result.skipped]
        if not posed:
            return result
        to_canonical = {k: canonical_frame(np.asarray(meshes[k][0], np.float64)) for k in posed}
        surfaces = {k: sample_surface(meshes[k][0] @ to_canonical[k][:3, :3].T
                                      + to_canonical[k][:3, 3], meshes[k][1],
                                      max(self.inputs.geometry_points, 1024), rng)
                    for k in posed}
        order = sorted(posed, key=lambda k: float(obs.object_points[k][:, 0].mean()
                                                  / obs.object_points[k][:, 2].mean()))
        for group in np.array_split(order, -(-len(order) // self.max_group)):
            self._estimate_group(list(group), obs, surfaces, view, rng, result)
        if self.cfg.refine:
            with timer("refine"):
                for k in posed:
                    fitted = None if starts is None or starts[k] is None else (
                        starts[k] @ np.linalg.inv(to_canonical[k]))
                    result.poses[k], result.scores[k] = self._refine(
                        result.poses[k], surfaces[k], obs.object_points[k], view, fitted)
        for k in posed:
            for poses in (result.poses, result.raw_poses):
                poses[k] = poses[k] @ to_canonical[k]
        return result

    def _refine(self, start: np.ndarray, surface: np.ndarray, observed: np.ndarray,
                view: DepthView, fitted: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(pose, score) of the lowest fit score refining ``start``. With a ``fitted`` pose of
        the mesh (canonical frame -> camera) both are probed and the better one is refined to
        the end; otherwise, with ``geometric_starts``, the principal-axes variants of ``start``
        are refined too."""
        cfg = self.cfg
        if fitted is not None:
            return refine_starts([start, fitted], surface, observed, view,
                                 cfg.refine_iterations, cfg.refine_max_scale_change, finish=1)
        candidates = [start]
        if cfg.geometric_starts:
            candidates += principal_axes_starts(observed, surface, reference=start)
        return refine_starts(candidates, surface, observed, view, cfg.refine_iterations,
                             cfg.refine_max_scale_change)

    @abc.abstractmethod
    def _estimate_group(self, group: list[int], obs: Observation, surfaces: dict,
                        view: DepthView, rng: np.random.Generator, result: PoseResult) -> None:
        """Fill result.poses / raw_poses / scores of the objects in ``group``: poses of the
        canonical surface samples ``surfaces[k]`` (M, 3) in the camera frame."""


class PoseEstimator(ObjectPoser):
    """The pose model with its sampling, selection and refinement settings; numpy in and out."""

    def __init__(self, model: PoseModel, inputs: PoseInputConfig, cfg: PoseConfig):
        super().__init__(inputs, cfg)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.max_group = model.config.max_objects

    @classmethod
    def from_config(cls, cfg: PoseConfig) -> PoseEstimator:
        """Load ``cfg.checkpoint`` (the shipped checkpoint when empty) onto ``cfg.device``."""
        from scenemaker_ros.stages.hub import resolve_device  # stages import this module

        device = resolve_device(cfg.device, "pose.device", "the pose model")
        model, inputs, _ = load_checkpoint(cfg.checkpoint or SHIPPED_CHECKPOINT, str(device))
        return cls(model, inputs, cfg)

    def _estimate_group(self, group: list[int], obs: Observation, surfaces: dict,
                        view: DepthView, rng: np.random.Generator, result: PoseResult) -> None:
        cfg, timer = self.cfg, result.timer
        with timer("inputs"):
            sub = Observation([obs.object_points[k] for k in group], obs.scene_points,
                              obs.crops[group], obs.scene_image)
            geometry = np.stack([surfaces[k][:self.inputs.geometry_points] for k in group])
            example = make_example(sub, geometry, self.inputs, rng)
            batch, obj_mask = collate([example], self.device)
        with timer("model"):
            generator = torch.Generator(self.device).manual_seed(cfg.seed)
            samples = sample(self.model, batch, obj_mask, steps=cfg.steps, generator=generator,
                             n_hypotheses=cfg.hypotheses)  # (1, H, G, 12)
            hypotheses = poses_to_camera(samples[0].cpu(), example.normalisation)  # (H, G, 4, 4)
        with timer("select"):
            for i, k in enumerate(group):
                scores = [fit_score(T, surfaces[k], obs.object_points[k], view)
                          for T in hypotheses[:, i]]
                best = int(np.argmin(scores))
                result.raw_poses[k], result.poses[k] = hypotheses[best, i], hypotheses[best, i]
                result.scores[k] = scores[best]
