"""scenemaker_ros.pose.inputs: back-projection, normalised scene space, crops, collation."""

import numpy as np
import pytest
import torch

from scenemaker_ros.config import PoseInputConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.geometry import compose_pose
from scenemaker_ros.pose.inputs import (
    SceneNormalisation,
    collate,
    crop_box,
    make_example,
    observe,
    pose_targets,
    poses_to_camera,
    scene_normalisation,
)
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config

K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])


def test_normalisation_round_trip_and_box():
    rng = np.random.default_rng(0)
    points = [rng.uniform([-0.3, -0.1, 1.0], [0.2, 0.1, 1.4], (500, 3)) for _ in range(2)]
    norm = scene_normalisation(points)
    scaled = (np.concatenate(points) - norm.centre) / norm.scale
    assert np.abs(scaled).max() < 1.05  # robust box: the extremes may poke out a little
    assert np.percentile(np.abs(scaled), 99.5) > 0.9
    T = compose_pose(np.eye(3)[[1, 2, 0]], [0.1, 0.0, 1.2], [0.05, 0.1, 0.2])
    np.testing.assert_allclose(norm.to_camera(norm.to_scene(T)), T, atol=1e-12)
    with pytest.raises(SceneMakerError, match="no object"):
        scene_normalisation([np.zeros((0, 3))])


def test_pose_targets_decode_to_the_same_poses():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    poses = np.stack([compose_pose(R, [0.1, -0.05, 1.1], [0.04, 0.08, 0.12]),
                      compose_pose(np.eye(3), [-0.2, 0.1, 1.3], 0.2)])
    norm = SceneNormalisation(centre=np.array([0.0, 0.0, 1.2]), scale=0.3)
    vectors = pose_targets(poses, norm)
    assert vectors.shape == (2, 12) and vectors.dtype == np.float32
    np.testing.assert_allclose(poses_to_camera(vectors, norm), poses, atol=1e-5)


def test_crop_box_is_square_and_grown():
    mask = np.zeros((100, 100), bool)
    mask[10:20, 30:70] = True  # 40 wide, 10 high
    x0, y0, x1, y1 = crop_box(mask, 0.25)
    assert x1 - x0 == pytest.approx(60) and y1 - y0 == pytest.approx(60)
    assert (x0 + x1) / 2 == pytest.approx(50) and (y0 + y1) / 2 == pytest.approx(15)


def test_observe_and_collate_a_rendered_scene():
    cfg = PoseInputConfig(geometry_points=64, object_points=64, scene_points=256, crop_size=16)
    sample = generate_scene(small_data_config(), np.random.default_rng(3))
    n = len(sample.scene.objects)
    masks = np.stack([sample.instance == k + 1 for k in range(n)])
    rng = np.random.default_rng(0)
    obs = observe(sample.rgb, sample.depth, sample.scene.camera.K, masks, cfg, rng)
    assert [len(p) for p in obs.object_points] == [int((sample.depth[m] > 0).sum()) for m in masks]
    assert obs.crops.shape == (n, 4, 16, 16) and obs.scene_image.shape == (3, 96, 128)
    visible = [k for k in range(n) if masks[k].any()]
    assert all(obs.crops[k, 3].max() == 255 for k in visible)  # the mask channel
    geometry = np.zeros((n, 64, 3), np.float32)
    example = make_example(obs, geometry, cfg, rng)
    valid = example.obj_cloud_mask.sum(1)
    assert np.all(valid == np.minimum([len(p) for p in obs.object_points], 64))
    assert np.abs(example.scene_cloud[example.scene_cloud_mask]).max() <= cfg.scene_box
    batch, obj_mask = collate([example, example])
    assert batch.obj_crop.shape == (2, n, 4, 16, 16) and batch.obj_crop.max() <= 1.0
    assert obj_mask.all() and batch.scene_image.dtype == torch.float32
    with pytest.raises(SceneMakerError, match="same height and width"):
        observe(sample.rgb[:10], sample.depth, sample.scene.camera.K, masks, cfg, rng)
