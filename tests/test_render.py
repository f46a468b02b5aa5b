"""Tests of the synthetic RGB-D renderer: exact depth, instance ids, amodal masks, shading."""

import numpy as np
import pytest
import trimesh

from scenemaker_ros.geometry import project_points, transform_points
from scenemaker_ros.synth.render import (
    AMODAL_BACKGROUND,
    Appearance,
    Camera,
    Environment,
    RenderObject,
    SceneRenderer,
    random_appearance,
    random_environment,
)
from scenemaker_ros.synth.scenes import look_at

W, H = 160, 120
K = np.array([[120.0, 0.0, 80.0], [0.0, 120.0, 60.0], [0.0, 0.0, 1.0]])


def translation(t, scale=1.0) -> np.ndarray:
    T = np.diag([scale, scale, scale, 1.0])
    T[:3, 3] = t
    return T


def cube(T_world_obj, appearance=None) -> RenderObject:
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    return RenderObject(box.vertices, box.faces, T_world_obj, appearance or Appearance())


def square(T_world_obj, half=20.0) -> RenderObject:
    """A square in the object's z = 0 plane."""
    v = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]])
    return RenderObject(v, np.array([[0, 1, 2], [0, 2, 3]]), T_world_obj)


def pixel_rays() -> np.ndarray:
    """(H, W, 3) K^-1 [u, v, 1] of every pixel (OpenCV convention)."""
    v, u = np.mgrid[0:H, 0:W]
    return np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T


def project(camera: Camera, point_world) -> tuple[int, int]:
    """(row, col) of the pixel nearest to a world point's projection."""
    p = transform_points(np.linalg.inv(camera.T_world_cam), np.atleast_2d(point_world))
    u, v = project_points(camera.K, p)[0]
    return int(round(v)), int(round(u))


