"""Pose-model inputs from one RGB-D observation, and the normalised scene space.

Two steps, shared by training, inference and the benchmarks:
  ``observe``       RGB-D + K + per-object visible masks -> ``Observation`` (camera frame, metres):
                    each object's observed points, scene points, object crops, small scene image.
  ``make_example``  Observation + canonical geometry samples -> ``PoseExample`` in the normalised
                    scene space; ``collate`` pads examples into a ``PoseBatch``.

Normalised scene space. The model sees and predicts in the camera optical frame (REP 103: x right,
y down, z forward) moved and scaled so that the observed objects fill [-1, 1]^3:
    p_scene = (p_camera - centre) / scale
where centre is the middle of the robust (1st-99th percentile per axis) box of all observed object
points and scale is half its longest side. A pose [R diag(s) | t] mapping a canonical mesh
(bounding-box centred, longest side 1) into the camera frame becomes
[R diag(s / scale) | (t - centre) / scale]; ``SceneNormalisation.to_camera`` undoes it exactly.
Rotations are the same in both spaces.

Each object's partial cloud is further centred on its own mean and divided by its extent (the
95th percentile distance from that mean), so that rotation sees shape, not position or size; the
centre and extent go to the model beside the cloud.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scenemaker_ros.config import PoseInputConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.geometry import depth_to_points
from scenemaker_ros.pose.model import PoseBatch, decode_pose, encode_pose


@dataclass(frozen=True)
class SceneNormalisation:
    """p_scene = (p_camera - centre) / scale; centre (3,) metres, scale metres per unit."""

    centre: np.ndarray
    scale: float

    def to_scene(self, T_cam_obj: np.ndarray) -> np.ndarray:
        """Pose(s) (..., 4, 4) canonical -> camera  ->  canonical -> normalised scene space."""
        T = np.array(T_cam_obj, dtype=np.float64)
        T[..., :3, :] /= self.scale
        T[..., :3, 3] -= self.centre / self.scale
        return T

    def to_camera(self, T_scene_obj: np.ndarray) -> np.ndarray:
        """The inverse of ``to_scene``."""
        T = np.array(T_scene_obj, dtype=np.float64)
        T[..., :3, 3] += self.centre / self.scale
        T[..., :3, :] *= self.scale
        return T


@dataclass
class Observation:
    """What the camera saw of K objects, camera optical frame, metres.

    object_points: K arrays (n_k, 3) float32 of valid depth points inside each visible mask
    (a random subset when there are many); scene_points (Ns, 3) float32, a random subset of all
    valid depth points; crops (K, 4, C, C) uint8, RGB + visible mask (255) of each object's
    box; scene_image (3, Hs, Ws) uint8, the whole image downscaled.
    """

    object_points: list[np.ndarray]
    scene_points: np.ndarray
    crops: np.ndarray
    scene_image: np.ndarray


@dataclass
class PoseExample:
    """One scene's model inputs (numpy, normalised scene space), K objects, unpadded."""

    geometry: np.ndarray  # (K, Ng, 3) float32 canonical surface samples, longest side 1
    obj_cloud: np.ndarray  # (K, Np, 3) float32 (p - centre) / extent, zeros where invalid
    obj_cloud_mask: np.ndarray  # (K, Np) bool
    obj_cloud_center: np.ndarray  # (K, 3) float32, scene space
    obj_cloud_extent: np.ndarray  # (K,) float32, scene units
    obj_crop: np.ndarray  # (K, 4, C, C) uint8
    scene_cloud: np.ndarray  # (Ns, 3) float32, scene space
    scene_cloud_mask: np.ndarray  # (Ns,) bool
    scene_image: np.ndarray  # (3, Hs, Ws) uint8
    normalisation: SceneNormalisation


