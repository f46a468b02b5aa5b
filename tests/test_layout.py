import numpy as np
import pytest

from scenemaker_ros.config import SceneLayoutConfig
from scenemaker_ros.geometry import sample_surface, transform_points
from scenemaker_ros.synth.layout import layout_scene
from scenemaker_ros.synth.shapes import COMPOSITE_FAMILIES, make_shape
from tests.helpers import signed_distance

SOLIDS = ["box", "cylinder", "ellipsoid", "cone", "torus", "blob", "l_block", "pyramid"]


def _world_mesh(obj):
    return transform_points(obj.T_world_obj, obj.shape.vertices), obj.shape.faces


def _layout(seed, **overrides):
    cfg = SceneLayoutConfig(**overrides)
    rng = np.random.default_rng(seed)
    shapes = [make_shape(SOLIDS[(seed + i) % len(SOLIDS)], seed * 10 + i) for i in range(5)]
    return layout_scene(shapes, cfg, rng, clutter=seed % 2 == 0)


@pytest.mark.parametrize("seed", range(4))
def test_objects_rest_without_interpenetration(seed):
    placed = _layout(seed, stacking_prob=0.3, touching_prob=0.4)
    assert len(placed) >= 3
    rng = np.random.default_rng(0)
    for i, a in enumerate(placed):
        vertices, faces = _world_mesh(a)
        assert vertices[:, 2].min() >= -1e-6, "below the support plane"
        if a.support is None:
            assert vertices[:, 2].min() < 2e-3, "floating above the plane"
        else:
            assert 0 <= a.support < i and vertices[:, 2].min() > 1e-3
        points = sample_surface(vertices, faces, 2000, rng)
        for j, b in enumerate(placed):
            if j == i or b.shape.family in COMPOSITE_FAMILIES:
                continue
            depth_inside = -signed_distance(*_world_mesh(b), points).min()
            assert depth_inside < 1.5e-3, f"object {i} penetrates object {j} by {depth_inside}"


def test_stacking_and_touching_happen():
    stacked = sum(p.support is not None for s in range(4) for p in _layout(s, stacking_prob=0.9,
                                                                            touching_prob=0.0))
    assert stacked >= 2
    placed = _layout(7, stacking_prob=0.0, touching_prob=1.0)
    meshes = [_world_mesh(p) for p in placed]
    rng = np.random.default_rng(1)
    for i in range(1, len(placed)):  # every later object touches some earlier one
        points = sample_surface(*meshes[i], 4000, rng)
        gap = min(np.abs(signed_distance(*meshes[j], points)).min() for j in range(i))
        assert gap < 3e-3


def test_symmetries_survive_scaling_and_sizes_in_range():
    cfg = SceneLayoutConfig()
    for seed in range(3):
        for p in _layout(seed):
            S = np.diag(p.scale)
            np.testing.assert_allclose(S @ p.symmetry_rotations, p.symmetry_rotations @ S,
                                       atol=1e-6)
            np.testing.assert_allclose(p.symmetry_rotations[0], np.eye(3))
            size = np.ptp(p.shape.vertices * p.scale, axis=0).max()
            assert cfg.min_size_m - 1e-9 <= size <= cfg.max_size_m + 1e-9


def test_deterministic():
    a, b = _layout(3), _layout(3)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.T_world_obj, q.T_world_obj)