def rotation(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return trimesh.transformations.rotation_matrix(angle, axis)


def test_fronto_parallel_plane_has_constant_depth():
    T_world_cam = rotation([0.3, -1.0, 0.4], 2.5)
    T_world_cam[:3, 3] = [0.2, -0.1, 3.0]
    plane = square(T_world_cam @ translation([0.0, 0.0, 1.0]))  # z = 1 m in the camera frame
    out = SceneRenderer([plane], Environment()).render(Camera(K, W, H, T_world_cam))
    np.testing.assert_allclose(out.depth, 1.0, atol=1e-5)
    assert np.all(out.instance == 1)


def test_tilted_plane_depth_is_exact():
    T_world_cam = look_at([0.0, 0.0, 4.0], [1.0, 0.5, 0.0])
    T_cam_plane = rotation([1.0, 0.4, 0.0], 0.5)
    T_cam_plane[:3, 3] = [0.1, 0.0, 1.5]
    plane = square(T_world_cam @ T_cam_plane)
    out = SceneRenderer([plane], Environment()).render(Camera(K, W, H, T_world_cam))
    normal, point = T_cam_plane[:3, 2], T_cam_plane[:3, 3]
    # z K^-1 [u, v, 1] lies on the plane, so 1 / z is exactly affine in (u, v).
    inverse_depth = pixel_rays() @ normal / (normal @ point)
    np.testing.assert_allclose(1.0 / out.depth, inverse_depth, rtol=1e-5)
    assert np.ptp(out.depth) > 0.3


def test_cube_depth_instance_and_backprojection():
    camera = Camera(K, W, H, look_at([1.2, 0.6, 3.0], [0.1, -0.2, 1.0]))  # aims at the top face
    env = Environment(ground_size=2.0)
    out = SceneRenderer([cube(translation([0.0, 0.0, 0.5]))], env).render(camera)
    assert out.instance[H // 2, W // 2] == 1
    assert out.instance[0, 0] == out.instance[-1, -1] == 0
    expected = np.linalg.norm(np.array([1.2, 0.6, 3.0]) - [0.1, -0.2, 1.0])
    assert out.depth[H // 2, W // 2] == pytest.approx(expected, abs=1e-5)
    points_cam = out.depth[..., None] * pixel_rays()
    points = points_cam @ camera.T_world_cam[:3, :3].T + camera.T_world_cam[:3, 3]
    on_cube = points[out.instance == 1] - [0.0, 0.0, 0.5]
    np.testing.assert_allclose(np.abs(on_cube).max(axis=1), 0.5, atol=1e-4)
    on_ground = points[(out.instance == 0) & (out.depth > 0)]
    assert len(on_ground) > 100
    np.testing.assert_allclose(on_ground[:, 2], 0.0, atol=1e-4)
    normals_up = out.normals[out.instance == 1] @ camera.T_world_cam[:3, :3].T
    assert np.all(np.isclose(np.abs(normals_up), 1.0, atol=1e-5).sum(axis=1) == 1)


def occlusion_scene(shadows=True):
    """Object 0 (a small cube) stands in front of object 1 (a larger one) and hides part of it."""
    K_off_grid = K + [[0.0, 0.0, 0.37], [0.0, 0.0, -0.21], [0.0, 0.0, 0.0]]
    camera = Camera(K_off_grid, W, H, look_at([2.5, 0.0, 0.6], [0.0, 0.0, 0.2]))
    looks = [random_appearance(np.random.default_rng(seed)) for seed in (0, 1)]
    objects = [cube(translation([1.0, 0.0, 0.15], 0.3), looks[0]),
               cube(translation([0.0, 0.15, 0.25], 0.5), looks[1])]
    return SceneRenderer(objects, Environment(shadows=shadows)), camera


def full_mask(amodal) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    x0, y0, x1, y1 = amodal.bbox
    mask[y0:y1, x0:x1] = amodal.mask
    return mask


def test_instances_and_amodal_masks_under_occlusion():
    renderer, camera = occlusion_scene()
    out = renderer.render(camera)
    front, back = renderer.render_alone(camera, 0), renderer.render_alone(camera, 1)
    visible_back = out.instance == 2
    assert out.instance[project(camera, [1.0, 0.0, 0.3])] == 1
    assert visible_back.sum() > 50
    np.testing.assert_array_equal(full_mask(front), out.instance == 1)  # unoccluded: identical
    amodal_back = full_mask(back)
    assert np.all(amodal_back[visible_back])
    assert amodal_back.sum() > visible_back.sum() + 50
    x0, y0, x1, y1 = back.bbox
    assert back.mask.shape == (y1 - y0, x1 - x0) == back.rgb.shape[:2]
    assert back.mask[0].any() and back.mask[-1].any()  # the box is tight
    assert back.mask[:, 0].any() and back.mask[:, -1].any()
    assert np.all(back.rgb[~back.mask] == AMODAL_BACKGROUND)


def test_render_alone_matches_full_render_where_visible():
    renderer, camera = occlusion_scene(shadows=False)
    out = renderer.render(camera)
    for k in range(2):
        alone = renderer.render_alone(camera, k)
        x0, y0, x1, y1 = alone.bbox
        visible = out.instance[y0:y1, x0:x1] == k + 1
        np.testing.assert_array_equal(alone.rgb[visible], out.rgb[y0:y1, x0:x1][visible])


def test_render_alone_out_of_view_is_empty():
    renderer, camera = occlusion_scene()
    camera.T_world_cam = look_at([2.5, 0.0, 0.6], [5.0, 0.0, 0.6])  # looking away
    alone = renderer.render_alone(camera, 1)
    assert alone.bbox == (0, 0, 0, 0) and alone.mask.shape == (0, 0)


def test_shadow_darkens_ground_away_from_light():
    env = Environment(light_direction=np.array([1.0, 0.0, 1.0]), ground_pattern="plain")
    camera = Camera(K, W, H, look_at([0.0, -1.5, 1.2], [0.0, 0.0, 0.0]))
    objects = [cube(translation([0.0, 0.0, 0.1], 0.2))]
    shadowed, lit = project(camera, [-0.25, 0.0, 0.0]), project(camera, [0.25, 0.0, 0.0])
    with_shadows = SceneRenderer(objects, env).render(camera).rgb.astype(int)
    env.shadows = False
    without = SceneRenderer(objects, env).render(camera).rgb.astype(int)
    assert np.all(with_shadows[shadowed] < without[shadowed] - 20)
    np.testing.assert_array_equal(with_shadows[lit], without[lit])
    np.testing.assert_array_equal(without[shadowed], without[lit])


def test_background_has_no_depth_and_no_instance():
    env = Environment(background="gradient")
    camera = Camera(K, W, H, look_at([0.9, 0.0, 0.3], [0.0, 0.0, 0.3]))  # horizon mid-image
    out = SceneRenderer([cube(translation([0.0, 0.0, 0.1], 0.2))], env).render(camera)
    assert np.all(out.depth[0] == 0) and np.all(out.instance[0] == 0)
    assert np.all(out.normals[0] == 0)
    np.testing.assert_array_equal(out.rgb[0, 0], np.round(env.background_color * 255))
    assert np.all(out.depth[-1] > 0)  # the ground


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scene_is_deterministic_and_well_typed(seed):
    rng = np.random.default_rng(seed)
    objects = [cube(translation([x, 0.0, 0.1], 0.2), random_appearance(rng))
               for x in (-0.3, 0.0, 0.3)]
    env = random_environment(rng)
    env.pixel_noise_std = 0.02
    camera = Camera(K, W, H, look_at([0.0, -1.0, 0.8], [0.0, 0.0, 0.0]))
    renderer = SceneRenderer(objects, env)
    a, b = (renderer.render(camera, np.random.default_rng(7)) for _ in range(2))
    c = renderer.render(camera, np.random.default_rng(8))
    assert a.rgb.dtype == np.uint8 and a.rgb.shape == (H, W, 3)
    assert a.depth.dtype == np.float32 and a.instance.dtype == np.uint16
    assert a.normals.shape == (H, W, 3)
    for field in ("rgb", "depth", "instance", "normals"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.rgb, c.rgb)
    assert set(np.unique(a.instance)) <= {0, 1, 2, 3}
    assert a.rgb.std() > 5  # textured and shaded, not flat
