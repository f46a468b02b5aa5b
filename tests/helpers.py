"""Shared test helpers."""

import numpy as np
import open3d as o3d
import torch

from scenemaker_ros.config import DataConfig, load_config
from scenemaker_ros.geometry import raycasting_scene
from scenemaker_ros.pose.model import PoseBatch


def small_data_config() -> DataConfig:
    """The default data config at 320x240 (same fov), with up to 5 objects: fast tests."""
    cfg = load_config().data
    cfg.camera.width, cfg.camera.height = 320, 240
    cfg.camera.fx_range = (270.0, 330.0)
    cfg.scene.max_objects = 5
    return cfg


def surface_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unsigned distance (N,) from points to a triangle mesh."""
    query = o3d.core.Tensor(points.astype(np.float32))
    return raycasting_scene([(vertices, faces)]).compute_distance(query).numpy()


def signed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance (N,) from points to a closed triangle mesh, negative inside."""
    query = o3d.core.Tensor(points.astype(np.float32))
    return raycasting_scene([(vertices, faces)]).compute_signed_distance(query).numpy()


def make_batch(B: int = 2, K: int = 3, seed: int = 0):
    """Small random scenes: (PoseBatch, obj_mask, pose_t, t). Scene 1 has 2 valid objects, and its
    object 1 sees only 3 points."""
    g = torch.Generator().manual_seed(seed)
    obj_mask = torch.ones(B, K, dtype=torch.bool)
    obj_mask[1, K - 1] = False
    cloud_mask = torch.rand(B, K, 32, generator=g) < 0.8
    cloud_mask[1, 1] = False
    cloud_mask[1, 1, :3] = True
    cloud_mask &= obj_mask[..., None]
    batch = PoseBatch(
        geometry=torch.randn(B, K, 32, 3, generator=g),
        obj_cloud=torch.randn(B, K, 32, 3, generator=g) * cloud_mask[..., None],
        obj_cloud_mask=cloud_mask,
        obj_cloud_center=torch.randn(B, K, 3, generator=g),
        obj_cloud_extent=torch.rand(B, K, generator=g),
        obj_crop=torch.rand(B, K, 4, 32, 32, generator=g),
        scene_cloud=torch.randn(B, 128, 3, generator=g),
        scene_cloud_mask=torch.rand(B, 128, generator=g) < 0.9,
        scene_image=torch.rand(B, 3, 32, 48, generator=g),
    )
    return batch, obj_mask, torch.randn(B, K, 12, generator=g), torch.rand(B, generator=g)


def perturbed(model, seed: int = 0):
    """The model with noise added to every parameter, so zero-initialised paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()
