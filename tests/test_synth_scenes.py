"""Scene generation: RGB / depth / masks / poses agree, and the truth follows the contract."""

import json

import numpy as np
import pytest

from scenemaker_ros.config import load_config
from scenemaker_ros.geometry import transform_points
from scenemaker_ros.scene import scene_from_dict
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config, surface_distance


@pytest.fixture(scope="module")
def sample():
    cfg = small_data_config()
    cfg.sensor_noise = True
    return generate_scene(cfg, np.random.default_rng(5))


def test_arrays(sample):
    h, w = sample.depth.shape
    assert sample.rgb.shape == (h, w, 3) and sample.rgb.dtype == np.uint8
    assert sample.depth.dtype == np.float32 and np.isfinite(sample.depth).all()
    assert sample.depth_sensor.shape == (h, w) and np.isfinite(sample.depth_sensor).all()
    n = len(sample.scene.objects)
    assert 2 <= n <= 8 and sample.instance.max() <= n
    assert (sample.depth[sample.instance > 0] > 0).all()


def test_truth_follows_scene_contract(sample):
    data = json.loads(json.dumps(sample.scene.to_dict()))
    scene = scene_from_dict(data)
    assert scene.frame_id == "camera_color_optical_frame"
    for obj in scene.objects:
        assert {"family", "symmetry", "visible_fraction", "amodal_bbox"} <= set(obj.attributes)
        assert 0.0 <= obj.attributes["visible_fraction"] <= 1.0


def test_depth_pixels_lie_on_posed_meshes(sample):
    """Back-projected depth of each instance lands on that object's posed mesh: RGB-D, masks
    and poses are aligned."""
    K = sample.scene.camera.K
    for k, obj in enumerate(sample.scene.objects):
        v, u = np.nonzero(sample.instance == k + 1)
        if len(u) == 0:
            continue
        z = sample.depth[v, u]
        points = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
        vertices, faces = sample.meshes[obj.id]
        distance = surface_distance(transform_points(obj.pose_matrix, vertices), faces, points)
        assert np.median(distance) < 1e-3 and np.percentile(distance, 99) < 3e-3


def test_visible_mask_inside_amodal_mask(sample):
    for k, obj in enumerate(sample.scene.objects):
        x0, y0, x1, y1 = sample.amodal[obj.id].bbox
        visible = sample.instance == k + 1
        amodal = np.zeros_like(visible)
        amodal[y0:y1, x0:x1] = sample.amodal[obj.id].mask
        assert (visible & ~amodal).sum() <= 0.01 * max(visible.sum(), 1)


def test_camera_sees_the_scene(sample):
    visible = [o.attributes["visible_fraction"] for o in sample.scene.objects]
    assert max(visible) > 0.5
    T = sample.scene.camera.camera_to_world
    assert T[2, 3] > 0  # above the table
    assert T[:3, 2] @ [0, 0, 1] < 0  # looking down


def test_families_subset_and_object_count():
    cfg = small_data_config()
    cfg.scene.families = ["box", "cylinder"]
    cfg.scene.min_objects = cfg.scene.max_objects = 3
    sample = generate_scene(cfg, np.random.default_rng(0))
    assert {o.label for o in sample.scene.objects} <= {"box", "cylinder"}
    assert len(sample.scene.objects) == 3


def test_default_config_is_640x480():
    cfg = load_config().data
    assert (cfg.camera.width, cfg.camera.height) == (640, 480)
