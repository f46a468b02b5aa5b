"""The shipped pose checkpoint: safe to load, within the size budget, poses a scene it never saw."""

import numpy as np

from scenemaker_ros.config import PoseConfig
from scenemaker_ros.metrics import pose_errors
from scenemaker_ros.pose.checkpoint import SHIPPED_CHECKPOINT, read_metadata
from scenemaker_ros.pose.estimator import PoseEstimator
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config


def test_shipped_checkpoint_metadata_and_size():
    assert SHIPPED_CHECKPOINT.stat().st_size <= 30e6
    info = read_metadata(SHIPPED_CHECKPOINT)["info"]
    assert info["step"] == info["train"]["steps"] == 3000
    assert info["train"]["model"] == "pose-S"


def test_shipped_model_poses_a_new_scene():
    """A 320x240 scene with 5 procedural objects, from a random stream unlike the training
    data's: the raw model places objects to about a centimetre, refinement to millimetres."""
    sample = generate_scene(small_data_config(), np.random.default_rng(10))
    masks = np.stack([sample.instance == o.id + 1 for o in sample.scene.objects])
    meshes = [sample.meshes[o.id] for o in sample.scene.objects]
    result = PoseEstimator.from_config(PoseConfig()).estimate(
        sample.rgb, sample.depth, sample.scene.camera.K, masks, meshes)
    assert not result.skipped

    def median_errors(poses):
        return np.median([pose_errors(T, o.pose_matrix, sample.symmetries[o.id])
                          for o, T in zip(sample.scene.objects, poses)], axis=0)

    raw_rotation, raw_translation, raw_scale = median_errors(result.raw_poses)
    assert raw_translation < 0.012 and raw_scale < 0.15 and raw_rotation < 45
    rotation, translation, scale = median_errors(result.poses)
    assert rotation < 5 and translation < 0.004 and scale < 0.08
