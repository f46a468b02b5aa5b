"""Pose-model training data from a synthetic dataset (``synth/dataset.py``).

Rendering-side work (back-projection, crops, surface samples) is done once per scene and cached
beside the dataset (``ROOT/pose-cache/<split>-<hash>.pt``, tensors only, loaded with
``weights_only=True``). Each draw then picks the clean or the sensor-noise depth, random point
subsets and the normalised scene space, through the same ``pose/inputs.py`` code as inference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scenemaker_ros.config import PoseInputConfig
from scenemaker_ros.files import atomic_path
from scenemaker_ros.geometry import sample_surface
from scenemaker_ros.parallel import map_with_progress
from scenemaker_ros.pose.inputs import Observation, PoseExample, make_example, observe, pose_targets
from scenemaker_ros.synth.dataset import SceneDataset
from scenemaker_ros.synth.scenes import SceneSample

CACHE_VERSION = 1
DEPTHS = ("clean", "sensor")


@dataclass
class TrainingExample:
    """A PoseExample with its targets: poses (K, 12) and each object's symmetry rotations."""

    example: PoseExample
    poses: np.ndarray  # (K, 12) float32, normalised scene space
    symmetries: list[np.ndarray]  # K x (M_k, 3, 3) canonical rotations, identity first


def cache_scene(sample: SceneSample, cfg: PoseInputConfig, seed: int) -> dict[str, torch.Tensor]:
    """The per-scene arrays the training draws need (twice the points a draw uses)."""
    rng = np.random.default_rng(seed)
    masks = np.stack([sample.instance == k + 1 for k in range(len(sample.scene.objects))])
    K = sample.scene.camera.K
    out: dict[str, torch.Tensor] = {}
    depths = {"clean": sample.depth, "sensor": sample.depth_sensor}
    for name, depth in depths.items():
        if depth is None:
            continue
        obs = observe(sample.rgb, depth, K, masks, cfg, rng, 2 * cfg.object_points,
                      8 * cfg.scene_points)
        out[f"{name}.points"] = torch.from_numpy(np.concatenate(obs.object_points))
        out[f"{name}.counts"] = torch.tensor([len(p) for p in obs.object_points])
        out[f"{name}.scene"] = torch.from_numpy(obs.scene_points)
    out["crops"] = torch.from_numpy(obs.crops)
    out["scene_image"] = torch.from_numpy(obs.scene_image)
    out["geometry"] = torch.from_numpy(np.stack([
        sample_surface(*sample.meshes[o.id], 2 * cfg.geometry_points, rng).astype(np.float32)
        for o in sample.scene.objects]))
    out["poses"] = torch.from_numpy(np.stack([o.pose_matrix for o in sample.scene.objects]))
    symmetries = [torch.from_numpy(sample.symmetries[o.id]) for o in sample.scene.objects]
    out["symmetry_counts"] = torch.tensor([len(s) for s in symmetries])
    out["symmetries"] = torch.cat(symmetries)
    return out


def _cache_task(task: tuple[str, str, int, dict]) -> dict[str, np.ndarray]:
    """One scene's cache entry as numpy: torch tensors sent between processes would each hold a
    file descriptor."""
    root, split, index, cfg = task
    sample = SceneDataset(root, split)[index]
    return {k: v.numpy() for k, v in cache_scene(sample, PoseInputConfig(**cfg), index).items()}


def _cache_path(root: Path, split: str, cfg: PoseInputConfig) -> Path:
    key = json.dumps({"version": CACHE_VERSION, **asdict(cfg)}, sort_keys=True)
    return root / "pose-cache" / f"{split}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"


def load_cache(root: str | Path, split: str, cfg: PoseInputConfig, workers: int = 1,
               limit: int | None = None, progress: bool = True) -> list[dict[str, torch.Tensor]]:
    """The cached scenes of a dataset split (first ``limit``), built on first use."""
    root = Path(root)
    dataset = SceneDataset(root, split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    path = _cache_path(root, split, cfg)
    if path.exists():
        scenes = torch.load(path, weights_only=True)
        if len(scenes) >= n:
            return scenes[:n]
    tasks = [(str(root), split, i, asdict(cfg)) for i in range(n)]
    arrays = map_with_progress(_cache_task, tasks, workers, f"pose cache {split}",
                               progress=progress)
    scenes = [{k: torch.from_numpy(v) for k, v in scene.items()} for scene in arrays]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(scenes, tmp)
    return scenes


def draw_example(scene: dict[str, torch.Tensor], cfg: PoseInputConfig, rng: np.random.Generator,
                 sensor_depth_prob: float = 0.5) -> TrainingExample | None:
    """A random training example of one cached scene; None if no object has enough points."""
    depth = "sensor" if "sensor.points" in scene and rng.random() < sensor_depth_prob else "clean"
    counts = scene[f"{depth}.counts"].tolist()
    points = np.split(scene[f"{depth}.points"].numpy(), np.cumsum(counts)[:-1])
    keep = [k for k, c in enumerate(counts) if c >= cfg.min_object_points]
    if not keep:
        return None
    obs = Observation(object_points=[points[k] for k in keep],
                      scene_points=scene[f"{depth}.scene"].numpy(),
                      crops=scene["crops"].numpy()[keep],
                      scene_image=scene["scene_image"].numpy())
    geometry = scene["geometry"].numpy()[keep]
    chosen = np.stack([rng.choice(geometry.shape[1], cfg.geometry_points, replace=False)
                       for _ in keep])
    geometry = np.take_along_axis(geometry, chosen[..., None], axis=1)
    example = make_example(obs, geometry, cfg, rng)
    symmetries = np.split(scene["symmetries"].numpy(),
                          np.cumsum(scene["symmetry_counts"].tolist())[:-1])
    return TrainingExample(example=example,
                           poses=pose_targets(scene["poses"].numpy()[keep], example.normalisation),
                           symmetries=[symmetries[k] for k in keep])
