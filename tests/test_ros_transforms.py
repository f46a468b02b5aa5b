"""The node's small TF lookup (pure numpy)."""

import numpy as np
from scipy.spatial.transform import Rotation

from scenemaker_ros.ros.transforms import TransformGraph, transform_matrix


def _random_pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return transform_matrix(rng.normal(size=3), Rotation.random(random_state=seed).as_quat())


def test_chains_up_and_down_the_tree():
    graph = TransformGraph()
    map_odom, odom_base, base_camera, base_arm = (_random_pose(k) for k in range(4))
    graph.add("map", "odom", map_odom)
    graph.add("odom", "base_link", odom_base)
    graph.add("/base_link", "camera", base_camera)  # a leading slash is ignored
    graph.add("base_link", "arm", base_arm)
    np.testing.assert_allclose(graph.lookup("map", "camera"), map_odom @ odom_base @ base_camera)
    np.testing.assert_allclose(graph.lookup("camera", "map"),
                               np.linalg.inv(map_odom @ odom_base @ base_camera), atol=1e-12)
    np.testing.assert_allclose(graph.lookup("arm", "camera"),
                               np.linalg.inv(base_arm) @ base_camera, atol=1e-12)
    np.testing.assert_allclose(graph.lookup("camera", "camera"), np.eye(4))
    assert graph.lookup("map", "elsewhere") is None


def test_newest_transform_of_an_edge_wins():
    graph = TransformGraph()
    graph.add("world", "camera", _random_pose(0))
    graph.add("world", "camera", _random_pose(1))
    np.testing.assert_allclose(graph.lookup("world", "camera"), _random_pose(1))