def random_subset(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most n rows of points, chosen without replacement (all of them, in order, if fewer)."""
    if len(points) <= n:
        return points
    return points[np.sort(rng.choice(len(points), n, replace=False))]


def _resample(image: np.ndarray, box: tuple[float, float, float, float], height: int,
              width: int) -> np.ndarray:
    """Nearest-neighbour sample of image (H, W, ...) over box (x0, y0, x1, y1) in pixels into
    (height, width, ...); samples outside the image are zero."""
    x0, y0, x1, y1 = box
    xs = np.floor(x0 + (np.arange(width) + 0.5) * (x1 - x0) / width).astype(np.int64)
    ys = np.floor(y0 + (np.arange(height) + 0.5) * (y1 - y0) / height).astype(np.int64)
    inside = (ys[:, None] >= 0) & (ys[:, None] < image.shape[0]) & (xs >= 0) & (
        xs < image.shape[1])
    out = image[np.clip(ys, 0, image.shape[0] - 1)[:, None], np.clip(xs, 0, image.shape[1] - 1)]
    out[~inside] = 0
    return out


def crop_box(mask: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    """Square box (x0, y0, x1, y1) around a visible mask (H, W) bool, grown by margin per side."""
    v, u = np.nonzero(mask)
    cx, cy = (u.min() + u.max() + 1) / 2, (v.min() + v.max() + 1) / 2
    half = max(u.max() + 1 - u.min(), v.max() + 1 - v.min()) * (0.5 + margin)
    return cx - half, cy - half, cx + half, cy + half


def observe(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, masks: np.ndarray,
            cfg: PoseInputConfig, rng: np.random.Generator, max_object_points: int | None = None,
            max_scene_points: int | None = None) -> Observation:
    """rgb (H, W, 3) uint8, depth (H, W) float metres, K (3, 3), masks (K, H, W) bool visible
    masks -> Observation. The max_* limits keep random subsets (None: keep every point)."""
    if rgb.shape[:2] != depth.shape or masks.shape[1:] != depth.shape:
        raise SceneMakerError(f"pose inputs: rgb {rgb.shape[:2]}, depth {depth.shape} and masks "
                              f"{masks.shape[1:]} must have the same height and width")
    object_points, crops = [], []
    size = cfg.crop_size
    for mask in masks:
        points = depth_to_points(depth, K, mask).astype(np.float32)
        object_points.append(points if max_object_points is None
                             else random_subset(points, max_object_points, rng))
        if not mask.any():
            crops.append(np.zeros((4, size, size), np.uint8))
            continue
        box = crop_box(mask, cfg.crop_margin)
        crop = np.concatenate([rgb, mask[..., None].astype(np.uint8) * 255], axis=2)
        crops.append(_resample(crop, box, size, size).transpose(2, 0, 1))
    scene_points = depth_to_points(depth, K).astype(np.float32)
    if max_scene_points is not None:
        scene_points = random_subset(scene_points, max_scene_points, rng)
    H, W = depth.shape
    scene_image = _resample(rgb, (0, 0, W, H), *cfg.scene_image_size).transpose(2, 0, 1)
    crops = np.stack(crops) if crops else np.zeros((0, 4, size, size), np.uint8)
    return Observation(object_points, scene_points, crops, np.ascontiguousarray(scene_image))


def scene_normalisation(object_points: list[np.ndarray]) -> SceneNormalisation:
    """The normalised scene space of the observed objects (see the module docstring)."""
    points = np.concatenate([p for p in object_points if len(p)] or [np.zeros((0, 3))])
    if len(points) == 0:
        raise SceneMakerError("pose inputs: no object has a valid depth point")
    lo, hi = np.percentile(points, [1, 99], axis=0)
    return SceneNormalisation(centre=(lo + hi) / 2, scale=float(max((hi - lo).max() / 2, 1e-3)))


def make_example(obs: Observation, geometry: np.ndarray, cfg: PoseInputConfig,
                 rng: np.random.Generator,
                 normalisation: SceneNormalisation | None = None) -> PoseExample:
    """Observation + canonical surface samples geometry (K, Ng, 3) -> PoseExample.

    Object and scene points are random subsets of cfg's sizes; objects with fewer points leave
    the rest masked. ``normalisation`` defaults to ``scene_normalisation`` of the observation.
    """
    norm = normalisation or scene_normalisation(obs.object_points)
    K, Np = len(obs.object_points), cfg.object_points
    cloud = np.zeros((K, Np, 3), np.float32)
    cloud_mask = np.zeros((K, Np), bool)
    centre = np.zeros((K, 3), np.float32)
    extent = np.zeros(K, np.float32)
    for k, points in enumerate(obs.object_points):
        if len(points) == 0:
            continue
        p = (random_subset(points, Np, rng) - norm.centre) / norm.scale  # scene space
        centre[k] = p.mean(0)
        extent[k] = max(np.percentile(np.linalg.norm(p - centre[k], axis=1), 95), 1e-3)
        cloud[k, :len(p)] = (p - centre[k]) / extent[k]
        cloud_mask[k, :len(p)] = True
    scene = (obs.scene_points - norm.centre) / norm.scale
    scene = scene[np.abs(scene).max(axis=1) <= cfg.scene_box]
    scene = random_subset(scene, cfg.scene_points, rng)
    scene_cloud = np.zeros((cfg.scene_points, 3), np.float32)
    scene_cloud[:len(scene)] = scene
    scene_mask = np.arange(cfg.scene_points) < len(scene)
    return PoseExample(geometry.astype(np.float32), cloud, cloud_mask, centre, extent, obs.crops,
                       scene_cloud, scene_mask, obs.scene_image, norm)


def collate(examples: list[PoseExample], device: torch.device | str = "cpu"
            ) -> tuple[PoseBatch, torch.Tensor]:
    """Pad B examples to the largest K -> (PoseBatch, obj_mask (B, K) bool) on ``device``."""
    B, K = len(examples), max(len(e.geometry) for e in examples)

    def stack(name: str, to_float: float | None = None) -> torch.Tensor:
        first = getattr(examples[0], name)
        per_object = name.startswith(("geometry", "obj_"))
        shape = (B, K, *first.shape[1:]) if per_object else (B, *first.shape)
        out = np.zeros(shape, first.dtype)
        for b, e in enumerate(examples):
            value = getattr(e, name)
            if per_object:
                out[b, :len(value)] = value
            else:
                out[b] = value
        tensor = torch.from_numpy(out)
        return tensor.float() / to_float if to_float else tensor

    batch = PoseBatch(
        geometry=stack("geometry"), obj_cloud=stack("obj_cloud"),
        obj_cloud_mask=stack("obj_cloud_mask"), obj_cloud_center=stack("obj_cloud_center"),
        obj_cloud_extent=stack("obj_cloud_extent"), obj_crop=stack("obj_crop", 255.0),
        scene_cloud=stack("scene_cloud"), scene_cloud_mask=stack("scene_cloud_mask"),
        scene_image=stack("scene_image", 255.0))
    obj_mask = torch.zeros(B, K, dtype=torch.bool)
    for b, e in enumerate(examples):
        obj_mask[b, :len(e.geometry)] = True
    return batch.to(device), obj_mask.to(device)


def pose_targets(T_cam_obj: np.ndarray, norm: SceneNormalisation) -> np.ndarray:
    """Ground-truth poses (K, 4, 4) canonical -> camera  ->  pose vectors (K, 12) float32."""
    T = norm.to_scene(T_cam_obj)
    scale = np.linalg.norm(T[:, :3, :3], axis=1)  # (K, 3) column norms
    rot = T[:, :3, :3] / scale[:, None, :]
    pose = encode_pose(torch.from_numpy(rot), torch.from_numpy(T[:, :3, 3]),
                       torch.from_numpy(scale))
    return pose.float().numpy()


def poses_to_camera(pose: np.ndarray | torch.Tensor, norm: SceneNormalisation) -> np.ndarray:
    """Model pose vectors (..., 12) -> poses (..., 4, 4) canonical -> camera frame, float64."""
    rot, translation, scale = decode_pose(torch.as_tensor(pose, dtype=torch.float64))
    T = np.zeros((*rot.shape[:-2], 4, 4))
    T[..., :3, :3] = (rot * scale[..., None, :]).numpy()
    T[..., :3, 3] = translation.numpy()
    T[..., 3, 3] = 1.0
    return norm.to_camera(T)
